//! Mapping between `RelPath`s and object keys: `prefix/relative/path`, `/` separated, no
//! leading slash. Names S3 cannot hold are refused as permanent errors, never mangled, so two
//! different local names can never land on the same key.

use skynet_core::{ConnError, RelPath};

use crate::config::MAX_KEY_LEN;

/// The key layout of one mapping.
#[derive(Debug, Clone)]
pub(crate) struct KeyMap {
    /// `""` or `prefix/`: every key of the mapping starts with it.
    root: String,
}

impl KeyMap {
    pub(crate) fn new(prefix: &str) -> Self {
        let root = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        KeyMap { root }
    }

    /// The prefix every key of the mapping starts with (`""` or ending in `/`).
    pub(crate) fn root(&self) -> &str {
        &self.root
    }

    /// The key of a file. Non-UTF-8 names and keys over 1024 bytes are permanent errors.
    pub(crate) fn key(&self, path: &RelPath) -> Result<String, ConnError> {
        let Some(text) = path.as_str() else {
            return Err(ConnError::permanent(format!(
                "{}: the name is not valid UTF-8, which S3 keys must be",
                path.display()
            )));
        };
        let key = format!("{}{text}", self.root);
        if key.len() > MAX_KEY_LEN {
            return Err(ConnError::permanent(format!(
                "{}: the key would be {} bytes long, over S3's limit of {MAX_KEY_LEN}",
                path.display(),
                key.len()
            )));
        }
        Ok(key)
    }

    /// The prefix of everything under `path` seen as a directory (`key/`). Not length-checked:
    /// it is only listed, and a too-long prefix simply lists nothing.
    pub(crate) fn dir_prefix(&self, path: &RelPath) -> Result<String, ConnError> {
        match path.as_str() {
            Some(text) => Ok(format!("{}{text}/", self.root)),
            None => Err(ConnError::permanent(format!(
                "{}: the name is not valid UTF-8, which S3 keys must be",
                path.display()
            ))),
        }
    }

    /// The `RelPath` of a listed key, or `None` for keys outside the mapping or that no local
    /// file could have produced (`a//b`, trailing `/` folder markers).
    pub(crate) fn rel(&self, key: &str) -> Option<RelPath> {
        let rest = key.strip_prefix(&self.root)?;
        RelPath::from_bytes(rest.as_bytes()).ok()
    }
}

/// Percent-encodes a key for the `x-amz-copy-source` header: everything but unreserved
/// characters and `/` is escaped, as S3 requires.
pub(crate) fn encode_copy_source(bucket: &str, key: &str) -> String {
    let mut out = String::with_capacity(bucket.len() + key.len() + 8);
    out.push_str(bucket);
    out.push('/');
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use skynet_core::ErrorKind;

    fn p(s: &[u8]) -> RelPath {
        RelPath::from_bytes(s).unwrap()
    }

    #[test]
    fn maps_keys() {
        let m = KeyMap::new("pre/fix");
        assert_eq!(m.key(&p(b"a/b.txt")).unwrap(), "pre/fix/a/b.txt");
        assert_eq!(m.dir_prefix(&p(b"a")).unwrap(), "pre/fix/a/");
        assert_eq!(m.rel("pre/fix/a/b.txt"), Some(p(b"a/b.txt")));
        assert_eq!(m.rel("pre/fixed"), None);
        assert_eq!(m.rel("pre/fix/a//b"), None);
        assert_eq!(m.rel("pre/fix/dir/"), None);
        let root = KeyMap::new("");
        assert_eq!(root.key(&p(b"x")).unwrap(), "x");
        assert_eq!(root.rel("x/y"), Some(p(b"x/y")));
    }

    #[test]
    fn refuses_what_s3_cannot_hold() {
        let m = KeyMap::new("p");
        let err = m.key(&p(b"bad\xffname")).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Permanent);
        assert!(err.message.contains("UTF-8"), "{}", err.message);
        let long = "x".repeat(1023);
        let err = m.key(&p(long.as_bytes())).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Permanent);
        assert!(m.key(&p("x".repeat(1022).as_bytes())).is_ok());
    }

    #[test]
    fn encodes_copy_sources() {
        assert_eq!(encode_copy_source("b", "a b/ü+%"), "b/a%20b/%C3%BC%2B%25");
    }
}
