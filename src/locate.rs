//! Which state `status`, `queue` and `ledger` read, so that a plain `skynet status` shows the
//! daemon's mappings when the daemon runs from a config in the usual place.
//!
//! In order: `--state-dir` (or `SKYNET_STATE_DIR`, as `run` itself takes it); else the
//! `state_dir` of `--config FILE`, or of the first config found in the usual places (the
//! user's, then the system's); else the user's state directory, where `run` keeps state
//! given none of these.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::cli::MappingArgs;
use crate::{config, state};

/// The system-wide config, as `contrib/skynet.service` runs it.
pub const SYSTEM_CONFIG: &str = "/etc/skynet/skynet.toml";

/// Where a config is looked for when none is given: `$XDG_CONFIG_HOME/skynet/skynet.toml`
/// (`~/.config/skynet/skynet.toml` without that variable), then [`SYSTEM_CONFIG`].
pub fn usual_configs() -> Vec<PathBuf> {
    let user = dirs::config_dir().map(|d| d.join("skynet").join("skynet.toml"));
    user.into_iter()
        .chain(std::iter::once(PathBuf::from(SYSTEM_CONFIG)))
        .collect()
}

/// The first of `candidates` that is a file this user may read. The system's config is
/// often root's alone (`install -m 600`): another user's `skynet status` then looks at their
/// own state rather than failing.
fn first_file(candidates: Vec<PathBuf>) -> Option<PathBuf> {
    candidates
        .into_iter()
        .find(|p| p.is_file() && std::fs::File::open(p).is_ok())
}

/// The state root a reading command uses (see the module's doc). A config that does not
/// load is an error naming it.
pub fn state_root(state_dir: Option<&Path>, config_file: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = state_dir {
        return Ok(dir.to_path_buf());
    }
    // Given, a config must load; found, it must too once readable: guessing another state
    // would show the wrong mappings.
    let file = match config_file {
        Some(file) => Some(file.to_path_buf()),
        None => first_file(usual_configs()),
    };
    if let Some(file) = file {
        let loaded = config::load(&file, &MappingArgs::default())?;
        tracing::debug!(config = %file.display(), state_dir = ?loaded.state_dir, "state from the config");
        if let Some(dir) = loaded.state_dir {
            return Ok(dir);
        }
    }
    state::state_root(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_users_config_comes_before_the_systems() {
        let configs = usual_configs();
        assert_eq!(configs.last(), Some(&PathBuf::from(SYSTEM_CONFIG)));
        if let Some(user) = dirs::config_dir() {
            assert_eq!(configs[0], user.join("skynet/skynet.toml"));
        }
        let scratch = tempfile::tempdir().unwrap();
        let (a, b) = (scratch.path().join("a"), scratch.path().join("b"));
        assert_eq!(first_file(vec![a.clone(), b.clone()]), None);
        std::fs::write(&b, "").unwrap();
        assert_eq!(first_file(vec![a.clone(), b.clone()]), Some(b.clone()));
        std::fs::write(&a, "").unwrap();
        assert_eq!(first_file(vec![a.clone(), b]), Some(a));
    }
}
