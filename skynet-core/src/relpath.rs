//! `RelPath`: a path relative to a mapping's source root, validated so that it can never
//! escape the destination root once mapped (what the behaviour contract, `docs/contract.md`, calls the mapper).
//!
//! Every path that crosses from the watcher or the scan into the queue, and from the queue into
//! a `Connection`, is a `RelPath`. Construction is the only place where `..`, absolute paths,
//! empty components and NUL bytes are rejected, so backends can join it to their root without
//! re-checking. Paths are kept as raw bytes (Unix file names need not be UTF-8).

use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Why a path was refused as a `RelPath`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelPathError {
    #[error("path is empty")]
    Empty,
    #[error("path {0:?} is absolute")]
    Absolute(String),
    #[error("path {0:?} has a '..' or '.' component, which could escape the destination root")]
    Escapes(String),
    #[error("path {0:?} contains a NUL byte")]
    Nul(String),
    #[error("path {path:?} is not inside the source root {root:?}")]
    OutsideRoot { path: String, root: String },
}

/// A normalized, relative, non-empty path made only of plain components joined by `/`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelPath(Vec<u8>);

impl RelPath {
    /// Validates raw bytes (`a/b/c`). Repeated or trailing slashes are refused rather than
    /// silently fixed, because the queue compares paths byte for byte.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, RelPathError> {
        let shown = || String::from_utf8_lossy(bytes).into_owned();
        if bytes.is_empty() {
            return Err(RelPathError::Empty);
        }
        if bytes.contains(&0) {
            return Err(RelPathError::Nul(shown()));
        }
        if bytes[0] == b'/' {
            return Err(RelPathError::Absolute(shown()));
        }
        for part in bytes.split(|b| *b == b'/') {
            if part.is_empty() || part == b"." || part == b".." {
                return Err(RelPathError::Escapes(shown()));
            }
        }
        Ok(RelPath(bytes.to_vec()))
    }

    /// Validates a relative `Path` (as produced by `strip_prefix`).
    pub fn from_path(path: &Path) -> Result<Self, RelPathError> {
        let mut out: Vec<u8> = Vec::new();
        for comp in path.components() {
            match comp {
                Component::Normal(part) => {
                    if !out.is_empty() {
                        out.push(b'/');
                    }
                    out.extend_from_slice(part.as_bytes());
                }
                Component::CurDir => {}
                Component::RootDir | Component::Prefix(_) => {
                    return Err(RelPathError::Absolute(path.display().to_string()))
                }
                Component::ParentDir => {
                    return Err(RelPathError::Escapes(path.display().to_string()))
                }
            }
        }
        Self::from_bytes(&out)
    }

    /// The path of `abs` relative to `root`; refuses anything outside `root` or the root itself.
    pub fn from_abs(root: &Path, abs: &Path) -> Result<Self, RelPathError> {
        let rel = abs
            .strip_prefix(root)
            .map_err(|_| RelPathError::OutsideRoot {
                path: abs.display().to_string(),
                root: root.display().to_string(),
            })?;
        Self::from_path(rel)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn as_os_str(&self) -> &OsStr {
        OsStr::from_bytes(&self.0)
    }

    pub fn as_path(&self) -> &Path {
        Path::new(self.as_os_str())
    }

    /// The path as UTF-8, or `None` when the file name is not valid UTF-8 (some backends,
    /// such as S3, can only hold UTF-8 keys and must refuse the rest).
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// Lossy text for logs and error messages.
    pub fn display(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }

    /// `root/self`. Safe by construction: no component can climb out of `root`.
    pub fn under(&self, root: &Path) -> PathBuf {
        root.join(self.as_path())
    }

    /// The parent, or `None` for a top-level entry.
    pub fn parent(&self) -> Option<RelPath> {
        let pos = self.0.iter().rposition(|b| *b == b'/')?;
        Some(RelPath(self.0[..pos].to_vec()))
    }

    /// The top-level entry holding `self`: its first component (`album` for
    /// `album/cd1/01.flac`, itself for a top-level name).
    pub fn top_level(&self) -> RelPath {
        match self.0.iter().position(|b| *b == b'/') {
            Some(pos) => RelPath(self.0[..pos].to_vec()),
            None => self.clone(),
        }
    }

    /// The last component.
    pub fn file_name(&self) -> &[u8] {
        match self.0.iter().rposition(|b| *b == b'/') {
            Some(pos) => &self.0[pos + 1..],
            None => &self.0,
        }
    }

    /// True when `self` is `other` or lies below it (`a/b` is within `a`, `ab` is not).
    pub fn is_within(&self, other: &RelPath) -> bool {
        self.0 == other.0 || self.is_strictly_within(other)
    }

    /// True when `self` lies strictly below `dir`.
    pub fn is_strictly_within(&self, dir: &RelPath) -> bool {
        self.0.len() > dir.0.len() && self.0.starts_with(&dir.0) && self.0[dir.0.len()] == b'/'
    }

    /// Replaces the leading `from` with `to` (`from/x` → `to/x`); `None` if not within `from`.
    pub fn rebase(&self, from: &RelPath, to: &RelPath) -> Option<RelPath> {
        if self == from {
            return Some(to.clone());
        }
        if !self.is_strictly_within(from) {
            return None;
        }
        let mut bytes = to.0.clone();
        bytes.extend_from_slice(&self.0[from.0.len()..]);
        Some(RelPath(bytes))
    }

    /// The parents from the top down: `a/b/c` gives `a`, `a/b`.
    pub fn ancestors(&self) -> impl Iterator<Item = RelPath> + '_ {
        self.0
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'/')
            .map(|(i, _)| RelPath(self.0[..i].to_vec()))
    }
}

/// `RelPath::try_from("a/b.txt")`: the first thing a user writing a destination reaches for.
impl TryFrom<&str> for RelPath {
    type Error = RelPathError;
    fn try_from(text: &str) -> Result<Self, Self::Error> {
        RelPath::from_bytes(text.as_bytes())
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.display())
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display())
    }
}

/// Serializes a path as text for `status --json` and listings; bytes that are not UTF-8 show
/// as U+FFFD (the raw bytes stay in the database).
pub fn serialize_lossy<S: serde::Serializer>(path: &RelPath, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(path.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::rel as p;

    #[test]
    fn the_top_level_entry_of_a_path_is_its_first_component() {
        assert_eq!(p("album/cd1/01.flac").top_level(), p("album"));
        assert_eq!(p("single.txt").top_level(), p("single.txt"));
    }

    #[test]
    fn try_from_a_str_is_from_bytes() {
        assert_eq!(
            RelPath::try_from("a/b.txt").expect("valid"),
            RelPath::from_bytes(b"a/b.txt").expect("valid")
        );
        assert!(RelPath::try_from("../x").is_err());
        assert!(RelPath::try_from("/abs").is_err());
    }

    #[test]
    fn refuses_escapes() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "a/",
            "./a",
            "a/./b",
            "a\0b",
        ] {
            assert!(
                RelPath::from_bytes(bad.as_bytes()).is_err(),
                "{bad:?} accepted"
            );
        }
        assert!(RelPath::from_path(Path::new("/abs")).is_err());
        assert!(RelPath::from_path(Path::new("a/../b")).is_err());
        assert_eq!(RelPath::from_path(Path::new("./a/b")).unwrap(), p("a/b"));
    }

    #[test]
    fn accepts_hostile_but_harmless_names() {
        for ok in ["-rf", "$(touch x)", "a b/c\nd", "ünï/😀", "'\"`;|&"] {
            let rel = p(ok);
            assert_eq!(rel.under(Path::new("/root")), Path::new("/root").join(ok));
        }
        let raw = RelPath::from_bytes(b"bad\xff\xfe").unwrap();
        assert!(raw.as_str().is_none());
    }

    #[test]
    fn from_abs_must_be_inside_root() {
        let root = Path::new("/src");
        assert_eq!(
            RelPath::from_abs(root, Path::new("/src/a/b")).unwrap(),
            p("a/b")
        );
        assert!(RelPath::from_abs(root, Path::new("/src")).is_err());
        assert!(RelPath::from_abs(root, Path::new("/srcx/a")).is_err());
        assert!(RelPath::from_abs(root, Path::new("/other/a")).is_err());
    }

    #[test]
    fn within_and_rebase() {
        assert!(p("a/b").is_within(&p("a")));
        assert!(p("a").is_within(&p("a")));
        assert!(!p("ab").is_within(&p("a")));
        assert!(!p("a").is_strictly_within(&p("a")));
        assert_eq!(p("a/b/c").rebase(&p("a"), &p("x/y")), Some(p("x/y/b/c")));
        assert_eq!(p("a").rebase(&p("a"), &p("z")), Some(p("z")));
        assert_eq!(p("ab").rebase(&p("a"), &p("z")), None);
        assert_eq!(p("a/b/c").parent(), Some(p("a/b")));
        assert_eq!(p("a").parent(), None);
        assert_eq!(p("a/b/c").file_name(), b"c");
        let anc: Vec<_> = p("a/b/c").ancestors().collect();
        assert_eq!(anc, vec![p("a"), p("a/b")]);
    }
}
