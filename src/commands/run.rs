//! `skynet run`: watch and mirror every mapping until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::Path;

use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::sync::watch;

use crate::cli::MappingArgs;
use crate::commands::status;
use crate::config;
use crate::exit::Exit;
use crate::metrics::{MetricsServer, Watched};

pub async fn run(
    src: Option<&Path>,
    dest: Option<&str>,
    config_file: Option<&Path>,
    metrics: Option<SocketAddr>,
    args: &MappingArgs,
) -> Result<Exit> {
    type Planned = (std::path::PathBuf, Option<String>, MappingArgs);
    let (mappings, metrics): (Vec<Planned>, Option<SocketAddr>) = match (config_file, src, dest) {
        (Some(file), _, _) => {
            let loaded = config::load(file, args)?;
            let mappings = loaded
                .mappings
                .into_iter()
                .map(|m| (m.source, m.destination, m.args))
                .collect();
            (mappings, metrics.or(loaded.metrics))
        }
        (None, Some(src), dest) if dest.is_some() || args.exec.is_some() => (
            vec![(src.to_path_buf(), dest.map(str::to_string), args.clone())],
            metrics,
        ),
        _ => anyhow::bail!("run needs SRC and DEST (or --exec), or --config FILE"),
    };
    // Prepare every mapping before starting any, so a bad one is reported at once.
    let mut prepared = Vec::new();
    for (src, dest, args) in &mappings {
        prepared.push(super::prepare(src, dest.as_deref(), args, "run").await?);
    }
    // The endpoint lives until every mapping has stopped, so a last scrape sees the end.
    let metrics = match metrics {
        Some(addr) => {
            let watched = prepared
                .iter()
                .map(|p| Watched {
                    name: status::mapping_name(&p.state_dir),
                    destination: p.destination.clone(),
                    state_dir: p.state_dir.clone(),
                    queue: Arc::clone(p.mapping.queue()),
                    live: p.mapping.status(),
                })
                .collect();
            Some(MetricsServer::start(addr, watched)?)
        }
        None => None,
    };
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
    if let Some(server) = metrics {
        server.stop();
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
