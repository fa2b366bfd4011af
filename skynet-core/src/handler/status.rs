//! What a handler reports: its live figures (shared with `status` and the metrics exporter,
//! which read them while it runs), what a drain achieved, and why a run stopped.
//!
//! Everything live is an atomic or a short-held lock, so a reader never slows a worker down.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::action::ActionKind;
use crate::state::StateError;

/// Live figures of one handler, shared with `status` and metrics.
#[derive(Debug, Default)]
pub struct HandlerStatus {
    pub connected: AtomicBool,
    pub bytes_sent: AtomicU64,
    pub actions_done: AtomicU64,
    pub actions_failed: AtomicU64,
    /// Sends settled without a delivery because the local file was gone.
    pub vanished: AtomicU64,
    /// Sends settled with nothing sent: a file this mapping does not take (include globs,
    /// no date in its name) or whose bytes the destination already had (send-once).
    pub skipped: AtomicU64,
    pub last_error: Mutex<Option<String>>,
    /// Actions done (acknowledged or skipped as unchanged), by kind.
    pub done_by_kind: KindCounters,
    /// Actions parked as failed, by kind.
    pub failed_by_kind: KindCounters,
    /// Seconds from the moment a worker starts an action to its result (every result but
    /// "held by a gate"). A batch of sends records its time shared evenly among its items.
    pub latency: LatencyHistogram,
}

/// One counter per [`ActionKind`].
#[derive(Debug, Default)]
pub struct KindCounters {
    send: AtomicU64,
    delete: AtomicU64,
    moves: AtomicU64,
}

impl KindCounters {
    fn counter(&self, kind: ActionKind) -> &AtomicU64 {
        match kind {
            ActionKind::Send => &self.send,
            ActionKind::Delete => &self.delete,
            ActionKind::Move => &self.moves,
        }
    }
    pub fn add(&self, kind: ActionKind, n: u64) {
        self.counter(kind).fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self, kind: ActionKind) -> u64 {
        self.counter(kind).load(Ordering::Relaxed)
    }
}

/// A fixed-bucket histogram of durations, lock-free, for the Prometheus exposition (upper
/// bounds in seconds: [`LatencyHistogram::BOUNDS`], then +Inf).
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Observations per bucket (not cumulative); the last one is +Inf.
    buckets: [AtomicU64; LATENCY_BUCKETS],
    sum_micros: AtomicU64,
}

const LATENCY_BUCKETS: usize = LatencyHistogram::BOUNDS.len() + 1;

/// A consistent-enough copy of a [`LatencyHistogram`].
#[derive(Debug, Clone, PartialEq)]
pub struct LatencySnapshot {
    /// (upper bound in seconds, observations in this bucket, not cumulative); the last bound
    /// is `f64::INFINITY`.
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum_seconds: f64,
}

impl LatencyHistogram {
    /// From a local rename (milliseconds) to a large upload over a slow link (minutes).
    pub const BOUNDS: [f64; 14] = [
        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0,
    ];

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = Self::BOUNDS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(Self::BOUNDS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> LatencySnapshot {
        let buckets: Vec<(f64, u64)> = Self::BOUNDS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.buckets.iter().map(|b| b.load(Ordering::Relaxed)))
            .collect();
        LatencySnapshot {
            // The sum of the buckets, so that count and +Inf always agree.
            count: buckets.iter().map(|(_, n)| n).sum(),
            buckets,
            sum_seconds: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

impl HandlerStatus {
    pub(super) fn set_error(&self, message: &str) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(message.to_string());
        }
    }
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }
}

/// Whether the handler believes the destination reachable, kept in step with
/// [`HandlerStatus::connected`]: whoever finds the link down marks both in one call, so that
/// `status` never says connected while the handler waits to reconnect.
pub(super) struct Link {
    up: bool,
    status: Arc<HandlerStatus>,
}

impl Link {
    /// Down until the first connect; `status` keeps what it showed until then.
    pub(super) fn new(status: Arc<HandlerStatus>) -> Self {
        Link { up: false, status }
    }

    pub(super) fn is_up(&self) -> bool {
        self.up
    }

    pub(super) fn connected(&mut self) {
        self.up = true;
        self.status.connected.store(true, Ordering::Relaxed);
    }

    /// The destination is unreachable (or refused us): work pauses until a reconnect.
    pub(super) fn disconnect(&mut self) {
        self.up = false;
        self.status.connected.store(false, Ordering::Relaxed);
    }
}

/// Why the handler stopped without finishing.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{0}")]
    Setup(String),
}

/// What a drain achieved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub done: u64,
    pub parked: u64,
    /// Sends a gate holds back until their time (they stay queued).
    pub held: u64,
    /// Hand-offs (verify, on_delivered, remove the local copy) that gave up.
    pub handoff_parked: u64,
    /// Deletions the mass-deletion guard holds until someone confirms them.
    pub deletions_held: u64,
    /// Sends whose local file was gone before it could be delivered (neither done nor
    /// failed).
    pub vanished: u64,
    /// Top-level entries whose command gave up (`--exec-per top-level`).
    pub entries_parked: u64,
    /// Top-level entries left for a later run: still changing, or files under them held.
    pub entries_waiting: u64,
    /// Expired versions removed (`--keep-versions`).
    pub versions_pruned: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_histogram_buckets_count_and_sum() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(300));
        h.observe(Duration::from_secs(1000));
        let s = h.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.buckets.len(), LatencyHistogram::BOUNDS.len() + 1);
        assert_eq!(s.buckets[0], (0.001, 1));
        let half = LatencyHistogram::BOUNDS
            .iter()
            .position(|b| *b == 0.5)
            .unwrap();
        assert_eq!(s.buckets[half].1, 1);
        assert_eq!(s.buckets.last(), Some(&(f64::INFINITY, 1)));
        assert!(
            (s.sum_seconds - 1000.3005).abs() < 1e-6,
            "{}",
            s.sum_seconds
        );
    }

    #[test]
    fn kind_counters_are_separate() {
        let c = KindCounters::default();
        c.add(ActionKind::Send, 2);
        c.add(ActionKind::Move, 1);
        assert_eq!(c.get(ActionKind::Send), 2);
        assert_eq!(c.get(ActionKind::Delete), 0);
        assert_eq!(c.get(ActionKind::Move), 1);
    }
}
