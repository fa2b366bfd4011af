//! Invariant 2 (no loss) meets invariant 1 (convergence): a directory rename that happened at
//! the destination but was not acknowledged before a crash, followed by local changes while
//! skynet was down. On restart the rename's remote source is gone; with complete-sync the
//! destination must still end up exactly like the source (found by the kill loop).

use std::sync::Arc;

use skynet_core::conformance::rel;
use skynet_core::merge::Entry;
use skynet_core::{
    Action, Blocking, Connection, HandlerConfig, LocalConnection, Mapping, MappingOptions,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_directory_rename_leaves_no_stale_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (src, dst, state) = (
        dir.path().join("src"),
        dir.path().join("dst"),
        dir.path().join("state"),
    );
    // Locally: the folder was renamed a -> b, then b/gone was deleted while skynet was down.
    std::fs::create_dir_all(src.join("b")).expect("mkdir");
    std::fs::write(src.join("b/kept"), b"kept").expect("write");
    // Remotely: the rename a -> b already happened, carrying b/gone with it.
    std::fs::create_dir_all(dst.join("b")).expect("mkdir");
    std::fs::write(dst.join("b/kept"), b"kept").expect("write");
    std::fs::write(dst.join("b/gone"), b"stale").expect("write");

    let opts = MappingOptions {
        complete_sync: true,
        settle: std::time::Duration::ZERO,
        handler: HandlerConfig {
            retry: skynet_core::retry::RetryPolicy {
                base: std::time::Duration::from_millis(10),
                ..Default::default()
            },
            ..HandlerConfig::default()
        },
        ..MappingOptions::default()
    };
    let mapping = Mapping::open(&src, &state, opts).expect("open mapping");
    // The state as the crash left it: the ledger still names a/*, the move is queued.
    mapping
        .queue()
        .record_delivered(&[(rel("a/kept"), 4, 1, None), (rel("a/gone"), 5, 1, None)])
        .expect("ledger");
    mapping
        .queue()
        .push(&[Entry::new(
            Action::Move {
                from: rel("a"),
                to: rel("b"),
            },
            0,
        )])
        .expect("queue the move");

    let conn: Arc<dyn Connection> = Arc::new(Blocking::new(LocalConnection::new(dst.clone())));
    let summary = mapping.sync(Arc::clone(&conn)).await.expect("sync");
    assert_eq!(summary.parked, 0);

    let mut held: Vec<String> = conn
        .list()
        .await
        .expect("list")
        .into_iter()
        .map(|e| e.path.to_string())
        .collect();
    held.sort();
    assert_eq!(
        held,
        vec!["b/kept".to_string()],
        "stale files left remotely"
    );
    assert_eq!(std::fs::read(dst.join("b/kept")).expect("read"), b"kept");
}
