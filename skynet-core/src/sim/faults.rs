//! A [`Connection`] wrapper that makes chosen calls fail, drops the link, or stands for the
//! moment the engine is killed, around any destination (the in-memory one, or a real server).
//!
//! Calls are counted (send, delete, rename, remove_empty_dir, flush); a fault armed with
//! `skip` hits the call that many after the next one. A kill makes every call of the dead
//! engine hang forever, where it is: nothing a killed process had not finished happens
//! afterwards.

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::watch;

use super::history::Fault;
use crate::connection::{Connection, RemoteEntry, SourceFile};
use crate::error::ConnError;
use crate::relpath::RelPath;

#[derive(Default)]
struct Plan {
    /// Counted calls so far.
    calls: u64,
    /// Faults by the number of the call they hit.
    armed: Vec<(u64, Fault)>,
    /// The link is down: connecting fails this many more times.
    down: Option<u8>,
}

pub struct Faulty {
    inner: Arc<dyn Connection>,
    plan: Mutex<Plan>,
    /// A fault asked for the engine to be killed.
    kill_requested: AtomicBool,
    /// Bumped on every kill: calls begun under an older generation never return.
    generation: watch::Sender<u64>,
    current: AtomicU64,
}

impl Faulty {
    pub fn new(inner: Arc<dyn Connection>) -> Self {
        Faulty {
            inner,
            plan: Mutex::default(),
            kill_requested: AtomicBool::new(false),
            generation: watch::channel(0).0,
            current: AtomicU64::new(0),
        }
    }

    fn plan(&self) -> std::sync::MutexGuard<'_, Plan> {
        self.plan.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The call after `skip` more calls meets `fault`.
    pub fn arm(&self, skip: u8, fault: Fault) {
        let mut plan = self.plan();
        let at = plan.calls + 1 + skip as u64;
        plan.armed.push((at, fault));
    }

    /// No more faults: the link is up from the next connect on.
    pub fn heal(&self) {
        let mut plan = self.plan();
        plan.armed.clear();
        plan.down = plan.down.map(|_| 0);
    }

    /// Whether a fault asked for the engine to be killed (and clears the request).
    pub fn take_kill_request(&self) -> bool {
        self.kill_requested.swap(false, Ordering::SeqCst)
    }

    /// The engine is killed: its calls under way never return.
    pub fn kill(&self) {
        let next = self.current.fetch_add(1, Ordering::SeqCst) + 1;
        self.generation.send_replace(next);
    }

    /// Runs `call` unless the engine that made it is killed first: then never returns.
    async fn guarded<T>(&self, call: impl Future<Output = T>) -> T {
        let born = self.current.load(Ordering::SeqCst);
        let mut gen = self.generation.subscribe();
        let killed = async move {
            loop {
                let now = *gen.borrow_and_update();
                if now != born || gen.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::select! {
            biased;
            _ = killed => std::future::pending().await,
            out = call => out,
        }
    }

    /// Counts a call and runs it through whatever fault hits it.
    async fn call<T>(
        &self,
        what: impl Fn() -> String,
        op: impl Future<Output = Result<T, ConnError>>,
    ) -> Result<T, ConnError> {
        let fault = {
            let mut plan = self.plan();
            if plan.down.is_some() {
                return Err(ConnError::connection_lost(format!(
                    "{}: simulated link down",
                    what()
                )));
            }
            plan.calls += 1;
            let now = plan.calls;
            let hit = plan.armed.iter().position(|(at, _)| *at == now);
            hit.map(|i| plan.armed.remove(i).1)
        };
        let Some(fault) = fault else {
            return self.guarded(op).await;
        };
        let failed = |why: &str| format!("{}: simulated {why}", what());
        match fault {
            Fault::Refused => Err(ConnError::transient(failed("refusal"))),
            Fault::ReplyLost => {
                self.guarded(op).await?;
                Err(ConnError::transient(failed("lost reply")))
            }
            Fault::LinkDown { attempts } => {
                self.plan().down = Some(attempts);
                Err(ConnError::connection_lost(failed("link loss")))
            }
            Fault::LinkDownAfter { attempts } => {
                let done = self.guarded(op).await;
                self.plan().down = Some(attempts);
                done?;
                Err(ConnError::connection_lost(failed("link loss")))
            }
            Fault::Kill { done } => {
                if done {
                    let _ = self.guarded(op).await;
                }
                self.kill_requested.store(true, Ordering::SeqCst);
                std::future::pending().await
            }
        }
    }
}

#[async_trait]
impl Connection for Faulty {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn connect(&self) -> Result<(), ConnError> {
        {
            let mut plan = self.plan();
            match plan.down {
                Some(0) => plan.down = None,
                Some(n) => {
                    plan.down = Some(n - 1);
                    return Err(ConnError::connection_lost("simulated: cannot connect"));
                }
                None => {}
            }
        }
        self.guarded(self.inner.connect()).await
    }

    fn send_batch_size(&self) -> usize {
        self.inner.send_batch_size()
    }

    async fn send(&self, file: &SourceFile, to: &RelPath) -> Result<u64, ConnError> {
        self.call(|| format!("send {to}"), self.inner.send(file, to))
            .await
    }

    async fn delete(&self, path: &RelPath) -> Result<(), ConnError> {
        self.call(|| format!("delete {path}"), self.inner.delete(path))
            .await
    }

    async fn rename(&self, from: &RelPath, to: &RelPath) -> Result<(), ConnError> {
        self.call(
            || format!("rename {from} {to}"),
            self.inner.rename(from, to),
        )
        .await
    }

    async fn remove_empty_dir(&self, dir: &RelPath) -> Result<bool, ConnError> {
        self.call(
            || format!("remove empty directory {dir}"),
            self.inner.remove_empty_dir(dir),
        )
        .await
    }

    async fn flush(&self) -> Result<(), ConnError> {
        self.call(|| "flush".to_string(), self.inner.flush()).await
    }

    async fn cleanup(&self, near: &[RelPath]) -> Result<(), ConnError> {
        self.guarded(self.inner.cleanup(near)).await
    }

    async fn sweep_temps(&self, queued: &HashSet<RelPath>) -> Result<u64, ConnError> {
        self.guarded(self.inner.sweep_temps(queued)).await
    }

    fn stranded_temps(&self) -> bool {
        self.inner.stranded_temps()
    }

    async fn stat(&self, path: &RelPath) -> Result<Option<u64>, ConnError> {
        self.guarded(self.inner.stat(path)).await
    }

    async fn read(&self, path: &RelPath) -> Result<Vec<u8>, ConnError> {
        self.guarded(self.inner.read(path)).await
    }

    async fn list(&self) -> Result<Vec<RemoteEntry>, ConnError> {
        self.guarded(self.inner.list()).await
    }
}
