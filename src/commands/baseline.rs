//! `skynet baseline SRC DEST`: record the files now in SRC as delivered, sending nothing.

use std::path::Path;

use anyhow::{Context, Result};
use skynet_core::clock::mtime_ns;
use skynet_core::scan::local_files_within;
use skynet_core::state::Delivered;
use skynet_core::{RelPath, SourceFile};

use crate::cli::MappingArgs;
use crate::exit::Exit;
use crate::out::{outln, sayln};

/// `baseline --config FILE`: every mapping of the file, one after the other.
pub async fn baseline_config(file: &Path, dry_run: bool, cli: &MappingArgs) -> Result<Exit> {
    super::each_mapping(file, cli, |m| async move {
        baseline(&m.source, m.destination.as_deref(), dry_run, &m.args).await
    })
    .await
}

pub async fn baseline(
    src: &Path,
    dest: Option<&str>,
    dry_run: bool,
    args: &MappingArgs,
) -> Result<Exit> {
    if dry_run {
        // Only lists: no state is opened, nothing connected.
        let root = src
            .canonicalize()
            .with_context(|| format!("source {}", src.display()))?;
        let files = present_files(&root, args)?;
        for (p, ..) in &files {
            outln!("record {p}");
        }
        outln!(
            "dry run: would record {} file(s) as already delivered; nothing was changed",
            files.len()
        );
        return Ok(Exit::Ok);
    }
    let prepared = super::prepare(src, dest, args, "baseline").await?;
    let root = prepared.mapping.source().to_path_buf();
    let files = present_files(&root, args)?;
    prepared.mapping.queue().record_delivered(&files)?;
    sayln!(
        "recorded {} file(s) as already at {}",
        files.len(),
        prepared.destination
    );
    Ok(Exit::Ok)
}

/// The files under `root` this mapping takes, as ledger rows.
fn present_files(root: &Path, args: &MappingArgs) -> Result<Vec<Delivered>> {
    let filter = super::filter(args)?;
    let mut files = Vec::new();
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        let Ok(rel) = RelPath::from_abs(root, &entry.path()) else {
            continue;
        };
        for p in local_files_within(root, &rel, &filter) {
            if !filter.admits_file(&p) {
                continue;
            }
            let abs = p.under(root);
            // `lstat`: a link swapped in since the walk is not followed.
            if let Ok(file) = SourceFile::stat(&abs) {
                // Send-once compares content: record it, so a touched file is not re-sent.
                let hash = if args.send_once {
                    Some(
                        file.sha256()
                            .with_context(|| format!("cannot read {}", abs.display()))?,
                    )
                } else {
                    None
                };
                files.push((p, file.size, mtime_ns(file.mtime), hash));
            }
        }
    }
    Ok(files)
}
