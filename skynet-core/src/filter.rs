//! Which source paths skynet ignores (`--exclude`, its own temporary files) and which files
//! a mapping takes (`--include`, routing): one filter shared by the watcher, the catch-up scan
//! and the handler, so that a path is judged the same way wherever it is seen.

use std::path::Path;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::connection::is_temp_name;
use crate::relpath::RelPath;

/// Which source paths skynet ignores: `--exclude` globs and its own temporary files; and,
/// when `--include` globs are given (routing: one destination takes only some files), which
/// files it sends.
///
/// A pattern without `/` matches a name at any depth (`*.tmp`, `.git`); a pattern with `/`
/// matches the whole relative path (`build/**`). A match on a directory excludes all below it.
/// Includes select files only ([`Filter::admits_file`]): directories are always walked and
/// renamed, so a directory rename still moves the included files inside it.
/// Globs match case-sensitively unless built with [`Filter::with_case`] (`--ignore-case`:
/// cameras and Windows tools write `.MKV`, `.JPG` where a user types `*.mkv`).
#[derive(Debug, Clone)]
pub struct Filter {
    by_name: GlobSet,
    by_path: GlobSet,
    /// Include globs (by name, by path); `None`: every file.
    include: Option<(GlobSet, GlobSet)>,
    /// Globs match names whatever their case (includes added later too).
    ignore_case: bool,
}

/// A glob that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("invalid exclude pattern {pattern:?}: {source}")]
pub struct FilterError {
    pattern: String,
    source: globset::Error,
}

impl Default for Filter {
    fn default() -> Self {
        Filter {
            by_name: GlobSet::empty(),
            by_path: GlobSet::empty(),
            include: None,
            ignore_case: false,
        }
    }
}

impl Filter {
    /// Excludes `patterns`, matched case-sensitively.
    pub fn new(patterns: &[String]) -> Result<Filter, FilterError> {
        Self::with_case(patterns, false)
    }

    /// Excludes `patterns`; with `ignore_case`, these globs and the includes given later
    /// match names whatever their case (`*.mkv` matches `a.MKV`).
    pub fn with_case(patterns: &[String], ignore_case: bool) -> Result<Filter, FilterError> {
        let (by_name, by_path) = Self::globs(patterns, ignore_case)?;
        Ok(Filter {
            by_name,
            by_path,
            include: None,
            ignore_case,
        })
    }

    /// True when globs match whatever the case.
    pub fn ignores_case(&self) -> bool {
        self.ignore_case
    }

    /// The same filter, sending only files that match one of `patterns` (none: every file).
    pub fn with_includes(mut self, patterns: &[String]) -> Result<Filter, FilterError> {
        self.include = if patterns.is_empty() {
            None
        } else {
            Some(Self::globs(patterns, self.ignore_case)?)
        };
        Ok(self)
    }

    /// Splits patterns into name globs and path globs.
    fn globs(patterns: &[String], ignore_case: bool) -> Result<(GlobSet, GlobSet), FilterError> {
        let mut by_name = GlobSetBuilder::new();
        let mut by_path = GlobSetBuilder::new();
        for pattern in patterns {
            let trimmed = pattern.trim_end_matches('/').trim_start_matches('/');
            let glob = GlobBuilder::new(trimmed)
                .case_insensitive(ignore_case)
                .build()
                .map_err(|source| FilterError {
                    pattern: pattern.clone(),
                    source,
                })?;
            if trimmed.contains('/') {
                by_path.add(glob);
            } else {
                by_name.add(glob);
            }
        }
        let build = |b: GlobSetBuilder| {
            b.build().map_err(|source| FilterError {
                pattern: patterns.join(" "),
                source,
            })
        };
        Ok((build(by_name)?, build(by_path)?))
    }

    /// True when include globs narrow what this mapping sends.
    pub fn has_includes(&self) -> bool {
        self.include.is_some()
    }

    /// True when the file at `rel` is one this mapping sends: not excluded, and matching an
    /// include glob when there are any.
    pub fn admits_file(&self, rel: &RelPath) -> bool {
        use std::os::unix::ffi::OsStrExt;
        if self.excluded(rel) {
            return false;
        }
        let Some((by_name, by_path)) = &self.include else {
            return true;
        };
        let bytes = rel.as_bytes();
        let name = bytes.rsplit(|b| *b == b'/').next().unwrap_or(bytes);
        let as_path = |b| Path::new(std::ffi::OsStr::from_bytes(b));
        by_name.is_match(as_path(name)) || by_path.is_match(as_path(bytes))
    }

    /// True when `rel` or one of its parents is excluded.
    pub fn excluded(&self, rel: &RelPath) -> bool {
        // Called for every event: test each leading part of the path in place, no allocation.
        let bytes = rel.as_bytes();
        bytes
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'/')
            .map(|(i, _)| &bytes[..i])
            .chain(std::iter::once(bytes))
            .any(|prefix| self.excluded_itself(prefix))
    }

    /// Whether the path `prefix` (raw bytes of a relative path) matches by itself.
    fn excluded_itself(&self, prefix: &[u8]) -> bool {
        use std::os::unix::ffi::OsStrExt;
        let name = prefix.rsplit(|b| *b == b'/').next().unwrap_or(prefix);
        if is_temp_name(name) {
            return true;
        }
        let as_path = |b| Path::new(std::ffi::OsStr::from_bytes(b));
        (!self.by_name.is_empty() && self.by_name.is_match(as_path(name)))
            || (!self.by_path.is_empty() && self.by_path.is_match(as_path(prefix)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::rel as p;

    #[test]
    fn filter_by_name_and_path() {
        let f = Filter::new(&["*.tmp".into(), ".git".into(), "build/out/**".into()]).unwrap();
        assert!(f.excluded(&p("a.tmp")));
        assert!(f.excluded(&p("deep/er/a.tmp")));
        assert!(f.excluded(&p(".git/config")));
        assert!(f.excluded(&p("sub/.git/objects/x")));
        assert!(f.excluded(&p("build/out/x/y")));
        assert!(!f.excluded(&p("build/src/x")));
        assert!(!f.excluded(&p("a.tmpx")));
        assert!(f.excluded(&p(".skynet-tmp.0123")));
        assert!(Filter::new(&["[".into()]).is_err());
    }

    #[test]
    fn includes_select_files_only() {
        let f = Filter::new(&["*.tmp".into()])
            .unwrap()
            .with_includes(&["*.mp4".into(), "docs/**".into()])
            .unwrap();
        assert!(f.admits_file(&p("a.mp4")));
        assert!(f.admits_file(&p("deep/er/b.mp4")));
        assert!(f.admits_file(&p("docs/x/readme")));
        assert!(!f.admits_file(&p("a.jpg")));
        assert!(!f.admits_file(&p("x.mp4.tmp")));
        // Directories are never excluded by includes: they are walked and renamed.
        assert!(!f.excluded(&p("deep")));
        assert!(Filter::default().admits_file(&p("anything")));
    }

    #[test]
    fn ignore_case_applies_to_excludes_and_includes() {
        let sensitive = Filter::new(&["*.tmp".into()])
            .unwrap()
            .with_includes(&["*.mkv".into()])
            .unwrap();
        assert!(!sensitive.admits_file(&p("a.MKV")));
        assert!(!sensitive.excluded(&p("a.TMP")));
        let f = Filter::with_case(&["*.tmp".into(), "Build/**".into()], true)
            .unwrap()
            .with_includes(&["*.mkv".into(), "docs/**".into()])
            .unwrap();
        assert!(f.ignores_case());
        assert!(f.admits_file(&p("a.MKV")));
        assert!(f.admits_file(&p("deep/b.Mkv")));
        assert!(f.admits_file(&p("DOCS/readme")));
        assert!(!f.admits_file(&p("a.mp4")));
        assert!(f.excluded(&p("x.TMP")));
        assert!(f.excluded(&p("build/out/x")));
        assert!(!f.admits_file(&p("x.mkv.Tmp")));
    }
}
