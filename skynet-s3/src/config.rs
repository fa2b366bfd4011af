//! `S3Config`: where a mapping's objects go and how the client behaves, parsed from
//! `s3://bucket/prefix` plus explicit overrides from the command line or a config file.
//!
//! Credentials, region and endpoint not given here come from the standard AWS chain
//! (environment, shared config files, web identity, instance metadata) when the connection is
//! built, so the config never has to hold secrets unless a caller passes them explicitly.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// One mebibyte, the unit of every size default below.
pub const MIB: u64 = 1024 * 1024;
/// S3's smallest allowed part (except the last one).
pub const MIN_PART_SIZE: u64 = 5 * MIB;
/// S3's largest allowed part and largest single PUT / CopyObject.
pub const MAX_SINGLE_OBJECT: u64 = 5 * 1024 * MIB;
/// S3's limit on the number of parts in one multipart upload.
pub const MAX_PARTS: u64 = 10_000;
/// S3's limit on the length of a key, in bytes of UTF-8.
pub const MAX_KEY_LEN: usize = 1024;

/// Why an S3 destination could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum S3ConfigError {
    #[error("{0:?} is not an s3:// URL (expected s3://bucket/prefix)")]
    NotS3Url(String),
    #[error("{0:?} names no bucket (expected s3://bucket/prefix)")]
    NoBucket(String),
    #[error("bucket name {0:?} is not valid (3 to 63 letters, digits, '.', '-', '_')")]
    InvalidBucket(String),
    #[error("prefix {0:?} is not valid: {1}")]
    InvalidPrefix(String, &'static str),
    #[error("URL {0:?} may not carry a query, fragment or credentials; use the AWS variables")]
    UnsupportedUrlPart(String),
    #[error("endpoint {0:?} is not an http:// or https:// URL")]
    InvalidEndpoint(String),
    #[error("{0}")]
    InvalidOption(String),
    #[error("multipart state database {path}: {source}")]
    StateDb {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "multipart state database {path}: made by a newer skynet (S3 schema {found}, this one \
         knows {known})"
    )]
    StateDbTooNew {
        path: String,
        found: i64,
        known: i64,
    },
}

/// Access keys given explicitly (tests, or a caller with its own secret store). The secret is
/// never printed: `Debug` redacts it.
#[derive(Clone)]
pub struct StaticCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Everything an [`crate::S3Connection`] needs. Build it with [`S3Config::from_url`] and
/// adjust the public fields; [`S3Config::validate`] runs again when the connection is made.
#[derive(Debug, Clone)]
pub struct S3Config {
    pub bucket: String,
    /// Key prefix without leading or trailing `/`; empty for the bucket root.
    pub prefix: String,
    /// Endpoint URL of an S3-compatible server; `None` uses `AWS_ENDPOINT_URL` or AWS itself.
    pub endpoint: Option<String>,
    /// Path-style addressing (`http://host/bucket/key`), needed by most S3-compatible servers.
    pub path_style: bool,
    /// Region; `None` uses the AWS chain (`AWS_REGION`, profile), then `us-east-1`.
    pub region: Option<String>,
    /// Explicit credentials; `None` uses the AWS chain.
    pub credentials: Option<StaticCredentials>,
    /// Files of at least this size are sent as multipart uploads (resumable).
    pub multipart_threshold: u64,
    /// Preferred part size; raised for big files so that 10,000 parts always suffice.
    pub part_size: u64,
    /// Parts of one file uploaded (or copied) at the same time.
    pub concurrency: usize,
    /// Objects above this size are renamed by a multipart copy (S3's CopyObject stops at 5 GiB).
    pub copy_threshold: u64,
    /// Preferred part size of a multipart copy.
    pub copy_part_size: u64,
    /// The mapping's SQLite file, where multipart uploads are recorded so that they resume
    /// after a restart. `None` keeps the record in memory (resume within this process only).
    pub state_db: Option<PathBuf>,
    /// Time allowed to open a TCP (and TLS) connection: a dead server is noticed quickly.
    pub connect_timeout: Duration,
    /// Time allowed without any response byte once a request is sent.
    pub read_timeout: Duration,
    /// Time allowed for one attempt of one request (a part upload included).
    pub attempt_timeout: Duration,
    /// Attempts per request made by the SDK itself; the skynet handler retries with backoff on
    /// top, so this stays small.
    pub max_attempts: u32,
}

impl S3Config {
    /// A config with the defaults for `bucket` and `prefix` (normalized: surrounding `/`
    /// removed).
    pub fn new(bucket: &str, prefix: &str) -> Result<Self, S3ConfigError> {
        let cfg = S3Config {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            endpoint: None,
            path_style: false,
            region: None,
            credentials: None,
            multipart_threshold: 16 * MIB,
            part_size: 8 * MIB,
            concurrency: 4,
            copy_threshold: MAX_SINGLE_OBJECT,
            copy_part_size: 512 * MIB,
            state_db: None,
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(60),
            attempt_timeout: Duration::from_secs(15 * 60),
            max_attempts: 2,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses `s3://bucket`, `s3://bucket/` or `s3://bucket/some/prefix/`.
    pub fn from_url(url: &str) -> Result<Self, S3ConfigError> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| S3ConfigError::NotS3Url(url.to_string()))?;
        if rest.contains(['?', '#', '@']) {
            // Never echo what stands before an '@': it may be a secret key.
            let shown = match rest.rfind('@') {
                Some(at) => format!("s3://***@{}", &rest[at + 1..]),
                None => url.to_string(),
            };
            return Err(S3ConfigError::UnsupportedUrlPart(shown));
        }
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(S3ConfigError::NoBucket(url.to_string()));
        }
        Self::new(bucket, prefix)
    }

    /// Checks names and numbers; called by the constructors and again by the connection.
    pub fn validate(&self) -> Result<(), S3ConfigError> {
        let b = &self.bucket;
        let bucket_ok = (3..=63).contains(&b.len())
            && b.bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_'));
        if !bucket_ok {
            return Err(S3ConfigError::InvalidBucket(b.clone()));
        }
        let p = &self.prefix;
        if p.starts_with('/') || p.ends_with('/') {
            return Err(S3ConfigError::InvalidPrefix(
                p.clone(),
                "leading or trailing '/'",
            ));
        }
        if !p.is_empty() && p.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
            return Err(S3ConfigError::InvalidPrefix(
                p.clone(),
                "empty, '.' or '..' component",
            ));
        }
        if p.contains('\0') {
            return Err(S3ConfigError::InvalidPrefix(p.clone(), "NUL byte"));
        }
        if p.len() >= MAX_KEY_LEN {
            return Err(S3ConfigError::InvalidPrefix(
                p.clone(),
                "longer than 1023 bytes",
            ));
        }
        if let Some(ep) = &self.endpoint {
            if !(ep.starts_with("http://") || ep.starts_with("https://")) {
                return Err(S3ConfigError::InvalidEndpoint(ep.clone()));
            }
        }
        if self.part_size < MIN_PART_SIZE || self.part_size > MAX_SINGLE_OBJECT {
            return Err(S3ConfigError::InvalidOption(format!(
                "part size {} must be between 5 MiB and 5 GiB",
                self.part_size
            )));
        }
        if self.copy_part_size < MIN_PART_SIZE || self.copy_part_size > MAX_SINGLE_OBJECT {
            return Err(S3ConfigError::InvalidOption(format!(
                "copy part size {} must be between 5 MiB and 5 GiB",
                self.copy_part_size
            )));
        }
        if self.multipart_threshold > MAX_SINGLE_OBJECT || self.copy_threshold > MAX_SINGLE_OBJECT {
            return Err(S3ConfigError::InvalidOption(
                "multipart and copy thresholds must be at most 5 GiB".to_string(),
            ));
        }
        if self.concurrency == 0 || self.max_attempts == 0 {
            return Err(S3ConfigError::InvalidOption(
                "concurrency and max attempts must be at least 1".to_string(),
            ));
        }
        Ok(())
    }

    /// `s3://bucket/prefix`, for logs (the endpoint is added by the connection).
    pub fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

/// The endpoint for display: scheme, host, port and path, with any `user:password@` removed.
pub(crate) fn redact_endpoint(endpoint: &str) -> String {
    match endpoint.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit('@').next().unwrap_or(authority);
            format!("{scheme}://{host}{path}")
        }
        None => endpoint.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let c = S3Config::from_url("s3://my-bucket/a/b/").unwrap();
        assert_eq!((c.bucket.as_str(), c.prefix.as_str()), ("my-bucket", "a/b"));
        assert_eq!(c.url(), "s3://my-bucket/a/b");
        let c = S3Config::from_url("s3://my-bucket").unwrap();
        assert_eq!(c.prefix, "");
        assert_eq!(c.url(), "s3://my-bucket");
        assert_eq!(S3Config::from_url("s3://bkt/").unwrap().prefix, "");
    }

    #[test]
    fn refuses_bad_urls() {
        assert!(matches!(
            S3Config::from_url("http://x/y"),
            Err(S3ConfigError::NotS3Url(_))
        ));
        assert!(matches!(
            S3Config::from_url("s3:///p"),
            Err(S3ConfigError::NoBucket(_))
        ));
        assert!(matches!(
            S3Config::from_url("s3://a/p"),
            Err(S3ConfigError::InvalidBucket(_))
        ));
        assert!(matches!(
            S3Config::from_url("s3://bkt/a//b"),
            Err(S3ConfigError::InvalidPrefix(..))
        ));
        assert!(matches!(
            S3Config::from_url("s3://bkt/a/../b"),
            Err(S3ConfigError::InvalidPrefix(..))
        ));
        let err = S3Config::from_url("s3://key:secret@bkt/a").unwrap_err();
        assert!(matches!(err, S3ConfigError::UnsupportedUrlPart(_)), "{err}");
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn secrets_are_not_printed() {
        let creds = StaticCredentials {
            access_key_id: "AKID".into(),
            secret_access_key: "very-secret".into(),
            session_token: Some("tok".into()),
        };
        let shown = format!("{creds:?}");
        assert!(
            !shown.contains("very-secret") && !shown.contains("tok\""),
            "{shown}"
        );
        assert_eq!(
            redact_endpoint("http://u:p@host:9000/x"),
            "http://host:9000/x"
        );
        assert_eq!(redact_endpoint("https://host"), "https://host");
    }
}
