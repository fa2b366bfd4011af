//! "The source must still be the source": the root folder's filesystem identity, recorded on
//! first use and checked before anything is deleted.
//!
//! Why: when a disk is unmounted, its mount point stays behind as an empty folder on the
//! parent filesystem; when a disk is pulled, the folder vanishes. To a mirror both look like
//! "the user deleted everything", and a complete-sync mapping would propagate that. Syncthing
//! guards with a marker folder; skynet records the root's device (and inode) in the state
//! database and pauses the mapping while the root is missing or on another filesystem.

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::state::{Queue, StateError};

/// Meta keys of the recorded identity.
const DEV: &str = "source_dev";
const INO: &str = "source_ino";

/// Device and inode of a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub dev: u64,
    pub ino: u64,
}

/// Why the source cannot be trusted right now. Each says what to check next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceProblem {
    /// The root is gone (or unreadable).
    Missing { root: PathBuf, detail: String },
    /// The root exists but is not a directory.
    NotADirectory { root: PathBuf },
    /// The root is on another filesystem than when skynet first used it: most often the disk
    /// it lived on is unmounted and this is the bare mount point.
    OtherFilesystem { root: PathBuf, now: u64, was: u64 },
}

impl fmt::Display for SourceProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceProblem::Missing { root, detail } => write!(
                f,
                "source {} is missing ({detail}): is its disk unmounted? nothing is deleted until it is back",
                root.display()
            ),
            SourceProblem::NotADirectory { root } => write!(
                f,
                "source {} is no longer a directory; nothing is deleted until it is one again",
                root.display()
            ),
            SourceProblem::OtherFilesystem { root, now, was } => write!(
                f,
                "source {} is now on another filesystem (device {}:{}, was {}:{}): is its disk unmounted? nothing is deleted until it is back; if the folder really moved, run `skynet queue accept-source`",
                root.display(),
                major(*now),
                minor(*now),
                major(*was),
                minor(*was)
            ),
        }
    }
}

impl std::error::Error for SourceProblem {}

fn major(dev: u64) -> u64 {
    rustix::fs::major(dev) as u64
}

fn minor(dev: u64) -> u64 {
    rustix::fs::minor(dev) as u64
}

/// The identity of the directory at `root` now.
pub fn identity_of(root: &Path) -> Result<Identity, SourceProblem> {
    // Not following a final symlink would refuse a source given as a link; the root was
    // canonicalised when the mapping was opened, so a plain stat is the right question.
    let meta = std::fs::metadata(root).map_err(|e| SourceProblem::Missing {
        root: root.to_path_buf(),
        detail: e.kind().to_string(),
    })?;
    if !meta.is_dir() {
        return Err(SourceProblem::NotADirectory {
            root: root.to_path_buf(),
        });
    }
    Ok(Identity {
        dev: meta.dev(),
        ino: meta.ino(),
    })
}

/// The source root of one mapping with the identity it must keep.
#[derive(Debug, Clone)]
pub struct SourceRoot {
    root: PathBuf,
    expected: Identity,
}

impl SourceRoot {
    /// Checks `root` against the identity recorded in `queue`'s database, recording it on
    /// first use. A root whose inode changed on the same filesystem (a folder recreated, a
    /// backup restored) is accepted with a warning and re-recorded: the mass-deletion guard
    /// covers a replacement that lost files.
    pub fn establish(
        root: &Path,
        queue: &Queue,
    ) -> Result<Result<SourceRoot, SourceProblem>, StateError> {
        let now = match identity_of(root) {
            Ok(id) => id,
            Err(problem) => return Ok(Err(problem)),
        };
        let recorded = recorded(queue)?;
        if let Some(was) = recorded {
            if was.dev != now.dev {
                return Ok(Err(SourceProblem::OtherFilesystem {
                    root: root.to_path_buf(),
                    now: now.dev,
                    was: was.dev,
                }));
            }
            if was.ino != now.ino {
                tracing::warn!(source = %root.display(), "the source folder was replaced by another one on the same filesystem; deletions it implies are checked by the mass-deletion guard");
            }
        }
        if recorded != Some(now) {
            record(queue, now)?;
        }
        Ok(Ok(SourceRoot {
            root: root.to_path_buf(),
            expected: now,
        }))
    }

    /// Whether the root is still the one established: exists, is a directory, same device.
    /// One `stat`, cheap enough to ask before every deletion.
    pub fn check(&self) -> Result<(), SourceProblem> {
        let now = identity_of(&self.root)?;
        if now.dev != self.expected.dev {
            return Err(SourceProblem::OtherFilesystem {
                root: self.root.clone(),
                now: now.dev,
                was: self.expected.dev,
            });
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.root
    }
}

fn recorded(queue: &Queue) -> Result<Option<Identity>, StateError> {
    let parse = |v: Option<String>| v.and_then(|v| v.parse::<u64>().ok());
    Ok(match (parse(queue.meta(DEV)?), parse(queue.meta(INO)?)) {
        (Some(dev), Some(ino)) => Some(Identity { dev, ino }),
        _ => None,
    })
}

fn record(queue: &Queue, id: Identity) -> Result<(), StateError> {
    queue.set_meta(DEV, &id.dev.to_string())?;
    queue.set_meta(INO, &id.ino.to_string())
}

/// Forgets the recorded identity (`skynet queue accept-source`): the next start records the
/// root as it is then.
pub fn forget(queue: &Queue) -> Result<(), StateError> {
    queue.delete_meta(DEV)?;
    queue.delete_meta(INO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_on_first_use_then_checked() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("src");
        std::fs::create_dir(&root).unwrap();
        let q = Queue::open_in_memory().unwrap();
        let src = SourceRoot::establish(&root, &q).unwrap().unwrap();
        assert!(src.check().is_ok());
        assert!(recorded(&q).unwrap().is_some());

        std::fs::remove_dir(&root).unwrap();
        let missing = src.check().unwrap_err();
        assert!(
            matches!(missing, SourceProblem::Missing { .. }),
            "{missing}"
        );
        assert!(SourceRoot::establish(&root, &q).unwrap().is_err());

        std::fs::write(&root, b"a file now").unwrap();
        assert!(matches!(
            src.check(),
            Err(SourceProblem::NotADirectory { .. })
        ));
    }

    #[test]
    fn another_device_is_refused_until_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open_in_memory().unwrap();
        let now = identity_of(dir.path()).unwrap();
        record(
            &q,
            Identity {
                dev: now.dev + 1,
                ino: now.ino,
            },
        )
        .unwrap();
        let problem = SourceRoot::establish(dir.path(), &q).unwrap().unwrap_err();
        assert!(
            matches!(problem, SourceProblem::OtherFilesystem { .. }),
            "{problem}"
        );
        assert!(problem.to_string().contains("accept-source"), "{problem}");
        forget(&q).unwrap();
        assert!(SourceRoot::establish(dir.path(), &q).unwrap().is_ok());
    }
}
