//! Bad input exits 2 with one line naming the problem, and never touches the destination.

mod common;
use common::*;

#[test]
fn missing_source() {
    let s = Scratch::new();
    let missing = s.dir.path().join("nope");
    let out = s
        .cmd(&["sync", missing.to_str().unwrap(), s.dst_str()])
        .output()
        .unwrap();
    expect_usage_error(out, "nope");
    assert!(!s.dst.exists());
}

#[test]
fn source_is_a_file() {
    let s = Scratch::new();
    let file = s.dir.path().join("plain.txt");
    std::fs::write(&file, b"x").unwrap();
    let out = s
        .cmd(&["sync", file.to_str().unwrap(), s.dst_str()])
        .output()
        .unwrap();
    expect_usage_error(out, "not a directory");
}

#[test]
fn unwritable_state_dir() {
    let s = Scratch::new();
    // A regular file where the state directory should be: unwritable even for root.
    let blocker = s.dir.path().join("blocker");
    std::fs::write(&blocker, b"").unwrap();
    let state = blocker.join("state");
    let out = s
        .cmd(&[
            "sync",
            s.src_str(),
            s.dst_str(),
            "--state-dir",
            state.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    expect_usage_error(out, "state");
}

#[test]
fn malformed_toml() {
    let s = Scratch::new();
    let cfg = s.dir.path().join("bad.toml");
    std::fs::write(&cfg, "[[mapping]\nsource = \"x\"\n").unwrap();
    let out = s
        .cmd(&["run", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    expect_usage_error(out, "bad.toml");
}

#[test]
fn unknown_config_key() {
    let s = Scratch::new();
    let cfg = s.dir.path().join("typo.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[mapping]]\nsource = {:?}\ndestination = {:?}\ncomplete_synk = true\n",
            s.src_str(),
            s.dst_str()
        ),
    )
    .unwrap();
    let out = s
        .cmd(&["run", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    expect_usage_error(out, "complete_synk");
}

#[test]
fn unknown_url_scheme() {
    let s = Scratch::new();
    let out = s
        .cmd(&["sync", s.src_str(), "gopher://host/x"])
        .output()
        .unwrap();
    expect_usage_error(out, "gopher");
}

#[test]
fn destination_inside_source_is_refused() {
    let s = Scratch::new();
    let inside = s.src.join("mirror");
    let out = s
        .cmd(&["sync", s.src_str(), inside.to_str().unwrap()])
        .output()
        .unwrap();
    expect_usage_error(out, "overlap");
}

/// A run refused because another process holds the mapping exits 3, not 2 (bad usage): a
/// cron job can tell "still running from last time" from a broken command line.
#[test]
fn a_run_refused_for_the_lock_exits_3() {
    let s = Scratch::new();
    let mut first = s.run(&[]);
    assert!(
        wait_until(std::time::Duration::from_secs(10), || s.status()
            ["mappings"][0]["running"]
            == true),
        "first run never showed as running: {}",
        first.log_text()
    );
    // Bounded: if the lock did not hold, the second run would mirror forever.
    let mut second = s.spawn(&["run", s.src_str(), s.dst_str()]);
    let code = second.wait_exit(std::time::Duration::from_secs(15));
    let log = second.log_text();
    assert_eq!(code, Some(3), "second run: {log}");
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "{log}");
    assert!(errors[0].contains("already running"), "{log}");
    for args in [
        &["sync", s.src_str(), s.dst_str()][..],
        &["baseline", s.src_str(), s.dst_str()][..],
    ] {
        let out = s.cmd(args).output().unwrap();
        assert_exit(&out, 3);
    }
    assert_eq!(
        first.signal("TERM"),
        Some(0),
        "clean stop on SIGTERM: {}",
        first.log_text()
    );
}

#[test]
fn bad_bwlimit() {
    let s = Scratch::new();
    let out = s
        .cmd(&["sync", s.src_str(), s.dst_str(), "--bwlimit", "fast"])
        .output()
        .unwrap();
    expect_usage_error(out, "--bwlimit");
    assert!(!s.dst.exists());
}

#[test]
fn bad_metrics_address() {
    let s = Scratch::new();
    let out = s
        .cmd(&["run", s.src_str(), s.dst_str(), "--metrics", "everywhere"])
        .output()
        .unwrap();
    expect_usage_error(out, "--metrics");
    assert!(!s.dst.exists());
}
