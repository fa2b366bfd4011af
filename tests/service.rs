//! How `run` behaves under a service manager (systemd): SIGTERM stops it promptly with exit
//! code 0, and whatever was not delivered stays queued for the next start.

mod common;
use common::*;

use std::time::{Duration, Instant};

#[test]
fn sigterm_exits_0_promptly_and_keeps_the_queue() {
    let s = Scratch::new();
    const FILES: usize = 20;
    for i in 0..FILES {
        write(&s.src, &format!("f{i:02}"), &vec![i as u8; 64 * 1024]);
    }
    // 64 KiB/s: one file a second, so most of them are still queued when we stop it.
    let mut daemon = s.run(&["--bwlimit", "64KiB", "--settle", "0"]);
    assert!(
        wait_until(Duration::from_secs(20), || tree(&s.dst).len() >= 2),
        "nothing arrived: {}",
        daemon.log_text()
    );
    let started = Instant::now();
    let code = daemon.signal("TERM");
    let took = started.elapsed();
    assert_eq!(code, Some(0), "{}", daemon.log_text());
    assert!(took < Duration::from_secs(10), "stopping took {took:?}");

    let delivered = tree(&s.dst).len();
    assert!(delivered < FILES, "everything went out before the stop");
    let status = s.status();
    let m = &status["mappings"][0];
    assert_eq!(m["running"], false, "{status}");
    let queued = m["pending"].as_u64().unwrap_or(0) + m["in_flight"].as_u64().unwrap_or(0);
    assert!(
        delivered as u64 + queued >= FILES as u64,
        "{delivered} delivered + {queued} queued < {FILES}: {status}"
    );

    // The next start picks up where it stopped.
    let out = s.sync(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(tree(&s.src), tree(&s.dst));
}
