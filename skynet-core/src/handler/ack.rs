//! Acknowledging results in batches, after a durability barrier.
//!
//! After [`Connection::flush`] succeeds, one transaction removes the rows and updates the
//! ledger. Nothing is acknowledged before it is durable, and a crash before the
//! acknowledgement just replays idempotent actions. The flush runs as its own task while
//! workers go on; it covers only the results that came back before it started, and results
//! that arrive meanwhile wait for the next one.

use std::sync::Arc;

use tokio::task::JoinSet;

use crate::clock::Instant;
use crate::connection::Connection;
use crate::error::{ConnError, ErrorKind};
use crate::state::{Outcome, Queue, StateError};

use super::config::HandlerConfig;
use super::status::{HandlerStatus, Link};

/// Results waiting for acknowledgement, and the flush under way.
pub(super) struct Acks {
    conn: Arc<dyn Connection>,
    queue: Arc<Queue>,
    status: Arc<HandlerStatus>,
    /// Results not yet covered by a flush.
    unacked: Vec<Outcome>,
    /// When the oldest of `unacked` came back.
    oldest: Option<Instant>,
    /// The flush running for the batch in `flushing` (at most one at a time).
    flush_task: JoinSet<Result<(), ConnError>>,
    flushing: Vec<Outcome>,
}

impl Acks {
    pub(super) fn new(
        conn: Arc<dyn Connection>,
        queue: Arc<Queue>,
        status: Arc<HandlerStatus>,
    ) -> Self {
        Acks {
            conn,
            queue,
            status,
            unacked: Vec::new(),
            oldest: None,
            flush_task: JoinSet::new(),
            flushing: Vec::new(),
        }
    }

    /// A result to acknowledge with the next batch.
    pub(super) fn push(&mut self, outcome: Outcome) {
        self.unacked.push(outcome);
        self.oldest.get_or_insert_with(Instant::now);
    }

    /// Nothing waits for acknowledgement and no flush runs.
    pub(super) fn is_empty(&self) -> bool {
        self.unacked.is_empty() && self.flush_task.is_empty()
    }

    pub(super) fn has_unacked(&self) -> bool {
        !self.unacked.is_empty()
    }

    pub(super) fn is_flushing(&self) -> bool {
        !self.flush_task.is_empty()
    }

    /// Whether to start a flush now: none runs, and the batch is full, nothing executes that
    /// could join it, its oldest result waited `ack_delay`, or the handler is stopping.
    pub(super) fn due(&self, cfg: &HandlerConfig, executing: bool, stopping: bool) -> bool {
        self.flush_task.is_empty()
            && !self.unacked.is_empty()
            && (self.unacked.len() >= cfg.ack_batch
                || !executing
                || self.oldest.is_some_and(|t| t.elapsed() >= cfg.ack_delay)
                || stopping)
    }

    /// Starts the flush of the results so far; a batch with nothing done needs no flush and
    /// is recorded at once.
    pub(super) fn start(&mut self) -> Result<(), StateError> {
        let batch = std::mem::take(&mut self.unacked);
        self.oldest = None;
        if batch.iter().any(|o| matches!(o, Outcome::Done { .. })) {
            let conn = Arc::clone(&self.conn);
            self.flush_task.spawn(async move { conn.flush().await });
            self.flushing = batch;
        } else {
            self.queue.finish(&batch)?;
        }
        Ok(())
    }

    /// When the oldest result is due for acknowledgement, while no flush runs.
    pub(super) fn timer(&self) -> Option<Instant> {
        if self.flush_task.is_empty() {
            self.oldest
        } else {
            None
        }
    }

    /// The result of the flush under way, once it ends (`None` when none runs).
    pub(super) async fn next_flush(&mut self) -> Option<Result<(), ConnError>> {
        let joined = self.flush_task.join_next().await?;
        Some(
            joined.unwrap_or_else(|e| Err(ConnError::transient(format!("flush task failed: {e}")))),
        )
    }

    /// Records the batch of the flush that ended with `flushed`.
    pub(super) fn flush_ended(
        &mut self,
        flushed: Result<(), ConnError>,
        link: &mut Link,
    ) -> Result<(), StateError> {
        let batch = std::mem::take(&mut self.flushing);
        self.record(batch, flushed, link)
    }

    /// While paused: the results that came back before are recorded now (a success whose
    /// flush fails is retried), not left in flight while reconnecting.
    pub(super) async fn acknowledge_now(&mut self, link: &mut Link) -> Result<(), StateError> {
        let batch = std::mem::take(&mut self.unacked);
        self.acknowledge(batch, link).await?;
        self.oldest = None;
        Ok(())
    }

    /// Stopping: the flush under way completes and its batch is recorded; the results not
    /// yet covered by a flush are handed back.
    pub(super) async fn finish(&mut self, link: &mut Link) -> Result<Vec<Outcome>, StateError> {
        if let Some(flushed) = self.next_flush().await {
            self.flush_ended(flushed, link)?;
        }
        Ok(std::mem::take(&mut self.unacked))
    }

    /// Flushes the destination, then records the outcomes. A failed flush turns the
    /// successes back into retries: they were not proven durable.
    pub(super) async fn acknowledge(
        &self,
        batch: Vec<Outcome>,
        link: &mut Link,
    ) -> Result<(), StateError> {
        let any_done = batch.iter().any(|o| matches!(o, Outcome::Done { .. }));
        let flushed = if any_done {
            self.conn.flush().await
        } else {
            Ok(())
        };
        self.record(batch, flushed, link)
    }

    /// Records a batch of outcomes after its flush: a failed flush turns the successes back
    /// into retries.
    fn record(
        &self,
        batch: Vec<Outcome>,
        flushed: Result<(), ConnError>,
        link: &mut Link,
    ) -> Result<(), StateError> {
        if let Err(e) = flushed {
            tracing::warn!(error = %e.message, "flush failed; actions will be replayed");
            self.status.set_error(&e.message);
            if e.kind == ErrorKind::ConnectionLost {
                link.disconnect();
            }
            let retried: Vec<Outcome> = batch
                .into_iter()
                .map(|o| match o {
                    Outcome::Done { id, .. } => Outcome::Retry {
                        id,
                        error: e.message.clone(),
                        ready_at: 0,
                        failed: false,
                    },
                    other => other,
                })
                .collect();
            return self.queue.finish(&retried);
        }
        self.queue.finish(&batch)
    }
}
