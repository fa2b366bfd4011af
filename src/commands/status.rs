//! `skynet status`: per mapping, what is queued, what failed and whether it is connected.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;
use skynet_core::engine::meta;
use skynet_core::queue::{now_ms, Queue, QueueRow};

use crate::exit::Exit;
use crate::state::{self, MappingLock};

#[derive(Debug, Serialize)]
pub struct MappingStatus {
    pub name: String,
    pub source: String,
    pub destination: String,
    pub running: bool,
    pub connected: bool,
    pub pending: u64,
    pub in_flight: u64,
    pub retrying: u64,
    pub failed: u64,
    pub last_error: Option<String>,
    pub bytes_sent: u64,
    pub failures: Vec<QueueRow>,
}

/// Reads one mapping's status from its state directory.
pub fn read(dir: &Path) -> Result<MappingStatus> {
    let queue = Queue::open(&skynet_core::queue::database_path(dir))?;
    let counts = queue.counts()?;
    let running = MappingLock::is_held(dir);
    let heartbeat: u64 = queue
        .meta(meta::HEARTBEAT)?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let fresh = now_ms().saturating_sub(heartbeat) < 5_000;
    let connected = running && fresh && queue.meta(meta::CONNECTED)?.as_deref() == Some("1");
    let last_error = queue
        .meta(meta::LAST_ERROR)?
        .filter(|e| !e.is_empty())
        .or(queue.last_error()?);
    let failures = queue
        .rows()?
        .into_iter()
        .filter(|r| r.state == "failed")
        .collect();
    Ok(MappingStatus {
        name: dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        source: queue.meta(meta::SOURCE)?.unwrap_or_default(),
        destination: queue.meta(meta::DESTINATION)?.unwrap_or_default(),
        running,
        connected,
        pending: counts.pending + counts.retrying,
        in_flight: counts.in_flight,
        retrying: counts.retrying,
        failed: counts.failed,
        last_error,
        bytes_sent: queue
            .meta(meta::BYTES_SENT)?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        failures,
    })
}

pub fn status(state_dir: Option<&Path>, json: bool) -> Result<Exit> {
    let root = state::state_root(state_dir)?;
    let dirs: Vec<PathBuf> = state::mapping_dirs(&root)?;
    let mut all = Vec::new();
    for dir in &dirs {
        all.push(read(dir)?);
    }
    if json {
        println!("{}", serde_json::json!({ "mappings": all }));
        return Ok(Exit::Ok);
    }
    if all.is_empty() {
        println!("no mappings in {}", root.display());
    }
    for m in &all {
        println!("{}  {} -> {}", m.name, m.source, m.destination);
        println!(
            "  {}, {}; pending {}, in flight {}, failed {}; {} bytes sent",
            if m.running { "running" } else { "stopped" },
            if m.connected {
                "connected"
            } else {
                "not connected"
            },
            m.pending,
            m.in_flight,
            m.failed,
            m.bytes_sent
        );
        if let Some(e) = &m.last_error {
            println!("  last error: {e}");
        }
        for f in &m.failures {
            println!(
                "  failed #{} {} {}: {}",
                f.id,
                f.kind.as_str(),
                f.path,
                f.last_error.as_deref().unwrap_or("")
            );
        }
    }
    Ok(Exit::Ok)
}
