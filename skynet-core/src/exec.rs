//! The command destination: delivers each action by running a user's program, e.g.
//! `exec = ["rsync", "-a", "{path}", "backup:/dst/{remote}"]`.
//!
//! Why it exists: it lets users mirror to anything they can script (rsync, rclone, a
//! database loader) while skynet keeps doing the watching, merging, queueing and retrying.
//!
//! How it keeps the [`Connection`] contract, and where it cannot:
//! - The program gets exactly one argument per template element ([`crate::argv`]) and runs
//!   without a shell ([`crate::command`]); it also gets `SKYNET_ACTION`, `SKYNET_PATH`,
//!   `SKYNET_REMOTE` (and `SKYNET_FROM`, `SKYNET_TO` for a move) in its environment.
//! - Sends and deletes run the `send` template unless a `delete` template overrides it;
//!   `{action}` tells a single script which one it is doing.
//! - A move runs the `rename` template. Without one, the moved files are sent again at their
//!   new place (complete-sync needs a `rename` command or `send_moves`): the send
//!   command expects a file, and a move would hand it a directory, or a path that a tool
//!   like `rsync -a {path} …` would copy under the wrong name. A single script that handles
//!   `{action}` = `move` itself asks for it with `send_moves`.
//! - Success is exit status 0. Atomic replacement, idempotence and confinement are the
//!   program's to keep: skynet cannot see what it did. A move's program should treat a missing
//!   source as success (or send the local target, which `{path}` names).
//! - The program reads the local file itself, so after it succeeds the file is checked to be
//!   unchanged since the send was dispatched; otherwise the send is retried.
//! - It cannot read back: `stat`, `read`, `list` and `verify` fail with a permanent error, so
//!   a hand-off (`remove_source`) can never be approved by accident.
//!
//! Errors map in one place (`classify`): a program that cannot be started is a setup error
//! (the configuration must change); a time-out or a non-zero exit is transient (retried with
//! backoff, then parked with the message, which carries the end of the program's stderr).

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;

use crate::action::ActionKind;
use crate::argv::{Template, Vars};
use crate::command::{self, ChildEnv, CommandError};
use crate::connection::{Connection, RemoteEntry, SourceFile, Verification};
use crate::entries::EntryCommand;
use crate::error::ConnError;
use crate::relpath::RelPath;

/// A time limit that suits a command copying one large file over a slow link.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// How a command destination is configured.
#[derive(Debug, Clone)]
pub struct ExecConfig {
    /// The mapping's source root (absolute): `{path}` of a delete or a move is this joined
    /// with the relative path.
    pub root: PathBuf,
    /// The command run for every action unless overridden (the `exec` setting).
    pub send: Template,
    /// The command run for deletes, instead of `send`.
    pub delete: Option<Template>,
    /// The command run for moves.
    pub rename: Option<Template>,
    /// With no `rename` command: run the `send` command for moves (`{action}` is `move`)
    /// instead of sending the moved files again.
    pub send_moves: bool,
    /// How long one run may take before it is killed (with its process group).
    pub timeout: Duration,
    /// What the program inherits of skynet's environment (its secrets are withheld).
    pub child_env: ChildEnv,
}

impl ExecConfig {
    /// One command for every action, with [`DEFAULT_TIMEOUT`].
    pub fn new(root: impl Into<PathBuf>, send: Template) -> Self {
        ExecConfig {
            root: root.into(),
            send,
            delete: None,
            rename: None,
            send_moves: false,
            timeout: DEFAULT_TIMEOUT,
            child_env: ChildEnv::default(),
        }
    }

    /// The template that performs actions of `kind`.
    pub fn template(&self, kind: ActionKind) -> &Template {
        let chosen = match kind {
            ActionKind::Send => None,
            ActionKind::Delete => self.delete.as_ref(),
            ActionKind::Move => self.rename.as_ref(),
        };
        chosen.unwrap_or(&self.send)
    }

    fn templates(&self) -> impl Iterator<Item = &Template> {
        std::iter::once(&self.send)
            .chain(self.delete.as_ref())
            .chain(self.rename.as_ref())
    }
}

/// A destination that runs a program per action. See the module documentation.
pub struct ExecConnection {
    config: ExecConfig,
}

impl ExecConnection {
    pub fn new(config: ExecConfig) -> Self {
        ExecConnection { config }
    }

    pub fn config(&self) -> &ExecConfig {
        &self.config
    }

    /// Runs the template for `vars.action`; `target` names the action in messages.
    async fn run(&self, vars: &Vars<'_>, target: &RelPath) -> Result<(), ConnError> {
        let template = self.config.template(vars.action);
        let argv = template.render(vars);
        let env = vars.env();
        // Only the program and the action: rendered arguments may carry secrets.
        tracing::debug!(program = %template.program_name(), action = vars.action.as_str(), path = %target, "running command");
        command::run(&argv, &env, &self.config.child_env, self.config.timeout)
            .await
            .map_err(|e| classify(vars.action, target, e))
    }

    /// The local path of `path` under the source root.
    fn local(&self, path: &RelPath) -> PathBuf {
        path.under(&self.config.root)
    }

    fn cannot_read_back(&self, what: &str) -> ConnError {
        ConnError::cannot_read_back(&self.describe(), what)
    }
}

/// The one place where a command's failure becomes a [`ConnError`] kind: a program that
/// cannot run as configured is a setup error; everything else (time-out, non-zero exit, the
/// system lacking a process slot) is transient, retried with backoff and then parked.
fn classify(action: ActionKind, target: &RelPath, err: CommandError) -> ConnError {
    let message = format!("exec {} {target:?}: {err}", action.as_str());
    if err.program_unusable() {
        ConnError::setup(message)
    } else {
        ConnError::transient(message)
    }
}

#[async_trait]
impl Connection for ExecConnection {
    fn describe(&self) -> String {
        format!("exec:{}", self.config.send.program_name())
    }

    /// Checks what can be checked before any file: the root is absolute, the time limit is
    /// not zero, and every configured program can be executed.
    async fn connect(&self) -> Result<(), ConnError> {
        if !self.config.root.is_absolute() {
            return Err(ConnError::setup(format!(
                "{}: the source root {:?} is not absolute",
                self.describe(),
                self.config.root
            )));
        }
        if self.config.timeout.is_zero() {
            return Err(ConnError::setup(format!(
                "{}: the command time limit is zero",
                self.describe()
            )));
        }
        for template in self.config.templates() {
            command::resolve_program(template.program())
                .map_err(|e| ConnError::setup(format!("{}: {e}", self.describe())))?;
        }
        Ok(())
    }

    async fn send(&self, file: &SourceFile, to: &RelPath) -> Result<u64, ConnError> {
        // The program opens the path itself, following links: check just before it starts
        // that the path still names the regular file that was stat'ed (not a link or a FIFO
        // swapped in since). What is swapped in while it runs is caught by the check after.
        drop(file.open()?);
        let vars = Vars::single(ActionKind::Send, &file.path, to.as_os_str());
        let result = self.run(&vars, to).await;
        // The program read the file itself: make sure it read what was dispatched. Whether a
        // failure came from the file vanishing is the handler's to tell, by looking at it.
        result?;
        file.check_unchanged()?;
        Ok(file.size)
    }

    async fn delete(&self, path: &RelPath) -> Result<(), ConnError> {
        let local = self.local(path);
        let vars = Vars::single(ActionKind::Delete, &local, path.as_os_str());
        self.run(&vars, path).await
    }

    /// With no command for moves (and `send_moves` off): answers that the destination has
    /// nothing to move, so that the handler sends the files at `to` again, as it does for any
    /// move whose remote source is missing. The old place stays at the destination, so
    /// complete-sync is refused for a command destination without a command for moves.
    async fn rename(&self, from: &RelPath, to: &RelPath) -> Result<(), ConnError> {
        if self.config.rename.is_none() && !self.config.send_moves {
            return Err(ConnError::remote_missing(format!(
                "{}: no command for moves: sending {to:?} again at its new place",
                self.describe()
            )));
        }
        let local = self.local(to);
        let vars = Vars::moved(&local, from.as_os_str(), to.as_os_str());
        self.run(&vars, to).await
    }

    async fn stat(&self, _path: &RelPath) -> Result<Option<u64>, ConnError> {
        Err(self.cannot_read_back("stat"))
    }

    async fn read(&self, _path: &RelPath) -> Result<Vec<u8>, ConnError> {
        Err(self.cannot_read_back("read"))
    }

    async fn list(&self) -> Result<Vec<RemoteEntry>, ConnError> {
        Err(self.cannot_read_back("list"))
    }

    /// Refuses: a hand-off must never be approved without evidence.
    async fn verify(&self, _file: &SourceFile, _path: &RelPath) -> Result<Verification, ConnError> {
        Err(self.cannot_read_back("verify"))
    }
}

/// `--exec-per top-level`: the same commands, run once per top-level entry of the source
/// (see [`crate::entries`]).
#[async_trait]
impl EntryCommand for ExecConnection {
    fn command_name(&self) -> String {
        self.describe()
    }

    async fn check(&self) -> Result<(), ConnError> {
        self.connect().await
    }

    async fn send_entry(&self, entry: &RelPath) -> Result<(), ConnError> {
        let local = self.local(entry);
        let vars = Vars::single(ActionKind::Send, &local, entry.as_os_str());
        self.run(&vars, entry).await
    }

    async fn delete_entry(&self, entry: &RelPath) -> Result<(), ConnError> {
        let local = self.local(entry);
        let vars = Vars::single(ActionKind::Delete, &local, entry.as_os_str());
        self.run(&vars, entry).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Exit;
    use crate::error::ErrorKind;
    use std::io;

    /// Every way a program can fail a send, delete or rename, and the kind it becomes: a
    /// failure is never read as success, and never as the one answer the handler settles
    /// without retrying (a move's missing remote source). Whatever the exit status (even
    /// "not found" codes some tools use), the program's answer says nothing about the local
    /// file; the handler looks at that itself.
    #[test]
    fn command_failures_table() {
        let target = RelPath::from_bytes(b"dir/file").expect("valid path");
        for action in [ActionKind::Send, ActionKind::Delete, ActionKind::Move] {
            for (err, want) in cases() {
                let shown = err.to_string();
                let got = classify(action, &target, err);
                assert_eq!(got.kind, want, "{action:?} {shown}");
                assert_ne!(got.kind, ErrorKind::RemoteMissing, "{action:?} {shown}");
                assert!(got.message.contains("prog"), "{got}");
            }
        }
    }

    /// The rows of the table (`CommandError` holds `io::Error`s, which do not clone).
    fn cases() -> Vec<(CommandError, ErrorKind)> {
        let start = |kind: io::ErrorKind| CommandError::Start {
            program: "prog".into(),
            source: io::Error::from(kind),
        };
        let failed = |exit: Exit| CommandError::Failed {
            program: "prog".into(),
            exit,
            stderr: "No such file or directory".into(),
        };
        vec![
            (start(io::ErrorKind::NotFound), ErrorKind::Setup),
            (start(io::ErrorKind::PermissionDenied), ErrorKind::Setup),
            (start(io::ErrorKind::InvalidInput), ErrorKind::Setup),
            (
                CommandError::Start {
                    program: "prog".into(),
                    source: io::Error::from_raw_os_error(rustix::io::Errno::NOEXEC.raw_os_error()),
                },
                ErrorKind::Setup,
            ),
            (
                CommandError::Start {
                    program: "prog".into(),
                    source: io::Error::from_raw_os_error(rustix::io::Errno::AGAIN.raw_os_error()),
                },
                ErrorKind::Transient,
            ),
            (failed(Exit::Code(1)), ErrorKind::Transient),
            (failed(Exit::Code(2)), ErrorKind::Transient),
            // rsync's "some files vanished", curl's 404 with --fail: still failures.
            (failed(Exit::Code(24)), ErrorKind::Transient),
            (failed(Exit::Code(22)), ErrorKind::Transient),
            (failed(Exit::Code(127)), ErrorKind::Transient),
            (failed(Exit::Code(-1)), ErrorKind::Transient),
            (failed(Exit::Signal(9)), ErrorKind::Transient),
            (
                CommandError::TimedOut {
                    program: "prog".into(),
                    timeout: Duration::from_secs(1),
                },
                ErrorKind::Transient,
            ),
            (
                CommandError::Wait {
                    program: "prog".into(),
                    source: io::Error::from(io::ErrorKind::NotFound),
                },
                ErrorKind::Transient,
            ),
        ]
    }
}
