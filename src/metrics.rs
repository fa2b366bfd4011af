//! `run --metrics ADDR`: a small HTTP endpoint on its own thread.
//!
//! - `GET /metrics`: Prometheus metrics (OpenMetrics text) of the mappings this daemon runs,
//!   read at scrape time from each handler's live figures and each queue.
//! - `GET /status`: the same JSON as `skynet status --json`, for these mappings.
//!
//! Every series carries the labels `mapping` (the state directory's name, as in `status`)
//! and `destination`. There is no authentication: bind it to loopback (the default in the
//! docs) or put it behind something that authenticates.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use skynet_core::handler::HandlerStatus;
use skynet_core::state::Queue;
use skynet_core::ActionKind;

use crate::mapping_status as status;

/// One mapping as the endpoint sees it.
pub struct Watched {
    /// The state directory's name, as `status` shows it.
    pub name: String,
    pub destination: String,
    pub state_dir: PathBuf,
    pub queue: Arc<Queue>,
    pub live: Arc<HandlerStatus>,
}

impl std::fmt::Debug for Watched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched")
            .field("name", &self.name)
            .field("destination", &self.destination)
            .finish_non_exhaustive()
    }
}

const KINDS: [ActionKind; 3] = [ActionKind::Send, ActionKind::Delete, ActionKind::Move];

/// Reads every figure at scrape time.
#[derive(Debug)]
struct MappingsCollector(Arc<Vec<Watched>>);

impl Collector for MappingsCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mappings = self.0.as_slice();
        let labels = |m: &Watched| {
            vec![
                ("mapping", m.name.clone()),
                ("destination", m.destination.clone()),
            ]
        };
        let with = |m: &Watched, key: &'static str, value: &str| {
            let mut l = labels(m);
            l.push((key, value.to_string()));
            l
        };

        // Queue depth, read from the database (a failed read leaves the mapping out).
        let counts: Vec<_> = mappings
            .iter()
            .filter_map(|m| match m.queue.counts() {
                Ok(c) => Some((m, c)),
                Err(e) => {
                    tracing::warn!(mapping = %m.name, error = %e, "metrics: cannot read the queue");
                    None
                }
            })
            .collect();
        {
            let mut family = enc.encode_descriptor(
                "skynet_queue_actions",
                "Actions in the queue by state (pending includes those waiting to retry)",
                None,
                MetricType::Gauge,
            )?;
            for (m, c) in &counts {
                for (state, n) in [
                    ("pending", c.pending + c.retrying),
                    ("in_flight", c.in_flight),
                    ("held", c.held),
                    ("failed", c.failed),
                    ("deletion_held", c.deletions_held),
                ] {
                    let l = with(m, "state", state);
                    ConstGauge::new(n).encode(family.encode_family(&l)?)?;
                }
            }
        }

        {
            let mut family = enc.encode_descriptor(
                "skynet_files_not_sent",
                "Files the last scan left aside: no mapping of the source takes them \
                 (reason=\"unrouted\"), or a dated gate never will (reason=\"undated\")",
                None,
                MetricType::Gauge,
            )?;
            for m in mappings {
                for (reason, key) in [
                    ("unrouted", skynet_core::scan::UNROUTED_KEY),
                    ("undated", skynet_core::scan::UNDATED_KEY),
                ] {
                    let text = m.queue.meta(key).ok().flatten().unwrap_or_default();
                    let (n, _) = skynet_core::scan::Skipped::decode(&text);
                    let l = with(m, "reason", reason);
                    ConstGauge::new(n as i64).encode(family.encode_family(&l)?)?;
                }
            }
        }

        {
            let mut family = enc.encode_descriptor(
                "skynet_versions_kept",
                "Versions kept at the destination of what it deleted or overwrote (--keep-versions)",
                None,
                MetricType::Gauge,
            )?;
            for m in mappings {
                if let Ok((n, _)) = m.queue.versions_summary() {
                    ConstGauge::new(n as i64).encode(family.encode_family(&labels(m))?)?;
                }
            }
        }

        for (name, help, pick) in [
            (
                "skynet_actions_done",
                "Actions done since start, by kind",
                (|s: &HandlerStatus, k| s.done_by_kind.get(k))
                    as fn(&HandlerStatus, ActionKind) -> u64,
            ),
            (
                "skynet_actions_failed",
                "Actions parked as failed since start, by kind",
                |s: &HandlerStatus, k| s.failed_by_kind.get(k),
            ),
        ] {
            let mut family = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
            for m in mappings {
                for kind in KINDS {
                    let l = with(m, "kind", kind.as_str());
                    ConstCounter::new(pick(&m.live, kind)).encode(family.encode_family(&l)?)?;
                }
            }
        }

        {
            let mut family = enc.encode_descriptor(
                "skynet_bytes_sent",
                "Bytes sent to the destination since start",
                None,
                MetricType::Counter,
            )?;
            for m in mappings {
                let n = m.live.bytes_sent.load(Ordering::Relaxed);
                ConstCounter::new(n).encode(family.encode_family(&labels(m))?)?;
            }
        }

        {
            let mut family = enc.encode_descriptor(
                "skynet_sends_skipped",
                "Sends settled with nothing sent since start: files this mapping does not take \
                 (include globs, no date in the name) or the destination already had",
                None,
                MetricType::Counter,
            )?;
            for m in mappings {
                let n = m.live.skipped.load(Ordering::Relaxed);
                ConstCounter::new(n).encode(family.encode_family(&labels(m))?)?;
            }
        }

        {
            let mut family = enc.encode_descriptor(
                "skynet_sends_vanished",
                "Sends settled without a delivery because the local file was gone, since start",
                None,
                MetricType::Counter,
            )?;
            for m in mappings {
                let n = m.live.vanished.load(Ordering::Relaxed);
                ConstCounter::new(n).encode(family.encode_family(&labels(m))?)?;
            }
        }

        {
            let mut family = enc.encode_descriptor(
                "skynet_connected",
                "1 while the destination is connected, else 0",
                None,
                MetricType::Gauge,
            )?;
            for m in mappings {
                let up = i64::from(m.live.connected.load(Ordering::Relaxed));
                ConstGauge::new(up).encode(family.encode_family(&labels(m))?)?;
            }
        }

        {
            let mut family = enc.encode_descriptor(
                "skynet_action_duration_seconds",
                "Seconds from a worker starting an action to its result (batched sends share their batch's time)",
                None,
                MetricType::Histogram,
            )?;
            for m in mappings {
                let snap = m.live.latency.snapshot();
                let l = labels(m);
                let mut metric = family.encode_family(&l)?;
                metric.encode_histogram::<NoLabelSet>(
                    snap.sum_seconds,
                    snap.count,
                    &snap.buckets,
                    None,
                )?;
            }
        }
        Ok(())
    }
}

/// The running endpoint. Stops when dropped (or with [`MetricsServer::stop`]).
pub struct MetricsServer {
    server: Arc<tiny_http::Server>,
    stopping: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MetricsServer {
    /// Listens on `addr` and serves on a thread of its own.
    pub fn start(addr: SocketAddr, mappings: Vec<Watched>) -> Result<MetricsServer> {
        if !addr.ip().is_loopback() {
            tracing::warn!(%addr, "metrics endpoint on a non-loopback address: anyone who can reach it sees paths and errors (no authentication)");
        }
        let server = tiny_http::Server::http(addr)
            .map_err(|e| anyhow!("--metrics {addr}: cannot listen: {e}"))?;
        let server = Arc::new(server);
        let mappings = Arc::new(mappings);
        let mut registry = Registry::default();
        registry.register_collector(Box::new(MappingsCollector(Arc::clone(&mappings))));
        let stopping = Arc::new(AtomicBool::new(false));
        let thread = {
            let (server, stopping) = (Arc::clone(&server), Arc::clone(&stopping));
            std::thread::Builder::new()
                .name("skynet-metrics".to_string())
                .spawn(move || serve(&server, &stopping, &registry, &mappings))
                .context("cannot start the metrics thread")?
        };
        tracing::info!(%addr, "metrics at http://{addr}/metrics, status at /status");
        Ok(MetricsServer {
            server,
            stopping,
            thread: Some(thread),
        })
    }

    /// Stops serving and waits (a second at most: a stuck client must not delay the exit)
    /// for the request being answered.
    pub fn stop(mut self) {
        self.shut();
        if let Some(thread) = self.thread.take() {
            let deadline = std::time::Instant::now() + Duration::from_secs(1);
            while !thread.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
    }

    fn shut(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.server.unblock();
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.shut();
    }
}

fn serve(
    server: &tiny_http::Server,
    stopping: &AtomicBool,
    registry: &Registry,
    mappings: &[Watched],
) {
    loop {
        let request = match server.recv() {
            Ok(r) => r,
            Err(_) if stopping.load(Ordering::SeqCst) => return,
            Err(e) => {
                tracing::warn!(error = %e, "metrics: cannot accept a connection");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let (code, content_type, body) =
            answer(request.method(), request.url(), registry, mappings);
        let mut response = tiny_http::Response::from_string(body).with_status_code(code);
        if let Ok(header) = tiny_http::Header::from_bytes("Content-Type", content_type) {
            response = response.with_header(header);
        }
        if let Err(e) = request.respond(response) {
            tracing::debug!(error = %e, "metrics: cannot answer");
        }
    }
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// Status code, content type and body for one request.
fn answer(
    method: &tiny_http::Method,
    url: &str,
    registry: &Registry,
    mappings: &[Watched],
) -> (u16, &'static str, String) {
    if *method != tiny_http::Method::Get && *method != tiny_http::Method::Head {
        return (405, TEXT, "only GET\n".to_string());
    }
    let path = url.split('?').next().unwrap_or(url);
    match path {
        "/metrics" => {
            let mut body = String::new();
            match prometheus_client::encoding::text::encode(&mut body, registry) {
                Ok(()) => (200, OPENMETRICS, body),
                Err(_) => (500, TEXT, "cannot encode metrics\n".to_string()),
            }
        }
        "/status" => {
            let read: Result<Vec<_>> = mappings
                .iter()
                .map(|m| status::read(&m.state_dir))
                .collect();
            match read {
                Ok(all) => (200, "application/json", status::to_json(&all).to_string()),
                Err(e) => {
                    let line = format!("{e:#}").replace('\n', " ");
                    (500, TEXT, format!("cannot read status: {line}\n"))
                }
            }
        }
        "/" => {
            let mut body = String::from("skynet\n");
            let _ = writeln!(body, "/metrics  Prometheus metrics (OpenMetrics text)");
            let _ = writeln!(body, "/status   the same JSON as `skynet status --json`");
            (200, TEXT, body)
        }
        _ => (
            404,
            TEXT,
            "not found; try /metrics or /status\n".to_string(),
        ),
    }
}
