//! Invariant 2 (no loss): the real binary killed with SIGKILL at different moments during a
//! sync of thousands of files, then restarted, converges with no temporary files left in the
//! destination. Kills during live mirroring, with a writer changing the source, on every
//! destination: `kill_loop.rs`.

mod common;
use common::*;

use std::time::Duration;

#[test]
fn sync_killed_mid_way_then_restarted_converges() {
    let s = Scratch::new();
    populate(&s.src, 3000);
    let mut partial_seen = false;
    for delay_ms in [60u64, 150, 300, 500, 800, 1300, 2000] {
        let mut child = s
            .cmd(&["sync", s.src_str(), s.dst_str()])
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn sync");
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let arrived = tree(&s.dst).len();
        if arrived > 0 && arrived < 3000 {
            partial_seen = true;
        }
    }
    assert!(
        partial_seen,
        "no kill landed in the middle of a sync; the test proves nothing"
    );
    let out = s.sync(&[]);
    assert_synced(&s, &out);
    assert!(no_temp_files(&s.dst), "temporary files left after crashes");
    let status = s.status();
    assert_eq!(status["mappings"][0]["pending"], 0);
    assert_eq!(status["mappings"][0]["failed"], 0);
}
