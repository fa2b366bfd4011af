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
    /// The thing the action starts from no longer exists: the local file of a send, or the
    /// remote source of a move. The handler treats a send as done (a later event covers the
    /// file) and falls back to sending the local target of a move.
    SourceMissing,
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
    pub fn source_missing(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::SourceMissing, message)
    }

    /// Classifies a local or local-like I/O error about `what` (a path or operation).
    pub fn from_io(what: impl fmt::Display, err: &std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        let message = format!("{what}: {err}");
        match err.kind() {
            K::NotFound => Self::source_missing(message),
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
