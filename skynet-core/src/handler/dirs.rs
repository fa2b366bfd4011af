//! When the handler removes the directories deletions and renames may have left empty at the
//! destination (complete-sync; see [`empty_dirs`]).
//!
//! It looks only while idle: nothing of this handler runs meanwhile, so none of its sends
//! writes into a directory being removed. It looks when the queue asks (a deletion or rename
//! acknowledged, a catch-up scan), after a failure once a backoff passed, and when
//! directories that waited for queued actions may be free.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Instant;
use crate::connection::Connection;
use crate::empty_dirs::{self, PassEnd};
use crate::error::ErrorKind;
use crate::retry::RetryPolicy;
use crate::source_root::SourceRoot;
use crate::state::{Queue, StateError};

use super::status::{HandlerStatus, Link};

/// The directories complete-sync may have to remove, and when to look at them again.
pub(super) struct EmptyDirs {
    conn: Arc<dyn Connection>,
    queue: Arc<Queue>,
    root: PathBuf,
    /// Asked before removing anything: never while the source is missing or unmounted.
    source: Option<Arc<SourceRoot>>,
    status: Arc<HandlerStatus>,
    retry: RetryPolicy,
    /// After a failure: look again then.
    retry_at: Option<Instant>,
    /// Failures in a row, for the backoff.
    attempt: u32,
    /// Some waited for queued actions: look again once one more action has settled (the
    /// figure of [`EmptyDirs::progress`] when they waited).
    waiting_at: Option<u64>,
}

impl EmptyDirs {
    pub(super) fn new(
        conn: Arc<dyn Connection>,
        queue: Arc<Queue>,
        root: PathBuf,
        source: Option<Arc<SourceRoot>>,
        status: Arc<HandlerStatus>,
        retry: RetryPolicy,
    ) -> Self {
        EmptyDirs {
            conn,
            queue,
            root,
            source,
            status,
            retry,
            retry_at: None,
            attempt: 0,
            waiting_at: None,
        }
    }

    /// Actions settled so far (done, or vanished), to tell that one more has.
    fn progress(&self) -> u64 {
        self.status.actions_done.load(Ordering::Relaxed)
            + self.status.vanished.load(Ordering::Relaxed)
    }

    /// Whether it is time to look again: the retry delay passed, or an action settled since
    /// some directories waited for one.
    fn due(&mut self) -> bool {
        if self.retry_at.is_some_and(|at| at <= Instant::now()) {
            self.retry_at = None;
            return true;
        }
        if self.waiting_at.is_some_and(|at| at != self.progress()) {
            self.waiting_at = None;
            return true;
        }
        false
    }

    /// Whether to look now (asked while idle): when due by this handler's own reckoning, the
    /// queue is asked to look too; then whether the queue wants a look.
    pub(super) fn wanted(&mut self) -> bool {
        if self.due() {
            self.queue.request_dirs_check();
        }
        self.queue.take_dirs_check()
    }

    /// When to look again after a failure, for the handler's sleep.
    pub(super) fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// One look at the directories complete-sync may have to remove. A failure leaves them
    /// due: looked at again after a backoff, or after reconnecting.
    pub(super) async fn look(
        &mut self,
        link: &mut Link,
        stopping: impl Fn() -> bool,
    ) -> Result<(), StateError> {
        let end = empty_dirs::remove_due(
            self.conn.as_ref(),
            &self.queue,
            &self.root,
            self.source.as_deref(),
            stopping,
        )
        .await?;
        match end {
            PassEnd::Done { waiting, .. } => {
                self.attempt = 0;
                self.retry_at = None;
                self.waiting_at = waiting.then(|| self.progress());
            }
            // The engine pauses the mapping meanwhile; until it does, look again shortly.
            PassEnd::SourceAway => {
                self.retry_at = Some(Instant::now() + Duration::from_secs(1));
            }
            PassEnd::Failed(e) if e.kind == ErrorKind::ConnectionLost => {
                tracing::warn!(error = %e.message, "connection lost; pausing");
                self.status.set_error(&e.message);
                link.disconnect();
                self.queue.request_dirs_check();
            }
            PassEnd::Failed(e) => {
                let delay = self.retry.retry_delay(self.attempt);
                self.attempt = self.attempt.saturating_add(1);
                tracing::warn!(error = %e.message, retry_in = ?delay, "cannot remove a directory the source no longer has; will try again");
                self.status.set_error(&e.message);
                self.retry_at = Some(Instant::now() + delay);
            }
        }
        Ok(())
    }
}
