//! Hand-off after delivery: the relay and "free the disk" workflows.
//!
//! Once a send is acknowledged (durable at the destination), its hand-off row (filed in the
//! same transaction, see `Queue::finish`) is worked here:
//!
//! 1. the local file must still be the version that was delivered (same size and mtime);
//!    if it changed or vanished, this hand-off is dropped (a changed file's next delivery
//!    files its own);
//! 2. with `remove_source`, the destination must verify that it holds the same bytes
//!    ([`Connection::verify`]: size, and a content hash where the backend can);
//! 3. the `on_delivered` hook runs (after verification, so it never announces a bad copy;
//!    before removal, so it can still read the file);
//! 4. with `remove_source`, the local file is removed, after checking once more that it is
//!    unchanged.
//!
//! A failure at any step retries with backoff and parks after `max_attempts`, visible in
//! `status`; nothing is removed unless step 2 passed. A crash replays the hand-off: the hook
//! runs at least once per delivery, never zero times.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::action::ActionKind;
use crate::argv::{Template, Vars};
use crate::command;
use crate::connection::{Connection, SourceFile, Verification};
use crate::error::ErrorKind;
use crate::handler::backoff;
use crate::queue::{mtime_ns, now_ms, HandoffRow, Queue, StateError};
use crate::relpath::RelPath;

/// Something to run for each delivered file (`on_delivered`).
#[async_trait]
pub trait DeliveredHook: Send + Sync {
    /// `rel`: the path relative to the source root; `local`: the local file. An error is one
    /// line saying what went wrong.
    async fn delivered(&self, rel: &RelPath, local: &Path) -> Result<(), String>;
}

/// The `on_delivered` command: run once per delivered file with the same placeholders as
/// the command destination (`{action}` is `send`), no shell involved.
pub struct CommandHook {
    template: Template,
    timeout: Duration,
}

impl CommandHook {
    pub fn new(template: Template, timeout: Duration) -> Self {
        CommandHook { template, timeout }
    }
}

#[async_trait]
impl DeliveredHook for CommandHook {
    async fn delivered(&self, rel: &RelPath, local: &Path) -> Result<(), String> {
        let vars = Vars::single(ActionKind::Send, local, rel.as_os_str());
        let argv = self.template.render(&vars);
        command::run(&argv, &vars.env(), self.timeout)
            .await
            .map_err(|e| e.to_string())
    }
}

/// What to do once a delivery is acknowledged.
#[derive(Clone)]
pub struct HandoffOptions {
    /// Remove the local file once the destination verified it holds the same bytes.
    pub remove_source: bool,
    pub on_delivered: Option<Arc<dyn DeliveredHook>>,
    /// Wait this long after delivery before handing off (keep local copies a while).
    pub delay: Duration,
    pub max_attempts: u32,
    pub retry_base: Duration,
    pub retry_cap: Duration,
}

impl Default for HandoffOptions {
    fn default() -> Self {
        HandoffOptions {
            remove_source: false,
            on_delivered: None,
            delay: Duration::ZERO,
            max_attempts: 5,
            retry_base: Duration::from_secs(1),
            retry_cap: Duration::from_secs(300),
        }
    }
}

impl std::fmt::Debug for HandoffOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandoffOptions")
            .field("remove_source", &self.remove_source)
            .field("on_delivered", &self.on_delivered.is_some())
            .field("delay", &self.delay)
            .finish()
    }
}

impl HandoffOptions {
    /// True when deliveries need a hand-off at all.
    pub fn enabled(&self) -> bool {
        self.remove_source || self.on_delivered.is_some()
    }
}

/// Works one mapping's hand-off rows.
pub struct Handoff {
    pub queue: Arc<Queue>,
    pub conn: Arc<dyn Connection>,
    pub root: PathBuf,
    pub opts: HandoffOptions,
}

/// What one hand-off came to.
enum Step {
    Done,
    Failed(String),
    /// The destination is unreachable: try again later without counting an attempt, so an
    /// outage does not park every hand-off.
    Unreachable(String),
}

impl Handoff {
    /// Works due hand-offs until `stop` turns true; with `until_drained`, returns once none is
    /// waiting (parked ones aside). Returns how many are parked.
    pub async fn run(
        &self,
        mut stop: watch::Receiver<bool>,
        until_drained: bool,
    ) -> Result<u64, StateError> {
        loop {
            if *stop.borrow() {
                break;
            }
            let due = self.queue.handoff_due(32, now_ms())?;
            if due.is_empty() {
                let next = self.queue.handoff_next_due()?;
                if until_drained && next.is_none() {
                    break;
                }
                let wait = next
                    .map(|at| Duration::from_millis(at.saturating_sub(now_ms())))
                    .unwrap_or(Duration::from_secs(1))
                    .clamp(Duration::from_millis(20), Duration::from_secs(1));
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
            for row in due {
                match self.one(&row).await {
                    Step::Done => self.queue.handoff_done(&row)?,
                    Step::Failed(why) => self.failed(&row, &why, true)?,
                    Step::Unreachable(why) => self.failed(&row, &why, false)?,
                }
            }
        }
        Ok(self
            .queue
            .handoff_rows()?
            .iter()
            .filter(|r| r.parked)
            .count() as u64)
    }

    async fn one(&self, row: &HandoffRow) -> Step {
        let local = row.path.under(&self.root);
        let delivered_version =
            |f: &SourceFile| f.size == row.size && mtime_ns(f.mtime) == row.mtime_ns;
        let file = match SourceFile::stat(&local) {
            Ok(f) if delivered_version(&f) => f,
            // Gone, or changed since (its next delivery hands off): nothing to do.
            _ => return Step::Done,
        };
        if self.opts.remove_source {
            match self.conn.verify(&file, &row.path).await {
                Ok(Verification::Mismatch(why)) => {
                    return Step::Failed(format!("verification failed: {why}"))
                }
                Ok(v) => tracing::debug!(path = %row.path, verified = ?v, "verified"),
                Err(e) if e.kind == ErrorKind::ConnectionLost => {
                    return Step::Unreachable(format!("cannot verify: {}", e.message))
                }
                Err(e) => return Step::Failed(format!("cannot verify: {}", e.message)),
            }
        }
        if let Some(hook) = &self.opts.on_delivered {
            if let Err(why) = hook.delivered(&row.path, &local).await {
                return Step::Failed(format!("on_delivered: {why}"));
            }
        }
        if self.opts.remove_source {
            match SourceFile::stat(&local) {
                Ok(f) if delivered_version(&f) => {}
                _ => return Step::Done,
            }
            if let Err(e) = std::fs::remove_file(&local) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    return Step::Failed(format!("cannot remove {}: {e}", local.display()));
                }
            }
            tracing::info!(path = %row.path, "delivered and verified; local copy removed");
        }
        Step::Done
    }

    /// Schedules the next try of `row` with backoff; `counts`: this try counts toward
    /// parking it.
    fn failed(&self, row: &HandoffRow, why: &str, counts: bool) -> Result<(), StateError> {
        let park = counts && row.attempts + 1 >= self.opts.max_attempts;
        let delay = backoff(self.opts.retry_base, self.opts.retry_cap, row.attempts);
        if park {
            tracing::error!(path = %row.path, error = %why, "hand-off parked; the local file is kept");
        } else {
            tracing::warn!(path = %row.path, error = %why, retry_in = ?delay, "hand-off failed; the local file is kept");
        }
        let ready_at = now_ms() + delay.as_millis() as u64;
        self.queue.handoff_failed(row, why, ready_at, park, counts)
    }
}
