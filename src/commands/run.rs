//! `skynet run`: watch and mirror every mapping until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::Path;

use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::sync::watch;

use crate::cli::MappingArgs;
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
    // Listen before preparing: a SIGTERM during start-up (a service manager stopping us
    // early) is then a clean stop, not the default action killing the process.
    let signalled = stop_signal();
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
                    name: crate::mapping_status::mapping_name(&p.state_dir),
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
        signalled.await;
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

/// Registers for SIGTERM and SIGINT now (replacing their default action at once), and
/// returns a future that completes when either arrives.
fn stop_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let listen = |kind: SignalKind, name: &str| match signal(kind) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for {name}");
            None
        }
    };
    let mut term = listen(SignalKind::terminate(), "SIGTERM");
    let mut int = listen(SignalKind::interrupt(), "SIGINT");
    async move {
        tokio::select! {
            () = next(&mut term) => {}
            () = next(&mut int) => {}
        }
    }
}

/// The next delivery of `signal`, or never when it could not be registered.
async fn next(signal: &mut Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}
