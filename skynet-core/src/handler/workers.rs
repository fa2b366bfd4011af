//! Handing claimed actions to worker tasks.
//!
//! Up to `workers` actions execute at once; the queue only hands out actions whose older
//! related actions are done, so per-path order holds, and any order among claimed actions is
//! fine. A destination that sends several files at once
//! ([`Connection::send_batch_size`](crate::connection::Connection::send_batch_size)) gets
//! batches of sends of files in one directory, each batch in a different directory where it
//! can.

use std::collections::VecDeque;

use tokio::task::JoinSet;

use crate::action::Action;
use crate::clock::now_ms;
use crate::state::{Claimed, Outcome, StateError};

use super::execute::{execute, execute_sends, Context, Executed};

/// The actions claimed from the queue and the tasks executing them.
pub(super) struct Workers {
    cx: Context,
    /// Actions executing at once.
    workers: usize,
    /// Sends per task (see `Connection::send_batch_size`).
    batch_max: usize,
    /// How many claimed actions to keep at hand, so that workers never wait for SQLite.
    window: usize,
    pub(super) executing: JoinSet<Vec<Executed>>,
    /// Claimed, not started.
    ready: VecDeque<Claimed>,
    /// The parent directories the executing send batches work in, so that concurrent batches
    /// go to different directories.
    busy_dirs: Vec<Vec<u8>>,
}

impl Workers {
    pub(super) fn new(cx: Context, workers: usize) -> Self {
        let batch_max = cx.conn.send_batch_size().max(1);
        let window = (workers * 16).max(64).max(workers * batch_max * 2);
        Workers {
            cx,
            workers,
            batch_max,
            window,
            executing: JoinSet::new(),
            ready: VecDeque::new(),
            busy_dirs: Vec::new(),
        }
    }

    /// Claims more actions when few are at hand, then starts tasks while workers are free.
    pub(super) fn hand_out(&mut self) -> Result<(), StateError> {
        if self.ready.len() < self.workers.max(self.window / 2) {
            let want = self.window - self.ready.len();
            self.ready.extend(self.cx.queue.claim(want, now_ms())?);
        }
        while self.executing.len() < self.workers {
            let free = self.workers - self.executing.len();
            let Some(batch) = next_batch(&mut self.ready, self.batch_max, free, &self.busy_dirs)
            else {
                break;
            };
            let cx = self.cx.clone();
            match batch {
                Batch::One(claimed) => {
                    self.executing
                        .spawn(async move { vec![execute(cx, claimed).await] });
                }
                Batch::Sends(dir, claimed) => {
                    self.busy_dirs.push(dir);
                    self.executing
                        .spawn(async move { execute_sends(cx, claimed).await });
                }
            }
        }
        Ok(())
    }

    /// A task's results came back: the directory its batch worked in is free again.
    pub(super) fn finished(&mut self, batch: &[Executed]) {
        if self.batch_max > 1 {
            if let Some(dir) = batch.first().and_then(|x| send_dir(&x.claimed.action)) {
                if let Some(i) = self.busy_dirs.iter().position(|d| *d == dir) {
                    self.busy_dirs.swap_remove(i);
                }
            }
        }
    }

    /// Nothing claimed, nothing executing.
    pub(super) fn is_idle(&self) -> bool {
        self.executing.is_empty() && self.ready.is_empty()
    }

    /// A worker is free and nothing claimed waits for it: the next queued action's ready
    /// time is worth waking for.
    pub(super) fn wants_work(&self) -> bool {
        self.ready.is_empty() && self.executing.len() < self.workers
    }

    pub(super) fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Gives claimed actions that never started back to the queue, ready now, without
    /// counting an attempt or touching their last error.
    pub(super) fn unclaim(&mut self) -> Result<(), StateError> {
        let back: Vec<Outcome> = self
            .ready
            .drain(..)
            .map(|c| Outcome::Retry {
                id: c.id,
                error: String::new(),
                ready_at: 0,
                failed: false,
            })
            .collect();
        self.cx.queue.finish(&back)
    }
}

/// What one worker task executes.
enum Batch {
    One(Claimed),
    /// Sends of files in one parent directory (its bytes; empty for the root).
    Sends(Vec<u8>, Vec<Claimed>),
}

/// The parent directory of a send's target (empty for the root); `None` for other actions.
fn send_dir(action: &Action) -> Option<Vec<u8>> {
    match action {
        Action::Send(p) => Some(
            p.parent()
                .map(|d| d.as_bytes().to_vec())
                .unwrap_or_default(),
        ),
        _ => None,
    }
}

/// The next task's work. With `batch_max` 1, or when the oldest claimed action is not a send,
/// one action. Otherwise up to `batch_max` sends (a fair share of `ready` for `free` workers)
/// of files in one directory, preferring a directory no executing batch is working in:
/// creating and renaming files takes the directory's lock, so concurrent batches in the same
/// directory wait on each other. Claimed actions never touch related paths, so any order
/// among them is fine.
fn next_batch(
    ready: &mut VecDeque<Claimed>,
    batch_max: usize,
    free: usize,
    busy_dirs: &[Vec<u8>],
) -> Option<Batch> {
    let front = ready.front()?;
    if batch_max <= 1 || !matches!(front.action, Action::Send(_)) {
        return ready.pop_front().map(Batch::One);
    }
    let dir = ready
        .iter()
        .filter_map(|c| send_dir(&c.action))
        .find(|d| !busy_dirs.contains(d))
        .or_else(|| send_dir(&front.action))?;
    let share = ready.len().div_ceil(free.max(1)).clamp(1, batch_max);
    let mut batch = Vec::with_capacity(share);
    let mut rest = VecDeque::with_capacity(ready.len());
    for c in ready.drain(..) {
        if batch.len() < share && send_dir(&c.action).as_deref() == Some(dir.as_slice()) {
            batch.push(c);
        } else {
            rest.push_back(c);
        }
    }
    *ready = rest;
    Some(Batch::Sends(dir, batch))
}
