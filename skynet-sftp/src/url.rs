//! Parsing of `sftp://[user@]host[:port]/path` destinations.
//!
//! Hand-written rather than a general URL parser because the rules are specific: `/~/x` means
//! "relative to the login's home directory" (SFTP resolves relative paths there), the path is
//! raw bytes after percent-decoding (remote names need not be UTF-8), and a password in the
//! URL is refused so that it can never end up in shell history, logs or `status` output.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use percent_encoding::percent_decode_str;

use crate::errors::SftpError;

/// The parts of an `sftp://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SftpUrl {
    pub user: Option<String>,
    /// Host name or address, without IPv6 brackets.
    pub host: String,
    pub port: Option<u16>,
    /// Absolute remote path, or a path relative to the home directory (`/~/x` gives `x`,
    /// `/~` gives `.`).
    pub path: PathBuf,
}

impl SftpUrl {
    pub fn parse(url: &str) -> Result<SftpUrl, SftpError> {
        let bad = |why: &str| SftpError::InvalidUrl {
            url: redact_url(url),
            reason: why.to_string(),
        };
        let rest = url
            .strip_prefix("sftp://")
            .ok_or_else(|| bad("must start with sftp://"))?;
        if rest.contains(['?', '#']) {
            return Err(bad("query strings and fragments are not supported"));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        let user = match userinfo {
            None => None,
            Some(u) if u.contains(':') => {
                return Err(bad(
                    "passwords in URLs are not accepted; set SKYNET_SFTP_PASSWORD instead",
                ))
            }
            Some("") => return Err(bad("empty user name")),
            Some(u) => Some(
                percent_decode_str(u)
                    .decode_utf8()
                    .map_err(|_| bad("user name is not UTF-8"))?
                    .into_owned(),
            ),
        };
        let (host, port) = split_host_port(hostport).map_err(&bad)?;
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        let decoded: Vec<u8> = percent_decode_str(path).collect();
        if decoded.contains(&0) {
            return Err(bad("path contains a NUL byte"));
        }
        let path = if decoded.is_empty() {
            return Err(bad(
                "missing remote path (use /abs/path, or /~/path for the home directory)",
            ));
        } else if decoded == b"/~" || decoded == b"/~/" {
            PathBuf::from(".")
        } else if let Some(rel) = decoded.strip_prefix(b"/~/") {
            PathBuf::from(OsString::from_vec(rel.to_vec()))
        } else {
            PathBuf::from(OsString::from_vec(decoded))
        };
        Ok(SftpUrl {
            user,
            host,
            port,
            path,
        })
    }
}

fn split_host_port(hostport: &str) -> Result<(String, Option<u16>), &'static str> {
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let end = rest.find(']').ok_or("unclosed '[' in IPv6 address")?;
        let host = &rest[..end];
        let after = &rest[end + 1..];
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None => return Err("unexpected text after IPv6 address"),
            },
        }
    } else {
        match hostport.rfind(':') {
            Some(i) if hostport[..i].contains(':') => {
                return Err("IPv6 addresses must be written in brackets, as [::1]")
            }
            Some(i) => (&hostport[..i], Some(&hostport[i + 1..])),
            None => (hostport, None),
        }
    };
    let port = match port {
        None | Some("") => None,
        Some(p) => match p.parse::<u16>() {
            Ok(0) | Err(_) => return Err("port must be a number from 1 to 65535"),
            Ok(n) => Some(n),
        },
    };
    Ok((host.to_string(), port))
}

/// The URL with any `user:password@` part hidden, for error messages.
fn redact_url(url: &str) -> String {
    let Some(rest) = url.strip_prefix("sftp://") else {
        return url.chars().take(200).collect();
    };
    let end = rest.find('/').unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) if rest[..at].contains(':') => {
            let user = &rest[..rest[..at].find(':').unwrap_or(at)];
            format!("sftp://{user}:***@{}", &rest[at + 1..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(url: &str) -> SftpUrl {
        SftpUrl::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    #[test]
    fn parses_the_usual_forms() {
        let u = ok("sftp://alice@example.org:2222/srv/backup");
        assert_eq!(u.user.as_deref(), Some("alice"));
        assert_eq!(u.host, "example.org");
        assert_eq!(u.port, Some(2222));
        assert_eq!(u.path, PathBuf::from("/srv/backup"));

        let u = ok("sftp://example.org/data");
        assert_eq!((u.user, u.port), (None, None));

        let u = ok("sftp://bob@[::1]:22/x");
        assert_eq!(u.host, "::1");
        assert_eq!(u.port, Some(22));
        assert_eq!(ok("sftp://[fe80::1]/x").host, "fe80::1");
    }

    #[test]
    fn home_relative_paths() {
        assert_eq!(ok("sftp://h/~/backup/x").path, PathBuf::from("backup/x"));
        assert_eq!(ok("sftp://h/~").path, PathBuf::from("."));
        assert_eq!(ok("sftp://h/~/").path, PathBuf::from("."));
        assert_eq!(ok("sftp://h/").path, PathBuf::from("/"));
        // A literal "~" in the middle is just a name.
        assert_eq!(ok("sftp://h/a/~/b").path, PathBuf::from("/a/~/b"));
    }

    #[test]
    fn percent_decoding() {
        let u = ok("sftp://j%40doe@h/with%20space/%C3%BC/%FF");
        assert_eq!(u.user.as_deref(), Some("j@doe"));
        use std::os::unix::ffi::OsStrExt;
        assert_eq!(
            u.path.as_os_str().as_bytes(),
            b"/with space/\xc3\xbc/\xff".as_slice()
        );
    }

    #[test]
    fn refusals() {
        for bad in [
            "http://h/x",
            "sftp://h",
            "sftp:///x",
            "sftp://h:0/x",
            "sftp://h:99999/x",
            "sftp://h:abc/x",
            "sftp://::1/x",
            "sftp://[::1/x",
            "sftp://@h/x",
            "sftp://h/x?y=1",
            "sftp://h/a%00b",
        ] {
            assert!(SftpUrl::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn password_in_url_is_refused_and_never_echoed() {
        let err = SftpUrl::parse("sftp://u:hunter2@h/x")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(err.contains("SKYNET_SFTP_PASSWORD"), "{err}");
    }
}
