//! The versions wrapper against an in-memory destination whose sends can be made to fail:
//! a send that fails after its target was moved aside puts the old copy back, so the live
//! copy is never missing (and later pruned) because the new one could not be written (found
//! by review: an unreadable source file left the destination without its only good copy).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use skynet_core::connection::{Connection, RemoteEntry, SourceFile};
use skynet_core::sim::MemoryDestination;
use skynet_core::state::Queue;
use skynet_core::versions::{Versioned, VersionsDir};
use skynet_core::{ConnError, RelPath};

/// The memory destination, whose sends fail while `failing` is set.
struct Flaky {
    inner: MemoryDestination,
    failing: AtomicBool,
}

#[async_trait]
impl Connection for Flaky {
    fn describe(&self) -> String {
        "flaky memory".into()
    }
    async fn connect(&self) -> Result<(), ConnError> {
        Ok(())
    }
    async fn send(&self, file: &SourceFile, to: &RelPath) -> Result<u64, ConnError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(ConnError::permanent(format!(
                "{to}: cannot read the source"
            )));
        }
        self.inner.send(file, to).await
    }
    async fn delete(&self, path: &RelPath) -> Result<(), ConnError> {
        self.inner.delete(path).await
    }
    async fn rename(&self, from: &RelPath, to: &RelPath) -> Result<(), ConnError> {
        self.inner.rename(from, to).await
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

fn source_file(dir: &std::path::Path, name: &str, content: &[u8]) -> SourceFile {
    let path = dir.join(name);
    std::fs::write(&path, content).expect("write");
    let meta = std::fs::symlink_metadata(&path).expect("stat");
    SourceFile::from_metadata(path, &meta)
}

#[tokio::test]
async fn a_failed_send_puts_the_kept_copy_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let flaky = Arc::new(Flaky {
        inner: MemoryDestination::new(Duration::ZERO, 1),
        failing: AtomicBool::new(false),
    });
    let queue = Arc::new(Queue::open_in_memory().expect("queue"));
    let versioned = Versioned::new(
        Arc::clone(&flaky),
        Arc::clone(&queue),
        VersionsDir::default(),
    );
    let to = RelPath::from_bytes(b"f").expect("valid");
    versioned
        .send(&source_file(dir.path(), "v1", b"good"), &to)
        .await
        .expect("first send");

    flaky.failing.store(true, Ordering::SeqCst);
    let failed = versioned
        .send(&source_file(dir.path(), "v2", b"newer"), &to)
        .await;
    assert!(failed.is_err());
    assert_eq!(flaky.read(&to).await.expect("still live"), b"good");
    assert!(
        queue.version_rows(None).expect("rows").is_empty(),
        "the put-back copy is still listed as a version"
    );

    flaky.failing.store(false, Ordering::SeqCst);
    versioned
        .send(&source_file(dir.path(), "v3", b"newest"), &to)
        .await
        .expect("third send");
    assert_eq!(flaky.read(&to).await.expect("live"), b"newest");
    let rows = queue.version_rows(None).expect("rows");
    assert_eq!(rows.len(), 1);
    assert_eq!(flaky.read(&rows[0].version).await.expect("kept"), b"good");
    // The mirror's listing leaves the versions folder out.
    let listed: Vec<RelPath> = versioned
        .list()
        .await
        .expect("list")
        .into_iter()
        .map(|e| e.path)
        .collect();
    assert_eq!(listed, vec![to]);
}
