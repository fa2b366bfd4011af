//! The one place where SDK errors become classified [`ConnError`]s, and where every decision
//! on an S3 error code is made: callers ask an [`S3Failure`] what it means (a missing object,
//! a missing upload, a hopeless completion...) and never compare codes themselves, so that
//! how an answer is read (a `NoSuchBucket` is never a missing object, though it is a 404)
//! is decided once for every operation.
//!
//! The handler's retry policy depends only on the kind, so this table decides how skynet
//! reacts to every S3 failure: link problems pause the handler and reconnect
//! (`ConnectionLost`), server trouble and throttling are retried (`Transient`), bad credentials
//! or a missing bucket stop the mapping (`Setup`), and a problem with one object parks that
//! action (`Permanent`).
//!
//! "Not found" is never read from a status code alone: a 404 to a PUT comes from a server or
//! proxy that did not take the request (a router that cannot route the key, say), so
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

    /// A 500 answer without a more specific code. Servers that store keys as file paths give
    /// it for a request on a "directory" (a key with keys under it), so callers that can
    /// settle the question another way (a listing) do.
    pub(crate) fn is_plain_server_error(&self) -> bool {
        self.status == Some(500)
    }

    /// The answer names the bucket as missing: never "the object is not there", whatever
    /// the status (S3 answers it with 404 too), because the whole destination is unusable.
    fn is_no_such_bucket(&self) -> bool {
        self.code.as_deref() == Some("NoSuchBucket")
    }

    /// The object asked about is not there (and the bucket is): a HEAD, or the source of a
    /// copy, answered "not found".
    pub(crate) fn is_missing_object(&self) -> bool {
        self.is_not_found() && !self.is_no_such_bucket()
    }

    /// The multipart upload asked about is gone (and the bucket is not): an abort, a listing
    /// of its parts, answered "no such upload".
    pub(crate) fn is_missing_upload(&self) -> bool {
        self.is_no_such_upload() && !self.is_no_such_bucket()
    }

    /// The server said `NoSuchUpload` by its code (a part sent to an upload that is gone).
    pub(crate) fn names_upload_unknown(&self) -> bool {
        self.code.as_deref() == Some("NoSuchUpload")
    }

    /// The server said `AccessDenied`. Some servers answer so for an upload id they no longer
    /// know, so for an upload skynet resumed it means "gone" as much as "refused".
    pub(crate) fn is_access_denied(&self) -> bool {
        self.code.as_deref() == Some("AccessDenied")
    }

    /// The server said `NoSuchKey` by its code: the object named does not exist (the source
    /// of a part copy, a key to delete). A bare 404 does not count (see the module doc).
    pub(crate) fn is_no_such_key(&self) -> bool {
        self.code.as_deref() == Some("NoSuchKey")
    }

    /// A failed CompleteMultipartUpload that will fail the same way however often it is
    /// retried: the upload is gone (or, for a `resumed` one, refused as if gone), or its parts
    /// do not make an object. The upload is then started over rather than retried forever.
    pub(crate) fn is_completion_hopeless(&self, resumed: bool) -> bool {
        let hopeless = self.is_no_such_upload()
            || (resumed && self.is_access_denied())
            || matches!(
                self.code.as_deref(),
                Some("InvalidPart" | "InvalidPartOrder" | "EntityTooSmall" | "InvalidRequest")
            );
        hopeless && !self.is_no_such_bucket()
    }

    /// Why the bucket probe of `connect` was refused, for a Setup message: a hint in words
    /// and the code (or HTTP status) it comes from.
    pub(crate) fn refusal(&self) -> String {
        let code = self
            .code
            .clone()
            .unwrap_or_else(|| format!("HTTP {}", self.status.unwrap_or(0)));
        let hint = match code.as_str() {
            "NoSuchBucket" => "the bucket does not exist",
            "InvalidAccessKeyId" => "the access key id is not known to the server",
            "SignatureDoesNotMatch" => "the secret access key is wrong",
            "AccessDenied" => "access denied to these credentials",
            _ => "refused",
        };
        format!("{hint} ({code})")
    }
}

/// The failure of one key in a DeleteObjects answer (which reports per-key errors inside a
/// 200), classified by its code like any other error answer. `what` names the operation
/// and key; `message` is the server's text.
pub(crate) fn batch_delete_error(what: &str, code: Option<&str>, message: &str) -> ConnError {
    let code = code.unwrap_or("error");
    ConnError::new(
        kind_for(500, Some(code)),
        one_line(&format!("{what}: {code}: {message}")),
    )
}

/// What a failed DeleteObject comes to. Deleting a missing key is success (the contract),
/// but only when the server said so with S3's own code: a bare 404 (no code, or another
/// one) comes from something that did not take the request, and proves nothing.
pub(crate) fn delete_answer(f: S3Failure) -> Result<(), ConnError> {
    if f.is_no_such_key() {
        Ok(())
    } else {
        Err(f.into())
    }
}

/// What a failed copy (the first half of a rename) comes to: a missing source is the
/// rename's missing source, which the handler answers by sending the local target.
pub(crate) fn copy_error(f: S3Failure) -> ConnError {
    if f.is_missing_object() {
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
fn kind_for(status: u16, code: Option<&str>) -> ErrorKind {
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

    /// A missing bucket is never a missing object or upload, though S3 answers it with 404:
    /// reading it so would make skynet skip work against a bucket that is not there.
    #[test]
    fn a_missing_bucket_is_not_a_missing_object() {
        let bucket = answer(404, Some("NoSuchBucket"));
        assert!(bucket.is_not_found() && !bucket.is_missing_object());
        assert!(bucket.is_no_such_upload() && !bucket.is_missing_upload());
        assert!(!bucket.is_completion_hopeless(true));
        assert_eq!(bucket.refusal(), "the bucket does not exist (NoSuchBucket)");
        assert!(answer(404, Some("NoSuchKey")).is_missing_object());
        assert!(answer(404, None).is_missing_object());
        assert!(answer(404, None).is_missing_upload());
        assert!(!answer(404, None).names_upload_unknown());
        assert!(answer(404, Some("NoSuchUpload")).names_upload_unknown());
        assert!(answer(403, Some("AccessDenied")).is_completion_hopeless(true));
        assert!(!answer(403, Some("AccessDenied")).is_completion_hopeless(false));
        assert!(answer(400, Some("InvalidPart")).is_completion_hopeless(false));
        assert!(!answer(500, Some("InternalError")).is_completion_hopeless(true));
        assert_eq!(answer(403, None).refusal(), "refused (HTTP 403)");
        let e = batch_delete_error("d: delete \"k\"", Some("AccessDenied"), "no");
        assert_eq!(e.kind, ErrorKind::Setup);
        assert_eq!(e.message, "d: delete \"k\": AccessDenied: no");
        assert_eq!(batch_delete_error("w", None, "").kind, ErrorKind::Transient);
    }
}
