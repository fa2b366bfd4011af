//! `skynet run`: watch and mirror every mapping until SIGINT or SIGTERM.

use std::path::Path;

use anyhow::{Context, Result};
use tokio::sync::watch;

use crate::cli::MappingArgs;
use crate::config;
use crate::exit::Exit;

pub async fn run(
    src: Option<&Path>,
    dest: Option<&str>,
    config_file: Option<&Path>,
    args: &MappingArgs,
) -> Result<Exit> {
    let mappings: Vec<(std::path::PathBuf, String, MappingArgs)> = match (config_file, src, dest) {
        (Some(file), _, _) => config::load(file, args)?
            .into_iter()
            .map(|m| (m.source, m.destination, m.args))
            .collect(),
        (None, Some(src), Some(dest)) => vec![(src.to_path_buf(), dest.to_string(), args.clone())],
        _ => anyhow::bail!("run needs SRC and DEST, or --config FILE"),
    };
    // Prepare every mapping before starting any, so a bad one is reported at once.
    let mut prepared = Vec::new();
    for (src, dest, args) in &mappings {
        prepared.push(super::prepare(src, dest, args, "run").await?);
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("stopping: finishing what is in flight");
        let _ = stop_tx.send(true);
    });
    let mut tasks = tokio::task::JoinSet::new();
    for p in prepared {
        let stop = stop_rx.clone();
        tracing::info!(source = %p.mapping.source().display(), destination = %p.destination, "mirroring");
        tasks.spawn(async move {
            let what = format!("{} -> {}", p.mapping.source().display(), p.destination);
            let result = p.mapping.run(p.conn.clone(), stop).await;
            (what, result, p)
        });
    }
    let mut exit = Exit::Ok;
    while let Some(joined) = tasks.join_next().await {
        let (what, result, _p) = joined.context("mapping task failed")?;
        if let Err(e) = result {
            eprintln!("skynet: error: {what}: {e}");
            exit = Exit::SomeFailed;
        }
    }
    Ok(exit)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
