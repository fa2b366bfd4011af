//! Renames done remotely (copy + delete) but never acknowledged, because the process was
//! killed, then replayed against the real s3s-fs after the local files changed while skynet
//! was down: the destination must still converge (the S3 kill loop found `c3/r311` left with
//! the content from before the move, and renamed files left behind).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use skynet_core::conformance::rel;
use skynet_core::merge::Entry;
use skynet_core::{Action, Connection, HandlerConfig, Mapping, MappingOptions};
use skynet_s3::testing::S3Server;
use skynet_s3::S3Connection;

fn write(root: &Path, rel: &str, body: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, body).unwrap();
}

fn local_tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    walkdir(root, root)
}

fn walkdir(root: &Path, dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walkdir(root, &p));
        } else {
            let k = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            out.insert(k, std::fs::read(&p).unwrap());
        }
    }
    out
}

async fn remote_tree(conn: &S3Connection) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in conn.list().await.unwrap() {
        let body = conn.read(&e.path).await.unwrap();
        out.insert(e.path.to_string(), body);
    }
    out
}

fn opts() -> MappingOptions {
    MappingOptions {
        complete_sync: true,
        settle: Duration::ZERO,
        handler: HandlerConfig {
            retry: skynet_core::retry::RetryPolicy {
                base: Duration::from_millis(10),
                ..Default::default()
            },
            ..HandlerConfig::default()
        },
        ..MappingOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_renames_converge_after_local_changes() {
    let server = S3Server::start();
    server.create_bucket("replay").await;
    let conn = S3Connection::new(server.config("replay", "p"))
        .await
        .unwrap();
    conn.connect().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (src, state) = (tmp.path().join("src"), tmp.path().join("state"));
    for f in ["a/x", "a/y", "a/z", "f", "k"] {
        write(&src, f, format!("first {f}").as_bytes());
    }
    {
        let m = Mapping::open(&src, &state, opts()).unwrap();
        m.sync(Arc::new(conn.clone())).await.unwrap();
    }
    assert_eq!(remote_tree(&conn).await, local_tree(&src));

    // The watcher queued three renames; then the process did them remotely, in part or in
    // full, and was killed before acknowledging them.
    std::fs::rename(src.join("a"), src.join("b")).unwrap();
    std::fs::rename(src.join("f"), src.join("g")).unwrap();
    std::fs::rename(src.join("k"), src.join("l")).unwrap();
    {
        let m = Mapping::open(&src, &state, opts()).unwrap();
        let mv = |a: &str, b: &str| {
            Entry::new(
                Action::Move {
                    from: rel(a),
                    to: rel(b),
                },
                0,
            )
        };
        m.queue()
            .push(&[mv("a", "b"), mv("f", "g"), mv("k", "l")])
            .unwrap();
        assert_eq!(m.queue().claim(10, u64::MAX).unwrap().len(), 3);
    }
    // a -> b done in full; f -> g copied, not yet deleted; k -> l not started.
    conn.rename(&rel("a"), &rel("b")).await.unwrap();
    conn.client()
        .copy_object()
        .bucket("replay")
        .copy_source("replay/p/f")
        .key("p/g")
        .send()
        .await
        .unwrap();

    // While skynet is down: one carried file moves out, one is appended to, the renamed files
    // are rewritten, and the source of a rename is recreated.
    std::fs::rename(src.join("b/y"), src.join("y2")).unwrap();
    write(&src, "b/z", b"first a/z, then appended");
    write(&src, "g", b"rewritten after the rename");
    write(&src, "l", b"rewritten too, longer than before");
    write(&src, "k", b"k again");

    let m = Mapping::open(&src, &state, opts()).unwrap();
    let summary = m.sync(Arc::new(conn.clone())).await.unwrap();
    assert_eq!(summary.parked, 0, "{summary:?}");
    assert_eq!(remote_tree(&conn).await, local_tree(&src));
}
