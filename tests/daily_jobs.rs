//! The jobs people run every day (issue 14), through the real binary: a cron `sync` that
//! recovers from a failure without anyone typing `queue retry`, a daemon that tries a parked
//! action again by itself, and a `sync` that leaves a file still being written for later.

mod common;
use common::*;

use std::io::Write;
use std::time::Duration;

/// A program that fails its first `n` runs and then delivers: appends its argument to
/// `delivered` beside itself (its second argument, after `--`). Each run is counted in `runs`.
fn flaky(dir: &std::path::Path, n: u32) -> std::path::PathBuf {
    script(
        dir,
        "flaky",
        &format!(
            r#"d="$(dirname "$0")"
echo run >> "$d/runs"
if [ "$(wc -l < "$d/runs")" -le {n} ]; then echo "not yet" >&2; exit 1; fi
printf '%s\n' "$2" >> "$d/delivered""#
        ),
    )
}

fn lines(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

#[test]
fn a_flaky_command_is_delivered_by_the_third_cron_sync_without_manual_steps() {
    let s = Scratch::new();
    put(&s.src, "report.csv", b"a,b\n");
    let tools = tempfile::tempdir().unwrap();
    let prog = flaky(tools.path(), 2);
    let template = format!("{} -- {{remote}}", prog.display());
    let cron = || {
        s.cmd(&[
            "sync",
            s.src_str(),
            "--exec",
            &template,
            "--settle",
            "0",
            "--max-attempts",
            "1",
        ])
        .output()
        .unwrap()
    };
    let first = cron();
    assert_exit(&first, 1);
    assert_eq!(lines(&tools.path().join("runs")), 1);
    let second = cron();
    assert_exit(&second, 1);
    assert_eq!(
        lines(&tools.path().join("runs")),
        2,
        "the second sync retried the parked send: {}",
        String::from_utf8_lossy(&second.stderr)
    );
    let third = cron();
    assert_exit(&third, 0);
    assert_eq!(
        std::fs::read_to_string(tools.path().join("delivered")).unwrap(),
        "report.csv\n"
    );
    assert_eq!(s.mapping()["failed"], 0);
    // Delivered: a fourth run has nothing to do.
    assert_exit(&cron(), 0);
    assert_eq!(lines(&tools.path().join("runs")), 3);
}

/// `run SRC --exec TEMPLATE`, parking an action at its first failure and trying it again
/// by itself `retry_after` later.
fn run_parking_at_first_failure(s: &Scratch, template: &str, retry_after: &str) -> Daemon {
    s.spawn(&[
        "run",
        s.src_str(),
        "--exec",
        template,
        "--settle",
        "0",
        "--max-attempts",
        "1",
        "--retry-failed-after",
        retry_after,
    ])
}

#[test]
fn a_running_daemon_tries_a_parked_action_again_by_itself() {
    let s = Scratch::new();
    put(&s.src, "clip.mp4", b"frames");
    let tools = tempfile::tempdir().unwrap();
    let prog = flaky(tools.path(), 1);
    let template = format!("{} -- {{remote}}", prog.display());
    let mut daemon = run_parking_at_first_failure(&s, &template, "1s");
    let delivered = tools.path().join("delivered");
    assert!(
        wait_until(Duration::from_secs(30), || delivered.exists()),
        "never delivered after its park: runs {}\n{}",
        lines(&tools.path().join("runs")),
        daemon.log_text()
    );
    assert_eq!(
        lines(&tools.path().join("runs")),
        2,
        "one failure, one success"
    );
    assert!(
        daemon.log_text().contains("parked as failed"),
        "{}",
        daemon.log_text()
    );
    assert_eq!(daemon.signal("TERM"), Some(0), "{}", daemon.log_text());
}

#[test]
fn status_says_when_a_parked_action_is_tried_again() {
    let s = Scratch::new();
    put(&s.src, "a.txt", b"a");
    let tools = tempfile::tempdir().unwrap();
    let prog = flaky(tools.path(), 1000);
    let template = format!("{} -- {{remote}}", prog.display());
    let mut daemon = run_parking_at_first_failure(&s, &template, "1h");
    assert!(wait_until(Duration::from_secs(20), || {
        s.mapping()["failed"] == 1
    }));
    let out = s.cmd(&["status"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("tried again in"), "{text}");
    let json = s.status();
    let next = json["mappings"][0]["failures"][0]["ready_at"]
        .as_u64()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        next > now + 1_700_000,
        "about an hour away (with jitter): {next} vs {now}"
    );
    assert_eq!(daemon.signal("TERM"), Some(0), "{}", daemon.log_text());
}

#[test]
fn a_sync_leaves_a_file_still_being_written_for_a_later_run() {
    let s = Scratch::new();
    let path = s.src.join("growing.log");
    let writer = {
        let path = path.clone();
        std::thread::spawn(move || {
            let mut f = std::fs::File::create(&path).unwrap();
            for i in 0..8 {
                writeln!(f, "line {i}").unwrap();
                f.flush().unwrap();
                std::thread::sleep(Duration::from_millis(400));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(900));
    let out = s.sync(&["--settle", "3s"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !s.dst.join("growing.log").exists(),
        "a file written to 0.4 s ago was sent under --settle 3s: {:?}\n{stderr}",
        std::fs::read_to_string(s.dst.join("growing.log"))
    );
    assert!(stderr.contains("held back"), "{stderr}");
    let status = s.status();
    let rows = s.cmd(&["queue", "list"]).output().unwrap();
    let listed = String::from_utf8_lossy(&rows.stdout);
    assert!(listed.contains("still changing"), "{listed}\n{status}");
    writer.join().unwrap();
    std::thread::sleep(Duration::from_millis(3100));
    let out = s.sync(&["--settle", "3s"]);
    assert_synced(&s, &out);
    assert_eq!(
        std::fs::read_to_string(s.dst.join("growing.log"))
            .unwrap()
            .lines()
            .count(),
        8
    );
}

/// `sync SRC --exec TEMPLATE --send-once`, returning the output.
fn send_once_exec(s: &Scratch, template: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "sync",
        s.src_str(),
        "--exec",
        template,
        "--send-once",
        "--settle",
        "0",
    ];
    args.extend_from_slice(extra);
    s.cmd(&args).output().unwrap()
}

/// A named command mapping keeps its ledger when its command is edited; unnamed, a command
/// with other arguments is another destination (`rsync … hostA:` vs `hostB:`), and each
/// receives every file.
#[test]
fn editing_a_named_commands_arguments_keeps_what_it_delivered() {
    let s = Scratch::new();
    put(&s.src, "a.txt", b"a");
    put(&s.src, "b.txt", b"b");
    let tools = tempfile::tempdir().unwrap();
    let prog = script(tools.path(), "deliver", RECORD_ARGS);
    let first = format!("{} --host=old -- {{remote}}", prog.display());
    let named = ["--name", "scans"];
    assert_exit(&send_once_exec(&s, &first, &named), 0);
    assert_eq!(calls(tools.path()).len(), 2);
    // The user points the command elsewhere: nothing is sent again.
    let edited = format!("{} --host=new --verbose -- {{remote}}", prog.display());
    assert_exit(&send_once_exec(&s, &edited, &named), 0);
    assert_eq!(
        calls(tools.path()).len(),
        2,
        "send-once sent everything again"
    );
    // A new file goes with the new arguments.
    put(&s.src, "c.txt", b"c");
    assert_exit(&send_once_exec(&s, &edited, &named), 0);
    let got = calls(tools.path());
    assert_eq!(got.len(), 3);
    assert!(got
        .iter()
        .any(|c| c.contains(&b"--verbose".to_vec()) && c.contains(&b"c.txt".to_vec())));
}

#[test]
fn two_unnamed_commands_with_other_arguments_each_receive_every_file() {
    let s = Scratch::new();
    put(&s.src, "a.txt", b"a");
    let tools = tempfile::tempdir().unwrap();
    let prog = script(tools.path(), "deliver", RECORD_ARGS);
    for host in ["hostA", "hostB"] {
        let template = format!("{} --host={host} -- {{remote}}", prog.display());
        assert_exit(&send_once_exec(&s, &template, &[]), 0);
    }
    let got = calls(tools.path());
    for host in ["hostA", "hostB"] {
        let arg = format!("--host={host}").into_bytes();
        assert!(
            got.iter()
                .any(|c| c.contains(&arg) && c.contains(&b"a.txt".to_vec())),
            "{host} never received a.txt: {got:?}"
        );
    }
}

#[test]
fn a_mapping_keeps_its_state_when_named_and_renamed() {
    let s = Scratch::new();
    put(&s.src, "a.txt", b"a");
    let tools = tempfile::tempdir().unwrap();
    let prog = script(tools.path(), "deliver", RECORD_ARGS);
    let template = format!("{} -- {{remote}}", prog.display());
    assert_exit(&send_once_exec(&s, &template, &[]), 0);
    assert_exit(&send_once_exec(&s, &template, &["--name", "scans"]), 0);
    assert_exit(
        &send_once_exec(&s, &template, &["--name", "scans-archive"]),
        0,
    );
    assert_eq!(
        calls(tools.path()).len(),
        1,
        "sent again after naming or renaming"
    );
    let status = s.status();
    let names: Vec<&str> = status["mappings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert_eq!(names, ["scans-archive"], "{status}");
    let out = s
        .cmd(&["ledger", "list", "--mapping", "scans-archive"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("a.txt"));
    // A name that cannot be a directory of its own is refused, naming it.
    let out = send_once_exec(&s, &template, &["--name", "../x"]);
    assert_exit(&out, 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("../x"));
}

#[test]
fn named_routes_share_a_source_and_a_destination() {
    let s = Scratch::new();
    put(&s.src, "clip.mp4", b"video");
    put(&s.src, "photo.jpg", b"image");
    let cfg = s.dir.path().join("routes.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"settle = "0"
[[mapping]]
name = "videos"
source = "{src}"
destination = "{dst}"
include = ["*.mp4"]
[[mapping]]
name = "photos"
source = "{src}"
destination = "{dst}"
include = ["*.jpg"]
"#,
            src = s.src_str(),
            dst = s.dst_str()
        ),
    )
    .unwrap();
    let mut daemon = s.spawn(&["run", "--config", cfg.to_str().unwrap()]);
    assert!(
        wait_until(Duration::from_secs(20), || s.dst.join("clip.mp4").exists()
            && s.dst.join("photo.jpg").exists()),
        "{}",
        daemon.log_text()
    );
    assert_eq!(daemon.signal("TERM"), Some(0), "{}", daemon.log_text());
    let status = s.status();
    let mut names: Vec<&str> = status["mappings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    names.sort();
    assert_eq!(names, ["photos", "videos"]);
}

#[test]
fn what_is_not_sent_is_visible_and_each_delivery_is_logged() {
    let s = Scratch::new();
    put(&s.src, "clip.mp4", b"video");
    put(&s.src, "photo.jpg", b"image");
    put(&s.src, "notes.txt", b"no route takes me");
    let route = |name: &str, glob: &str| {
        s.cmd(&[
            "sync",
            s.src_str(),
            s.dst_str(),
            "--name",
            name,
            "--include",
            glob,
            "--settle",
            "0",
        ])
        .env("RUST_LOG", "info")
        .output()
        .unwrap()
    };
    let out = route("videos", "*.mp4");
    assert_exit(&out, 0);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.lines()
            .any(|l| l.contains("INFO") && l.contains("sent") && l.contains("clip.mp4")),
        "one line per delivered file: {log}"
    );
    assert_exit(&route("photos", "*.jpg"), 0);
    // Once both routes are known, only the file neither takes is unrouted.
    assert_exit(&route("videos", "*.mp4"), 0);
    let status = s.status();
    for m in status["mappings"].as_array().unwrap() {
        assert_eq!(m["unrouted"]["count"], 1, "{m}");
        assert_eq!(m["unrouted"]["names"][0], "notes.txt", "{m}");
    }
    let text = String::from_utf8_lossy(&s.cmd(&["status"]).output().unwrap().stdout).into_owned();
    assert!(
        text.contains("match no mapping") && text.contains("notes.txt"),
        "{text}"
    );

    // Undated files under --dated, and held files with the time they open and why.
    let t = Scratch::new();
    put(&t.src, "IMG_20200101_0900.jpg", b"old day");
    put(&t.src, "readme.txt", b"no date");
    assert_exit(&t.sync(&["--dated", "%Y%m%d", "--settle", "0"]), 0);
    let m = &t.mapping();
    assert_eq!(m["undated"]["count"], 1, "{m}");
    assert_eq!(m["undated"]["names"][0], "readme.txt", "{m}");
    let u = Scratch::new();
    put(&u.src, "fresh.wav", b"recording");
    let out = u.sync(&["--min-age", "1h", "--settle", "0"]);
    assert_exit(&out, 0);
    let m = &u.mapping();
    let held = &m["held_files"][0];
    assert_eq!(held["path"], "fresh.wav", "{m}");
    assert!(
        held["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("min_age"),
        "{m}"
    );
    assert!(held["ready_at"].as_u64().unwrap_or_default() > 0, "{m}");
    let text = String::from_utf8_lossy(&u.cmd(&["status"]).output().unwrap().stdout).into_owned();
    assert!(
        text.contains("held #") && text.contains("fresh.wav") && text.contains("until"),
        "{text}"
    );

    // -q silences the per-file lines.
    put(&s.src, "more.mp4", b"another");
    let out = s
        .cmd(&[
            "sync",
            s.src_str(),
            s.dst_str(),
            "--name",
            "videos",
            "--include",
            "*.mp4",
            "--settle",
            "0",
            "-q",
        ])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert_exit(&out, 0);
    assert!(s.dst.join("more.mp4").exists());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!log.contains("more.mp4"), "-q: {log}");
}

/// A named route added beside an unnamed one of the same source and destination (other
/// includes) starts with its own state: it never takes the unnamed route's queue and ledger,
/// which would send the unnamed route's files all over again.
#[test]
fn a_new_named_route_never_takes_an_unnamed_routes_state() {
    let s = Scratch::new();
    put(&s.src, "clip.mp4", b"video");
    put(&s.src, "photo.jpg", b"image");
    let sync = |extra: &[&str]| {
        let mut args = vec!["sync", s.src_str(), s.dst_str(), "--settle", "0"];
        args.extend_from_slice(extra);
        s.cmd(&args).output().unwrap()
    };
    assert_exit(&sync(&["--include", "*.mp4"]), 0);
    assert_exit(&sync(&["--name", "jpg", "--include", "*.jpg"]), 0);
    let status = s.status();
    let mappings = status["mappings"].as_array().unwrap();
    assert_eq!(
        mappings.len(),
        2,
        "the unnamed route's state was taken: {status}"
    );
    let ledger = s.cmd(&["ledger", "list", "--json"]).output().unwrap();
    let text = String::from_utf8_lossy(&ledger.stdout);
    assert!(
        text.contains("clip.mp4") && text.contains("photo.jpg"),
        "{text}"
    );
}
