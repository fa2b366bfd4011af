//! The one place where SDK errors become classified [`ConnError`]s.
//!
//! The handler's retry policy depends only on the kind, so this table decides how skynet
//! reacts to every S3 failure: link problems pause the handler and reconnect
//! (`ConnectionLost`), server trouble and throttling are retried (`Transient`), bad credentials
//! or a missing bucket stop the mapping (`Setup`), and a problem with one object parks that
//! action (`Permanent`).

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
        if code == "NoSuchKey" {
            return ErrorKind::SourceMissing;
        }
    }
    match status {
        401 | 403 => ErrorKind::Setup,
        404 => ErrorKind::SourceMissing,
        408 | 409 | 429 => ErrorKind::Transient,
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

/// Messages are one line: the handler logs and `status` show them as such.
pub(crate) fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        assert_eq!(kind_for(503, Some("SlowDown")), ErrorKind::Transient);
        assert_eq!(kind_for(500, None), ErrorKind::Transient);
        assert_eq!(kind_for(503, None), ErrorKind::Transient);
        assert_eq!(kind_for(403, Some("AccessDenied")), ErrorKind::Setup);
        assert_eq!(
            kind_for(403, Some("SignatureDoesNotMatch")),
            ErrorKind::Setup
        );
        assert_eq!(kind_for(403, Some("InvalidAccessKeyId")), ErrorKind::Setup);
        assert_eq!(kind_for(404, Some("NoSuchBucket")), ErrorKind::Setup);
        assert_eq!(kind_for(403, None), ErrorKind::Setup);
        assert_eq!(kind_for(404, Some("NoSuchKey")), ErrorKind::SourceMissing);
        assert_eq!(kind_for(400, Some("KeyTooLongError")), ErrorKind::Permanent);
        assert_eq!(kind_for(400, Some("EntityTooLarge")), ErrorKind::Permanent);
        assert_eq!(one_line("a\nb  c"), "a b c");
    }
}
