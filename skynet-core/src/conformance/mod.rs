//! The conformance suite every [`Connection`] must pass (enable the `conformance` feature).
//!
//! One public function per clause of the contract (see [`crate::connection`]), each naming
//! the clause it pins down; [`run`] calls every one that applies to the backend, as its
//! [`Options`] describe it. Local, SFTP, S3 and the command destination run it in their tests;
//! a user writing their own backend runs it too:
//!
//! ```text
//! #[tokio::test(flavor = "multi_thread")]
//! async fn my_backend_conforms() {
//!     let conn = MyConnection::new(/* an empty destination */);
//!     skynet_core::conformance::run(&conn, &skynet_core::conformance::Options::default()).await;
//! }
//! ```
//!
//! Each function connects, expects an empty destination and leaves it empty, so any one of
//! them can run alone. Each check panics with a message naming the function and the case.

mod dirs;
mod read;
mod temps;
mod write;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use dirs::{confinement, empty_dirs};
pub use read::{read_back, verify};
pub use temps::{cleanup, sweep_temps};
pub use write::{
    delete_is_exact, empty_and_large_files, hostile_names, rename_files_and_directories,
    send_batch, send_creates_parents_and_replaces, send_replaces_what_is_in_its_way,
};

use crate::connection::{is_temp_name, Connection, SourceFile};
use crate::error::ErrorKind;
use crate::relpath::RelPath;

/// What [`Connection::verify`] can prove about a delivered file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// The size only (the trait's default): a delivered file is [`Verification::SizeOnly`],
    /// and a copy of the same size with other bytes cannot be told apart (never `Content`).
    ///
    /// [`Verification::SizeOnly`]: crate::Verification::SizeOnly
    Size,
    /// The size and a content hash: a delivered file is [`Verification::Content`], and a copy
    /// of the same size with other bytes, or a source rewritten since, is a mismatch.
    ///
    /// [`Verification::Content`]: crate::Verification::Content
    Content,
}

/// What the backend under test can hold and do, where the contract lets backends differ.
#[derive(Debug, Clone)]
pub struct Options {
    /// Whether file names that are not UTF-8 can be stored (false for S3, whose keys are text).
    pub non_utf8_names: bool,
    /// Whether a name may hold a newline (and other control characters). A destination that
    /// cannot store one must fail the send (never report it delivered); test servers that
    /// refuse them (moto answers 404) say so here.
    pub newline_names: bool,
    /// The longest file name the destination holds: 255 on POSIX filesystems. Test servers
    /// with a lower limit (s3s-fs fails on keys over ~160 bytes) say so here.
    pub max_name_len: usize,
    /// The destination root as a folder of this machine, when the backend's files live here.
    /// A backend that reads back and has one also runs [`confinement`] (it plants a link in
    /// the destination and reads file modes, which the [`Connection`] trait cannot see); a
    /// backend that cannot read back is observed through it.
    pub local_root: Option<PathBuf>,
    /// Whether the backend implements [`Connection::remove_empty_dir`] (rather than keeping
    /// the default, which removes nothing): then an empty directory and a missing path must
    /// come back `true`. Every backend must keep what is not an empty directory, whatever
    /// it answers.
    pub removes_empty_dirs: bool,
    /// Whether `stat`, `read`, `download`, `list` and `verify` answer. A destination that
    /// cannot see what it delivered (a command) answers each with a permanent error instead,
    /// so that no hand-off is ever approved without evidence; its effects are then observed
    /// through `local_root`, which it needs. Such a backend cannot tell a missing rename
    /// source either: that rename may succeed, as long as it changes nothing.
    pub reads_back: bool,
    /// What [`Connection::verify`] proves of a delivered file.
    pub verify_proves: Proof,
    /// Whether the backend writes temporaries (names from [`crate::connection::temp_name`]):
    /// then [`Connection::cleanup`] and [`Connection::sweep_temps`] must remove them. A
    /// backend that writes none (S3 PUTs are atomic) keeps the defaults, which remove nothing.
    pub writes_temps: bool,
}

impl Default for Options {
    /// A backend that keeps every default method of the trait.
    fn default() -> Self {
        Options {
            non_utf8_names: true,
            newline_names: true,
            max_name_len: 255,
            local_root: None,
            removes_empty_dirs: false,
            reads_back: true,
            verify_proves: Proof::Size,
            writes_temps: false,
        }
    }
}

/// Runs every contract function that applies to `conn`, which must point at an empty
/// destination.
pub async fn run(conn: &dyn Connection, opts: &Options) {
    send_creates_parents_and_replaces(conn, opts).await;
    empty_and_large_files(conn, opts).await;
    delete_is_exact(conn, opts).await;
    rename_files_and_directories(conn, opts).await;
    send_replaces_what_is_in_its_way(conn, opts).await;
    send_batch(conn, opts).await;
    hostile_names(conn, opts).await;
    empty_dirs(conn, opts).await;
    if opts.reads_back && opts.local_root.is_some() {
        confinement(conn, opts).await;
    }
    read_back(conn, opts).await;
    verify(conn, opts).await;
    cleanup(conn, opts).await;
    sweep_temps(conn, opts).await;
}

/// A relative path from text (test helper; panics on an invalid path).
pub fn rel(s: &str) -> RelPath {
    RelPath::from_bytes(s.as_bytes()).expect("valid test path")
}

/// Writes a local scratch file and describes it as a send source (test helper).
pub fn local_file(dir: &Path, name: &str, content: &[u8]) -> SourceFile {
    let path = dir.join(name);
    std::fs::write(&path, content).expect("write scratch file");
    SourceFile::stat(&path).expect("stat scratch file")
}

/// Deterministic pseudo-random content (xorshift), fast enough for tens of MiB: test files
/// whose pieces differ, so a misplaced chunk shows.
pub fn pseudo_random(size: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(size + 8);
    while out.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(size);
    out
}

/// Asserts that `v` is a one-line mismatch whose reason contains `needle` (test helper).
pub fn expect_mismatch(v: &crate::Verification, needle: &str) {
    match v {
        crate::Verification::Mismatch(why) => {
            assert!(why.contains(needle), "{why:?} lacks {needle:?}");
            assert!(!why.contains('\n'), "{why:?}");
        }
        other => panic!("expected a mismatch, got {other:?}"),
    }
}

/// One contract function's run: the connection, a scratch folder for local source files,
/// and the checks, which observe the destination through the connection or, for a backend
/// that cannot read back, through [`Options::local_root`].
struct Check<'a> {
    conn: &'a dyn Connection,
    opts: &'a Options,
    name: &'static str,
    scratch: tempfile::TempDir,
}

impl<'a> Check<'a> {
    /// Connects and checks that the destination is empty.
    async fn start(conn: &'a dyn Connection, opts: &'a Options, name: &'static str) -> Self {
        assert!(
            opts.reads_back || opts.local_root.is_some(),
            "{name}: a backend that cannot read back needs `local_root` to be observed"
        );
        conn.connect()
            .await
            .unwrap_or_else(|e| panic!("{name}: connect: {e}"));
        let check = Check {
            conn,
            opts,
            name,
            scratch: tempfile::tempdir().expect("scratch dir"),
        };
        let left: Vec<String> = check.files().await.keys().map(|p| p.display()).collect();
        assert!(
            left.is_empty(),
            "{name}: destination must start empty: {left:?}"
        );
        check
    }

    fn dir(&self) -> &Path {
        self.scratch.path()
    }

    /// A local source file in the scratch folder.
    fn file(&self, name: &str, content: &[u8]) -> SourceFile {
        local_file(self.dir(), name, content)
    }

    async fn send(&self, file: &SourceFile, to: &str) {
        self.send_rel(file, &rel(to)).await;
    }

    async fn send_rel(&self, file: &SourceFile, to: &RelPath) {
        self.conn
            .send(file, to)
            .await
            .unwrap_or_else(|e| panic!("{}: send {to}: {e}", self.name));
    }

    /// What the destination holds at `path`: a file's bytes, or `None`.
    async fn content(&self, path: &RelPath, case: &str) -> Option<Vec<u8>> {
        let name = self.name;
        if !self.opts.reads_back {
            let root = self.opts.local_root.as_deref().expect("checked at start");
            let abs = path.under(root);
            return match std::fs::symlink_metadata(&abs) {
                Ok(m) if m.is_file() => Some(std::fs::read(&abs).expect("read local root")),
                _ => None,
            };
        }
        let conn = self.conn;
        let size = conn
            .stat(path)
            .await
            .unwrap_or_else(|e| panic!("{name}: {case}: stat {path}: {e}"))?;
        let got = conn
            .read(path)
            .await
            .unwrap_or_else(|e| panic!("{name}: {case}: read {path}: {e}"));
        assert_eq!(got.len() as u64, size, "{name}: {case}: stat of {path}");
        // The streamed copy (`versions restore`) holds the same bytes.
        let mut copy = tempfile::tempfile().expect("temp file");
        let n = conn
            .download(path, &mut copy)
            .await
            .unwrap_or_else(|e| panic!("{name}: {case}: download {path}: {e}"));
        assert_eq!(n, size, "{name}: {case}: download size of {path}");
        let mut streamed = Vec::new();
        std::io::Seek::seek(&mut copy, std::io::SeekFrom::Start(0)).expect("seek");
        std::io::Read::read_to_end(&mut copy, &mut streamed).expect("read the copy");
        assert!(
            streamed == got,
            "{name}: {case}: downloaded bytes of {path} differ"
        );
        Some(got)
    }

    async fn expect_content(&self, path: &str, content: &[u8], case: &str) {
        self.expect_content_rel(&rel(path), content, case).await;
    }

    async fn expect_content_rel(&self, path: &RelPath, content: &[u8], case: &str) {
        match self.content(path, case).await {
            Some(got) => assert!(
                got == content,
                "{}: {case}: {path} holds {} bytes, expected {}",
                self.name,
                got.len(),
                content.len()
            ),
            None => panic!("{}: {case}: {path} is missing", self.name),
        }
    }

    async fn expect_absent(&self, path: &str, case: &str) {
        self.expect_absent_rel(&rel(path), case).await;
    }

    async fn expect_absent_rel(&self, path: &RelPath, case: &str) {
        assert!(
            self.content(path, case).await.is_none(),
            "{}: {case}: {path} should be absent",
            self.name
        );
    }

    /// Every file the destination holds, with its bytes.
    async fn files(&self) -> BTreeMap<RelPath, Vec<u8>> {
        let mut out = BTreeMap::new();
        if !self.opts.reads_back {
            let root = self.opts.local_root.as_deref().expect("checked at start");
            for entry in walkdir::WalkDir::new(root).min_depth(1) {
                let entry = entry.expect("walk local root");
                if entry.file_type().is_file() {
                    let path = RelPath::from_abs(root, entry.path()).expect("path under root");
                    out.insert(path, std::fs::read(entry.path()).expect("read"));
                }
            }
            return out;
        }
        let name = self.name;
        for entry in self.conn.list().await.expect("list") {
            let content = self
                .conn
                .read(&entry.path)
                .await
                .unwrap_or_else(|e| panic!("{name}: read listed file {}: {e}", entry.path));
            assert_eq!(
                content.len() as u64,
                entry.size,
                "{name}: list size of {}",
                entry.path
            );
            out.insert(entry.path, content);
        }
        out
    }

    /// The paths of every file the destination holds, as text.
    async fn listing(&self) -> Vec<String> {
        self.files().await.keys().map(|p| p.display()).collect()
    }

    /// Deletes `tops`, flushes, and checks that nothing is left (no temporary file either).
    async fn finish(self, tops: &[&str]) {
        let name = self.name;
        for top in tops {
            self.conn
                .delete(&rel(top))
                .await
                .unwrap_or_else(|e| panic!("{name}: delete {top}: {e}"));
        }
        self.conn
            .flush()
            .await
            .unwrap_or_else(|e| panic!("{name}: flush: {e}"));
        let left = self.files().await;
        for path in left.keys() {
            assert!(
                !is_temp_name(path.file_name()),
                "{name}: temporary file left behind: {path}"
            );
        }
        let left: Vec<String> = left.keys().map(|p| p.display()).collect();
        assert!(left.is_empty(), "{name}: left behind: {left:?}");
    }
}

/// Asserts that `result` failed with `kind` and a one-line message.
fn expect_error<T: std::fmt::Debug>(
    result: Result<T, crate::ConnError>,
    kind: ErrorKind,
    what: &str,
) {
    match result {
        Err(e) => {
            assert_eq!(e.kind, kind, "{what}: {e}");
            assert!(!e.message.contains('\n'), "{what}: {e:?}");
        }
        Ok(v) => panic!("{what}: expected a {kind:?} error, got {v:?}"),
    }
}
