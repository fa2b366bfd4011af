//! Invariant 8 (connection loss): while the destination is unreachable the handler pauses,
//! the watcher keeps queueing, and once the link is back everything queued is delivered.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use skynet_core::{
    Blocking, ConnError, Connection, HandlerConfig, LocalConnection, Mapping, MappingOptions,
    RelPath, RemoteEntry, SourceFile,
};

/// A local destination whose link can be cut: while `down`, every call fails as a lost
/// connection, the way a pulled network cable looks to a real backend.
struct Cuttable {
    inner: Blocking<LocalConnection>,
    down: AtomicBool,
    refused: AtomicU64,
}

impl Cuttable {
    fn check(&self) -> Result<(), ConnError> {
        if self.down.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(ConnError::connection_lost("test link is down"));
        }
        Ok(())
    }
}

#[async_trait]
impl Connection for Cuttable {
    fn describe(&self) -> String {
        format!("cuttable {}", self.inner.describe())
    }
    async fn connect(&self) -> Result<(), ConnError> {
        self.check()?;
        self.inner.connect().await
    }
    async fn send(&self, file: &SourceFile, to: &RelPath) -> Result<u64, ConnError> {
        self.check()?;
        self.inner.send(file, to).await
    }
    async fn delete(&self, path: &RelPath) -> Result<(), ConnError> {
        self.check()?;
        self.inner.delete(path).await
    }
    async fn rename(&self, from: &RelPath, to: &RelPath) -> Result<(), ConnError> {
        self.check()?;
        self.inner.rename(from, to).await
    }
    async fn flush(&self) -> Result<(), ConnError> {
        self.check()?;
        self.inner.flush().await
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
}

fn files(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let rel = e.path().strip_prefix(root).unwrap().display().to_string();
            (rel, std::fs::read(e.path()).unwrap_or_default())
        })
        .collect();
    out.sort();
    out
}

async fn converged(src: &Path, dst: &Path, timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if files(src) == files(dst) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pauses_while_down_keeps_queueing_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst, state) = (
        tmp.path().join("src"),
        tmp.path().join("dst"),
        tmp.path().join("state"),
    );
    std::fs::create_dir_all(src.join("d")).unwrap();
    for i in 0..20 {
        std::fs::write(src.join(format!("d/f{i}")), format!("v1 {i}")).unwrap();
    }
    let opts = MappingOptions {
        complete_sync: true,
        settle: Duration::ZERO,
        handler: HandlerConfig {
            reconnect_base: Duration::from_millis(50),
            reconnect_cap: Duration::from_millis(200),
            ..HandlerConfig::default()
        },
        ..MappingOptions::default()
    };
    let mapping = Arc::new(Mapping::open(&src, &state, opts).unwrap());
    let conn = Arc::new(Cuttable {
        inner: Blocking::new(LocalConnection::new(&dst)),
        down: AtomicBool::new(false),
        refused: AtomicU64::new(0),
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let runner = {
        let (mapping, conn) = (Arc::clone(&mapping), Arc::clone(&conn));
        tokio::spawn(async move { mapping.run(conn, stop_rx).await })
    };
    assert!(
        converged(&src, &dst, Duration::from_secs(10)).await,
        "initial copy"
    );

    // Cut the link, then change the source: edits, a new file, a rename, a delete.
    conn.down.store(true, Ordering::SeqCst);
    for i in 0..10 {
        std::fs::write(src.join(format!("d/f{i}")), format!("v2 {i}")).unwrap();
    }
    std::fs::write(src.join("new"), b"made while down").unwrap();
    std::fs::rename(src.join("d/f10"), src.join("renamed")).unwrap();
    std::fs::remove_file(src.join("d/f11")).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let counts = mapping.queue().counts().unwrap();
    assert!(
        counts.pending + counts.retrying >= 12,
        "the watcher keeps queueing while the link is down: {counts:?}"
    );
    assert!(
        conn.refused.load(Ordering::SeqCst) > 0,
        "the handler tried and was refused"
    );
    assert!(
        !dst.join("new").exists(),
        "nothing can arrive while the link is down"
    );
    assert_eq!(std::fs::read(dst.join("d/f0")).unwrap(), b"v1 0");

    // Plug it back: draining resumes and everything converges.
    conn.down.store(false, Ordering::SeqCst);
    assert!(
        converged(&src, &dst, Duration::from_secs(10)).await,
        "after reconnect:\n{:?}\n{:?}",
        files(&src),
        files(&dst)
    );
    let counts = mapping.queue().counts().unwrap();
    assert_eq!(
        counts.failed, 0,
        "a lost connection never parks an action: {counts:?}"
    );
    stop_tx.send(true).unwrap();
    runner.await.unwrap().unwrap();
}
