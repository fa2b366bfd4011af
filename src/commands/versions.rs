//! `skynet versions list [PATH] | restore SRC DEST PATH [--at TIME] [--to DIR]`: what the
//! destination kept of deleted and overwritten files (`--keep-versions`), and bringing one
//! back. A restored file lands in the source (or `--to DIR`) and is then mirrored like any
//! other change; with versions on, the copy it replaces at the destination is kept in turn.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use skynet_core::queue::{Queue, VersionRow};
use skynet_core::{Connection, LocalConnection, RelPath, SourceFile};

use super::queue::select;
use crate::cli::{MappingArgs, VersionsCommand};
use crate::exit::Exit;
use crate::out::{outln, sayln};

pub async fn versions(command: VersionsCommand) -> Result<Exit> {
    match command {
        VersionsCommand::List {
            path,
            json,
            state_dir,
            config,
            mapping,
        } => {
            let root = crate::locate::state_root(state_dir.as_deref(), config.as_deref())?;
            let path = path.as_deref().map(rel).transpose()?;
            list(&root, mapping.as_deref(), path.as_ref(), json)
        }
        VersionsCommand::Restore {
            src,
            dest,
            path,
            at,
            to,
            state_dir,
            name,
            connection,
        } => {
            let args = MappingArgs {
                state_dir,
                name,
                connection,
                ..MappingArgs::default()
            };
            restore(
                &src,
                &dest,
                &rel(&path)?,
                at.as_deref(),
                to.as_deref(),
                &args,
            )
            .await
        }
    }
}

fn rel(path: &str) -> Result<RelPath> {
    RelPath::from_bytes(path.trim_matches('/').as_bytes())
        .map_err(|e| anyhow::anyhow!("path {path:?}: {e} (give it relative to the source)"))
}

fn list(root: &Path, mapping: Option<&str>, path: Option<&RelPath>, json: bool) -> Result<Exit> {
    let mut all = Vec::new();
    for dir in select(root, mapping, false)? {
        let queue = Queue::open(&skynet_core::queue::database_path(&dir))?;
        let name = super::status::mapping_name(&dir);
        let rows = queue.version_rows(path)?;
        if !json {
            outln!("{name}: {} version(s)", rows.len());
            for r in &rows {
                let unconfirmed = if r.confirmed { "" } else { "  (unconfirmed)" };
                outln!(
                    "  {}  {}  -> {}{unconfirmed}",
                    super::status::local_time(r.kept_at),
                    r.original,
                    r.version
                );
            }
        }
        all.push(serde_json::json!({ "mapping": name, "versions": rows }));
    }
    if json {
        outln!("{}", serde_json::json!({ "mappings": all }));
    }
    Ok(Exit::Ok)
}

/// Where the version of `path` is in `row` (a version of `path` itself, or of a folder above
/// it, which holds it at the same place below).
fn version_of(row: &VersionRow, path: &RelPath) -> Option<RelPath> {
    if row.original == *path {
        return Some(row.version.clone());
    }
    let rest = path
        .as_bytes()
        .strip_prefix(row.original.as_bytes())?
        .strip_prefix(b"/")?;
    let mut p = row.version.as_bytes().to_vec();
    p.push(b'/');
    p.extend_from_slice(rest);
    RelPath::from_bytes(&p).ok()
}

/// The versions that may hold `path` as it was at `at` (ms), best first: without `at`, the
/// newest first; with it, the first kept after `at`, then later ones. A folder's version may
/// lack the file (it was deleted before the folder went): the caller tries the next.
fn candidates(rows: &[VersionRow], path: &RelPath, at: Option<u64>) -> Vec<(RelPath, u64)> {
    // Unconfirmed ones (a move the link or a crash interrupted) come after, in case they exist.
    let mut found: Vec<(bool, RelPath, u64)> = rows
        .iter()
        .filter_map(|r| version_of(r, path).map(|v| (!r.confirmed, v, r.kept_at)))
        .collect();
    match at {
        None => found.sort_by_key(|(doubt, _, kept_at)| (*doubt, std::cmp::Reverse(*kept_at))),
        Some(at) => {
            found.retain(|(_, _, kept_at)| *kept_at >= at);
            found.sort_by_key(|(doubt, _, kept_at)| (*doubt, *kept_at));
        }
    }
    found
        .into_iter()
        .map(|(_, v, kept_at)| (v, kept_at))
        .collect()
}

/// Refuses to write where something else stands: a file, link or folder at the target (a
/// newer local file, a folder made since), or anything but a folder where a parent goes.
/// Restoring never removes what the user has.
fn check_way(root: &Path, path: &RelPath) -> Result<()> {
    for above in path.ancestors() {
        match std::fs::symlink_metadata(above.under(root)) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => anyhow::bail!(
                "{} is not a folder; not restoring {path} there (use --to DIR)",
                above.under(root).display()
            ),
            Err(_) => return Ok(()),
        }
    }
    if std::fs::symlink_metadata(path.under(root)).is_ok() {
        anyhow::bail!(
            "{} exists; move it away first, or restore elsewhere with --to DIR",
            path.under(root).display()
        );
    }
    Ok(())
}

fn parse_time(text: &str) -> Result<u64> {
    use chrono::{Local, NaiveDateTime, TimeZone};
    let parsed = ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
        .or_else(|| {
            chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        })
        .with_context(|| format!("--at {text:?}: expected YYYY-MM-DD [HH:MM[:SS]]"))?;
    let local = Local
        .from_local_datetime(&parsed)
        .earliest()
        .with_context(|| format!("--at {text:?}: no such local time"))?;
    Ok(local.timestamp_millis().max(0) as u64)
}

async fn restore(
    src: &Path,
    dest: &str,
    path: &RelPath,
    at: Option<&str>,
    to: Option<&Path>,
    args: &MappingArgs,
) -> Result<Exit> {
    let at = at.map(parse_time).transpose()?;
    let (source, destination, state_dir) = super::existing_state(src, dest, args)?;
    let queue = Queue::open(&skynet_core::queue::database_path(&state_dir))?;
    let mut rows = queue.version_rows(Some(path))?;
    // Versions of a folder above it hold it too.
    let mut above = path.parent();
    while let Some(dir) = above {
        rows.extend(
            queue
                .version_rows(Some(&dir))?
                .into_iter()
                .filter(|r| r.original == dir),
        );
        above = dir.parent();
    }
    let found = candidates(&rows, path, at);
    if found.is_empty() {
        anyhow::bail!(
            "no kept version of {path}{} (see `skynet versions list`)",
            if at.is_some() { " at that time" } else { "" }
        );
    }
    let target_root: PathBuf = to.map_or_else(|| source.clone(), Path::to_path_buf);
    check_way(&target_root, path)?;
    let conn = destination.connect(&source, args, &state_dir).await?;
    conn.connect()
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let mut tried = Vec::new();
    let mut got = None;
    for (version, kept_at) in found {
        match conn.read(&version).await {
            Ok(bytes) => {
                got = Some((bytes, kept_at));
                break;
            }
            Err(e) => tried.push(format!("{version}: {}", e.message)),
        }
    }
    let Some((bytes, kept_at)) = got else {
        anyhow::bail!(
            "no kept version of {path} could be read: {}",
            tried.join("; ")
        );
    };
    write_beneath(&target_root, path, &bytes).await?;
    sayln!(
        "restored {path} as it was until {} into {}",
        super::status::local_time(kept_at),
        target_root.display()
    );
    Ok(Exit::Ok)
}

/// Writes `bytes` at `path` under `root` the way a delivery does: a temporary file renamed
/// into place, every folder resolved beneath `root` without following a link.
async fn write_beneath(root: &Path, path: &RelPath, bytes: &[u8]) -> Result<()> {
    std::fs::create_dir_all(root).with_context(|| format!("{}", root.display()))?;
    let mut staged = tempfile::NamedTempFile::new().context("a temporary file")?;
    std::io::Write::write_all(&mut staged, bytes).context("a temporary file")?;
    let meta = staged.as_file().metadata().context("a temporary file")?;
    let file = SourceFile::from_metadata(staged.path().to_path_buf(), &meta);
    let local = LocalConnection::new(root.to_path_buf());
    let put = skynet_core::connection::Blocking::new(local);
    put.connect()
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    put.send(&file, path)
        .await
        .map_err(|e| anyhow::anyhow!("writing {path} under {}: {}", root.display(), e.message))?;
    put.flush()
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(version: &str, original: &str, kept_at: u64) -> VersionRow {
        VersionRow {
            version: rel(version).unwrap(),
            original: rel(original).unwrap(),
            kept_at,
            confirmed: true,
        }
    }

    #[test]
    fn the_version_current_at_a_time_is_the_first_kept_after_it() {
        let rows = [
            row(".skynet-versions/a~1", "a", 1_000),
            row(".skynet-versions/a~2", "a", 2_000),
            row(".skynet-versions/d~3", "d", 3_000),
        ];
        let a = rel("a").unwrap();
        let kept = |at| -> Vec<u64> { candidates(&rows, &a, at).iter().map(|c| c.1).collect() };
        assert_eq!(kept(None), [2_000, 1_000]);
        assert_eq!(kept(Some(1_500)), [2_000]);
        assert_eq!(kept(Some(500)), [1_000, 2_000]);
        assert!(kept(Some(2_500)).is_empty());
        let inside = rel("d/x/y").unwrap();
        assert_eq!(
            candidates(&rows, &inside, None)[0].0.as_bytes(),
            b".skynet-versions/d~3/x/y"
        );
    }
}
