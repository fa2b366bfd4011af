//! Every error this crate produces, and the one place where libssh2's errors are classified
//! into the engine's [`ErrorKind`]s.
//!
//! The handler's whole retry policy depends on this mapping, so it lives in one module:
//! - socket, timeout and disconnect errors (and any session-level failure on an established
//!   link, which leaves libssh2's session unusable) → `ConnectionLost`;
//! - authentication and host key problems → `Setup`;
//! - SFTP `PERMISSION_DENIED` / `WRITE_PROTECT` → `Permanent`, naming the remote path;
//! - SFTP `NO_SPACE` / `QUOTA_EXCEEDED`, and the generic `FAILURE` OpenSSH answers for ENOSPC
//!   and most other errnos → `Transient`;
//! - SFTP `NO_SUCH_FILE` on a rename source → `RemoteMissing` (the handler then sends the
//!   local target); on a write it is `Transient` like any failed write, and on a delete the
//!   callers read it as done (deleting a missing path succeeds). No answer says anything
//!   about the local file: the handler decides that by looking at it.
//!
//! Messages are one line: `sftp://user@host:port: <path>: <what> failed: <reason>`.

use std::fmt;
use std::io;
use std::path::Path;

use skynet_core::error::{ConnError, ErrorKind};
use ssh2::ErrorCode;

/// Errors from building a configuration (before any connection is attempted).
#[derive(Debug, thiserror::Error)]
pub enum SftpError {
    #[error("invalid SFTP destination {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("no user name in {url:?} and $USER is not set; write sftp://USER@host/path")]
    NoUser { url: String },
}

impl From<SftpError> for ConnError {
    fn from(e: SftpError) -> ConnError {
        ConnError::setup(e.to_string())
    }
}

// SFTP status codes (draft-ietf-secsh-filexfer); OpenSSH speaks version 3 and uses 1-8.
pub(crate) const FX_NO_SUCH_FILE: i32 = 2;
pub(crate) const FX_PERMISSION_DENIED: i32 = 3;
pub(crate) const FX_FAILURE: i32 = 4;
const FX_NO_CONNECTION: i32 = 6;
const FX_CONNECTION_LOST: i32 = 7;
const FX_OP_UNSUPPORTED: i32 = 8;
const FX_NO_SUCH_PATH: i32 = 10;
const FX_WRITE_PROTECT: i32 = 12;
const FX_NO_SPACE_ON_FILESYSTEM: i32 = 14;
const FX_QUOTA_EXCEEDED: i32 = 15;
const FX_INVALID_FILENAME: i32 = 20;

// libssh2 session error codes that mean "the handshake or the peer refused us" rather than
// "the link broke".
const LIBSSH2_ERROR_KEX_FAILURE: i32 = -5;
const LIBSSH2_ERROR_METHOD_NOT_SUPPORTED: i32 = -33;
const LIBSSH2_ERROR_ALGO_UNSUPPORTED: i32 = -51;

/// libssh2 codes for a broken link: socket none/send/recv/bad, banner, timeouts, disconnect.
const LINK_ERRORS: [i32; 8] = [-1, -2, -7, -9, -13, -30, -43, -45];

/// What was being done when an error happened; it decides what an ambiguous code means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Handshake,
    Auth,
    Write,
    Read,
    Rename,
    Other,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Handshake => "handshake",
            Op::Auth => "authentication",
            Op::Write => "write",
            Op::Read => "read",
            Op::Rename => "rename",
            Op::Other => "operation",
        })
    }
}

/// The SFTP status code of an error, if it is one.
pub(crate) fn sftp_code(err: &ssh2::Error) -> Option<i32> {
    match err.code() {
        ErrorCode::SFTP(c) => Some(c),
        ErrorCode::Session(_) => None,
    }
}

/// True for SFTP "no such file" answers.
pub(crate) fn is_missing(err: &ssh2::Error) -> bool {
    matches!(sftp_code(err), Some(FX_NO_SUCH_FILE | FX_NO_SUCH_PATH))
}

/// Whether a handshake failed in the key exchange. libssh2 gives the same code whether the
/// two sides share no algorithm or the connection dropped mid-exchange (a server restarting):
/// only the first repeats on a fresh connection (see `Link::open`).
pub(crate) fn is_kex_failure(err: &ssh2::Error) -> bool {
    matches!(
        err.code(),
        ErrorCode::Session(
            LIBSSH2_ERROR_KEX_FAILURE
                | LIBSSH2_ERROR_METHOD_NOT_SUPPORTED
                | LIBSSH2_ERROR_ALGO_UNSUPPORTED
        )
    )
}

/// Classifies a libssh2 error from `op` on `path` (if any) of `server`.
pub(crate) fn classify(err: &ssh2::Error, op: Op, server: &str, path: Option<&Path>) -> ConnError {
    let what = match path {
        Some(p) => format!("{server}: {}", p.display()),
        None => server.to_string(),
    };
    match err.code() {
        ErrorCode::SFTP(code) => classify_sftp(code, err.message(), op, &what),
        ErrorCode::Session(code) => {
            let message = format!("{what}: {op} failed: {}", one_line(err.message()));
            match code {
                // During authentication only socket-level codes mean the link broke; the rest
                // (refused key, unreadable key file, agent trouble) is about our credentials.
                // ...except that libssh2 reports a server that went away mid-authentication
                // as "Waiting for USERAUTH response" under an authentication code.
                _ if op == Op::Auth && err.message().starts_with("Waiting for") => {
                    ConnError::connection_lost(message)
                }
                _ if op == Op::Auth && !LINK_ERRORS.contains(&code) => ConnError::setup(message),
                LIBSSH2_ERROR_KEX_FAILURE
                | LIBSSH2_ERROR_METHOD_NOT_SUPPORTED
                | LIBSSH2_ERROR_ALGO_UNSUPPORTED
                    if op == Op::Handshake =>
                {
                    ConnError::setup(format!(
                        "{message} (no algorithm in common with the server)"
                    ))
                }
                // Socket errors, timeouts, disconnects, channel closed, protocol breakage:
                // the session cannot be used any more either way.
                _ => ConnError::connection_lost(message),
            }
        }
    }
}

fn classify_sftp(code: i32, text: &str, op: Op, what: &str) -> ConnError {
    let message = |reason: &str| format!("{what}: {op} failed: {reason}");
    match code {
        FX_PERMISSION_DENIED | FX_WRITE_PROTECT => {
            ConnError::permanent(message("permission denied on the server"))
        }
        FX_INVALID_FILENAME => ConnError::permanent(message("the server refuses this file name")),
        FX_NO_SPACE_ON_FILESYSTEM | FX_QUOTA_EXCEEDED => {
            ConnError::transient(message(&format!("{text} (disk full on server?)")))
        }
        FX_FAILURE if op == Op::Write => ConnError::transient(message(
            "the server reported a failure while writing (disk full on server?)",
        )),
        FX_NO_CONNECTION | FX_CONNECTION_LOST => ConnError::connection_lost(message(text)),
        FX_NO_SUCH_FILE | FX_NO_SUCH_PATH if op == Op::Rename => {
            ConnError::remote_missing(message("no such file on the server"))
        }
        FX_OP_UNSUPPORTED => ConnError::permanent(message("operation not supported by the server")),
        _ => ConnError::transient(message(text)),
    }
}

/// Classifies an I/O error from reading or writing a remote file handle. The ssh2 crate turns
/// its errors into `io::Error`s carrying only the message, so the SFTP status is recovered
/// from ssh2's fixed texts; anything else is a session failure, i.e. a lost connection.
pub(crate) fn classify_io(err: &io::Error, op: Op, server: &str, path: &Path) -> ConnError {
    let text = err.to_string();
    let code = match text.as_str() {
        "no such file" => Some(FX_NO_SUCH_FILE),
        "permission denied" => Some(FX_PERMISSION_DENIED),
        "failure" => Some(FX_FAILURE),
        "no connection" => Some(FX_NO_CONNECTION),
        "connection lost" => Some(FX_CONNECTION_LOST),
        "operation unsupported" => Some(FX_OP_UNSUPPORTED),
        "no such path" => Some(FX_NO_SUCH_PATH),
        "file is write protected" => Some(FX_WRITE_PROTECT),
        "no space on filesystem" => Some(FX_NO_SPACE_ON_FILESYSTEM),
        "quota exceeded" => Some(FX_QUOTA_EXCEEDED),
        "invalid filename" => Some(FX_INVALID_FILENAME),
        // The rest, so that none of them passes for a lost link (which is retried forever).
        "bad message" => Some(5),
        "invalid handle" => Some(9),
        "file already exists" => Some(11),
        "no media available" => Some(13),
        "unknown principal" => Some(16),
        "lock conflict" => Some(17),
        "directory not empty" => Some(18),
        "not a directory" => Some(19),
        "link loop" => Some(21),
        _ => None,
    };
    let what = format!("{server}: {}", path.display());
    match code {
        Some(code) => classify_sftp(code, &text, op, &what),
        None => ConnError::connection_lost(format!("{what}: {op} failed: {}", one_line(&text))),
    }
}

/// Classifies an error from the local side of a transfer (reading the source file).
pub(crate) fn local_io(path: &Path, err: &io::Error) -> ConnError {
    ConnError::from_io(path.display(), err)
}

pub(crate) use skynet_core::error::one_line;

/// True when an error means the link is gone and the session must be dropped.
pub(crate) fn is_lost(e: &ConnError) -> bool {
    e.kind == ErrorKind::ConnectionLost
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sftp(code: i32) -> ssh2::Error {
        ssh2::Error::from_errno(ErrorCode::SFTP(code))
    }

    /// Every SFTP status a server can answer to a write (open, write, close, the rename into
    /// place), a delete (unlink, rmdir) and a rename, and what it becomes. No answer to a
    /// write is success or "nothing to do"; a delete is done only on "no such file"; a
    /// rename's source is missing only on "no such file"; no kind can say that the local
    /// file vanished.
    #[test]
    fn status_answers_table() {
        use ErrorKind::*;
        // (code, write, delete, rename); `Ok` in the delete column: done.
        let rows: &[(i32, ErrorKind, Result<(), ErrorKind>, ErrorKind)] = &[
            (1, Transient, Err(Transient), Transient), // EOF
            (FX_NO_SUCH_FILE, Transient, Ok(()), RemoteMissing),
            (FX_PERMISSION_DENIED, Permanent, Err(Permanent), Permanent),
            (FX_FAILURE, Transient, Err(Transient), Transient),
            (5, Transient, Err(Transient), Transient), // BAD_MESSAGE
            (
                FX_NO_CONNECTION,
                ConnectionLost,
                Err(ConnectionLost),
                ConnectionLost,
            ),
            (
                FX_CONNECTION_LOST,
                ConnectionLost,
                Err(ConnectionLost),
                ConnectionLost,
            ),
            (FX_OP_UNSUPPORTED, Permanent, Err(Permanent), Permanent),
            (9, Transient, Err(Transient), Transient), // INVALID_HANDLE
            (FX_NO_SUCH_PATH, Transient, Ok(()), RemoteMissing),
            (11, Transient, Err(Transient), Transient), // FILE_ALREADY_EXISTS
            (FX_WRITE_PROTECT, Permanent, Err(Permanent), Permanent),
            (13, Transient, Err(Transient), Transient), // NO_MEDIA
            (
                FX_NO_SPACE_ON_FILESYSTEM,
                Transient,
                Err(Transient),
                Transient,
            ),
            (FX_QUOTA_EXCEEDED, Transient, Err(Transient), Transient),
            (16, Transient, Err(Transient), Transient), // UNKNOWN_PRINCIPAL
            (17, Transient, Err(Transient), Transient), // LOCK_CONFLICT
            (18, Transient, Err(Transient), Transient), // DIR_NOT_EMPTY
            (19, Transient, Err(Transient), Transient), // NOT_A_DIRECTORY
            (FX_INVALID_FILENAME, Permanent, Err(Permanent), Permanent),
            (21, Transient, Err(Transient), Transient), // LINK_LOOP
        ];
        let (server, p) = ("sftp://u@h:22", Path::new("/srv/x"));
        for &(code, write, delete, rename) in rows {
            let err = sftp(code);
            let put = classify(&err, Op::Write, server, Some(p));
            assert_eq!(put.kind, write, "write: SFTP status {code}");
            // Writes through a file handle reach us as io::Errors: the same answer, except
            // "end of file", whose text is also that of a closed channel (a lost link).
            let io: io::Error = sftp(code).into();
            let through_handle = if code == 1 { ConnectionLost } else { write };
            assert_eq!(
                classify_io(&io, Op::Write, server, p).kind,
                through_handle,
                "write through a handle: SFTP status {code}"
            );
            // The send's rename into place is an `Op::Other` rename: a write.
            assert_eq!(
                classify(&err, Op::Other, server, Some(p)).kind,
                write,
                "rename into place: SFTP status {code}"
            );
            let deleted = if is_missing(&err) {
                Ok(())
            } else {
                Err(classify(&err, Op::Other, server, Some(p)).kind)
            };
            assert_eq!(deleted, delete, "delete: SFTP status {code}");
            let moved = classify(&err, Op::Rename, server, Some(p)).kind;
            assert_eq!(moved, rename, "rename: SFTP status {code}");
            assert_ne!(put.kind, RemoteMissing, "write: SFTP status {code}");
        }
    }

    #[test]
    fn sftp_codes() {
        let p = Path::new("/srv/x");
        let s = "sftp://u@h:22";
        let c = |code, op| classify(&sftp(code), op, s, Some(p));
        assert_eq!(
            c(FX_PERMISSION_DENIED, Op::Write).kind,
            ErrorKind::Permanent
        );
        assert!(c(FX_PERMISSION_DENIED, Op::Write)
            .message
            .contains("/srv/x"));
        assert_eq!(c(FX_FAILURE, Op::Write).kind, ErrorKind::Transient);
        assert!(c(FX_FAILURE, Op::Write).message.contains("disk full"));
        assert_eq!(
            c(FX_NO_SPACE_ON_FILESYSTEM, Op::Other).kind,
            ErrorKind::Transient
        );
        assert_eq!(
            c(FX_CONNECTION_LOST, Op::Other).kind,
            ErrorKind::ConnectionLost
        );
    }

    #[test]
    fn session_codes() {
        let s = "sftp://u@h:22";
        let timeout = ssh2::Error::from_errno(ErrorCode::Session(-9));
        assert_eq!(
            classify(&timeout, Op::Write, s, None).kind,
            ErrorKind::ConnectionLost
        );
        let auth = ssh2::Error::from_errno(ErrorCode::Session(-18));
        assert_eq!(classify(&auth, Op::Auth, s, None).kind, ErrorKind::Setup);
        let agent = ssh2::Error::from_errno(ErrorCode::Session(-39));
        assert_eq!(classify(&agent, Op::Auth, s, None).kind, ErrorKind::Setup);
        // The server went away while we waited for its answer to our key.
        let gone = ssh2::Error::new(ErrorCode::Session(-19), "Waiting for USERAUTH response");
        assert_eq!(
            classify(&gone, Op::Auth, s, None).kind,
            ErrorKind::ConnectionLost
        );
        assert_eq!(
            classify(&timeout, Op::Auth, s, None).kind,
            ErrorKind::ConnectionLost
        );
    }

    #[test]
    fn io_errors_recover_the_sftp_status() {
        let p = Path::new("/srv/x");
        let io: io::Error = sftp(FX_PERMISSION_DENIED).into();
        assert_eq!(
            classify_io(&io, Op::Write, "s", p).kind,
            ErrorKind::Permanent
        );
        let io: io::Error = sftp(FX_FAILURE).into();
        assert_eq!(
            classify_io(&io, Op::Write, "s", p).kind,
            ErrorKind::Transient
        );
        let io: io::Error = ssh2::Error::from_errno(ErrorCode::Session(-43)).into();
        assert_eq!(
            classify_io(&io, Op::Write, "s", p).kind,
            ErrorKind::ConnectionLost
        );
    }
}
