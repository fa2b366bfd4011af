//! The classified error every `Connection` returns.
//!
//! The handler's whole retry policy is one `match` on [`ErrorKind`]; each backend maps its
//! library's errors into these kinds in one place. Messages are one line, name the path or
//! server concerned, and never contain secrets.

use std::fmt;

/// What the handler should do about a failed action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The link to the destination is down (refused, reset, timed out, silent peer).
    /// The handler pauses every worker, keeps the action queued and reconnects with backoff.
    ConnectionLost,
    /// The destination cannot be used as configured: authentication failed, host key
    /// unknown or changed, bucket missing. `sync` exits 2; `run` keeps retrying with backoff.
    Setup,
    /// Worth retrying this action later (server busy, throttled, disk full, file changed while
    /// being read). Retried with capped exponential backoff, then parked.
    Transient,
    /// Retrying will not help this action (permission denied on that path, a name the
    /// destination cannot hold). Parked as failed at once; the others continue.
    Permanent,
    /// The destination has nothing at the path a rename starts from (never sent, removed by
    /// someone, or moved by a run that died before acknowledging it): the handler sends the
    /// local target instead. Only a move's answer is read that way; for any other action it
    /// is a failure like `Transient`, retried and then parked.
    ///
    /// There is deliberately no kind for "the local file is gone": a destination's answer
    /// cannot say that. The handler decides it by looking at the local file.
    RemoteMissing,
}

/// A failed destination operation: a kind for the policy and a one-line message for people.
#[derive(Debug)]
pub struct ConnError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ConnError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ConnError {
            kind,
            message: message.into(),
        }
    }
    pub fn connection_lost(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::ConnectionLost, message)
    }
    pub fn setup(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Setup, message)
    }
    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Transient, message)
    }
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Permanent, message)
    }
    pub fn remote_missing(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::RemoteMissing, message)
    }

    /// Why a command destination (per file or per entry) refuses `what` (`stat`, `read`,
    /// `list`, `verify`): permanent, so that a hand-off can never be approved without evidence.
    pub fn cannot_read_back(describe: &str, what: &str) -> Self {
        Self::permanent(format!(
            "{describe}: {what}: the command destination cannot read back what it delivered"
        ))
    }

    /// Classifies a local or local-like I/O error about `what` (a path or operation).
    ///
    /// "Not found" is transient: on the destination side it means a parent vanished under
    /// us, and on the source side the handler looks at the local file itself before it
    /// reads any error, so a vanished source never gets this far.
    pub fn from_io(what: impl fmt::Display, err: &std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        let message = format!("{what}: {err}");
        match err.kind() {
            K::PermissionDenied | K::ReadOnlyFilesystem | K::InvalidFilename => {
                Self::permanent(message)
            }
            K::ConnectionRefused
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::NotConnected
            | K::BrokenPipe
            | K::TimedOut
            | K::HostUnreachable
            | K::NetworkUnreachable
            | K::NetworkDown => Self::connection_lost(message),
            _ => match err.raw_os_error() {
                // ENAMETOOLONG: this name can never be written there.
                Some(36) => Self::permanent(message),
                _ => Self::transient(message),
            },
        }
    }
}

impl fmt::Display for ConnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConnError {}

/// Folds a message to one line, whatever a server or a library put in it: the handler logs
/// errors and `status` shows them as single lines.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::io::Errno;
    use std::io::{Error, ErrorKind as K};

    /// Every local write, delete and rename error of the local destination (and every read
    /// of a source file) goes through `from_io`: none of them may come out as the one kind
    /// the handler reads as "nothing to do" (a move's missing source), and "not found" on a
    /// write is a failure worth a retry, never a vanished local file.
    #[test]
    fn io_errors_table() {
        let errno = |e: rustix::io::Errno| Error::from_raw_os_error(e.raw_os_error());
        let cases: Vec<(Error, ErrorKind)> = vec![
            (Error::from(K::NotFound), ErrorKind::Transient),
            (errno(Errno::NOENT), ErrorKind::Transient),
            (errno(Errno::NOTDIR), ErrorKind::Transient),
            (errno(Errno::ISDIR), ErrorKind::Transient),
            (errno(Errno::EXIST), ErrorKind::Transient),
            (errno(Errno::NOTEMPTY), ErrorKind::Transient),
            (errno(Errno::NOSPC), ErrorKind::Transient),
            (errno(Errno::DQUOT), ErrorKind::Transient),
            (errno(Errno::IO), ErrorKind::Transient),
            (errno(Errno::BUSY), ErrorKind::Transient),
            (errno(Errno::XDEV), ErrorKind::Transient),
            (errno(Errno::STALE), ErrorKind::Transient),
            (errno(Errno::ACCESS), ErrorKind::Permanent),
            (errno(Errno::PERM), ErrorKind::Permanent),
            (errno(Errno::ROFS), ErrorKind::Permanent),
            (errno(Errno::NAMETOOLONG), ErrorKind::Permanent),
            (Error::from(K::InvalidFilename), ErrorKind::Permanent),
            (Error::from(K::ConnectionReset), ErrorKind::ConnectionLost),
            (Error::from(K::BrokenPipe), ErrorKind::ConnectionLost),
            (Error::from(K::TimedOut), ErrorKind::ConnectionLost),
            (Error::other("odd"), ErrorKind::Transient),
        ];
        for (err, want) in cases {
            let got = ConnError::from_io("/dst/a", &err);
            assert_eq!(got.kind, want, "{err:?} -> {got}");
            assert_ne!(got.kind, ErrorKind::RemoteMissing, "{err:?}");
            assert!(got.message.starts_with("/dst/a: "), "{got}");
        }
    }
}
