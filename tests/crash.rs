//! Invariant 2 (no loss): the real binary killed with SIGKILL at different moments, during a
//! sync of thousands of files and during live mirroring with edits, then restarted, converges
//! with no temporary files left in the destination.

mod common;
use common::*;

use std::time::Duration;

fn populate(s: &Scratch, n: usize) {
    for i in 0..n {
        write(
            &s.src,
            &format!("d{:02}/file-{i:05}", i % 40),
            &vec![(i % 251) as u8; 4096],
        );
    }
}

#[test]
fn sync_killed_mid_way_then_restarted_converges() {
    let s = Scratch::new();
    populate(&s, 3000);
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

#[test]
fn run_killed_repeatedly_while_the_source_changes_converges() {
    let s = Scratch::new();
    populate(&s, 1000);
    for round in 0..6u64 {
        let mut daemon = s.run(&["--complete-sync", "--settle", "20ms"]);
        std::thread::sleep(Duration::from_millis(100 + round * 70));
        // Edit, rename and delete while skynet works.
        for i in 0..40 {
            let i = (round as usize * 97 + i * 13) % 1000;
            let path = s.src.join(format!("d{:02}/file-{i:05}", i % 40));
            if path.exists() {
                std::fs::write(&path, format!("round {round} file {i}")).unwrap();
            }
        }
        let from = s.src.join(format!("d{:02}", round));
        if from.exists() {
            std::fs::rename(&from, s.src.join(format!("moved-{round}"))).unwrap();
        }
        let victim = s.src.join(format!("d{:02}", 39 - round));
        let _ = std::fs::remove_dir_all(victim);
        std::thread::sleep(Duration::from_millis(50 + round * 40));
        daemon.kill9();
    }
    let mut daemon = s.run(&["--complete-sync", "--settle", "20ms"]);
    let converged = wait_converged(&s.src, &s.dst, true, Duration::from_secs(60));
    assert_eq!(
        daemon.signal("TERM"),
        Some(0),
        "clean stop: {}",
        daemon.log_text()
    );
    assert!(
        converged.is_ok(),
        "not converged: {converged:?}\n{}",
        daemon.log_text()
    );
    assert!(no_temp_files(&s.dst), "temporary files left after crashes");
}
