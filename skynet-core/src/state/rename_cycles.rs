//! Rename cycles (issue 12) driven through the real queue, handler and a local destination:
//! the events a watcher files for `mv a t; mv b a; mv t b` (and longer cycles, directory
//! swaps, cycles mixed with sends and deletes) are pushed, then drained, and the destination
//! must equal the source. Every scenario is also run with a simulated `kill -9` after each
//! destination call in turn (the call done remotely, never acknowledged), followed by a
//! restart (recover, catch-up scan, drain): it must converge just the same, with the ledger
//! naming exactly the destination's files.
//!
//! All files of a scenario share one size and one mtime, so the catch-up scan cannot tell a
//! swapped pair from an untouched one: convergence is up to the queue alone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{watch, Notify};

use super::Queue;
use crate::action::Action;
use crate::clock::mtime_ns;
use crate::conformance::rel;
use crate::connection::{Blocking, Connection, RemoteEntry, SourceFile};
use crate::error::ConnError;
use crate::filter::Filter;
use crate::handler::{Handler, HandlerConfig};
use crate::local::LocalConnection;
use crate::merge::Entry;
use crate::relpath::RelPath;
use crate::scan::{self, ScanOptions};
use crate::send_policy::SendPolicy;

/// One local change and the event the watcher files for it.
#[derive(Clone, Copy)]
enum Op {
    Mv(&'static str, &'static str),
    Write(&'static str, &'static [u8]),
    Rm(&'static str),
}

struct Scenario {
    name: &'static str,
    /// Mirrored before the changes (source, destination and ledger agree).
    files: &'static [(&'static str, &'static [u8])],
    ops: &'static [Op],
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "file swap",
        files: &[("a", b"AAA"), ("b", b"BBB")],
        ops: &[Op::Mv("a", "t"), Op::Mv("b", "a"), Op::Mv("t", "b")],
    },
    Scenario {
        name: "3-cycle",
        files: &[("a", b"AAA"), ("b", b"BBB"), ("c", b"CCC")],
        ops: &[
            Op::Mv("a", "t"),
            Op::Mv("b", "a"),
            Op::Mv("c", "b"),
            Op::Mv("t", "c"),
        ],
    },
    Scenario {
        name: "directory swap",
        files: &[("d/x", b"DX1"), ("d/y", b"DY1"), ("e/x", b"EX1")],
        ops: &[Op::Mv("d", "t"), Op::Mv("e", "d"), Op::Mv("t", "e")],
    },
    Scenario {
        name: "swap mixed with sends and deletes",
        files: &[("a", b"AAA"), ("b", b"BBB"), ("c", b"CCC"), ("d", b"DDD")],
        ops: &[
            Op::Mv("a", "t"),
            Op::Write("c", b"new c"),
            Op::Mv("b", "a"),
            Op::Rm("d"),
            Op::Mv("t", "b"),
            Op::Write("n", b"new file"),
        ],
    },
    Scenario {
        name: "two rotations sharing files, with new files (found by tests/convergence.rs)",
        files: &[("pre/existing", b"PRE"), ("a/b/deep", b"DEE")],
        ops: &[
            Op::Write("f1", b"F1F1"),
            Op::Mv("pre/existing", "a/b/r4"),
            Op::Mv("f1", "swap-tmp"),
            Op::Mv("a/b/deep", "f1"),
            Op::Mv("a/b/r4", "a/b/deep"),
            Op::Mv("swap-tmp", "a/b/r4"),
            Op::Write("a/f5", b"F5F5F"),
            Op::Mv("a/f5", "a/swap-tmp"),
            Op::Mv("f1", "a/f5"),
            Op::Mv("a/b/deep", "f1"),
            Op::Mv("a/swap-tmp", "a/b/deep"),
        ],
    },
];

/// A source, a destination and a state database, mirrored.
struct World {
    _dir: tempfile::TempDir,
    src: PathBuf,
    dst: PathBuf,
    db: PathBuf,
}

/// The same mtime for every file, so that size and mtime say nothing.
const MTIME: i64 = 1_600_000_000;

fn put(root: &Path, rel: &str, content: &[u8]) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(&path, content).expect("write");
    filetime::set_file_mtime(&path, filetime::FileTime::from_unix_time(MTIME, 0)).expect("mtime");
}

impl World {
    fn mirrored(files: &[(&str, &[u8])]) -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let (src, dst, db) = (
            dir.path().join("src"),
            dir.path().join("dst"),
            dir.path().join("q.sqlite"),
        );
        std::fs::create_dir_all(&src).expect("mkdir");
        std::fs::create_dir_all(&dst).expect("mkdir");
        let q = Queue::open(&db).expect("open");
        let mut delivered = Vec::new();
        for (path, content) in files {
            put(&src, path, content);
            put(&dst, path, content);
            let meta = std::fs::metadata(src.join(path)).expect("stat");
            let mtime = mtime_ns(meta.modified().expect("mtime"));
            delivered.push((rel(path), meta.len(), mtime, None));
        }
        q.record_delivered(&delivered).expect("ledger");
        World {
            _dir: dir,
            src,
            dst,
            db,
        }
    }

    /// Applies the changes locally and files their events in one batch, as the watcher does.
    fn change(&self, q: &Queue, ops: &[Op]) {
        q.push(&self.apply(ops)).expect("push");
    }

    /// Applies the changes locally; returns the events the watcher would file for them.
    fn apply(&self, ops: &[Op]) -> Vec<Entry> {
        let mut events = Vec::new();
        for op in ops {
            match *op {
                Op::Mv(from, to) => {
                    std::fs::rename(self.src.join(from), self.src.join(to)).expect("rename");
                    let (from, to) = (rel(from), rel(to));
                    events.push(Entry::new(Action::Move { from, to }, 0));
                }
                Op::Write(path, content) => {
                    put(&self.src, path, content);
                    events.push(Entry::new(Action::Send(rel(path)), 0));
                }
                Op::Rm(path) => {
                    std::fs::remove_file(self.src.join(path)).expect("rm");
                    events.push(Entry::new(Action::Delete(rel(path)), 0));
                }
            }
        }
        events
    }
}

/// Every file under `root` with its content.
fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let path = e.path().strip_prefix(root).expect("under root");
            let content = std::fs::read(e.path()).expect("read");
            (path.display().to_string(), content)
        })
        .collect()
}

/// A local destination that "dies" after its `calls`-th change: the change is made, then the
/// call never returns and `crashed` fires, so the test drops the handler mid-action.
struct CrashAfter {
    inner: Blocking<LocalConnection>,
    left: AtomicI64,
    crashed: Arc<Notify>,
}

impl CrashAfter {
    async fn counted<T>(&self, result: Result<T, ConnError>) -> Result<T, ConnError> {
        if self.left.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.crashed.notify_one();
            std::future::pending::<()>().await;
        }
        result
    }
}

#[async_trait]
impl Connection for CrashAfter {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn connect(&self) -> Result<(), ConnError> {
        self.inner.connect().await
    }
    async fn send(&self, file: &SourceFile, to: &RelPath) -> Result<u64, ConnError> {
        let r = self.inner.send(file, to).await;
        self.counted(r).await
    }
    async fn delete(&self, path: &RelPath) -> Result<(), ConnError> {
        let r = self.inner.delete(path).await;
        self.counted(r).await
    }
    async fn rename(&self, from: &RelPath, to: &RelPath) -> Result<(), ConnError> {
        let r = self.inner.rename(from, to).await;
        self.counted(r).await
    }
    async fn remove_empty_dir(&self, dir: &RelPath) -> Result<bool, ConnError> {
        let r = self.inner.remove_empty_dir(dir).await;
        self.counted(r).await
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

/// Drains `q` into the world's destination with complete-sync, one worker (so that crash
/// points come in a fixed order). With `crash_after`, the run dies after that many
/// destination changes; returns whether it drained instead.
fn drain(world: &World, q: Arc<Queue>, recovered: Vec<RelPath>, crash_after: Option<i64>) -> bool {
    let crashed = Arc::new(Notify::new());
    let conn = Arc::new(CrashAfter {
        inner: Blocking::new(LocalConnection::new(&world.dst)),
        left: AtomicI64::new(crash_after.unwrap_or(i64::MAX)),
        crashed: Arc::clone(&crashed),
    });
    let cfg = HandlerConfig {
        workers: 1,
        retry: crate::retry::RetryPolicy {
            base: Duration::from_millis(5),
            cap: Duration::from_millis(20),
            ..Default::default()
        },
        ack_delay: Duration::from_millis(5),
        exit_when_drained: true,
        complete_sync: true,
        ..HandlerConfig::default()
    };
    let handler = Handler::new(
        q,
        conn,
        world.src.clone(),
        cfg,
        Arc::new(SendPolicy::default()),
    );
    handler.set_recovered(recovered);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (_stop, rx) = watch::channel(false);
        tokio::select! {
            summary = handler.run(Arc::new(Notify::new()), rx) => {
                let summary = summary.expect("drain");
                assert_eq!(summary.parked, 0, "nothing may fail");
                true
            }
            _ = crashed.notified() => false,
        }
    })
}

/// A restart after a crash: reopen the database, recover, catch-up scan, drain.
fn restart(world: &World) -> Arc<Queue> {
    let q = Arc::new(Queue::open(&world.db).expect("reopen"));
    let recovered = q.recover().expect("recover");
    let opts = ScanOptions {
        queue_deletes: true,
        gate: Default::default(),
        settle: Duration::ZERO,
        progress: false,
        siblings: None,
    };
    scan::catch_up(&world.src, &q, &Filter::default(), &opts).expect("scan");
    assert!(drain(world, Arc::clone(&q), recovered, None), "drained");
    q
}

/// The destination equals the source, the ledger names exactly its files, nothing is left.
fn check(world: &World, q: &Queue, when: &str) {
    let (want, got) = (tree(&world.src), tree(&world.dst));
    assert_eq!(got, want, "{when}: destination differs from the source");
    let mut ledger: Vec<String> = q
        .ledger()
        .expect("ledger")
        .keys()
        .map(|p| p.display())
        .collect();
    ledger.sort();
    let files: Vec<String> = got.keys().cloned().collect();
    assert_eq!(
        ledger, files,
        "{when}: the ledger differs from the destination"
    );
    assert_eq!(
        q.queued_actions().expect("rows"),
        vec![],
        "{when}: rows left"
    );
}

#[test]
fn rename_cycles_converge() {
    for s in SCENARIOS {
        let world = World::mirrored(s.files);
        let q = Arc::new(Queue::open(&world.db).expect("open"));
        world.change(&q, s.ops);
        assert!(drain(&world, Arc::clone(&q), Vec::new(), None));
        check(&world, &q, s.name);
    }
}

#[test]
fn rename_cycles_converge_after_a_crash_at_any_step() {
    for s in SCENARIOS {
        for k in 1.. {
            let world = World::mirrored(s.files);
            let q = Arc::new(Queue::open(&world.db).expect("open"));
            world.change(&q, s.ops);
            if drain(&world, q, Vec::new(), Some(k)) {
                break; // fewer than k destination calls: every crash point was tried
            }
            let q = restart(&world);
            check(&world, &q, &format!("{}, killed after call {k}", s.name));
        }
    }
}

#[test]
fn a_send_that_read_a_rotated_file_is_not_carried_on_by_the_rotation() {
    // Found by tests/convergence.rs: b is written and its send runs after a rotation that the
    // watcher has not reported yet, so the destination's b holds c's bytes. The rotation's
    // `move b -> a` then carries those to a; the handler sees that they are not the bytes of
    // the local a (another size) and sends a again.
    let world = World::mirrored(&[("a", b"AAA"), ("b", b"BBB"), ("c", b"CCC")]);
    let q = Arc::new(Queue::open(&world.db).expect("open"));
    q.push(&world.apply(&[Op::Write("b", b"BBBB")]))
        .expect("push");
    let rotation = world.apply(&[
        Op::Mv("a", "t"),
        Op::Mv("b", "a"),
        Op::Mv("c", "b"),
        Op::Mv("t", "c"),
    ]);
    assert!(drain(&world, Arc::clone(&q), Vec::new(), None));
    q.push(&rotation).expect("push");
    assert!(drain(&world, Arc::clone(&q), Vec::new(), None));
    check(&world, &q, "rotation after a send that read its outcome");
}
