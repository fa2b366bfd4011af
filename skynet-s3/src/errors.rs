//! The one place where SDK errors become classified [`ConnError`]s.
//!
//! The handler's retry policy depends only on the kind, so this table decides how skynet
//! reacts to every S3 failure: link problems pause the handler and reconnect
//! (`ConnectionLost`), server trouble and throttling are retried (`Transient`), bad credentials
//! or a missing bucket stop the mapping (`Setup`), and a problem with one object parks that
//! action (`Permanent`).
//!
//! "Not found" is never read from a status code alone: a 404 to a PUT comes from a server or
//! proxy that did not take the request (moto answers one to a key holding a newline), so
//! by itself it is a failure, retried and then parked. Only the callers that asked whether
//! something exists (a HEAD, a delete, the source of a copy) read a "no such key" answer,
//! through [`S3Failure::is_not_found`], [`delete_answer`] and [`copy_error`]. Nothing here
//! can say that the local file vanished: the handler decides that by looking at it.

use std::error::Error as StdError;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use skynet_core::{ConnError, ErrorKind};

/// A classified S3 failure, keeping the HTTP status and error code so that callers can handle
/// expected answers (404 on a HEAD, `NoSuchUpload` on a resume) before converting it.
#[derive(Debug)]
pub(crate) struct S3Failure {
    pub kind: ErrorKind,
    pub status: Option<u16>,
    pub code: Option<String>,
    pub message: String,
}

impl S3Failure {
    /// 404 or a "no such ..." code: the object, upload or bucket is not there.
    pub(crate) fn is_not_found(&self) -> bool {
        self.status == Some(404)
            || matches!(
                self.code.as_deref(),
                Some("NoSuchKey" | "NotFound" | "NoSuchUpload")
            )
    }

    /// The multipart upload is unknown to the server (completed, aborted or expired).
    pub(crate) fn is_no_such_upload(&self) -> bool {
        self.code.as_deref() == Some("NoSuchUpload") || self.status == Some(404)
    }

    /// A 500 answer without a more specific code (s3s-fs gives it for HEAD on a "directory").
    pub(crate) fn is_plain_server_error(&self) -> bool {
        self.status == Some(500)
    }
}

/// What a failed DeleteObject comes to. Deleting a missing key is success (the contract),
/// but only when the server said so with S3's own code: a bare 404 (no code, or another
/// one) comes from something that did not take the request, and proves nothing.
pub(crate) fn delete_answer(f: S3Failure) -> Result<(), ConnError> {
    if f.code.as_deref() == Some("NoSuchKey") {
        Ok(())
    } else {
        Err(f.into())
    }
}

/// What a failed copy (the first half of a rename) comes to: a missing source is the
/// rename's missing source, which the handler answers by sending the local target.
pub(crate) fn copy_error(f: S3Failure) -> ConnError {
    if f.is_not_found() && f.code.as_deref() != Some("NoSuchBucket") {
        ConnError::remote_missing(f.message)
    } else {
        f.into()
    }
}

impl From<S3Failure> for ConnError {
    fn from(f: S3Failure) -> ConnError {
        ConnError::new(f.kind, f.message)
    }
}

/// Error codes meaning the destination as configured is unusable.
const SETUP_CODES: &[&str] = &[
    "AccessDenied",
    "AllAccessDisabled",
    "AccountProblem",
    "AuthorizationHeaderMalformed",
    "ExpiredToken",
    "InvalidAccessKeyId",
    "InvalidBucketName",
    "InvalidToken",
    "NoSuchBucket",
    "NotSignedUp",
    "PermanentRedirect",
    "RequestTimeTooSkewed",
    "SignatureDoesNotMatch",
    "TokenRefreshRequired",
];

/// Error codes worth retrying later as they are.
const TRANSIENT_CODES: &[&str] = &[
    "BadDigest",
    "InternalError",
    "OperationAborted",
    "RequestTimeout",
    "ServiceUnavailable",
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "XAmzContentSHA256Mismatch",
    "InvalidDigest",
    "IncompleteBody",
    "NoSuchUpload",
];

/// Classifies the failure of one request; `what` says which (bucket, key, operation) and ends
/// up at the start of the one-line message.
pub(crate) fn classify<E>(err: SdkError<E, HttpResponse>, what: &str) -> S3Failure
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    match &err {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let code = service.err().code().map(str::to_string);
            let detail = service.err().message().unwrap_or("").to_string();
            let kind = kind_for(status, code.as_deref());
            let code_text = code.as_deref().unwrap_or(default_code(status));
            let message = if detail.is_empty() {
                format!("{what}: {code_text} (HTTP {status})")
            } else {
                format!("{what}: {code_text} (HTTP {status}): {detail}")
            };
            S3Failure {
                kind,
                status: Some(status),
                code,
                message: one_line(&message),
            }
        }
        SdkError::TimeoutError(_) => lost(what, "timed out", &err),
        SdkError::DispatchFailure(d) if d.is_user() => S3Failure {
            kind: ErrorKind::Permanent,
            status: None,
            code: None,
            message: one_line(&format!(
                "{what}: request refused by the client: {}",
                chain(&err)
            )),
        },
        SdkError::DispatchFailure(_) => lost(what, "cannot reach the server", &err),
        SdkError::ResponseError(_) => {
            // A response cut short by the link is a lost connection; anything else is a
            // garbled answer, worth another try.
            if has_io_error(&err) {
                lost(what, "connection broken", &err)
            } else {
                S3Failure {
                    kind: ErrorKind::Transient,
                    status: err.raw_response().map(|r| r.status().as_u16()),
                    code: None,
                    message: one_line(&format!("{what}: bad response: {}", chain(&err))),
                }
            }
        }
        _ => {
            // Construction failures: missing credentials land here, as does anything the SDK
            // refused to send.
            let text = chain(&err);
            let kind = if text.contains("credentials") || text.contains("identity") {
                ErrorKind::Setup
            } else {
                ErrorKind::Permanent
            };
            S3Failure {
                kind,
                status: None,
                code: None,
                message: one_line(&format!("{what}: {text}")),
            }
        }
    }
}

/// The kind for an error response, by code first and HTTP status second.
pub(crate) fn kind_for(status: u16, code: Option<&str>) -> ErrorKind {
    if let Some(code) = code {
        if SETUP_CODES.contains(&code) {
            return ErrorKind::Setup;
        }
        if TRANSIENT_CODES.contains(&code) {
            return ErrorKind::Transient;
        }
    }
    match status {
        401 | 403 => ErrorKind::Setup,
        404 | 408 | 409 | 429 => ErrorKind::Transient,
        500..=599 => ErrorKind::Transient,
        _ => ErrorKind::Permanent,
    }
}

/// The code S3 would have sent for a body-less answer (HEAD).
fn default_code(status: u16) -> &'static str {
    match status {
        301 => "PermanentRedirect",
        400 => "BadRequest",
        403 => "Forbidden (access denied or bad credentials)",
        404 => "NotFound",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        _ => "error",
    }
}

fn lost<E, R>(what: &str, why: &str, err: &SdkError<E, R>) -> S3Failure
where
    E: StdError + 'static,
    R: std::fmt::Debug,
{
    S3Failure {
        kind: ErrorKind::ConnectionLost,
        status: None,
        code: None,
        message: one_line(&format!("{what}: {why}: {}", chain(err))),
    }
}

/// The error with its causes, on one line.
fn chain<E, R>(err: &SdkError<E, R>) -> String
where
    E: StdError + 'static,
    R: std::fmt::Debug,
{
    format!("{}", DisplayErrorContext(err))
}

fn has_io_error(err: &(dyn StdError + 'static)) -> bool {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if e.is::<std::io::Error>() {
            return true;
        }
        cur = e.source();
    }
    false
}

pub(crate) use skynet_core::error::one_line;

#[cfg(test)]
mod tests {
    use super::*;

    /// An error answer as `classify` makes it.
    fn answer(status: u16, code: Option<&str>) -> S3Failure {
        S3Failure {
            kind: kind_for(status, code),
            status: Some(status),
            code: code.map(str::to_string),
            message: format!("put b/k: {} (HTTP {status})", code.unwrap_or("-")),
        }
    }

    /// What a delete made of an answer: done, or the kind of its error.
    fn deleted(f: S3Failure) -> Result<(), ErrorKind> {
        delete_answer(f).map_err(|e| e.kind)
    }

    /// Every error answer to a write (PUT, multipart), a delete and a rename (copy), and
    /// what it becomes. No answer to a write is success or "nothing to do"; a delete is done
    /// only when S3 itself says the key does not exist; a rename's source is missing only
    /// on a "not found"; and no answer can say anything about the local file (no kind does).
    #[test]
    fn error_answers_table() {
        use ErrorKind::*;
        type Row = (
            u16,
            Option<&'static str>,
            ErrorKind,
            Result<(), ErrorKind>,
            ErrorKind,
        );
        // (status, code, write, delete, rename)
        let rows: &[Row] = &[
            // moto's answer to a key holding a newline: a router's 404, no S3 code.
            (404, None, Transient, Err(Transient), RemoteMissing),
            (404, Some("404"), Transient, Err(Transient), RemoteMissing),
            (
                404,
                Some("NotFound"),
                Transient,
                Err(Transient),
                RemoteMissing,
            ),
            (404, Some("NoSuchKey"), Transient, Ok(()), RemoteMissing),
            (
                404,
                Some("NoSuchUpload"),
                Transient,
                Err(Transient),
                RemoteMissing,
            ),
            (404, Some("NoSuchBucket"), Setup, Err(Setup), Setup),
            (403, Some("AccessDenied"), Setup, Err(Setup), Setup),
            (403, Some("SignatureDoesNotMatch"), Setup, Err(Setup), Setup),
            (403, Some("InvalidAccessKeyId"), Setup, Err(Setup), Setup),
            (403, None, Setup, Err(Setup), Setup),
            (401, None, Setup, Err(Setup), Setup),
            (301, Some("PermanentRedirect"), Setup, Err(Setup), Setup),
            (
                307,
                Some("TemporaryRedirect"),
                Permanent,
                Err(Permanent),
                Permanent,
            ),
            (
                400,
                Some("KeyTooLongError"),
                Permanent,
                Err(Permanent),
                Permanent,
            ),
            (
                400,
                Some("EntityTooLarge"),
                Permanent,
                Err(Permanent),
                Permanent,
            ),
            (
                400,
                Some("InvalidArgument"),
                Permanent,
                Err(Permanent),
                Permanent,
            ),
            (400, Some("BadDigest"), Transient, Err(Transient), Transient),
            (
                400,
                Some("RequestTimeout"),
                Transient,
                Err(Transient),
                Transient,
            ),
            (400, None, Permanent, Err(Permanent), Permanent),
            (
                405,
                Some("MethodNotAllowed"),
                Permanent,
                Err(Permanent),
                Permanent,
            ),
            (
                409,
                Some("OperationAborted"),
                Transient,
                Err(Transient),
                Transient,
            ),
            (409, None, Transient, Err(Transient), Transient),
            (
                411,
                Some("MissingContentLength"),
                Permanent,
                Err(Permanent),
                Permanent,
            ),
            (
                412,
                Some("PreconditionFailed"),
                Permanent,
                Err(Permanent),
                Permanent,
            ),
            (429, None, Transient, Err(Transient), Transient),
            (
                500,
                Some("InternalError"),
                Transient,
                Err(Transient),
                Transient,
            ),
            (500, None, Transient, Err(Transient), Transient),
            (
                501,
                Some("NotImplemented"),
                Transient,
                Err(Transient),
                Transient,
            ),
            (503, Some("SlowDown"), Transient, Err(Transient), Transient),
            (503, None, Transient, Err(Transient), Transient),
            // An error inside a 200 answer (CopyObject, CompleteMultipartUpload).
            (
                200,
                Some("InternalError"),
                Transient,
                Err(Transient),
                Transient,
            ),
        ];
        for &(status, code, write, delete, rename) in rows {
            let row = format!("HTTP {status} {code:?}");
            let put: ConnError = answer(status, code).into();
            assert_eq!(put.kind, write, "write: {row}");
            assert_ne!(put.kind, RemoteMissing, "write: {row}");
            assert_eq!(deleted(answer(status, code)), delete, "delete: {row}");
            assert_eq!(
                copy_error(answer(status, code)).kind,
                rename,
                "rename: {row}"
            );
        }
        assert_eq!(one_line("a\nb  c"), "a b c");
    }
}
