//! A real OpenSSH sshd for tests (feature `testing`): a private server on a free 127.0.0.1
//! port, with its own host key, client key, authorized_keys and known_hosts, all in a temp dir.
//!
//! ```no_run
//! use skynet_sftp::testing::SshServer;
//! let server = SshServer::start();
//! let root = server.remote_dir("dest");
//! let conn = skynet_sftp::SftpConnection::new(server.config(&root));
//! ```
//!
//! Panics (never skips) when sshd is missing: run `scripts/install-test-deps`.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::{HostKeyPolicy, SftpConfig};

const SSHD: &str = "/usr/sbin/sshd";

/// OpenSSH's stand-alone SFTP server (Debian's path), for [`SshServer::start_logging_sftp`].
const SFTP_SERVER: &str = "/usr/lib/openssh/sftp-server";

/// A running sshd; stopped (with its session processes) on drop.
pub struct SshServer {
    dir: tempfile::TempDir,
    port: u16,
    user: String,
    child: Option<Child>,
    extra_host_keys: Vec<PathBuf>,
    /// Further `sshd_config` lines (see [`SshServer::restrict_kex`]).
    extra_config: Vec<String>,
    /// The `Subsystem sftp` command: `internal-sftp`, or a logging `sftp-server` (see
    /// [`SshServer::start_logging_sftp`]).
    sftp_subsystem: String,
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn keygen(path: &Path) {
    let _ = fs::remove_file(path);
    let _ = fs::remove_file(path.with_extension("pub"));
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "skynet-test", "-f"])
        .arg(path));
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free port")
}

fn current_user() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| {
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } == 0 {
                "root".to_string()
            } else {
                panic!("$USER is not set")
            }
        })
}

/// Creates (once) a non-root account for tests that need real permission checks (root
/// bypasses them). Needs root, as in CI.
fn ensure_user(name: &str) {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let exists = Command::new("id")
        .arg(name)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !exists {
        run(Command::new("useradd")
            .args(["--system", "--no-create-home", "--shell", "/bin/sh"])
            .arg(name));
    }
    // With UsePAM no, sshd refuses key logins to a locked ('!') account.
    run(Command::new("usermod").args(["-p", "*", name]));
}

fn uid_gid(user: &str) -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, user])
            .output()
            .expect("run id");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("no such user {user}"))
    };
    (id("-u"), id("-g"))
}

/// Pids of every descendant of `pid`, from /proc.
fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            // Fields after the parenthesised command name: state ppid ...
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
                parent_of.push((p, ppid));
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for &(p, pp) in &parent_of {
            if pp == parent && !out.contains(&p) {
                out.push(p);
                frontier.push(p);
            }
        }
    }
    out
}

impl SshServer {
    /// Starts sshd, logging in as the current user (root in CI).
    pub fn start() -> SshServer {
        Self::start_with(current_user(), None)
    }

    /// Starts sshd for a non-root account `user`, created if missing (needs root). For tests
    /// of permission errors, which root would bypass.
    pub fn start_as(user: &str) -> SshServer {
        ensure_user(user);
        Self::start_with(user.to_string(), None)
    }

    /// Starts sshd (as the current user) whose SFTP server logs every request it serves to
    /// [`SshServer::sftp_log`], refusing the requests named in `refused` (`sftp-server -P`,
    /// e.g. `fsync` for a server without `fsync@openssh.com`).
    pub fn start_logging_sftp(refused: &[&str]) -> SshServer {
        assert!(
            Path::new(SFTP_SERVER).exists(),
            "{SFTP_SERVER} not found: run scripts/install-test-deps"
        );
        Self::start_with(current_user(), Some(refused))
    }

    /// Writes the wrapper that runs OpenSSH's `sftp-server` logging to `sftp.log`, and makes
    /// it the SFTP subsystem.
    fn log_sftp(&mut self, refused: &[&str]) {
        let wrapper = self.dir.path().join("sftp-server.sh");
        let refuse = if refused.is_empty() {
            String::new()
        } else {
            format!(" -P {}", refused.join(","))
        };
        fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\nexec {SFTP_SERVER} -e -l DEBUG3{refuse} 2>>'{}'\n",
                self.dir.path().join("sftp.log").display()
            ),
        )
        .expect("write sftp-server wrapper");
        fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).expect("chmod");
        self.sftp_subsystem = wrapper.display().to_string();
    }

    /// What the SFTP server of [`SshServer::start_logging_sftp`] logged so far.
    pub fn sftp_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("sftp.log")).unwrap_or_default()
    }

    /// Starts sshd for `user`; with `sftp_log`, its SFTP server logs and refuses those
    /// requests (see [`SshServer::start_logging_sftp`]).
    fn start_with(user: String, sftp_log: Option<&[&str]>) -> SshServer {
        assert!(
            Path::new(SSHD).exists(),
            "sshd not found: run scripts/install-test-deps"
        );
        let dir = tempfile::Builder::new()
            .prefix("skynet-sshd-")
            .tempdir()
            .expect("temp dir");
        // The login user must reach authorized_keys and the remote dirs.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            let _ = fs::create_dir_all("/run/sshd");
        }
        let mut server = SshServer {
            dir,
            port: 0,
            user,
            child: None,
            extra_host_keys: Vec::new(),
            extra_config: Vec::new(),
            sftp_subsystem: "internal-sftp".to_string(),
        };
        if let Some(refused) = sftp_log {
            server.log_sftp(refused);
        }
        let p = |n: &str| server.dir.path().join(n);
        keygen(&p("host_key"));
        keygen(&p("client_key"));
        fs::copy(p("client_key.pub"), p("authorized_keys")).expect("authorized_keys");
        fs::set_permissions(p("authorized_keys"), fs::Permissions::from_mode(0o644))
            .expect("chmod");
        fs::create_dir(p("remote")).expect("remote dir");
        fs::set_permissions(p("remote"), fs::Permissions::from_mode(0o755)).expect("chmod");
        // A port found free can be taken by someone else before sshd binds it: retry.
        for attempt in 0..5 {
            server.port = free_port();
            server.write_config();
            if server.spawn() {
                server.write_known_hosts();
                return server;
            }
            eprintln!(
                "sshd did not start on port {} (attempt {attempt})",
                server.port
            );
        }
        panic!("sshd would not start; log:\n{}", server.log());
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("sshd_config")
    }

    fn write_config(&self) {
        let p = |n: &str| self.dir.path().join(n).display().to_string();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile {pid}\n\
             AuthorizedKeysFile {auth}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PubkeyAuthentication yes\nSubsystem sftp {sftp}\nStrictModes no\nUsePAM no\n\
             PermitRootLogin prohibit-password\nAllowUsers {user}\nMaxStartups 100\n\
             MaxSessions 100\nLogLevel ERROR\n",
            port = self.port,
            host_key = p("host_key"),
            pid = p("sshd.pid"),
            auth = p("authorized_keys"),
            user = self.user,
            sftp = self.sftp_subsystem,
        );
        let extra: String = self
            .extra_host_keys
            .iter()
            .map(|k| format!("HostKey {}\n", k.display()))
            .chain(self.extra_config.iter().map(|l| format!("{l}\n")))
            .collect();
        fs::write(self.config_path(), config + &extra).expect("write sshd_config");
        run(Command::new(SSHD)
            .arg("-t")
            .arg("-f")
            .arg(self.config_path()));
    }

    /// Starts the sshd child and waits until it accepts connections; false if it exited.
    fn spawn(&mut self) -> bool {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("sshd.log"))
            .expect("sshd log");
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            // Its own process group, so that stop() can kill the session processes too.
            .process_group(0)
            .spawn()
            .expect("spawn sshd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    self.child = None;
                    return false;
                }
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.stop();
        false
    }

    fn write_known_hosts(&self) {
        fs::write(
            self.known_hosts_path(),
            self.known_hosts_line(&format!("[127.0.0.1]:{}", self.port)),
        )
        .expect("write known_hosts");
    }

    /// The port sshd listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }
    /// The account clients log in as.
    pub fn user(&self) -> &str {
        &self.user
    }
    /// The private key the server accepts (in its authorized_keys).
    pub fn client_key_path(&self) -> PathBuf {
        self.dir.path().join("client_key")
    }
    /// A known_hosts file holding this server's host key as `[127.0.0.1]:port`.
    pub fn known_hosts_path(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }
    /// The host public key line (`ssh-ed25519 AAAA... comment`).
    pub fn host_public_key(&self) -> String {
        fs::read_to_string(self.dir.path().join("host_key.pub")).expect("host key")
    }
    /// One known_hosts line (newline included) recording this server's host key under `name`
    /// (`127.0.0.1`, `[127.0.0.1]:port`, ...): tests build known_hosts files that name a
    /// server one way or another, or record one server's key under another's name.
    pub fn known_hosts_line(&self, name: &str) -> String {
        let public = self.host_public_key();
        let mut parts = public.split_whitespace();
        let (algo, key) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        format!("{name} {algo} {key}\n")
    }
    /// Scratch space inside the server's temp dir (not served specially; for test files).
    pub fn scratch_dir(&self) -> &Path {
        self.dir.path()
    }

    /// A fresh, empty directory the login user owns, to use as a remote root.
    pub fn remote_dir(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join("remote").join(name);
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create remote dir");
        if self.user != "root" {
            let (uid, gid) = uid_gid(&self.user);
            std::os::unix::fs::chown(&path, Some(uid), Some(gid)).expect("chown remote dir");
        }
        path
    }

    /// A configuration reaching `root` on this server: client key, its known_hosts, strict
    /// host keys, no agent, 10 s timeout.
    pub fn config(&self, root: &Path) -> SftpConfig {
        let url = format!(
            "sftp://{}@127.0.0.1:{}{}",
            self.user,
            self.port,
            root.display()
        );
        SftpConfig::from_url(&url)
            .expect("test URL")
            .with_identity(self.client_key_path())
            .with_known_hosts(self.known_hosts_path())
            .with_host_key_policy(HostKeyPolicy::Strict)
            .with_agent(false)
            .with_password(None)
            .with_timeout(Duration::from_secs(10))
    }

    /// Kills sshd and every session process it started, and reaps the listener.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id();
        let family = descendants(pid);
        // SAFETY: plain signal sends to processes this server started.
        unsafe {
            libc::killpg(pid as libc::pid_t, libc::SIGKILL);
        }
        let _ = child.kill();
        let _ = child.wait();
        for p in family {
            // SAFETY: as above.
            unsafe {
                libc::kill(p as libc::pid_t, libc::SIGKILL);
            }
        }
    }

    /// Freezes (SIGSTOP) sshd and its session processes: connections stay open but nothing
    /// answers, like a peer behind a dead link. `thaw` resumes them.
    pub fn freeze(&self) {
        self.signal_all(libc::SIGSTOP);
    }

    /// Resumes what [`SshServer::freeze`] stopped.
    pub fn thaw(&self) {
        self.signal_all(libc::SIGCONT);
    }

    fn signal_all(&self, sig: libc::c_int) {
        let Some(child) = self.child.as_ref() else {
            return;
        };
        let pid = child.id();
        let mut all = descendants(pid);
        all.push(pid);
        for p in all {
            // SAFETY: plain signal sends to processes this server started.
            unsafe {
                libc::kill(p as libc::pid_t, sig);
            }
        }
    }

    /// Stops and starts sshd on the same port with the same host key.
    pub fn restart(&mut self) {
        self.stop();
        for _ in 0..50 {
            if self.spawn() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "sshd would not restart on port {}; log:\n{}",
            self.port,
            self.log()
        );
    }

    /// Gives the server a new host key and restarts it; `known_hosts_path()` keeps the old
    /// key, so clients see a changed key.
    pub fn replace_host_key(&mut self) {
        self.stop();
        keygen(&self.dir.path().join("host_key"));
        self.restart();
    }

    /// Gives the server a second host key, RSA, and restarts it; returns that key's public
    /// line (`ssh-rsa AAAA... comment`). The ed25519 key stays and stays preferred.
    pub fn add_rsa_host_key(&mut self) -> String {
        let path = self.dir.path().join("host_key_rsa");
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "rsa", "-b", "2048", "-N", "", "-f"])
            .arg(&path));
        self.extra_host_keys.push(path.clone());
        self.stop();
        self.write_config();
        self.restart();
        fs::read_to_string(path.with_extension("pub")).expect("rsa host key")
    }

    /// Offers only these key exchange algorithms (`KexAlgorithms`), and restarts: a server
    /// with which a client shares none.
    pub fn restrict_kex(&mut self, algorithms: &str) {
        self.extra_config
            .push(format!("KexAlgorithms {algorithms}"));
        self.stop();
        self.write_config();
        self.restart();
    }

    /// sshd's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        self.stop();
    }
}
