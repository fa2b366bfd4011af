//! The daemon's heartbeat: its live state written to the state database once a second for
//! `skynet status` in another process, and the guard that stops a mapping whose database was
//! deleted, replaced or cannot be written any more.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::clock::now_ms;
use crate::handler::HandlerStatus;
use crate::state::meta;
use crate::state::Queue;

/// (device, inode) of a file, if it exists.
pub(super) fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// What the heartbeat checks about the state database, and how it stops the mapping.
pub(super) struct StateWatch {
    pub(super) path: PathBuf,
    pub(super) id: Option<(u64, u64)>,
    pub(super) lost: Arc<std::sync::Mutex<Option<String>>>,
    pub(super) halt: Arc<watch::Sender<bool>>,
}

impl StateWatch {
    fn stop_because(&self, why: String) {
        tracing::error!("{why}");
        if let Ok(mut lost) = self.lost.lock() {
            lost.get_or_insert(why);
        }
        let _ = self.halt.send(true);
    }
}

/// Heartbeats in a row that may fail to write before the mapping stops.
const WRITE_FAILURES_TOLERATED: u32 = 3;

/// Publishes the daemon's live state to the database once a second, and stops the mapping
/// when the database was deleted or replaced (everything recorded from then on would be lost
/// to `status` and to the next start) or cannot be written any more.
pub(super) async fn heartbeat(
    queue: Arc<Queue>,
    status: Arc<HandlerStatus>,
    mut stop: watch::Receiver<bool>,
    state: StateWatch,
) {
    let _ = queue.set_meta(meta::PID, &std::process::id().to_string());
    // (when, bytes sent by then) over the last few seconds, for the rate.
    let mut window: std::collections::VecDeque<(std::time::Instant, u64)> = Default::default();
    let mut failures = 0u32;
    loop {
        if state.id.is_some() && file_id(&state.path) != state.id {
            state.stop_because(format!(
                "state database {} was deleted or replaced while running; stopping \
                 (start skynet again to rebuild it from a catch-up scan)",
                state.path.display()
            ));
            return;
        }
        let connected = status.connected.load(Ordering::Relaxed);
        let sent = status.bytes_sent.load(Ordering::Relaxed);
        window.push_back((std::time::Instant::now(), sent));
        while window.len() > 6 {
            window.pop_front();
        }
        let rate = match (window.front(), window.back()) {
            (Some((t0, b0)), Some((t1, b1))) if t1 > t0 => {
                ((b1 - b0) as f64 / t1.duration_since(*t0).as_secs_f64()) as u64
            }
            _ => 0,
        };
        let facts = [
            (meta::HEARTBEAT, now_ms().to_string()),
            (
                meta::CONNECTED,
                if connected { "1" } else { "0" }.to_string(),
            ),
            (meta::BYTES_SENT, sent.to_string()),
            (meta::RATE, rate.to_string()),
            (
                meta::DONE,
                status.actions_done.load(Ordering::Relaxed).to_string(),
            ),
            (meta::LAST_ERROR, status.last_error().unwrap_or_default()),
        ];
        let mut failed = None;
        for (k, v) in facts {
            if let Err(e) = queue.set_meta(k, &v) {
                failed = Some(e);
                break;
            }
        }
        match failed {
            None => failures = 0,
            Some(e) => {
                failures += 1;
                tracing::warn!(error = %e, "cannot write status");
                if failures >= WRITE_FAILURES_TOLERATED {
                    state.stop_because(format!("{e}; stopping: the state cannot be recorded"));
                    return;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => return,
        }
    }
}
