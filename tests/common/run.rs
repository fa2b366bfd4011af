//! Running the `skynet` under test: a [`Scratch`] of source, destination and state folders
//! whose commands all use its state directory (and, for permission tests, an unprivileged
//! account), and a [`Daemon`] for a `skynet` left running in the background, killed when
//! dropped so that a failing test leaves no process behind.

use std::path::PathBuf;
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

    /// The first mapping of `skynet status --json` (null when there is none).
    pub fn mapping(&self) -> serde_json::Value {
        self.status()["mappings"][0].clone()
    }
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

pub(super) fn rand_suffix() -> u64 {
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
