//! `skynet queue list | retry ID | drop ID | release [ID] | accept-source`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use skynet_core::state::Queue;

use crate::cli::QueueCommand;
use crate::exit::Exit;
use crate::out::{outln, sayln};
use crate::state;

/// The mappings under the state root `root` a queue command applies to: the one named, or
/// all of them for `list`.
pub(super) fn select(root: &Path, mapping: Option<&str>, need_one: bool) -> Result<Vec<PathBuf>> {
    let dirs = state::mapping_dirs(root)?;
    let chosen: Vec<PathBuf> = match mapping {
        Some(name) => dirs
            .into_iter()
            .filter(|d| d.file_name().is_some_and(|n| n == name))
            .collect(),
        None => dirs,
    };
    if chosen.is_empty() {
        bail!(
            "no mapping {}in {}",
            mapping.map(|m| format!("{m:?} ")).unwrap_or_default(),
            root.display()
        );
    }
    if need_one && chosen.len() > 1 {
        bail!(
            "several mappings in {}; name one with --mapping (see `skynet status`)",
            root.display()
        );
    }
    Ok(chosen)
}

pub fn queue(command: &QueueCommand, root: &Path, mapping: Option<&str>) -> Result<Exit> {
    match command {
        QueueCommand::List { json } => {
            let mut out = Vec::new();
            for dir in select(root, mapping, false)? {
                let queue = Queue::open(&skynet_core::state::database_path(&dir))?;
                let name = dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let rows = queue.rows()?;
                if !*json {
                    outln!("{name}: {} action(s)", rows.len());
                    for r in &rows {
                        let what = match &r.from {
                            Some(from) => format!("{from} -> {}", r.path),
                            None => r.path.clone(),
                        };
                        let err = r
                            .last_error
                            .as_deref()
                            .map(|e| format!("  ({e})"))
                            .unwrap_or_default();
                        outln!(
                            "  #{:<6} {:<9} {:<6} {what}{err}",
                            r.id,
                            r.state,
                            r.kind.as_str()
                        );
                    }
                }
                out.push(serde_json::json!({ "mapping": name, "actions": rows }));
            }
            if *json {
                outln!("{}", serde_json::json!({ "mappings": out }));
            }
        }
        QueueCommand::Retry { id } => {
            let dir = &select(root, mapping, true)?[0];
            let queue = Queue::open(&skynet_core::state::database_path(dir))?;
            if id == "all" {
                sayln!("{} failed action(s) will be retried", queue.retry_failed()?);
                let handoffs = queue.handoff_retry_parked()?;
                if handoffs > 0 {
                    sayln!("{handoffs} failed hand-off(s) will be retried");
                }
                let entries = queue.entries_revive()?;
                if entries > 0 {
                    sayln!("{entries} failed entr(y/ies) will be retried");
                }
            } else {
                let Ok(n) = id.parse::<i64>() else {
                    bail!("not an action id: {id:?} (a number, or `all`)")
                };
                queue.retry(n)?;
                sayln!("action #{n} will be retried");
            }
        }
        QueueCommand::Drop { id } => {
            let dir = &select(root, mapping, true)?[0];
            Queue::open(&skynet_core::state::database_path(dir))?.drop_action(*id)?;
            sayln!("action #{id} dropped");
        }
        QueueCommand::Release { id } => {
            let dir = &select(root, mapping, true)?[0];
            let queue = Queue::open(&skynet_core::state::database_path(dir))?;
            let n = queue.release_deletions(*id)?;
            sayln!("{n} held deletion(s) released; they run at the next sync, or now if skynet is running");
        }
        QueueCommand::AcceptSource => {
            let dir = &select(root, mapping, true)?[0];
            let queue = Queue::open(&skynet_core::state::database_path(dir))?;
            skynet_core::source_root::forget(&queue)?;
            sayln!("the source's filesystem will be recorded anew at the next start");
        }
    }
    Ok(Exit::Ok)
}
