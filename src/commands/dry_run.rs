//! `skynet sync --dry-run`: what a sync would do, changing nothing.
//!
//! The catch-up scan runs against a throw-away in-memory copy of the mapping's state database
//! (or an empty one when the mapping has never run), so the destination, the ledger and the
//! queue stay exactly as they were. Nothing is connected: what the destination holds is what
//! the ledger says, the same belief a real sync acts on.

use std::path::Path;

use anyhow::{Context, Result};
use skynet_core::state::QueueRow;
use skynet_core::{ActionKind, Mapping};

use crate::cli::MappingArgs;
use crate::exit::Exit;
use crate::out::{noteln, outln};

pub fn dry_run(src: &Path, dest: Option<&str>, args: &MappingArgs) -> Result<Exit> {
    let source = src
        .canonicalize()
        .with_context(|| format!("source {}", src.display()))?;
    let destination = super::destination_of(dest, args)?;
    super::check_options(&destination, args)?;
    // Found, not moved: a dry run changes nothing, earlier state included.
    let place = super::locate_state(&source, &destination, args)?;
    let state_dir = place.current();
    // A mapping that never ran has no database: work on an empty one that is thrown away.
    let scratch;
    let dir = if skynet_core::state::database_path(state_dir).exists() {
        state_dir
    } else {
        scratch = tempfile::tempdir().context("cannot make a scratch state directory")?;
        scratch.path()
    };
    let mut opts = super::mapping_options(args)?;
    opts.progress = false;
    let mapping = Mapping::open(&source, dir, opts)?;
    let rows = mapping.dry_run()?;
    // With versions on, what a deletion or an overwrite would destroy is kept instead.
    let keeps = |r: &QueueRow| -> bool {
        args.keep_versions.is_some()
            && match r.kind {
                ActionKind::Delete => true,
                ActionKind::Send => skynet_core::RelPath::from_bytes(r.path.as_bytes())
                    .ok()
                    .and_then(|p| mapping.queue().ledger_entry(&p).ok().flatten())
                    .is_some(),
                ActionKind::Move => false,
            }
    };
    print_plan(&rows, keeps)?;
    let held = rows.iter().filter(|r| r.state == "deletion_held").count();
    if held > 0 {
        noteln!(
            "{held} deletion(s) would be held by the mass-deletion guard; confirm with `skynet queue release` after the sync, or pass --max-delete"
        );
    }
    Ok(Exit::Ok)
}

/// One line per action, then the totals.
fn print_plan(rows: &[QueueRow], keeps: impl Fn(&QueueRow) -> bool) -> Result<()> {
    let (mut sends, mut deletes, mut moves, mut held, mut kept) = (0, 0, 0, 0, 0);
    for r in rows {
        let line = match (r.kind, &r.from) {
            (ActionKind::Move, Some(from)) => format!("move   {from} -> {}", r.path),
            (kind, _) => format!("{:<6} {}", kind.as_str(), r.path),
        };
        if r.state == "deletion_held" {
            held += 1;
            outln!("{line}  (held by the mass-deletion guard)");
        } else if keeps(r) {
            kept += 1;
            outln!("{line}  (the destination's copy kept as a version)");
        } else {
            outln!("{line}");
        }
        match r.kind {
            ActionKind::Send => sends += 1,
            ActionKind::Delete => deletes += 1,
            ActionKind::Move => moves += 1,
        }
    }
    outln!(
        "dry run: would send {sends}, move {moves}, delete {deletes} ({held} held, {kept} kept as versions); nothing was changed"
    );
    Ok(())
}
