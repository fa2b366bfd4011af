//! A bandwidth limit for one destination (`--bwlimit`): [`Throttled`] wraps any
//! [`Connection`] and makes its sends wait for budget from a token bucket that every worker of
//! that destination shares.
//!
//! # Granularity
//! The bucket is charged **per file, not per packet**: a send of N bytes waits until N bytes'
//! worth of budget is available, then runs at full speed. Over time the average rate stays at
//! the limit (with a burst of up to one second's worth after an idle spell), but a single file
//! larger than a second's budget goes out as one burst after its wait. A file is charged its
//! full size even when the backend resumes an interrupted upload. Only sends are charged:
//! deletes, renames, listings and verification reads pass through untouched.

use std::num::NonZeroU64;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::connection::{Connection, RemoteEntry, SourceFile, Verification};
use crate::error::{ConnError, ErrorKind};
use crate::relpath::RelPath;

/// The longest a single charge may wait (a guard against absurd rates and sizes).
const MAX_WAIT: Duration = Duration::from_secs(u32::MAX as u64);

/// A token bucket of bytes: refills at `rate` bytes per second up to one second's worth.
/// Charges that exceed the budget go into debt, so concurrent callers are served in the
/// order they asked and a file larger than the burst is still sent (after its wait).
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    state: Mutex<BucketState>,
}

#[derive(Debug)]
struct BucketState {
    /// Budget in bytes; negative while in debt.
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A bucket of `bytes_per_sec`, starting full (one second's burst).
    pub fn new(bytes_per_sec: NonZeroU64) -> Self {
        let rate = bytes_per_sec.get() as f64;
        TokenBucket {
            rate,
            burst: rate,
            state: Mutex::new(BucketState {
                tokens: rate,
                last: Instant::now(),
            }),
        }
    }

    pub fn bytes_per_sec(&self) -> u64 {
        self.rate as u64
    }

    /// Takes `n` bytes from the budget and returns the instant the caller may go.
    pub fn reserve(&self, n: u64) -> Instant {
        let now = Instant::now();
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let refill = now.duration_since(s.last).as_secs_f64() * self.rate;
        s.tokens = (s.tokens + refill).min(self.burst);
        s.last = now;
        s.tokens -= n as f64;
        if s.tokens >= 0.0 {
            return now;
        }
        let wait = Duration::try_from_secs_f64(-s.tokens / self.rate)
            .unwrap_or(MAX_WAIT)
            .min(MAX_WAIT);
        now + wait
    }

    /// Waits until `n` bytes may be sent.
    pub async fn take(&self, n: u64) {
        tokio::time::sleep_until(self.reserve(n)).await;
    }
}

/// A [`Connection`] whose sends are limited to a rate shared by every worker using it (see the
/// module documentation for the granularity). Every other method is forwarded as is.
pub struct Throttled<C> {
    inner: C,
    bucket: TokenBucket,
}

impl<C> Throttled<C> {
    pub fn new(inner: C, bytes_per_sec: NonZeroU64) -> Self {
        Throttled {
            inner,
            bucket: TokenBucket::new(bytes_per_sec),
        }
    }

    pub fn inner(&self) -> &C {
        &self.inner
    }

    pub fn bytes_per_sec(&self) -> u64 {
        self.bucket.bytes_per_sec()
    }
}

#[async_trait]
impl<C: Connection> Connection for Throttled<C> {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn connect(&self) -> Result<(), ConnError> {
        self.inner.connect().await
    }
    async fn send(&self, file: &SourceFile, to: &RelPath) -> Result<u64, ConnError> {
        self.bucket.take(file.size).await;
        self.inner.send(file, to).await
    }
    fn send_batch_size(&self) -> usize {
        self.inner.send_batch_size()
    }
    /// Charges each item; the items whose budget is there at once go to the inner connection
    /// together, so batching survives wherever the limit allows it.
    async fn send_batch(&self, items: &[(SourceFile, RelPath)]) -> Vec<Result<u64, ConnError>> {
        let mut out: Vec<Result<u64, ConnError>> = Vec::with_capacity(items.len());
        let mut start = 0;
        for (i, (file, _)) in items.iter().enumerate() {
            let go = self.bucket.reserve(file.size);
            if go <= Instant::now() {
                continue;
            }
            // Send what is already paid for, then wait for this item's turn.
            if start < i {
                out.extend(self.inner.send_batch(&items[start..i]).await);
                start = i;
                if let Some(lost) = lost_connection(&out) {
                    out.extend((start..items.len()).map(|_| Err(copy(&lost))));
                    return out;
                }
            }
            tokio::time::sleep_until(go).await;
        }
        if start < items.len() {
            out.extend(self.inner.send_batch(&items[start..]).await);
        }
        out
    }
    async fn delete(&self, path: &RelPath) -> Result<(), ConnError> {
        self.inner.delete(path).await
    }
    async fn rename(&self, from: &RelPath, to: &RelPath) -> Result<(), ConnError> {
        self.inner.rename(from, to).await
    }
    async fn remove_empty_dir(&self, dir: &RelPath) -> Result<bool, ConnError> {
        self.inner.remove_empty_dir(dir).await
    }
    async fn flush(&self) -> Result<(), ConnError> {
        self.inner.flush().await
    }
    async fn cleanup(&self, near: &[RelPath]) -> Result<(), ConnError> {
        self.inner.cleanup(near).await
    }
    async fn sweep_temps(
        &self,
        queued: &std::collections::HashSet<RelPath>,
    ) -> Result<u64, ConnError> {
        self.inner.sweep_temps(queued).await
    }
    fn stranded_temps(&self) -> bool {
        self.inner.stranded_temps()
    }
    async fn stat(&self, path: &RelPath) -> Result<Option<u64>, ConnError> {
        self.inner.stat(path).await
    }
    async fn read(&self, path: &RelPath) -> Result<Vec<u8>, ConnError> {
        self.inner.read(path).await
    }
    async fn list(&self) -> Result<Vec<RemoteEntry>, ConnError> {
        self.inner.list().await
    }
    async fn verify(&self, file: &SourceFile, path: &RelPath) -> Result<Verification, ConnError> {
        self.inner.verify(file, path).await
    }
}

fn copy(e: &ConnError) -> ConnError {
    ConnError::new(e.kind, e.message.clone())
}

/// The last result's error when it was a lost connection: the rest is not worth trying.
fn lost_connection(done: &[Result<u64, ConnError>]) -> Option<ConnError> {
    match done.last() {
        Some(Err(e)) if e.kind == ErrorKind::ConnectionLost => Some(copy(e)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::Blocking;
    use crate::local::LocalConnection;
    use std::sync::Arc;

    fn rate(n: u64) -> NonZeroU64 {
        NonZeroU64::new(n).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sends_are_held_to_the_rate_and_all_arrive() {
        const KIB: u64 = 1024;
        const FILES: usize = 12;
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let conn = Arc::new(Throttled::new(
            Blocking::new(LocalConnection::new(dst.path())),
            rate(256 * KIB),
        ));
        conn.connect().await.unwrap();
        let mut items = Vec::new();
        for i in 0..FILES {
            let path = src.path().join(format!("f{i}"));
            std::fs::write(&path, vec![i as u8; 64 * KIB as usize]).unwrap();
            let file = SourceFile::stat(&path).unwrap();
            items.push((
                file,
                RelPath::from_bytes(format!("d/f{i}").as_bytes()).unwrap(),
            ));
        }
        let started = std::time::Instant::now();
        // Half through concurrent single sends (as workers do), half as one batch: both
        // draw on the same bucket.
        let (singles, batch) = items.split_at(FILES / 2);
        let mut tasks = tokio::task::JoinSet::new();
        for (file, to) in singles {
            let (file, to, conn) = (file.clone(), to.clone(), Arc::clone(&conn));
            tasks.spawn(async move { conn.send(&file, &to).await });
        }
        let batch_results = conn.send_batch(batch).await;
        while let Some(r) = tasks.join_next().await {
            assert_eq!(r.unwrap().unwrap(), 64 * KIB);
        }
        let elapsed = started.elapsed();
        assert_eq!(batch_results.len(), batch.len());
        for r in batch_results {
            assert_eq!(r.unwrap(), 64 * KIB);
        }
        // 768 KiB at 256 KiB/s with a one-second burst: at least 2 s.
        assert!(
            elapsed >= Duration::from_millis(1800),
            "12 x 64 KiB at 256 KiB/s took only {elapsed:?}"
        );
        for i in 0..FILES {
            let got = std::fs::read(dst.path().join(format!("d/f{i}"))).unwrap();
            assert_eq!(got, vec![i as u8; 64 * KIB as usize]);
        }
    }

    #[test]
    fn the_bucket_bursts_one_second_then_goes_into_debt() {
        let bucket = TokenBucket::new(rate(1000));
        let t0 = Instant::now();
        assert!(bucket.reserve(1000) <= Instant::now());
        let go = bucket.reserve(500);
        let wait = go.duration_since(t0);
        assert!(wait >= Duration::from_millis(450), "{wait:?}");
        assert!(wait <= Duration::from_millis(600), "{wait:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn forwards_the_whole_contract() {
        let dst = tempfile::tempdir().unwrap();
        let conn = Throttled::new(
            Blocking::new(LocalConnection::new(dst.path())),
            rate(u32::MAX as u64),
        );
        assert_eq!(conn.send_batch_size(), conn.inner().send_batch_size());
        let opts = crate::conformance::Options {
            verify_proves: crate::conformance::Proof::Content,
            writes_temps: true,
            removes_empty_dirs: true,
            ..Default::default()
        };
        crate::conformance::run(&conn, &opts).await;
    }
}
