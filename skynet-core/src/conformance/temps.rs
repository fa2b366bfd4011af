//! The clauses about temporary files left behind by a run that died: `cleanup` beside the
//! paths that were in flight, `sweep_temps` anywhere.

use std::collections::HashSet;

use super::{rel, Check, Options};
use crate::connection::{Connection, TEMP_PREFIX};
use crate::relpath::RelPath;

/// A temporary name (as [`crate::connection::temp_name`] makes them) under `dir`.
fn temp(dir: &str, hex: &str) -> String {
    match dir {
        "" => format!("{TEMP_PREFIX}{hex}"),
        _ => format!("{dir}/{TEMP_PREFIX}{hex}"),
    }
}

/// **Cleanup**: after a restart, `cleanup(near)` removes the temporary files beside the paths
/// that were in flight (at the root too), and nothing else; a path whose directory is gone is
/// no error. Temporaries are planted as a killed run leaves them (here sent under their
/// names). A backend that writes no temporaries ([`Options::writes_temps`] off) keeps
/// everything.
pub async fn cleanup(conn: &dyn Connection, opts: &Options) {
    let c = Check::start(conn, opts, "cleanup").await;
    let one = c.file("one", b"1");
    let mut files = vec!["c/x".to_string(), "c/keep".into(), "other/y".into()];
    let beside = [temp("c", "0123456789abcdef"), temp("", "00000000000abcde")];
    if opts.writes_temps {
        files.extend(beside.iter().cloned());
    }
    for p in &files {
        c.send(&one, p).await;
    }
    let near = [rel("c/x"), rel("top"), rel("gone/dir/z")];
    conn.cleanup(&near)
        .await
        .unwrap_or_else(|e| panic!("cleanup: {e}"));
    for p in &beside {
        c.expect_absent(p, "a temporary file beside a path in flight")
            .await;
    }
    assert_eq!(
        c.listing().await,
        ["c/keep", "c/x", "other/y"],
        "cleanup: what is left"
    );
    c.finish(&["c", "other"]).await;
}

/// **Sweep**: `sweep_temps` removes every temporary file under the whole root, wherever a run
/// that died left it (beside a file, at the root, carried elsewhere by a directory rename, a
/// directory moved aside) and returns how many it removed; a random (not resumable) temporary
/// goes even beside a queued target. Nothing else is touched, and afterwards the connection
/// knows of no stranded temporaries. Which resumable temporaries a backend keeps for queued
/// sends is its own (see the SFTP tests). A backend that writes no temporaries
/// ([`Options::writes_temps`] off) removes nothing.
pub async fn sweep_temps(conn: &dyn Connection, opts: &Options) {
    let c = Check::start(conn, opts, "sweep_temps").await;
    let one = c.file("one", b"1");
    for p in ["s/a/x", "s/keep", "s/m/real"] {
        c.send(&one, p).await;
    }
    let planted = [
        temp("s/a", "0123456789abcdef"),
        temp("", "00000000000abcde"),
        temp("s/m", "1111111111111111"),
        format!("{}/inner/f", temp("s", "fedcba9876543210")),
    ];
    if opts.writes_temps {
        for p in &planted {
            c.send(&one, p).await;
        }
    }
    conn.rename(&rel("s/m"), &rel("s/n"))
        .await
        .unwrap_or_else(|e| panic!("sweep_temps: rename: {e}"));
    let queued: HashSet<RelPath> = [rel("s/a/x")].into_iter().collect();
    let removed = conn
        .sweep_temps(&queued)
        .await
        .unwrap_or_else(|e| panic!("sweep_temps: {e}"));
    let want = if opts.writes_temps { planted.len() } else { 0 };
    assert_eq!(removed, want as u64, "sweep_temps: how many were removed");
    let real = ["s/a/x", "s/keep", "s/n/real"];
    for p in real {
        c.expect_content(p, b"1", "kept").await;
    }
    assert_eq!(c.listing().await, real, "sweep_temps: what is left");
    assert!(
        !conn.stranded_temps(),
        "sweep_temps: stranded temporaries after a sweep"
    );
    let again = conn
        .sweep_temps(&HashSet::new())
        .await
        .expect("sweep again");
    assert_eq!(again, 0, "sweep_temps: a second sweep found more");
    c.finish(&["s"]).await;
}
