//! `skynet sync SRC DEST`: catch up once and exit.

use std::path::Path;

use anyhow::Result;

use crate::cli::MappingArgs;
use crate::exit::Exit;
use crate::out::noteln;

/// `sync --config FILE`: every mapping of the file, one after the other.
pub async fn sync_config(file: &Path, dry_run: bool, cli: &MappingArgs) -> Result<Exit> {
    super::each_mapping(file, cli, |m| async move {
        sync(&m.source, m.destination.as_deref(), dry_run, &m.args).await
    })
    .await
}

pub async fn sync(
    src: &Path,
    dest: Option<&str>,
    dry_run: bool,
    args: &MappingArgs,
) -> Result<Exit> {
    if dry_run {
        return super::dry_run::dry_run(src, dest, args);
    }
    let prepared = super::prepare(src, dest, args, "sync").await?;
    let started = std::time::Instant::now();
    let summary = prepared.mapping.sync(prepared.conn.clone()).await?;
    tracing::info!(
        done = summary.done,
        failed = summary.parked,
        vanished = summary.vanished,
        seconds = started.elapsed().as_secs_f64(),
        "sync finished"
    );
    if summary.held > 0 {
        noteln!(
            "{} file(s) held back (still changing, min_age or dated names); they stay queued for a later run (see `skynet status`)",
            summary.held
        );
    }
    if summary.entries_waiting > 0 {
        noteln!(
            "{} entr(y/ies) waiting for their command (still changing, or files under them held); a later run does them (see `skynet status`)",
            summary.entries_waiting
        );
    }
    if summary.deletions_held > 0 {
        eprintln!(
            "skynet: {} deletion(s) held by the mass-deletion guard (nothing was deleted); if they are intended, run `skynet queue release --mapping {}` or sync again with --max-delete",
            summary.deletions_held,
            crate::mapping_status::mapping_name(&prepared.state_dir)
        );
        return Ok(Exit::SomeFailed);
    }
    if summary.parked > 0 {
        eprintln!(
            "skynet: {} action(s) failed; see `skynet status` or `skynet queue list`",
            summary.parked
        );
        return Ok(Exit::SomeFailed);
    }
    if summary.handoff_parked > 0 {
        eprintln!(
            "skynet: {} hand-off(s) failed (local files kept); see `skynet status`",
            summary.handoff_parked
        );
        return Ok(Exit::SomeFailed);
    }
    if summary.entries_parked > 0 {
        eprintln!(
            "skynet: the command failed for {} entr(y/ies); see `skynet status`",
            summary.entries_parked
        );
        return Ok(Exit::SomeFailed);
    }
    Ok(Exit::Ok)
}
