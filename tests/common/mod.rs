//! Shared helpers for the end-to-end tests of the `skynet` binary: scratch folders, running
//! the real program, comparing trees byte for byte, waiting for convergence.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A scratch source, destination and state directory.
pub struct Scratch {
    pub dir: tempfile::TempDir,
    pub src: PathBuf,
    pub dst: PathBuf,
    pub state: PathBuf,
    /// When set, every `skynet` this scratch starts runs as this (uid, gid).
    pub user: Option<(u32, u32)>,
}

impl Scratch {
    pub fn new() -> Scratch {
        let mut dir = tempfile::tempdir().expect("tempdir");
        // `SKYNET_TEST_KEEP=1` keeps the scratch (logs, state database) to study a failure.
        if std::env::var_os("SKYNET_TEST_KEEP").is_some() {
            dir.disable_cleanup(true);
            eprintln!("keeping scratch {}", dir.path().display());
        }
        let src = dir.path().join("src");
        let dst = dir.path().join("dst");
        let state = dir.path().join("state");
        std::fs::create_dir_all(&src).expect("mkdir src");
        Scratch {
            dir,
            src,
            dst,
            state,
            user: None,
        }
    }

    /// A scratch whose `skynet` processes run as the unprivileged account `name` (created if
    /// missing; needs root): permission checks then apply, as they do not for root. The
    /// scratch folders are given to that account.
    pub fn for_user(name: &str) -> Scratch {
        let (uid, gid) = ensure_user(name);
        let mut s = Scratch::new();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(s.dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod scratch");
        for d in [&s.src, &s.dst, &s.state] {
            std::fs::create_dir_all(d).expect("mkdir");
            std::os::unix::fs::chown(d, Some(uid), Some(gid)).expect("chown");
        }
        s.user = Some((uid, gid));
        s
    }

    /// `skynet ARGS` with this scratch's state directory.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(skynet_bin());
        c.args(args)
            .env("SKYNET_STATE_DIR", &self.state)
            .env("RUST_LOG", test_log_level());
        if let Some((uid, gid)) = self.user {
            use std::os::unix::process::CommandExt;
            // std drops the supplementary groups too when root sets a uid.
            c.uid(uid).gid(gid);
        }
        c
    }

    pub fn src_str(&self) -> &str {
        self.src.to_str().expect("utf-8 temp path")
    }

    pub fn dst_str(&self) -> &str {
        self.dst.to_str().expect("utf-8 temp path")
    }

    /// Runs `skynet sync src dst EXTRA` to completion.
    pub fn sync(&self, extra: &[&str]) -> Output {
        let mut args = vec!["sync", self.src_str(), self.dst_str()];
        args.extend_from_slice(extra);
        self.cmd(&args).output().expect("run skynet sync")
    }

    /// Starts `skynet run src dst EXTRA` in the background.
    pub fn run(&self, extra: &[&str]) -> Daemon {
        let mut args = vec!["run", self.src_str(), self.dst_str()];
        args.extend_from_slice(extra);
        let log = self.dir.path().join(format!("run-{}.log", rand_suffix()));
        let file = std::fs::File::create(&log).expect("log file");
        let child = self
            .cmd(&args)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn skynet run");
        Daemon {
            child: Some(child),
            log,
        }
    }

    /// The logs of every `skynet` this scratch started in the background, concatenated.
    pub fn logs(&self) -> String {
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        names.retain(|p| p.extension().is_some_and(|e| e == "log"));
        names.sort();
        names
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .collect()
    }

    /// `skynet status --json` as a value.
    pub fn status(&self) -> serde_json::Value {
        let out = self.cmd(&["status", "--json"]).output().expect("status");
        assert!(
            out.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status json")
    }
}

/// The program under test: this build's `skynet`, or `SKYNET_TEST_BIN` (e.g. an older build,
/// to see a regression test fail on the code before a fix).
pub fn skynet_bin() -> PathBuf {
    std::env::var_os("SKYNET_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_skynet")))
}

/// The log level of every `skynet` a test starts: `SKYNET_TEST_LOG` when set (e.g.
/// `skynet_core=debug` to trace a failure), else `info`.
pub fn test_log_level() -> String {
    std::env::var("SKYNET_TEST_LOG").unwrap_or_else(|_| "info".to_string())
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A running `skynet run`, killed when dropped.
pub struct Daemon {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Sends a signal and waits for the exit code.
    pub fn signal(&mut self, sig: &str) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args([&format!("-{sig}"), &child.id().to_string()])
            .status();
        let status = child.wait().ok()?;
        status.code()
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Every regular file under `root` with its content, keyed by raw relative path.
pub fn tree(root: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut out = BTreeMap::new();
    if !root.exists() {
        return out;
    }
    for entry in walkdir::WalkDir::new(root).min_depth(1) {
        let Ok(entry) = entry else { continue };
        if entry.file_type().is_file() {
            let rel = entry.path().strip_prefix(root).expect("under root");
            if let Ok(content) = std::fs::read(entry.path()) {
                out.insert(rel.as_os_str().as_bytes().to_vec(), content);
            }
        }
    }
    out
}

/// A short description of how two trees differ.
pub fn diff(want: &BTreeMap<Vec<u8>, Vec<u8>>, got: &BTreeMap<Vec<u8>, Vec<u8>>) -> String {
    let mut lines = Vec::new();
    for (k, v) in want {
        match got.get(k) {
            None => lines.push(format!("missing {}", String::from_utf8_lossy(k))),
            Some(g) if g != v => lines.push(format!("differs {}", String::from_utf8_lossy(k))),
            _ => {}
        }
    }
    for k in got.keys() {
        if !want.contains_key(k) {
            lines.push(format!("extra {}", String::from_utf8_lossy(k)));
        }
    }
    lines.truncate(20);
    lines.join("; ")
}

/// Polls `check` until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if check() {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until dst holds exactly src's files (or a superset when `exact` is false).
///
/// Compares again every 10 ms, or after four times as long as the last comparison took when
/// that is longer (at most 50 ms, as [`wait_until`]): small trees are seen equal within
/// milliseconds of their last change, without a large tree's comparisons eating the CPU the
/// program under test needs.
pub fn wait_converged(
    src: &Path,
    dst: &Path,
    exact: bool,
    timeout: Duration,
) -> Result<(), String> {
    let start = Instant::now();
    loop {
        let compared = Instant::now();
        let want = tree(src);
        let got = tree(dst);
        let good = if exact {
            want == got
        } else {
            want.iter().all(|(k, v)| got.get(k) == Some(v))
        };
        if good {
            return Ok(());
        }
        if start.elapsed() > timeout {
            return Err(diff(&want, &got));
        }
        let pause =
            (compared.elapsed() * 4).clamp(Duration::from_millis(10), Duration::from_millis(50));
        std::thread::sleep(pause);
    }
}

/// True when no temporary upload file is left anywhere under `root`.
pub fn no_temp_files(root: &Path) -> bool {
    tree(root).keys().all(|k| {
        let name = k.rsplit(|b| *b == b'/').next().unwrap_or(k);
        !name.starts_with(b".skynet-tmp.")
    })
}

/// Writes a file, creating parents.
pub fn write(root: &Path, rel: &str, content: &[u8]) {
    let path = root.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(&path, content).expect("write");
}

/// Helpers for destinations other than the scratch folder (SFTP, S3).
impl Scratch {
    /// Runs `skynet sync src DEST EXTRA` to completion.
    pub fn sync_to(&self, dest: &str, extra: &[&str]) -> Output {
        let mut args = vec!["sync", self.src_str(), dest];
        args.extend_from_slice(extra);
        self.cmd(&args).output().expect("run skynet sync")
    }

    /// Starts `skynet ARGS` in the background (stderr to a log file), e.g. a `run` or a
    /// long `sync`.
    pub fn spawn(&self, args: &[&str]) -> Daemon {
        self.spawn_with_env(args, &[])
    }

    /// As [`Scratch::spawn`], with extra environment variables.
    pub fn spawn_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut cmd = self.cmd(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        self.spawn_cmd(cmd)
    }

    /// Starts `cmd` in the background, stderr to a log file in the scratch dir.
    pub fn spawn_cmd(&self, mut cmd: Command) -> Daemon {
        let log = self.dir.path().join(format!("spawn-{}.log", rand_suffix()));
        let file = std::fs::File::create(&log).expect("log file");
        let child = cmd
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn skynet");
        Daemon {
            child: Some(child),
            log,
        }
    }
}

impl Daemon {
    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Waits for the process to exit (at most `timeout`, then kills it) and returns its code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let mut child = self.child.take()?;
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            if start.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Asserts that a `skynet sync` succeeded and left the destination equal to the source.
pub fn assert_synced(s: &Scratch, out: &Output) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (want, got) = (tree(&s.src), tree(&s.dst));
    assert_eq!(want, got, "{}", diff(&want, &got));
}

/// Writes an executable `#!/bin/sh` script `name` into `dir` and returns its path. The body
/// is fixed text: file names reach the script as arguments, never inside its text.
pub fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// A script body that records each invocation's arguments in a file of its own under
/// `calls/` beside the script, NUL-terminated (read them with [`calls`]).
pub const RECORD_ARGS: &str = r#"d="$(dirname "$0")/calls"
mkdir -p "$d"
printf '%s\0' "$@" > "$(mktemp "$d/call.XXXXXX")""#;

/// The argument lists of every invocation of a [`RECORD_ARGS`] script in `dir`, sorted.
pub fn calls(dir: &Path) -> Vec<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir.join("calls")) else {
        return out;
    };
    for entry in entries.flatten() {
        let bytes = std::fs::read(entry.path()).expect("read call record");
        let mut args: Vec<Vec<u8>> = bytes.split(|b| *b == 0).map(<[u8]>::to_vec).collect();
        // The record ends with a NUL: drop the empty piece after it.
        if args.last().is_some_and(Vec::is_empty) {
            args.pop();
        }
        out.push(args);
    }
    out.sort();
    out
}

/// Sets a file's modification time to `secs` seconds ago.
pub fn age(path: &Path, secs: u64) {
    let when = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        - secs;
    let ok = Command::new("touch")
        .arg("-d")
        .arg(format!("@{when}"))
        .arg("--")
        .arg(path)
        .status()
        .expect("run touch")
        .success();
    assert!(ok, "touch -d failed on {}", path.display());
}

/// The exit code of a finished command, with its stderr in the message when it differs.
pub fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Bad usage: exit 2 and exactly one error line on stderr, naming `needle`.
pub fn expect_usage_error(out: std::process::Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "exit code; stderr: {stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "exactly one error line expected: {stderr}");
    assert!(
        errors[0].contains(needle),
        "error line should name {needle:?}: {stderr}"
    );
}

/// Writes a file outside `root` and renames it into place, so a watcher sees it appear
/// complete (never empty or half written), however short the settle time.
pub fn put(root: &Path, rel: &str, content: &[u8]) {
    let staging = root
        .parent()
        .expect("root has a parent")
        .join(format!(".staging-{}", rand_suffix()));
    std::fs::write(&staging, content).expect("write staging file");
    let path = root.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::rename(&staging, &path).expect("rename into place");
}

pub mod remote;

/// A small deterministic generator (xorshift64*), so a failing run can be replayed by seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// A number in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
}

/// The seed of a randomized test: `SKYNET_TEST_SEED` when set (to replay a failure), else
/// fixed per test, so CI is reproducible. Printed so that a failure shows it.
pub fn seed(default: u64) -> u64 {
    let seed = std::env::var("SKYNET_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    eprintln!("seed {seed} (replay with SKYNET_TEST_SEED={seed})");
    seed
}

/// `n` files of 4 KiB spread over 40 folders `dNN/file-NNNNN`.
pub fn populate(root: &Path, n: usize) {
    for i in 0..n {
        write(
            root,
            &format!("d{:02}/file-{i:05}", i % 40),
            &vec![(i % 251) as u8; 4096],
        );
    }
}

/// True for the name of a temporary upload (`.skynet-tmp.` prefix), given a path.
pub fn is_temp_path(rel: &[u8]) -> bool {
    let name = rel.rsplit(|b| *b == b'/').next().unwrap_or(rel);
    name.starts_with(b".skynet-tmp.")
}

/// Regular files under `root`, temporary uploads left out.
pub fn count_files(root: &Path) -> usize {
    walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file() && !is_temp_path(e.file_name().as_bytes()))
        .count()
}

/// Creates (once) the unprivileged account `name` and returns its (uid, gid). Needs root.
pub fn ensure_user(name: &str) -> (u32, u32) {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, name]).output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    if id("-u").is_none() {
        let out = Command::new("useradd")
            .args(["--system", "--no-create-home", "--shell", "/bin/sh", name])
            .output()
            .expect("run useradd (tests that drop privileges need root)");
        assert!(
            out.status.success() || id("-u").is_some(),
            "useradd {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (
        id("-u").expect("uid of the test account"),
        id("-g").expect("gid of the test account"),
    )
}

/// A thread that keeps changing a source tree (create, rewrite, append, rename a file or a
/// folder, delete a file or a folder) for a bounded number of operations, from a seed.
pub struct Churn {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<usize>>,
}

impl Churn {
    pub fn start(root: PathBuf, seed: u64, max_ops: usize, pause: Duration) -> Churn {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let mut rng = Rng::new(seed);
            let mut done = 0;
            // With `SKYNET_TEST_KEEP`, every change is written beside the source, to trace a
            // failure back to the change that caused it.
            let mut journal = std::env::var_os("SKYNET_TEST_KEEP").and_then(|_| {
                let path = root.parent()?.join("churn.txt");
                std::fs::File::create(path).ok()
            });
            while done < max_ops && !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let what = churn_once(&root, &mut rng, done);
                if let Some(j) = journal.as_mut() {
                    use std::io::Write;
                    let at = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs_f64())
                        .unwrap_or(0.0);
                    let _ = writeln!(j, "{at:.6} {done} {what}");
                }
                done += 1;
                std::thread::sleep(pause);
            }
            done
        });
        Churn {
            stop,
            handle: Some(handle),
        }
    }

    /// True once the writer has done all its operations.
    pub fn is_finished(&self) -> bool {
        match &self.handle {
            Some(h) => h.is_finished(),
            None => true,
        }
    }

    /// Stops the writer and returns how many operations it made.
    pub fn finish(mut self) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle
            .take()
            .map(|h| h.join().expect("writer thread"))
            .unwrap_or(0)
    }
}

impl Drop for Churn {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn pick(paths: &[PathBuf], rng: &mut Rng) -> Option<PathBuf> {
    if paths.is_empty() {
        None
    } else {
        Some(paths[rng.below(paths.len() as u64) as usize].clone())
    }
}

fn listing(root: &Path, files: bool) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| {
            if files {
                e.file_type().is_file()
            } else {
                e.file_type().is_dir()
            }
        })
        .map(|e| e.into_path())
        .collect();
    v.sort();
    v
}

/// One random change under `root`. Errors are ignored: the tree is only changed by this
/// thread, but a pick may go stale (a folder removed with its files).
fn churn_once(root: &Path, rng: &mut Rng, step: usize) -> String {
    let body = |rng: &mut Rng| -> Vec<u8> {
        let len = rng.below(6000) as usize;
        let seed = rng.next_u64();
        (0..len)
            .map(|i| (seed.wrapping_add(i as u64 * 31) % 251) as u8)
            .collect()
    };
    let dir_name = |rng: &mut Rng| format!("c{}", rng.below(6));
    match rng.below(100) {
        0..=29 => {
            let dir = match rng.below(3) {
                0 => root.to_path_buf(),
                1 => root.join(dir_name(rng)),
                _ => root.join(dir_name(rng)).join(dir_name(rng)),
            };
            let _ = std::fs::create_dir_all(&dir);
            let f = dir.join(format!("n{step}-{}", rng.below(1000)));
            let r = std::fs::write(&f, body(rng));
            format!("create {} {r:?}", f.display())
        }
        30..=49 => {
            if let Some(f) = pick(&listing(root, true), rng) {
                let r = std::fs::write(&f, body(rng));
                return format!("write {} {r:?}", f.display());
            }
            "write nothing".to_string()
        }
        50..=59 => {
            if let Some(f) = pick(&listing(root, true), rng) {
                use std::io::Write;
                if let Ok(mut h) = std::fs::OpenOptions::new().append(true).open(&f) {
                    let r = h.write_all(&body(rng));
                    return format!("append {} {r:?}", f.display());
                }
            }
            "append nothing".to_string()
        }
        60..=74 => {
            if let Some(f) = pick(&listing(root, true), rng) {
                let dirs = listing(root, false);
                let to_dir = pick(&dirs, rng).unwrap_or_else(|| root.to_path_buf());
                let to = to_dir.join(format!("r{step}"));
                let r = std::fs::rename(&f, &to);
                return format!("rename {} {} {r:?}", f.display(), to.display());
            }
            "rename nothing".to_string()
        }
        75..=82 => {
            if let Some(d) = pick(&listing(root, false), rng) {
                let to = root.join(format!("dir{step}"));
                let r = std::fs::rename(&d, &to);
                return format!("rename-dir {} {} {r:?}", d.display(), to.display());
            }
            "rename-dir nothing".to_string()
        }
        83..=96 => {
            if let Some(f) = pick(&listing(root, true), rng) {
                let r = std::fs::remove_file(&f);
                return format!("remove {} {r:?}", f.display());
            }
            "remove nothing".to_string()
        }
        _ => {
            if let Some(d) = pick(&listing(root, false), rng) {
                let r = std::fs::remove_dir_all(&d);
                return format!("remove-dir {} {r:?}", d.display());
            }
            "remove-dir nothing".to_string()
        }
    }
}

/// Starts a process with `start` and SIGKILLs it after a random 30-700 ms, `kills` times.
/// Each process must still be running when it is killed (a `run` never exits by itself).
pub fn kill_repeatedly(kills: usize, rng: &mut Rng, mut start: impl FnMut() -> Daemon) {
    for round in 0..kills {
        let mut daemon = start();
        std::thread::sleep(Duration::from_millis(rng.between(30, 700)));
        assert!(
            daemon.is_running(),
            "round {round}: skynet exited before it was killed: {}",
            daemon.log_text()
        );
        daemon.kill9();
    }
}
