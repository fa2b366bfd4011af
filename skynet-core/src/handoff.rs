//! Hand-off after delivery: the relay and "free the disk" workflows.
//!
//! Once a send is acknowledged (durable at the destination), its hand-off row (filed in the
//! same transaction, see `Queue::finish`) is worked here:
//!
//! 1. the local file must still be the version that was delivered: same inode, size, mtime
//!    and ctime (a writer can set mtime back, never ctime). If it vanished, this hand-off is
//!    dropped; if it changed, too, and its send is queued again (a catch-up scan, comparing
//!    size and mtime, would miss a rewrite whose mtime was set back);
//! 2. with `remove_source`, the destination must verify that it holds the same bytes
//!    ([`Connection::verify`]: size, and a content hash where the backend can; a backend that
//!    can make writes durable, e.g. SFTP's `fsync@openssh.com`, did so before acknowledging);
//! 3. the `on_delivered` hook runs (after verification, so it never announces a bad copy;
//!    before removal, so it can still read the file);
//! 4. with `remove_source`, the local file is removed, only if, checked right before on a
//!    descriptor opened without following links: it is still the delivered version (step 1
//!    again: the hook may take a while), no process has it open for writing
//!    ([`crate::open_writers`]), and every other mapping of the source that takes it holds
//!    the same version, marked in its ledger so that it never propagates this removal as a
//!    deletion ([`crate::siblings`]). Waiting for a writer or a sibling is not a failure: the
//!    hand-off looks again later and never parks for it.
//!
//! A failure at any step retries with backoff and parks after `max_attempts`, visible in
//! `status`; nothing is removed unless step 2 passed. A crash replays the hand-off: the hook
//! runs at least once per delivery, never zero times.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::action::{Action, ActionKind};
use crate::argv::{Template, Vars};
use crate::clock::{mtime_ns, now_ms};
use crate::command;
use crate::connection::{Connection, SourceFile, Verification};
use crate::error::ErrorKind;
use crate::merge::Entry;
use crate::relpath::RelPath;
use crate::retry::{next_look, RetryPolicy};
use crate::siblings::SiblingFinder;
use crate::state::{HandoffRow, Queue, StateError};

mod removal;
use removal::Remover;

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
    child_env: command::ChildEnv,
}

impl CommandHook {
    /// `child_env`: what the program inherits of skynet's environment (secrets withheld).
    pub fn new(template: Template, timeout: Duration, child_env: command::ChildEnv) -> Self {
        CommandHook {
            template,
            timeout,
            child_env,
        }
    }
}

#[async_trait]
impl DeliveredHook for CommandHook {
    async fn delivered(&self, rel: &RelPath, local: &Path) -> Result<(), String> {
        let vars = Vars::single(ActionKind::Send, local, rel.as_os_str());
        let argv = self.template.render(&vars);
        command::run(&argv, &vars.env(), &self.child_env, self.timeout)
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
    /// When a failed hand-off is tried again and when it is parked (hand-offs park for good:
    /// `park_base`/`park_cap` are not used).
    pub retry: RetryPolicy,
}

impl Default for HandoffOptions {
    fn default() -> Self {
        HandoffOptions {
            remove_source: false,
            on_delivered: None,
            delay: Duration::ZERO,
            retry: RetryPolicy::default(),
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
    /// Where the other mappings of this source are (see [`crate::siblings`]); `None`: this
    /// mapping is taken to be the only one.
    pub siblings: Option<SiblingFinder>,
}

/// How long a hand-off that waits (a writer has the file open, a sibling mapping has not
/// delivered it yet) waits before looking again. Waiting is not failing: it never parks.
pub const WAIT_RETRY: Duration = Duration::from_secs(3);

/// What one hand-off came to.
enum Step {
    Done,
    Failed(String),
    /// The destination is unreachable: try again later without counting an attempt, so an
    /// outage does not park every hand-off.
    Unreachable(String),
    /// Not yet, and not a failure: look again after [`WAIT_RETRY`].
    Wait(String),
    /// Verified and announced: remove the local file (`remove_source`).
    Remove,
}

impl Handoff {
    /// Works due hand-offs until `stop` turns true; with `until_drained` (`sync`), returns
    /// once none is due but parked ones and ones that wait (a writer has the file open, a
    /// sibling mapping has not delivered it): those are left for a later run, said in the log.
    /// Returns how many are parked.
    pub async fn run(
        &self,
        mut stop: watch::Receiver<bool>,
        until_drained: bool,
    ) -> Result<u64, StateError> {
        // Paths whose hand-off waited in this run (`until_drained` does not wait for them).
        let mut waited: HashSet<RelPath> = HashSet::new();
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
                if until_drained {
                    let left: Vec<HandoffRow> = self
                        .queue
                        .handoff_rows()?
                        .into_iter()
                        .filter(|r| !r.parked)
                        .collect();
                    if left.iter().all(|r| waited.contains(&r.path)) {
                        tracing::info!(
                            waiting = left.len(),
                            "hand-offs left waiting (see above why); the local files are kept until a later run or sync"
                        );
                        break;
                    }
                }
                let wait = next_look(next);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
            // With remove_source: first what would hold the removal back (a writer, a sibling
            // that lacks the file), so that a waiting hand-off is not verified and announced
            // again each time it looks. Then verify and announce each, then remove the ready
            // ones together: one walk of /proc and one look at the siblings serve the whole
            // batch, right before removing.
            let due = if self.opts.remove_source {
                let mut free = Vec::new();
                for (row, step) in self.check_all(due, false).await {
                    match step {
                        Step::Remove => free.push(row),
                        step => self.settle(&row, step, &mut waited)?,
                    }
                }
                free
            } else {
                due
            };
            let mut ready = Vec::new();
            for row in due {
                let step = self.one(&row).await;
                if matches!(step, Step::Remove) {
                    ready.push(row);
                } else {
                    self.settle(&row, step, &mut waited)?;
                }
            }
            if !ready.is_empty() {
                for (row, step) in self.check_all(ready, true).await {
                    self.settle(&row, step, &mut waited)?;
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

    fn settle(
        &self,
        row: &HandoffRow,
        step: Step,
        waited: &mut HashSet<RelPath>,
    ) -> Result<(), StateError> {
        match step {
            Step::Done | Step::Remove => self.queue.handoff_done(row),
            Step::Failed(why) => self.failed(row, &why, true),
            Step::Unreachable(why) => self.failed(row, &why, false),
            Step::Wait(why) => {
                waited.insert(row.path.clone());
                self.wait(row, &why)
            }
        }
    }

    /// Verification and the hook: everything before the removal.
    async fn one(&self, row: &HandoffRow) -> Step {
        let local = row.path.under(&self.root);
        let Some(file) = self.delivered_version(row, &local) else {
            // Gone, or changed since (its next delivery hands off): nothing to do.
            return Step::Done;
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
            Step::Remove
        } else {
            Step::Done
        }
    }

    /// Looks at the local file without following links: is it still the delivered version?
    /// A file whose size and mtime match but whose inode or ctime do not was rewritten (a
    /// writer can set mtime back, never ctime): its send is queued again, since a catch-up
    /// scan, comparing size and mtime, would never notice.
    fn delivered_version(&self, row: &HandoffRow, local: &Path) -> Option<SourceFile> {
        let meta = match std::fs::symlink_metadata(local) {
            Ok(m) if m.is_file() => m,
            _ => return None,
        };
        let file = SourceFile::from_metadata(local.to_path_buf(), &meta);
        let same_bytes = file.size == row.size && mtime_ns(file.mtime) == row.mtime_ns;
        let same_inode = row.identity.is_none_or(|id| id == file.identity);
        if same_bytes && same_inode {
            return Some(file);
        }
        if same_bytes {
            tracing::info!(path = %row.path, "rewritten since its delivery (same size and mtime, new ctime); sending it again");
            if let Err(e) = self
                .queue
                .push(&[Entry::new(Action::Send(row.path.clone()), 0)])
            {
                tracing::warn!(path = %row.path, error = %e, "cannot queue the send again");
            }
        }
        None
    }

    /// Checks each of `rows`: is the local file still the delivered version, with no process
    /// holding it open for writing, and held by every sibling mapping that takes it? Then
    /// (`remove`) removes it (verified, announced), or says it is free to ([`Step::Remove`]).
    async fn check_all(&self, rows: Vec<HandoffRow>, remove: bool) -> Vec<(HandoffRow, Step)> {
        let root = self.root.clone();
        let queue = Arc::clone(&self.queue);
        let siblings = self.siblings.clone();
        let this = Remover { root, queue };
        tokio::task::spawn_blocking(move || this.remove_all(rows, siblings.as_ref(), remove))
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "hand-off removal task failed");
                Vec::new()
            })
    }

    /// Not yet: look again after [`WAIT_RETRY`], without counting an attempt. Said at INFO
    /// when the reason is new, so a long wait does not fill the log.
    fn wait(&self, row: &HandoffRow, why: &str) -> Result<(), StateError> {
        if row.last_error.as_deref() != Some(why) {
            tracing::info!(path = %row.path, reason = %why, "hand-off waits; the local file is kept");
        } else {
            tracing::debug!(path = %row.path, reason = %why, "hand-off still waits");
        }
        let ready_at = now_ms() + WAIT_RETRY.as_millis() as u64;
        self.queue.handoff_failed(row, why, ready_at, false, false)
    }

    /// Schedules the next try of `row` with backoff; `counts`: this try counts toward
    /// parking it.
    fn failed(&self, row: &HandoffRow, why: &str, counts: bool) -> Result<(), StateError> {
        let park = counts && self.opts.retry.parks(row.attempts);
        let delay = self.opts.retry.retry_delay(row.attempts);
        if park {
            tracing::error!(path = %row.path, error = %why, "hand-off parked; the local file is kept");
        } else {
            tracing::warn!(path = %row.path, error = %why, retry_in = ?delay, "hand-off failed; the local file is kept");
        }
        let ready_at = now_ms() + delay.as_millis() as u64;
        self.queue.handoff_failed(row, why, ready_at, park, counts)
    }
}
