//! `skynet versions list [PATH] | restore SRC DEST PATH [--at TIME] [--to DIR]`: what the
//! destination kept of deleted and overwritten files (`--keep-versions`), and bringing one
//! back. A restored file lands in the source (or `--to DIR`) and is then mirrored like any
//! other change; with versions on, the copy it replaces at the destination is kept in turn.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use skynet_core::state::{Queue, VersionRow};
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
        let queue = Queue::open(&skynet_core::state::database_path(&dir))?;
        let name = crate::mapping_status::mapping_name(&dir);
        let rows = queue.version_rows(path)?;
        if !json {
            outln!("{name}: {} version(s)", rows.len());
            for r in &rows {
                let unconfirmed = if r.confirmed { "" } else { "  (unconfirmed)" };
                outln!(
                    "  {}  {}  -> {}{unconfirmed}",
                    crate::mapping_status::local_time(r.kept_at),
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

/// For each file at or under `path` that a version holds, the version to bring back: among
/// the versions that exist at the destination (`listing`), the newest, or with `at` the
/// first kept after that time. A folder's version holds its files at the same places below.
fn plan(
    rows: &[VersionRow],
    listing: &[RelPath],
    path: &RelPath,
    at: Option<u64>,
) -> BTreeMap<RelPath, (RelPath, u64)> {
    let mut found: BTreeMap<RelPath, Vec<(RelPath, u64)>> = BTreeMap::new();
    for row in rows {
        let (lo, hi) = (
            row.version.as_bytes(),
            [row.version.as_bytes(), b"/"].concat(),
        );
        for file in listing {
            let rest = if file.as_bytes() == lo {
                Some(&b""[..])
            } else {
                file.as_bytes().strip_prefix(&hi[..])
            };
            let Some(rest) = rest else { continue };
            let original = if rest.is_empty() {
                row.original.clone()
            } else {
                match RelPath::from_bytes(&[row.original.as_bytes(), b"/", rest].concat()) {
                    Ok(p) => p,
                    Err(_) => continue,
                }
            };
            if original.is_within(path) {
                found
                    .entry(original)
                    .or_default()
                    .push((file.clone(), row.kept_at));
            }
        }
    }
    found
        .into_iter()
        .filter_map(|(original, mut versions)| {
            let pick = match at {
                None => versions.into_iter().max_by_key(|(_, kept_at)| *kept_at),
                Some(at) => {
                    versions.retain(|(_, kept_at)| *kept_at >= at);
                    versions.into_iter().min_by_key(|(_, kept_at)| *kept_at)
                }
            };
            pick.map(|p| (original, p))
        })
        .collect()
}

/// The versions that may hold `path`: those of it, of the files and folders under it, and of
/// the folders above it.
fn rows_for(queue: &Queue, path: &RelPath) -> Result<Vec<VersionRow>> {
    let mut rows = queue.version_rows(Some(path))?;
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
    Ok(rows)
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
    let queue = Queue::open(&skynet_core::state::database_path(&state_dir))?;
    let rows = rows_for(&queue, path)?;
    let when = if at.is_some() { " at that time" } else { "" };
    if rows.is_empty() {
        anyhow::bail!("no kept version of {path}{when} (see `skynet versions list`)");
    }
    let target_root: PathBuf = to.map_or_else(|| source.clone(), Path::to_path_buf);
    let conn = destination.connect(&source, args, &state_dir).await?;
    conn.connect()
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let listing: Vec<RelPath> = conn
        .list()
        .await
        .map_err(|e| anyhow::anyhow!("listing the destination: {}", e.message))?
        .into_iter()
        .map(|e| e.path)
        .collect();
    let chosen = plan(&rows, &listing, path, at);
    if chosen.is_empty() {
        anyhow::bail!(
            "no kept version of {path}{when} is at the destination (see `skynet versions list`)"
        );
    }
    let (mut restored, mut skipped) = (0u64, 0u64);
    for (original, (version, kept_at)) in &chosen {
        if let Err(e) = check_way(&target_root, original) {
            eprintln!("skynet: not restored: {e:#}");
            skipped += 1;
            continue;
        }
        // Staged beside the state (not in the source, where a daemon would see it, nor in
        // memory: a version may be larger than it), then written in place like a delivery.
        let mut staged = tempfile::NamedTempFile::new_in(&state_dir)
            .context("a temporary file for the restore")?;
        conn.download(version, staged.as_file_mut())
            .await
            .map_err(|e| anyhow::anyhow!("reading the version {version}: {}", e.message))?;
        write_beneath(&target_root, original, &staged).await?;
        sayln!(
            "restored {original} as it was until {} into {}",
            crate::mapping_status::local_time(*kept_at),
            target_root.display()
        );
        restored += 1;
    }
    if restored == 0 {
        anyhow::bail!(
            "nothing restored: something stands where each of the {skipped} file(s) goes; move it away, or use --to DIR"
        );
    }
    if skipped > 0 {
        eprintln!("skynet: restored {restored} file(s), {skipped} not (see above)");
        return Ok(Exit::SomeFailed);
    }
    Ok(Exit::Ok)
}

/// Writes the `staged` copy at `path` under `root` the way a delivery does: a temporary file
/// renamed into place, every folder resolved beneath `root` without following a link.
async fn write_beneath(
    root: &Path,
    path: &RelPath,
    staged: &tempfile::NamedTempFile,
) -> Result<()> {
    std::fs::create_dir_all(root).with_context(|| format!("{}", root.display()))?;
    let meta = staged.as_file().metadata().context("the staged copy")?;
    let file = SourceFile::from_metadata(staged.path().to_path_buf(), &meta);
    let put = skynet_core::connection::Blocking::new(LocalConnection::new(root.to_path_buf()));
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
            row(".skynet-versions/d/y~4", "d/y", 4_000),
        ];
        let listing: Vec<RelPath> = [
            "a",
            ".skynet-versions/a~1",
            ".skynet-versions/a~2",
            ".skynet-versions/d~3/x",
            ".skynet-versions/d~3/sub/z",
            ".skynet-versions/d/y~4",
        ]
        .iter()
        .map(|p| rel(p).unwrap())
        .collect();
        let kept = |path: &str, at| -> Vec<(String, u64)> {
            plan(&rows, &listing, &rel(path).unwrap(), at)
                .into_iter()
                .map(|(o, (_, t))| (o.display(), t))
                .collect()
        };
        assert_eq!(kept("a", None), [("a".to_string(), 2_000)]);
        assert_eq!(kept("a", Some(1_500)), [("a".to_string(), 2_000)]);
        assert_eq!(kept("a", Some(500)), [("a".to_string(), 1_000)]);
        assert!(kept("a", Some(2_500)).is_empty());
        // A folder: every file its versions hold, each from its own best version.
        assert_eq!(
            kept("d", None),
            [
                ("d/sub/z".to_string(), 3_000),
                ("d/x".to_string(), 3_000),
                ("d/y".to_string(), 4_000)
            ]
        );
        // A file inside a folder's version.
        assert_eq!(kept("d/x", None), [("d/x".to_string(), 3_000)]);
    }
}
