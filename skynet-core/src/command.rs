//! Runs one rendered argv (see [`crate::argv`]) with a time limit: the single place where
//! skynet starts user programs, shared by the command destination ([`crate::exec`]) and hooks.
//!
//! Why it is shaped this way:
//! - **No shell.** The argv goes straight to `execvp`; file names are never parsed again.
//! - **Quiet, bounded output.** stdin is `/dev/null` (a program waiting for input would hang
//!   until the timeout); stdout is discarded; stderr is captured but only its last
//!   [`STDERR_TAIL`] bytes are kept, because the end is where programs say what went wrong,
//!   and the handler stores the message with a parked action. The tail is folded to one line.
//! - **Nothing outlives a timeout.** The child starts in its own process group, and when the
//!   time is up (or the caller gives up, dropping the future) the whole group is killed with
//!   `SIGKILL` and the child reaped, so a script's `sleep 30 &` does not linger. A program that
//!   exits by itself is not policed: whatever it left in the background is its business.
//!   Processes that leave the group on purpose (`setsid`) are out of reach.
//! - **Secrets.** Arguments may carry credentials: only the program's name is ever logged or
//!   put in an error message, never the rendered arguments. Skynet's own credentials in its
//!   environment are withheld from the program ([`ChildEnv`]).

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};
use tokio::io::AsyncReadExt;

pub use crate::child_env::ChildEnv;

/// How many bytes at the end of a command's stderr are kept for its error message.
pub const STDERR_TAIL: usize = 2048;

/// How long to keep reading stderr after the program exited: a background process it left
/// behind may hold the pipe open, and the caller must not wait for that.
const STDERR_GRACE: Duration = Duration::from_millis(200);

/// How long to wait for a killed process group's leader to be reaped.
const REAP_LIMIT: Duration = Duration::from_secs(5);

/// The search path used when `PATH` is unset (the C library's default).
const DEFAULT_PATH: &str = "/bin:/usr/bin";

/// Why a command did not succeed. Messages are one line and name only the program.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The program could not be started: not found, not executable, or the system refused
    /// to create a process.
    #[error("cannot start {program}: {source}")]
    Start {
        program: String,
        #[source]
        source: io::Error,
    },
    /// The program ran longer than its time limit; it and its process group were killed.
    #[error("{program} timed out after {}; killed it", seconds(*timeout))]
    TimedOut { program: String, timeout: Duration },
    /// The program exited with a non-zero status or was killed by a signal.
    #[error("{program} {exit}: {}", if stderr.is_empty() { "(no error output)" } else { stderr })]
    Failed {
        program: String,
        exit: Exit,
        /// The end of its stderr, folded to one line (see [`fold_line`]).
        stderr: String,
    },
    /// Waiting for the program failed (an operating system error, not the program's).
    #[error("waiting for {program}: {source}")]
    Wait {
        program: String,
        #[source]
        source: io::Error,
    },
}

impl CommandError {
    /// True when the program itself cannot be run as configured (missing, not executable,
    /// not a valid executable): retrying will not help until the configuration changes.
    /// False for passing system conditions (no process slot, out of memory).
    pub fn program_unusable(&self) -> bool {
        match self {
            CommandError::Start { source, .. } => {
                matches!(
                    source.kind(),
                    io::ErrorKind::NotFound
                        | io::ErrorKind::PermissionDenied
                        | io::ErrorKind::InvalidInput
                ) || source.raw_os_error() == Some(enoexec())
            }
            _ => false,
        }
    }
}

/// `ENOEXEC` ("exec format error"): the file is not a program the kernel can run.
fn enoexec() -> i32 {
    rustix::io::Errno::NOEXEC.raw_os_error()
}

/// How a failed program ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this non-zero status.
    Code(i32),
    /// It was killed by this signal.
    Signal(i32),
}

impl Exit {
    fn of(status: ExitStatus) -> Exit {
        match (status.code(), status.signal()) {
            (Some(code), _) => Exit::Code(code),
            (None, Some(signal)) => Exit::Signal(signal),
            // Neither is possible for a reaped child on Unix; report it as an odd status.
            (None, None) => Exit::Code(-1),
        }
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(code) => write!(f, "exited with status {code}"),
            Exit::Signal(signal) => write!(f, "was killed by signal {signal}"),
        }
    }
}

fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.3}s", d.as_secs_f64())
    }
}

/// Runs `argv` (program first) with extra environment variables `env` and skynet's own
/// environment filtered by `inherit`, waiting at most `timeout`. Succeeds when the program
/// exits with status 0.
pub async fn run(
    argv: &[OsString],
    env: &[(&str, &OsStr)],
    inherit: &ChildEnv,
    timeout: Duration,
) -> Result<(), CommandError> {
    let Some((program, args)) = argv.split_first() else {
        return Err(CommandError::Start {
            program: String::new(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "empty command"),
        });
    };
    let name = program.to_string_lossy().into_owned();
    let started = Instant::now();
    let mut command = tokio::process::Command::new(program);
    inherit.apply(&mut command);
    command
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        // If the group kill below cannot run, tokio still kills and reaps the leader.
        .kill_on_drop(true);
    let mut child = spawn(&mut command)
        .await
        .map_err(|source| CommandError::Start {
            program: name.clone(),
            source,
        })?;
    // Declared after `child`, so dropped before it: the group is killed while its leader is
    // not yet reaped, and the group id cannot have been reused.
    let mut group = GroupKiller::new(child.id());
    tracing::trace!(program = %name, "command started");

    let mut tail = Tail::new(STDERR_TAIL);
    let stderr = child.stderr.take();
    let mut reading = Box::pin(read_into(stderr, &mut tail));
    let mut reading_done = false;

    let waited = tokio::time::timeout(timeout, async {
        loop {
            tokio::select! {
                status = child.wait() => break status,
                () = &mut reading, if !reading_done => reading_done = true,
            }
        }
    })
    .await;

    let status = match waited {
        Ok(Ok(status)) => {
            group.disarm();
            if !reading_done {
                let _ = tokio::time::timeout(STDERR_GRACE, &mut reading).await;
            }
            status
        }
        Ok(Err(source)) => {
            group.kill();
            let _ = tokio::time::timeout(REAP_LIMIT, child.wait()).await;
            group.disarm();
            return Err(CommandError::Wait {
                program: name,
                source,
            });
        }
        Err(_elapsed) => {
            group.kill();
            match tokio::time::timeout(REAP_LIMIT, child.wait()).await {
                Ok(_) => group.disarm(),
                Err(_) => tracing::warn!(program = %name, "killed command not reaped yet"),
            }
            tracing::debug!(program = %name, ?timeout, "command timed out");
            return Err(CommandError::TimedOut {
                program: name,
                timeout,
            });
        }
    };
    // Closes our end of the pipe and ends the borrow of `tail`.
    drop(reading);
    tracing::trace!(program = %name, elapsed = ?started.elapsed(), %status, "command finished");
    if status.success() {
        return Ok(());
    }
    Err(CommandError::Failed {
        program: name,
        exit: Exit::of(status),
        stderr: tail.folded(),
    })
}

/// Spawns, retrying briefly on `ETXTBSY`: a script that was just written (by a deploy, or by
/// another thread while this process forked) is "busy" until every copy of its writable file
/// descriptor is closed, which takes a moment, not a configuration change.
async fn spawn(command: &mut tokio::process::Command) -> io::Result<tokio::process::Child> {
    let mut tries = 0;
    loop {
        match command.spawn() {
            Err(e)
                if e.raw_os_error() == Some(rustix::io::Errno::TXTBSY.raw_os_error())
                    && tries < 5 =>
            {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(10 * tries)).await;
            }
            result => return result,
        }
    }
}

/// Finds the file `program` names the way `execvp` will: as a path when it contains a `/`,
/// else in the directories of `PATH`. Checks that it is a regular file this process may
/// execute, so a bad configuration is reported at start-up rather than on the first file.
pub fn resolve_program(program: &OsStr) -> Result<PathBuf, CommandError> {
    let name = program.to_string_lossy().into_owned();
    let refuse = |kind: io::ErrorKind, why: String| CommandError::Start {
        program: name.clone(),
        source: io::Error::new(kind, why),
    };
    if program.is_empty() {
        return Err(refuse(io::ErrorKind::InvalidInput, "empty program".into()));
    }
    if program.as_bytes().contains(&b'/') {
        let path = Path::new(program);
        return match executable(path) {
            Ok(()) => Ok(path.to_path_buf()),
            Err(e) => Err(CommandError::Start {
                program: name.clone(),
                source: e,
            }),
        };
    }
    let search = std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into());
    let mut not_executable = None;
    for dir in std::env::split_paths(&search) {
        let candidate = dir.join(program);
        match executable(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                not_executable.get_or_insert(candidate);
            }
            Err(_) => {}
        }
    }
    Err(match not_executable {
        Some(path) => refuse(
            io::ErrorKind::PermissionDenied,
            format!("{} is not executable", path.display()),
        ),
        None => refuse(io::ErrorKind::NotFound, "not found on PATH".into()),
    })
}

/// Ok when `path` is a regular file (after links) that this process may execute.
fn executable(path: &Path) -> io::Result<()> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{} is not a regular file", path.display()),
        ));
    }
    rustix::fs::access(path, rustix::fs::Access::EXEC_OK).map_err(|_| {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{} is not executable", path.display()),
        )
    })
}

/// Kills a child's process group with `SIGKILL` when asked, or when dropped while armed (the
/// caller's future was dropped mid-run: shutdown must not leave the command running).
struct GroupKiller {
    group: Option<Pid>,
}

impl GroupKiller {
    fn new(child_id: Option<u32>) -> Self {
        GroupKiller {
            group: child_id.and_then(|id| Pid::from_raw(i32::try_from(id).ok()?)),
        }
    }

    fn kill(&mut self) {
        if let Some(group) = self.group {
            if let Err(e) = rustix::process::kill_process_group(group, Signal::Kill) {
                // ESRCH: the group is already gone.
                if e != rustix::io::Errno::SRCH {
                    tracing::warn!(error = %e, "cannot kill a command's process group");
                }
            }
        }
    }

    /// The leader was reaped: its group id may be reused, never signal it again.
    fn disarm(&mut self) {
        self.group = None;
    }
}

impl Drop for GroupKiller {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads `stderr` to its end, keeping the tail; read errors just end the reading.
async fn read_into(stderr: Option<tokio::process::ChildStderr>, tail: &mut Tail) {
    let Some(mut stderr) = stderr else { return };
    let mut buf = [0u8; 4096];
    loop {
        match stderr.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => tail.push(&buf[..n]),
        }
    }
}

/// The last `keep` bytes of a stream.
struct Tail {
    keep: usize,
    bytes: Vec<u8>,
    cut: bool,
}

impl Tail {
    fn new(keep: usize) -> Self {
        Tail {
            keep,
            bytes: Vec::new(),
            cut: false,
        }
    }

    fn push(&mut self, data: &[u8]) {
        self.bytes.extend_from_slice(data);
        // Trim in amortized steps rather than on every push.
        if self.bytes.len() > 2 * self.keep {
            let excess = self.bytes.len() - self.keep;
            self.bytes.drain(..excess);
            self.cut = true;
        }
    }

    /// The kept bytes as one line, marked with `…` when the beginning was cut.
    fn folded(&self) -> String {
        let mut start = self.bytes.len().saturating_sub(self.keep);
        let cut = self.cut || start > 0;
        // Do not start in the middle of a UTF-8 sequence.
        while cut && start < self.bytes.len() && (self.bytes[start] & 0xC0) == 0x80 {
            start += 1;
        }
        let line = fold_line(&self.bytes[start..]);
        if cut && !line.is_empty() {
            format!("…{line}")
        } else {
            line
        }
    }
}

/// Makes one line of a program's output: invalid UTF-8 replaced, every run of control
/// characters and whitespace (newlines included) turned into one space, ends trimmed.
pub fn fold_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    let mut gap = false;
    for c in text.chars() {
        if c.is_control() || c.is_whitespace() {
            gap = true;
        } else {
            if gap && !out.is_empty() {
                out.push(' ');
            }
            gap = false;
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(items: &[&str]) -> Vec<OsString> {
        items.iter().map(OsString::from).collect()
    }

    #[test]
    fn fold_line_makes_one_trimmed_line() {
        assert_eq!(
            fold_line(b"  error:\n\tdisk\r\nfull\x1b[31m \x00x\n"),
            "error: disk full [31m x"
        );
        assert_eq!(fold_line(b"\xffbad"), "\u{fffd}bad");
        assert_eq!(fold_line(b"\n\n"), "");
    }

    #[test]
    fn tail_keeps_the_end_and_marks_the_cut() {
        let mut tail = Tail::new(8);
        tail.push(b"abc");
        assert_eq!(tail.folded(), "abc");
        for _ in 0..10 {
            tail.push(b"0123456789");
        }
        tail.push(b"\nlast");
        let folded = tail.folded();
        assert!(folded.starts_with('…'), "{folded}");
        assert!(folded.ends_with("89 last"), "{folded}");
        assert!(folded.len() <= 8 + '…'.len_utf8());
    }

    #[test]
    fn tail_does_not_start_inside_a_character() {
        let mut tail = Tail::new(3);
        tail.push("éééé".as_bytes());
        assert_eq!(tail.folded(), "…é");
    }

    #[tokio::test]
    async fn success_and_failure_with_stderr() {
        run(
            &argv(&["true"]),
            &[],
            &ChildEnv::default(),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        let err = run(
            &argv(&["sh", "-c", "echo 'bad  thing\nhappened' >&2; exit 7"]),
            &[],
            &ChildEnv::default(),
            Duration::from_secs(10),
        )
        .await
        .unwrap_err();
        assert!(matches!(
            err,
            CommandError::Failed {
                exit: Exit::Code(7),
                ..
            }
        ));
        assert_eq!(
            err.to_string(),
            "sh exited with status 7: bad thing happened"
        );
    }

    #[tokio::test]
    async fn signals_are_reported() {
        let err = run(
            &argv(&["sh", "-c", "kill -TERM $$"]),
            &[],
            &ChildEnv::default(),
            Duration::from_secs(10),
        )
        .await
        .unwrap_err();
        assert!(matches!(
            err,
            CommandError::Failed {
                exit: Exit::Signal(15),
                ..
            }
        ));
        assert_eq!(
            err.to_string(),
            "sh was killed by signal 15: (no error output)"
        );
    }

    #[tokio::test]
    async fn env_is_passed() {
        let ok = run(
            &argv(&["sh", "-c", r#"test "$SKYNET_X" = 'a b'"#]),
            &[("SKYNET_X", OsStr::new("a b"))],
            &ChildEnv::default(),
            Duration::from_secs(10),
        )
        .await;
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[tokio::test]
    async fn missing_program_cannot_start() {
        let err = run(
            &argv(&["skynet-no-such-program-4711"]),
            &[],
            &ChildEnv::default(),
            Duration::from_secs(10),
        )
        .await
        .unwrap_err();
        assert!(err.program_unusable(), "{err:?}");
        assert!(err.to_string().contains("skynet-no-such-program-4711"));
        let err = run(&[], &[], &ChildEnv::default(), Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(err, CommandError::Start { .. }));
    }

    #[tokio::test]
    async fn a_background_holder_of_stderr_does_not_delay_success() {
        let started = Instant::now();
        // The background sleep inherits stderr; the program itself exits at once.
        run(
            &argv(&["sh", "-c", "sleep 5 & exit 0"]),
            &[],
            &ChildEnv::default(),
            Duration::from_secs(20),
        )
        .await
        .unwrap();
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn timeout_kills_in_time() {
        let started = Instant::now();
        let err = run(
            &argv(&["sh", "-c", "sleep 30"]),
            &[],
            &ChildEnv::default(),
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, CommandError::TimedOut { .. }), "{err:?}");
        assert_eq!(err.to_string(), "sh timed out after 0.300s; killed it");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    /// True when `pid` is gone, or a zombie left to a parent that does not reap.
    fn is_dead(pid: &str) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        }
    }

    #[tokio::test]
    async fn dropping_the_future_kills_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!("sleep 30 & echo $! > '{}'; wait", pidfile.display());
        let command = argv(&["sh", "-c", &script]);
        let inherit = ChildEnv::default();
        let mut running = Box::pin(run(&command, &[], &inherit, Duration::from_secs(60)));
        // Poll the command until its background child is known, then give up on it the way
        // a shutting-down caller does: by dropping the future.
        let started = Instant::now();
        while std::fs::read_to_string(&pidfile).map_or(true, |p| !p.ends_with('\n')) {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no pid written"
            );
            tokio::select! {
                result = &mut running => panic!("finished early: {result:?}"),
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
        drop(running);
        let pid = std::fs::read_to_string(&pidfile).unwrap();
        let pid = pid.trim();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !is_dead(pid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(is_dead(pid), "background sleep {pid} outlived its caller");
    }

    #[test]
    fn resolves_programs_like_execvp() {
        assert!(resolve_program(OsStr::new("sh")).is_ok());
        assert!(resolve_program(OsStr::new("/bin/sh")).is_ok());
        let err = resolve_program(OsStr::new("skynet-no-such-program-4711")).unwrap_err();
        assert!(err.program_unusable());
        assert_eq!(
            err.to_string(),
            "cannot start skynet-no-such-program-4711: not found on PATH"
        );
        assert!(resolve_program(OsStr::new("/nonexistent/prog")).is_err());
        // A directory is not a program.
        assert!(resolve_program(OsStr::new("/tmp/")).is_err());
    }
}
