//! A send is settled as "vanished" only when the local file is really gone, decided by
//! looking at the local file; a destination's "not found" answer to a write is a failure,
//! retried and then parked (issue 11, case 12).
//!
//! The destination is a real local folder behind a wrapper that injects one fault into
//! `send`, the way a remote backend's answer reaches the handler.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use skynet_core::{
    Blocking, ConnError, Connection, ErrorKind, HandlerConfig, LocalConnection, Mapping,
    MappingOptions, RelPath, RemoteEntry, SourceFile,
};

/// What `send` does instead of (or besides) sending.
#[derive(Clone, Copy)]
enum Fault {
    /// Answers that the destination has nothing there (an S3 404 on PUT), sending nothing.
    NotFound,
    /// Removes the local file, then fails the way a read of a vanished file does.
    RemoveLocal,
    /// Removes every other file of the source root, then sends: the next send finds its
    /// file gone before it starts.
    RemoveOthers,
}

struct Faulty {
    inner: Blocking<LocalConnection>,
    src: std::path::PathBuf,
    fault: Fault,
}

#[async_trait]
impl Connection for Faulty {
    fn describe(&self) -> String {
        format!("faulty {}", self.inner.describe())
    }
    async fn connect(&self) -> Result<(), ConnError> {
        self.inner.connect().await
    }
    async fn send(&self, file: &SourceFile, to: &RelPath) -> Result<u64, ConnError> {
        match self.fault {
            Fault::NotFound => Err(ConnError::new(
                ErrorKind::RemoteMissing,
                format!("put {to}: NotFound (HTTP 404)"),
            )),
            Fault::RemoveLocal => {
                std::fs::remove_file(&file.path).expect("remove the local file");
                Err(ConnError::transient(format!(
                    "{}: No such file or directory",
                    file.path.display()
                )))
            }
            Fault::RemoveOthers => {
                for entry in std::fs::read_dir(&self.src).expect("list src").flatten() {
                    if entry.path() != file.path {
                        std::fs::remove_file(entry.path()).expect("remove another file");
                    }
                }
                self.inner.send(file, to).await
            }
        }
    }
    async fn delete(&self, path: &RelPath) -> Result<(), ConnError> {
        self.inner.delete(path).await
    }
    async fn rename(&self, from: &RelPath, to: &RelPath) -> Result<(), ConnError> {
        self.inner.rename(from, to).await
    }
    async fn flush(&self) -> Result<(), ConnError> {
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

struct Setup {
    _tmp: tempfile::TempDir,
    src: std::path::PathBuf,
    dst: std::path::PathBuf,
    mapping: Mapping,
}

/// A source with `files`, one worker, three attempts with millisecond backoff.
fn setup(files: &[&str]) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst, state) = (
        tmp.path().join("src"),
        tmp.path().join("dst"),
        tmp.path().join("state"),
    );
    std::fs::create_dir_all(&src).unwrap();
    for name in files {
        std::fs::write(src.join(name), name.as_bytes()).unwrap();
    }
    let opts = MappingOptions {
        settle: Duration::ZERO,
        handler: HandlerConfig {
            workers: 1,
            retry: skynet_core::retry::RetryPolicy {
                max_attempts: 3,
                base: Duration::from_millis(1),
                cap: Duration::from_millis(5),
                ..Default::default()
            },
            ..HandlerConfig::default()
        },
        ..MappingOptions::default()
    };
    let mapping = Mapping::open(&src, &state, opts).unwrap();
    Setup {
        _tmp: tmp,
        src,
        dst,
        mapping,
    }
}

fn faulty(t: &Setup, fault: Fault) -> Arc<Faulty> {
    Arc::new(Faulty {
        inner: Blocking::new(LocalConnection::new(&t.dst)),
        src: t.src.clone(),
        fault,
    })
}

fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

#[tokio::test]
async fn a_not_found_answer_to_a_send_is_retried_then_parked() {
    let t = setup(&["a"]);
    let summary = t.mapping.sync(faulty(&t, Fault::NotFound)).await.unwrap();
    assert_eq!(summary.done, 0, "{summary:?}");
    assert_eq!(summary.parked, 1, "{summary:?}");
    assert_eq!(summary.vanished, 0, "{summary:?}");
    let rows = t.mapping.queue().rows().unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].state, "failed", "{rows:?}");
    assert_eq!(rows[0].attempts, 3, "retried before parking: {rows:?}");
    assert!(exists(&t.src.join("a")), "the local file is untouched");
    assert!(
        t.mapping.queue().ledger_rows().unwrap().is_empty(),
        "nothing recorded as delivered"
    );
    let status = t.mapping.status();
    assert_eq!(
        status
            .actions_done
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert_eq!(t.mapping.queue().vanished().unwrap(), 0);
}

#[tokio::test]
async fn a_file_removed_during_its_send_is_vanished_not_done() {
    let t = setup(&["a"]);
    let summary = t
        .mapping
        .sync(faulty(&t, Fault::RemoveLocal))
        .await
        .unwrap();
    assert!(!exists(&t.src.join("a")));
    assert_eq!(summary.done, 0, "a vanished send is not done: {summary:?}");
    assert_eq!(summary.parked, 0, "nor a failure: {summary:?}");
    assert_eq!(summary.vanished, 1, "{summary:?}");
    assert!(t.mapping.queue().rows().unwrap().is_empty(), "settled");
    assert_eq!(
        t.mapping
            .queue()
            .delivered_on(&skynet_core::state::today())
            .unwrap()
            .0,
        0
    );
    assert_eq!(t.mapping.queue().vanished().unwrap(), 1);
    let status = t.mapping.status();
    assert_eq!(
        status
            .actions_done
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert_eq!(
        status.vanished.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn a_file_gone_before_its_send_started_is_vanished_not_done() {
    let t = setup(&["a", "b"]);
    let summary = t
        .mapping
        .sync(faulty(&t, Fault::RemoveOthers))
        .await
        .unwrap();
    assert_eq!(summary.done, 1, "the first file was sent: {summary:?}");
    assert_eq!(summary.vanished, 1, "the other was gone: {summary:?}");
    assert_eq!(summary.parked, 0, "{summary:?}");
    assert_eq!(
        t.mapping
            .queue()
            .delivered_on(&skynet_core::state::today())
            .unwrap()
            .0,
        1
    );
    assert_eq!(t.mapping.queue().vanished().unwrap(), 1);
}
