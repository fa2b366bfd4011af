//! `skynet ledger list | forget PATH|ID`: what each destination is believed to hold. In
//! send-once mode this is the record of what was delivered; forgetting a file sends it again.

use std::path::Path;

use anyhow::{Context, Result};
use skynet_core::merge::Entry;
use skynet_core::state::meta;
use skynet_core::state::{Forget, Queue};
use skynet_core::{Action, RelPath};

use super::queue::select;
use crate::cli::LedgerCommand;
use crate::exit::Exit;
use crate::out::{outln, sayln};

pub fn ledger(command: &LedgerCommand, root: &Path, mapping: Option<&str>) -> Result<Exit> {
    match command {
        LedgerCommand::List { json } => {
            let mut all = Vec::new();
            for dir in select(root, mapping, false)? {
                let queue = Queue::open(&skynet_core::state::database_path(&dir))?;
                let name = crate::mapping_status::mapping_name(&dir);
                let rows = queue.ledger_rows()?;
                if !*json {
                    outln!("{name}: {} file(s)", rows.len());
                    for r in &rows {
                        let hash = r.sha256.as_deref().map(|h| &h[..12]).unwrap_or("-");
                        // A stale row's size means nothing: the next scan sends it again.
                        let size = if r.stale {
                            "stale".to_string()
                        } else {
                            r.size.to_string()
                        };
                        outln!(
                            "  #{:<6} {:>12} {}  {hash}  {}",
                            r.id,
                            size,
                            crate::mapping_status::local_time(r.sent_at),
                            r.path
                        );
                    }
                }
                all.push(serde_json::json!({ "mapping": name, "files": rows }));
            }
            if *json {
                outln!("{}", serde_json::json!({ "mappings": all }));
            }
            Ok(Exit::Ok)
        }
        LedgerCommand::Forget { what } => {
            let dirs = select(root, mapping, true)?;
            let dir = &dirs[0];
            let queue = Queue::open(&skynet_core::state::database_path(dir))?;
            let forgotten = forget(&queue, what)?;
            if forgotten.is_empty() {
                anyhow::bail!("ledger: nothing recorded as {what:?} (see `skynet ledger list`)");
            }
            let requeued = requeue(&queue, &forgotten)?;
            sayln!(
                "forgot {} file(s); {requeued} queued to be sent again",
                forgotten.len()
            );
            Ok(Exit::Ok)
        }
    }
}

/// An all-digits argument names a row id when such a row exists, else a path.
fn forget(queue: &Queue, what: &str) -> Result<Vec<RelPath>> {
    if let Ok(id) = what.parse::<i64>() {
        let by_id = queue.forget(&Forget::Id(id))?;
        if !by_id.is_empty() {
            return Ok(by_id);
        }
    }
    let rel = RelPath::from_bytes(what.trim_matches('/').as_bytes())
        .with_context(|| format!("ledger: {what:?} is not a path inside the source"))?;
    Ok(queue.forget(&Forget::Path(rel))?)
}

/// Queues a send for each forgotten file still in the source, so it goes again (a running
/// daemon picks it up within a second; otherwise the next `run` or `sync` does).
fn requeue(queue: &Queue, paths: &[RelPath]) -> Result<usize> {
    let Some(source) = queue.meta(meta::SOURCE)? else {
        return Ok(0);
    };
    let source = Path::new(&source);
    let entries: Vec<Entry> = paths
        .iter()
        .filter(|p| p.under(source).is_file())
        .map(|p| Entry::new(Action::Send(p.clone()), 0))
        .collect();
    queue.push(&entries)?;
    Ok(entries.len())
}
