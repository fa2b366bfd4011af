//! The other mappings of the same source folder ("siblings"), as the hand-off sees them.
//!
//! One folder may be mirrored to several destinations, each mapping with its own state
//! database under the same state root. When one of them removes delivered files
//! (`remove_source`), the others must not lose them:
//!
//! - a file is removed only once every sibling whose filters select it holds the same
//!   version in its ledger (same size, mtime and, where recorded, inode and ctime);
//! - before removing, the hand-off marks the file in each such sibling's ledger
//!   (`handed_off`, committed with `synchronous = FULL`), in one conditional UPDATE that is
//!   also the check; a sibling never propagates the absence of a marked file as the user's
//!   deletion (see `Queue::push`). Marked first, removed second: a crash in between leaves the
//!   file in both places, and the replayed hand-off finishes the job.
//!
//! Siblings are found by walking the state root for databases whose recorded source is this
//! one, so mappings run by another daemon, or not running at all, count too: a mapping that
//! has not delivered a file yet holds its removal back until it has (the hand-off waits and
//! says for which mapping). Remove a mapping's state directory to stop it counting.

use std::path::{Path, PathBuf};

use crate::filter::Filter;
use crate::gate::DatedNames;
use crate::relpath::RelPath;
use crate::state::{database_path, Queue, StateError};

/// Meta keys holding a mapping's filters (newline-separated globs), so that its siblings
/// know which files it takes.
pub const META_EXCLUDE: &str = "filter_exclude";
pub const META_INCLUDE: &str = "filter_include";
/// "1" when the mapping's globs ignore case (`ignore_case`).
pub const META_IGNORE_CASE: &str = "filter_ignore_case";
/// The `dated` pattern: a mapping with one never takes a file without a date in its name.
pub const META_DATED: &str = "filter_dated";

/// A mapping's globs as its siblings need them.
#[derive(Debug, Clone, Copy)]
pub struct FilterGlobs<'a> {
    pub excludes: &'a [String],
    pub includes: &'a [String],
    pub ignore_case: bool,
}

/// Records a mapping's filters for its siblings.
pub fn record_filters(
    queue: &Queue,
    globs: &FilterGlobs<'_>,
    dated: Option<&str>,
) -> Result<(), StateError> {
    queue.set_meta(META_EXCLUDE, &globs.excludes.join("\n"))?;
    queue.set_meta(META_INCLUDE, &globs.includes.join("\n"))?;
    queue.set_meta(META_IGNORE_CASE, if globs.ignore_case { "1" } else { "" })?;
    queue.set_meta(META_DATED, dated.unwrap_or_default())
}

/// Where to look for the siblings of one mapping.
#[derive(Debug, Clone)]
pub struct SiblingFinder {
    /// The state root: the parent of every mapping's state directory.
    pub state_root: PathBuf,
    /// This mapping's own state directory (not a sibling of itself).
    pub own_dir: PathBuf,
    /// The canonical source folder.
    pub source: PathBuf,
}

/// Another mapping of the same source, its database open.
pub struct Sibling {
    /// The state directory's name (as `status` shows it) and destination, for messages.
    pub name: String,
    pub queue: Queue,
    /// `None` when the sibling never recorded its filters: it is taken to select every file.
    filter: Option<Filter>,
    /// Its `dated` gate: names without a date are never its files.
    dated: Option<DatedNames>,
}

impl Sibling {
    /// True when this sibling takes `path` (its filters select it, and with a `dated` gate,
    /// its name carries a date).
    pub fn selects(&self, path: &RelPath) -> bool {
        self.filter.as_ref().is_none_or(|f| f.admits_file(path))
            && self
                .dated
                .as_ref()
                .is_none_or(|d| d.date_of(path).is_some())
    }
}

impl SiblingFinder {
    /// Every other mapping of the source under the state root. A database that cannot be
    /// opened is returned as an error naming it: the hand-off cannot know what it holds, so it
    /// waits.
    pub fn find(&self) -> Vec<Result<Sibling, StateError>> {
        let Ok(entries) = std::fs::read_dir(&self.state_root) else {
            return Vec::new();
        };
        let own = self
            .own_dir
            .canonicalize()
            .unwrap_or_else(|_| self.own_dir.clone());
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let dir = entry.path();
            let db = database_path(&dir);
            if !db.is_file() || dir.canonicalize().is_ok_and(|d| d == own) {
                continue;
            }
            match open_sibling(&dir, &db, &self.source) {
                Ok(Some(s)) => out.push(Ok(s)),
                Ok(None) => {}
                Err(e) => out.push(Err(e)),
            }
        }
        out
    }
}

fn open_sibling(dir: &Path, db: &Path, source: &Path) -> Result<Option<Sibling>, StateError> {
    let queue = Queue::open(db)?;
    let theirs = queue.meta(crate::state::meta::SOURCE)?;
    if theirs.as_deref().map(Path::new) != Some(source) {
        return Ok(None);
    }
    let lines = |key: &str| -> Result<Option<Vec<String>>, StateError> {
        Ok(queue.meta(key)?.map(|v| {
            v.lines()
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect()
        }))
    };
    let ignore_case = queue.meta(META_IGNORE_CASE)?.as_deref() == Some("1");
    let filter = match (lines(META_EXCLUDE)?, lines(META_INCLUDE)?) {
        (Some(ex), Some(inc)) => Filter::with_case(&ex, ignore_case)
            .and_then(|f| f.with_includes(&inc))
            .map_err(|e| {
                tracing::warn!(state = %dir.display(), error = %e, "a sibling mapping's filters do not parse; taking it to select every file");
            })
            .ok(),
        _ => None,
    };
    let dated = queue
        .meta(META_DATED)?
        .filter(|p| !p.is_empty())
        .and_then(|p| DatedNames::new(&p, std::time::Duration::ZERO).ok());
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let destination = queue
        .meta(crate::state::meta::DESTINATION)?
        .unwrap_or_default();
    Ok(Some(Sibling {
        name: format!("{name} ({destination})"),
        queue,
        filter,
        dated,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::rel as p;
    use crate::state::meta;

    /// A mapping's state directory under `root`, of `source`, with these filters.
    fn mapping(root: &Path, name: &str, source: &str, include: &[&str], dated: Option<&str>) {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let q = Queue::open(&database_path(&dir)).unwrap();
        q.set_meta(meta::SOURCE, source).unwrap();
        q.set_meta(meta::DESTINATION, &format!("/dest/{name}"))
            .unwrap();
        let includes: Vec<String> = include.iter().map(|s| s.to_string()).collect();
        let globs = FilterGlobs {
            excludes: &["*.tmp".to_string()],
            includes: &includes,
            // The mapping "nocase" takes `*.MP4` as `*.mp4`.
            ignore_case: name == "nocase",
        };
        record_filters(&q, &globs, dated).unwrap();
    }

    #[test]
    fn finds_the_other_mappings_of_the_source_and_what_they_take() {
        let root = tempfile::tempdir().unwrap();
        mapping(root.path(), "me", "/src", &[], None);
        mapping(root.path(), "videos", "/src", &["*.mp4"], None);
        mapping(root.path(), "days", "/src", &[], Some("%Y%m%d"));
        mapping(root.path(), "elsewhere", "/other", &[], None);
        mapping(root.path(), "nocase", "/src", &["*.MP4"], None);
        let finder = SiblingFinder {
            state_root: root.path().to_path_buf(),
            own_dir: root.path().join("me"),
            source: PathBuf::from("/src"),
        };
        let mut found: Vec<Sibling> = finder.find().into_iter().map(Result::unwrap).collect();
        found.sort_by(|a, b| a.name.cmp(&b.name));
        let names: Vec<&str> = found.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "days (/dest/days)",
                "nocase (/dest/nocase)",
                "videos (/dest/videos)"
            ]
        );
        let (days, nocase, videos) = (&found[0], &found[1], &found[2]);
        assert!(nocase.selects(&p("a/b.mp4")));
        assert!(!nocase.selects(&p("a/b.TMP")));
        assert!(!videos.selects(&p("a/b.MP4")));
        assert!(videos.selects(&p("a/b.mp4")));
        assert!(!videos.selects(&p("a/b.jpg")));
        assert!(!videos.selects(&p("a/b.tmp")));
        assert!(days.selects(&p("20240101/clip.mp4")));
        assert!(
            !days.selects(&p("misc/clip.mp4")),
            "no date: never its file"
        );
    }
}
