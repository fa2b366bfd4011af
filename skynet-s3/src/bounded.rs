//! Many requests at once, at most `limit` at a time: the parts of a multipart upload, the
//! parts of a multipart copy, the copies of a rename.
//!
//! One helper rather than a loop at each caller, so that all of them share the same rules:
//! jobs start in the order given and only as earlier ones finish (a 10,000-part upload never
//! holds 10,000 parts in memory), each job is its own tokio task (the parts really run in
//! parallel on a multi-threaded runtime), and the first failure stops everything: the jobs
//! still running are aborted when the helper returns, none is started after it.

use std::future::Future;

use tokio::task::{JoinError, JoinSet};

/// Why [`run_bounded`] stopped before every job was done.
pub(crate) enum Halt<E> {
    /// A job returned this error.
    Failed(E),
    /// A job's task panicked (or was cancelled by the runtime shutting down).
    Panicked(JoinError),
}

impl<E> Halt<E> {
    /// The error to report: a job's own, or `panicked` made of the task's failure.
    pub(crate) fn into_error(self, panicked: impl FnOnce(JoinError) -> E) -> E {
        match self {
            Halt::Failed(e) => e,
            Halt::Panicked(e) => panicked(e),
        }
    }
}

/// Runs `job(item)` for every item, at most `limit` (at least 1) at a time, each as its own
/// task, and returns the jobs' outputs in the order they finished. On the first failure the
/// jobs still running are aborted and the failure is returned.
pub(crate) async fn run_bounded<I, F, Fut, T, E>(
    limit: usize,
    items: I,
    mut job: F,
) -> Result<Vec<T>, Halt<E>>
where
    I: IntoIterator,
    F: FnMut(I::Item) -> Fut,
    Fut: Future<Output = Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    let limit = limit.max(1);
    let mut running: JoinSet<Result<T, E>> = JoinSet::new();
    let mut pending = items.into_iter().fuse();
    let mut done = Vec::new();
    loop {
        while running.len() < limit {
            let Some(item) = pending.next() else { break };
            running.spawn(job(item));
        }
        // Returning drops `running`, which aborts the jobs still in it.
        match running.join_next().await {
            None => return Ok(done),
            Some(Ok(Ok(out))) => done.push(out),
            Some(Ok(Err(e))) => return Err(Halt::Failed(e)),
            Some(Err(e)) => return Err(Halt::Panicked(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    /// Never more than `limit` jobs at once, every job run, every output returned.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_every_job_at_most_limit_at_a_time() {
        let now = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let out = run_bounded(3, 0..20u64, |n| {
            let (now, peak) = (Arc::clone(&now), Arc::clone(&peak));
            async move {
                let running = now.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(running, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                Ok::<u64, ()>(n)
            }
        })
        .await;
        let Ok(mut out) = out else {
            panic!("a job failed")
        };
        out.sort_unstable();
        assert_eq!(out, (0..20).collect::<Vec<_>>());
        assert!(peak.load(Ordering::SeqCst) <= 3);
    }

    /// The first failure is returned and no job starts after it.
    #[tokio::test]
    async fn stops_at_the_first_failure() {
        let started = Arc::new(AtomicUsize::new(0));
        let out = run_bounded(1, 0..10u32, |n| {
            let started = Arc::clone(&started);
            async move {
                started.fetch_add(1, Ordering::SeqCst);
                if n == 2 {
                    Err(format!("job {n}"))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        match out {
            Err(Halt::Failed(e)) => assert_eq!(e, "job 2"),
            _ => panic!("expected the failure of job 2"),
        }
        assert_eq!(started.load(Ordering::SeqCst), 3);
        let empty = run_bounded(4, Vec::<u8>::new(), |_| async { Ok::<(), ()>(()) }).await;
        assert!(matches!(empty, Ok(v) if v.is_empty()));
    }
}
