//! The conformance suite every [`Connection`] must pass (enable the `conformance` feature).
//!
//! Local, SFTP and S3 run it in their tests; a user writing their own backend runs it too:
//!
//! ```text
//! #[tokio::test(flavor = "multi_thread")]
//! async fn my_backend_conforms() {
//!     let conn = MyConnection::new(/* an empty destination */);
//!     skynet_core::conformance::run(&conn, &skynet_core::conformance::Options::default()).await;
//! }
//! ```
//!
//! The destination must start empty. Each check panics with a message naming the case.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::connection::{is_temp_name, Connection, SourceFile};
use crate::error::ErrorKind;
use crate::relpath::RelPath;

/// What the backend under test can hold.
#[derive(Debug, Clone)]
pub struct Options {
    /// Whether file names that are not UTF-8 can be stored (false for S3, whose keys are text).
    pub non_utf8_names: bool,
    /// The longest file name the destination holds: 255 on POSIX filesystems. Test servers
    /// with a lower limit (s3s-fs fails on keys over ~160 bytes) say so here.
    pub max_name_len: usize,
    /// The destination root as a folder of this machine, when the backend's files live here
    /// (the local folder): enables the cases that plant a link in the destination and read
    /// file modes, which the [`Connection`] trait cannot see.
    pub local_root: Option<PathBuf>,
    /// Whether the backend implements [`Connection::remove_empty_dir`] (rather than keeping
    /// the default, which removes nothing): then an empty directory and a missing path must
    /// come back `true`. Every backend must keep what is not an empty directory, whatever
    /// it answers.
    pub removes_empty_dirs: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            non_utf8_names: true,
            max_name_len: 255,
            local_root: None,
            removes_empty_dirs: false,
        }
    }
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

async fn files(conn: &dyn Connection) -> BTreeMap<RelPath, Vec<u8>> {
    let mut out = BTreeMap::new();
    for entry in conn.list().await.expect("list") {
        let content = conn.read(&entry.path).await.expect("read listed file");
        assert_eq!(
            content.len() as u64,
            entry.size,
            "list size of {}",
            entry.path
        );
        out.insert(entry.path, content);
    }
    out
}

async fn expect_content(conn: &dyn Connection, path: &RelPath, content: &[u8], case: &str) {
    let got = conn
        .read(path)
        .await
        .unwrap_or_else(|e| panic!("{case}: read {path}: {e}"));
    assert!(
        got == content,
        "{case}: {path} holds {} bytes, expected {}",
        got.len(),
        content.len()
    );
    assert_eq!(
        conn.stat(path).await.expect("stat"),
        Some(content.len() as u64),
        "{case}: stat"
    );
    // The streamed copy (`versions restore`) holds the same bytes.
    let mut copy = tempfile::tempfile().expect("temp file");
    let n = conn
        .download(path, &mut copy)
        .await
        .unwrap_or_else(|e| panic!("{case}: download {path}: {e}"));
    assert_eq!(n, content.len() as u64, "{case}: download size");
    let mut got = Vec::new();
    std::io::Seek::seek(&mut copy, std::io::SeekFrom::Start(0)).expect("seek");
    std::io::Read::read_to_end(&mut copy, &mut got).expect("read the copy");
    assert!(
        got == content,
        "{case}: downloaded {} bytes differ",
        got.len()
    );
}

async fn expect_absent(conn: &dyn Connection, path: &RelPath, case: &str) {
    assert_eq!(
        conn.stat(path).await.expect("stat"),
        None,
        "{case}: {path} should be absent"
    );
}

/// Runs every case against `conn`, which must point at an empty destination.
pub async fn run(conn: &dyn Connection, opts: &Options) {
    let scratch = tempfile::tempdir().expect("scratch dir");
    let dir = scratch.path();
    conn.connect().await.expect("connect");
    assert!(
        conn.list().await.expect("list").is_empty(),
        "destination must start empty"
    );

    // Send creates parents; replaying it is harmless; sending again replaces.
    let v1 = local_file(dir, "v1", b"first version");
    let v2 = local_file(dir, "v2", b"second, longer version of the file");
    let deep = rel("a/b/c/file.txt");
    conn.send(&v1, &deep).await.expect("send with parents");
    conn.send(&v1, &deep).await.expect("send replayed");
    expect_content(conn, &deep, b"first version", "send").await;
    conn.send(&v2, &deep).await.expect("send replacing");
    expect_content(
        conn,
        &deep,
        b"second, longer version of the file",
        "replace",
    )
    .await;

    // Empty and larger files.
    let empty = local_file(dir, "empty", b"");
    conn.send(&empty, &rel("empty")).await.expect("send empty");
    expect_content(conn, &rel("empty"), b"", "empty file").await;
    let big: Vec<u8> = (0..3 * 1024 * 1024 + 17)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let big_src = local_file(dir, "big", &big);
    conn.send(&big_src, &rel("big.bin"))
        .await
        .expect("send 3 MiB");
    expect_content(conn, &rel("big.bin"), &big, "3 MiB file").await;

    // Delete: files, missing paths, whole directories, and nothing that merely shares a prefix.
    let one = local_file(dir, "one", b"1");
    for p in ["p/a.jpg", "p/a.jpg.bak", "d/x", "d/sub/y", "dd/z", "d.txt"] {
        conn.send(&one, &rel(p))
            .await
            .unwrap_or_else(|e| panic!("send {p}: {e}"));
    }
    conn.delete(&rel("p/a.jpg")).await.expect("delete file");
    expect_absent(conn, &rel("p/a.jpg"), "delete file").await;
    expect_content(conn, &rel("p/a.jpg.bak"), b"1", "delete is exact").await;
    conn.delete(&rel("p/a.jpg"))
        .await
        .expect("delete of a missing file succeeds");
    conn.delete(&rel("never/was"))
        .await
        .expect("delete of a missing path succeeds");
    conn.delete(&rel("d")).await.expect("delete directory");
    expect_absent(conn, &rel("d/x"), "delete dir").await;
    expect_absent(conn, &rel("d/sub/y"), "delete dir").await;
    expect_content(conn, &rel("dd/z"), b"1", "delete dir is prefix-exact").await;
    expect_content(conn, &rel("d.txt"), b"1", "delete dir is prefix-exact").await;

    // Rename: file to a new place (parents created), onto an existing file, missing source.
    conn.rename(&rel("p/a.jpg.bak"), &rel("q/r/moved.jpg"))
        .await
        .expect("rename file");
    expect_absent(conn, &rel("p/a.jpg.bak"), "rename source gone").await;
    expect_content(conn, &rel("q/r/moved.jpg"), b"1", "rename target").await;
    match conn.rename(&rel("not/there"), &rel("x")).await {
        Err(e) => assert_eq!(e.kind, ErrorKind::RemoteMissing, "rename missing: {e}"),
        Ok(()) => panic!("rename of a missing source succeeded"),
    }
    conn.send(&v1, &rel("over/target")).await.expect("send");
    conn.send(&v2, &rel("over/source")).await.expect("send");
    conn.rename(&rel("over/source"), &rel("over/target"))
        .await
        .expect("rename onto a file");
    expect_content(
        conn,
        &rel("over/target"),
        b"second, longer version of the file",
        "rename replaces",
    )
    .await;
    expect_absent(conn, &rel("over/source"), "rename replaces").await;

    // Rename a directory with its contents, onto a new place.
    for p in ["tree/one", "tree/sub/two", "treex/keep"] {
        conn.send(&one, &rel(p)).await.expect("send tree");
    }
    conn.rename(&rel("tree"), &rel("moved/tree2"))
        .await
        .expect("rename directory");
    expect_absent(conn, &rel("tree/one"), "dir rename").await;
    expect_content(conn, &rel("moved/tree2/one"), b"1", "dir rename").await;
    expect_content(conn, &rel("moved/tree2/sub/two"), b"1", "dir rename").await;
    expect_content(conn, &rel("treex/keep"), b"1", "dir rename is prefix-exact").await;

    // A send replaces what stands in its way, as on a filesystem: the engine counts on it
    // (once a send is acknowledged its ledger forgets the files under and above that path).
    // Found by running the simulation's histories against real S3 servers, which kept both.
    for p in ["way/dir/x", "way/dir/sub/y", "way/file"] {
        conn.send(&one, &rel(p)).await.expect("send way");
    }
    conn.send(&v1, &rel("way/dir"))
        .await
        .expect("send onto a directory");
    expect_content(
        conn,
        &rel("way/dir"),
        b"first version",
        "send replaces a dir",
    )
    .await;
    expect_absent(conn, &rel("way/dir/x"), "send replaces a dir").await;
    expect_absent(conn, &rel("way/dir/sub/y"), "send replaces a dir").await;
    conn.send(&v2, &rel("way/file/inside"))
        .await
        .expect("send below a file");
    expect_content(
        conn,
        &rel("way/file/inside"),
        b"second, longer version of the file",
        "send replaces a file where a parent directory goes",
    )
    .await;
    let left: Vec<String> = files(conn)
        .await
        .into_keys()
        .map(|p| p.display())
        .filter(|p| p.starts_with("way/"))
        .collect();
    assert_eq!(
        left,
        ["way/dir", "way/file/inside"],
        "send replaces what is in its way"
    );
    conn.delete(&rel("way")).await.expect("delete way");

    // Hostile names pass through untouched, as names, never as commands or options.
    let long = "n".repeat(opts.max_name_len);
    let mut hostile = vec![
        "with space".to_string(),
        "new\nline".into(),
        "quote'\"s".into(),
        "$(touch pwned)".into(),
        "-rf".into(),
        "--help".into(),
        "ünïcødé 😀".into(),
        "semi;colon|pipe&amp".into(),
        "star*question?".into(),
        "back\\slash".into(),
        long.clone(),
        format!("dir with space/{long}"),
    ];
    hostile.sort();
    for (i, name) in hostile.iter().enumerate() {
        let src = local_file(dir, &format!("h{i}"), name.as_bytes());
        conn.send(&src, &rel(&format!("hostile/{name}")))
            .await
            .unwrap_or_else(|e| panic!("send hostile name {name:?}: {e}"));
    }
    for name in &hostile {
        expect_content(
            conn,
            &rel(&format!("hostile/{name}")),
            name.as_bytes(),
            "hostile name",
        )
        .await;
    }
    conn.rename(&rel("hostile/-rf"), &rel("hostile/$(touch renamed)"))
        .await
        .expect("rename hostile");
    expect_content(
        conn,
        &rel("hostile/$(touch renamed)"),
        b"-rf",
        "rename hostile",
    )
    .await;
    if opts.non_utf8_names {
        let raw = RelPath::from_bytes(b"raw/bad\xff\xfename").expect("raw path");
        conn.send(&one, &raw).await.expect("send non-UTF-8 name");
        assert_eq!(conn.read(&raw).await.expect("read non-UTF-8"), b"1");
        conn.delete(&raw).await.expect("delete non-UTF-8 name");
        expect_absent(conn, &raw, "non-UTF-8 delete").await;
    }
    conn.delete(&rel("hostile"))
        .await
        .expect("delete hostile dir");
    expect_absent(conn, &rel(&format!("hostile/{long}")), "delete hostile").await;
    assert!(
        !std::path::Path::new("pwned").exists(),
        "a file name was executed as a command"
    );

    empty_dirs(conn, opts, dir).await;

    if let Some(root) = &opts.local_root {
        confinement(conn, root, dir).await;
    }

    // Flush succeeds, and nothing temporary is left anywhere.
    conn.flush().await.expect("flush");
    let all = files(conn).await;
    for path in all.keys() {
        assert!(
            !is_temp_name(path.file_name()),
            "temporary file left behind: {path}"
        );
    }
    let expected: Vec<&str> = vec![
        "a/b/c/file.txt",
        "big.bin",
        "d.txt",
        "dd/z",
        "empty",
        "moved/tree2/one",
        "moved/tree2/sub/two",
        "over/target",
        "q/r/moved.jpg",
        "treex/keep",
    ];
    let got: Vec<String> = all.keys().map(|p| p.display()).collect();
    assert_eq!(got, expected, "final destination listing");
}

/// `remove_empty_dir` removes an empty directory and nothing else: never a directory that
/// holds a file, never a file. A send into a removed directory makes it
/// again. Leaves nothing behind.
async fn empty_dirs(conn: &dyn Connection, opts: &Options, dir: &Path) {
    let one = local_file(dir, "one", b"1");
    for p in ["e/full/keep", "e/file", "e/nested/empty/x", "e/gone/x"] {
        conn.send(&one, &rel(p))
            .await
            .unwrap_or_else(|e| panic!("send {p}: {e}"));
    }
    // Left empty by deleting their files: `e/gone` and `e/nested/empty` (a filesystem keeps
    // them; an object store may not).
    for p in ["e/gone/x", "e/nested/empty/x"] {
        conn.delete(&rel(p)).await.expect("delete");
    }
    let call = |p: &'static str| async move {
        conn.remove_empty_dir(&rel(p))
            .await
            .unwrap_or_else(|e| panic!("empty dirs: remove_empty_dir {p}: {e}"))
    };
    assert!(
        !call("e/full").await,
        "empty dirs: a directory holding a file"
    );
    assert!(!call("e/file").await, "empty dirs: a file");
    assert!(!call("e").await, "empty dirs: a directory holding files");
    expect_content(conn, &rel("e/full/keep"), b"1", "empty dirs: kept").await;
    expect_content(conn, &rel("e/file"), b"1", "empty dirs: kept").await;
    let gone = call("e/gone").await;
    let nested = call("e/nested/empty").await;
    let missing = call("never/was").await;
    if opts.removes_empty_dirs {
        assert!(gone, "empty dirs: an empty directory was kept");
        assert!(nested, "empty dirs: an empty directory was kept");
        assert!(
            call("e/nested").await,
            "empty dirs: emptied parent was kept"
        );
        assert!(missing, "empty dirs: a missing path is not gone");
    }
    // A send into a removed directory makes it again.
    conn.send(&one, &rel("e/gone/again"))
        .await
        .expect("empty dirs: send into a removed directory");
    expect_content(conn, &rel("e/gone/again"), b"1", "empty dirs: sent again").await;
    conn.delete(&rel("e")).await.expect("delete e");
    expect_absent(conn, &rel("e/full/keep"), "empty dirs: cleanup").await;
}

/// A directory of the destination replaced by a link to a folder outside it: no send, delete
/// or rename reaches that folder, and a send makes the path a real directory again. Only
/// permission bits are copied: never setuid, setgid or sticky. Leaves nothing behind.
async fn confinement(conn: &dyn Connection, root: &Path, dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let outside = dir.join("outside");
    for name in ["x", "y", "z"] {
        let path = outside.join("sub").join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir outside");
        std::fs::write(&path, b"outside").expect("write outside");
    }
    let one = local_file(dir, "one", b"1");
    for p in ["linked/sub/x", "linked/sub/y", "linked/sub/z"] {
        conn.send(&one, &rel(p)).await.expect("send");
    }
    std::fs::remove_dir_all(root.join("linked")).expect("remove a destination directory");
    std::os::unix::fs::symlink(&outside, root.join("linked")).expect("plant a link");
    conn.delete(&rel("linked/sub/y"))
        .await
        .expect("confinement: delete under a link finds nothing");
    conn.delete(&rel("linked/sub"))
        .await
        .expect("confinement: delete under a link finds nothing");
    match conn.rename(&rel("linked/sub/z"), &rel("moved-z")).await {
        Err(e) => assert_eq!(e.kind, ErrorKind::RemoteMissing, "confinement: rename: {e}"),
        Ok(()) => panic!("confinement: a rename moved a file from under a link"),
    }
    let untouched = |what: &str| {
        for name in ["x", "y", "z"] {
            assert_eq!(
                std::fs::read(outside.join("sub").join(name))
                    .ok()
                    .as_deref(),
                Some(&b"outside"[..]),
                "confinement: {what} changed the folder behind the link ({name})"
            );
        }
    };
    std::fs::create_dir_all(outside.join("empty")).expect("mkdir outside");
    conn.remove_empty_dir(&rel("linked/empty"))
        .await
        .expect("confinement: remove_empty_dir under a link finds nothing");
    assert!(
        !conn
            .remove_empty_dir(&rel("linked"))
            .await
            .expect("remove_empty_dir"),
        "confinement: a link was taken for an empty directory"
    );
    assert!(
        outside.join("empty").is_dir(),
        "confinement: remove_empty_dir removed a directory behind a link"
    );
    assert!(
        root.join("linked")
            .symlink_metadata()
            .is_ok_and(|m| m.file_type().is_symlink()),
        "confinement: remove_empty_dir removed the link"
    );
    untouched("delete or rename");
    conn.send(&one, &rel("linked/sub/x"))
        .await
        .expect("confinement: send replaces the link");
    untouched("send");
    expect_content(conn, &rel("linked/sub/x"), b"1", "confinement").await;

    let mut special = local_file(dir, "special", b"s");
    special.mode = 0o7755;
    conn.send(&special, &rel("linked/special"))
        .await
        .expect("send");
    let mode = std::fs::metadata(root.join("linked/special"))
        .expect("stat the copy")
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o7777,
        0o755,
        "modes: setuid, setgid or sticky copied"
    );
    conn.delete(&rel("linked")).await.expect("delete");
}
