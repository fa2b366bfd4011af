//! The workflows, end to end with the real binary on local folders and real programs:
//! send-once across restarts and the ledger, routing one source to several destinations,
//! dated folders and min_age gates, remove_source with verification, the on_delivered hook,
//! and the command destination (failures, hostile names, a real `cp`).

mod common;
use common::*;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use skynet_s3::testing::pseudo_random;

/// Relative path → content, as [`tree`] returns.
type Tree = BTreeMap<Vec<u8>, Vec<u8>>;

/// A quoted word for a command template (`--exec`, `--on-delivered`).
/// Names that break shell scripts; every one must reach a command as one argument.
fn hostile_names() -> Vec<&'static str> {
    vec![
        "with space",
        "quote'\"s",
        "$(touch pwned)",
        "`touch pwned`",
        "-rf",
        "--help",
        "new\nline",
        "semi;colon|pipe&",
        "star*?[x]",
        "plain.txt",
    ]
}

/// No hostile name was run as a command: no `pwned` anywhere we can see.
fn assert_not_pwned(s: &Scratch) {
    let places = [
        std::env::current_dir().unwrap(),
        s.dir.path().to_path_buf(),
        s.src.clone(),
        s.dst.clone(),
    ];
    for place in places {
        assert!(
            !place.join("pwned").exists(),
            "a file name was run as a command (pwned in {})",
            place.display()
        );
    }
}

// ---------------------------------------------------------------------------------------
// 1. Send-once

/// A command destination that appends one line `{remote}` per invocation to `sent.log`.
struct LineLog {
    exec: String,
    log: PathBuf,
}

impl LineLog {
    fn new(s: &Scratch) -> LineLog {
        let script = script(
            s.dir.path(),
            "log-remote.sh",
            r#"printf '%s\n' "$1" >> "$(dirname "$0")/sent.log""#,
        );
        LineLog {
            exec: format!("{} {{remote}}", quoted(&script)),
            log: s.dir.path().join("sent.log"),
        }
    }

    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// How many times each file was delivered.
    fn counts(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for l in self.lines() {
            *out.entry(l).or_insert(0) += 1;
        }
        out
    }

    fn count(&self, name: &str) -> usize {
        self.counts().get(name).copied().unwrap_or(0)
    }

    fn expect(&self, want: &[(&str, usize)], when: &str) {
        let want: BTreeMap<String, usize> = want.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        assert_eq!(self.counts(), want, "deliveries {when}");
    }
}

fn send_once_sync(s: &Scratch, log: &LineLog) -> std::process::Output {
    s.cmd(&[
        "sync",
        s.src_str(),
        "--exec",
        &log.exec,
        "--send-once",
        "--settle",
        "0",
    ])
    .output()
    .expect("run skynet sync")
}

fn ledger_rows(s: &Scratch) -> Vec<serde_json::Value> {
    let v = json(&s.cmd(&["ledger", "list", "--json"]).output().unwrap());
    let maps = v["mappings"].as_array().expect("mappings");
    assert_eq!(maps.len(), 1, "{v}");
    maps[0]["files"].as_array().expect("files").clone()
}

fn ledger_paths(s: &Scratch) -> BTreeSet<String> {
    ledger_rows(s)
        .iter()
        .map(|r| r["path"].as_str().expect("path").to_string())
        .collect()
}

#[test]
fn send_once_delivers_each_file_exactly_once_across_restarts() {
    let s = Scratch::new();
    let log = LineLog::new(&s);
    write(&s.src, "a.txt", b"alpha");
    write(&s.src, "sub/b.txt", b"beta");

    assert_exit(&send_once_sync(&s, &log), 0);
    log.expect(&[("a.txt", 1), ("sub/b.txt", 1)], "after the first sync");
    assert_exit(&send_once_sync(&s, &log), 0);
    log.expect(&[("a.txt", 1), ("sub/b.txt", 1)], "after a second sync");

    // A daemon: its catch-up sends nothing old; a file added while it runs goes once.
    let mut daemon = s.spawn(&[
        "run",
        s.src_str(),
        "--exec",
        &log.exec,
        "--send-once",
        "--settle",
        "0",
    ]);
    assert!(
        wait_until(Duration::from_secs(10), || s.mapping()["running"] == true),
        "run never showed as running: {}",
        daemon.log_text()
    );
    put(&s.src, "c.txt", b"gamma");
    assert!(
        wait_until(Duration::from_secs(10), || log.count("c.txt") >= 1),
        "c.txt never delivered: {}",
        daemon.log_text()
    );
    // Time for a duplicate to show up, if one were coming.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(daemon.signal("TERM"), Some(0), "{}", daemon.log_text());
    log.expect(
        &[("a.txt", 1), ("sub/b.txt", 1), ("c.txt", 1)],
        "after run with a new file",
    );
    assert_exit(&send_once_sync(&s, &log), 0);
    log.expect(
        &[("a.txt", 1), ("sub/b.txt", 1), ("c.txt", 1)],
        "after a sync following the run",
    );

    // Touched (new mtime, same bytes): not sent again. Changed bytes: sent again.
    age(&s.src.join("a.txt"), 3600);
    assert_exit(&send_once_sync(&s, &log), 0);
    assert_eq!(log.count("a.txt"), 1, "a touched file was sent again");
    write(&s.src, "a.txt", b"alpha, edited");
    assert_exit(&send_once_sync(&s, &log), 0);
    assert_eq!(log.count("a.txt"), 2, "a changed file was not sent again");

    // Deleted locally: the ledger forgets it; re-created with the same bytes: sent again.
    std::fs::remove_file(s.src.join("sub/b.txt")).unwrap();
    assert_exit(&send_once_sync(&s, &log), 0);
    assert!(
        !ledger_paths(&s).contains("sub/b.txt"),
        "a deleted file stayed in the ledger: {:?}",
        ledger_paths(&s)
    );
    assert_eq!(log.count("sub/b.txt"), 1);
    write(&s.src, "sub/b.txt", b"beta");
    assert_exit(&send_once_sync(&s, &log), 0);
    assert_eq!(log.count("sub/b.txt"), 2, "a re-created file was not sent");

    // The ledger: rows with ids; forget by path and by id, each sends once more.
    let rows = ledger_rows(&s);
    assert_eq!(
        ledger_paths(&s),
        ["a.txt", "c.txt", "sub/b.txt"]
            .iter()
            .map(|p| p.to_string())
            .collect(),
        "{rows:?}"
    );
    for r in &rows {
        assert!(r["id"].as_i64().is_some_and(|id| id > 0), "row id: {r}");
        assert!(r["sha256"].as_str().is_some_and(|h| h.len() == 64), "{r}");
    }
    let forgot = s.cmd(&["ledger", "forget", "a.txt"]).output().unwrap();
    assert_exit(&forgot, 0);
    assert_exit(&send_once_sync(&s, &log), 0);
    assert_eq!(log.count("a.txt"), 3, "forget PATH did not send it again");
    let c_id = ledger_rows(&s)
        .iter()
        .find(|r| r["path"] == "c.txt")
        .and_then(|r| r["id"].as_i64())
        .expect("c.txt row");
    let forgot = s
        .cmd(&["ledger", "forget", &c_id.to_string()])
        .output()
        .unwrap();
    assert_exit(&forgot, 0);
    assert_exit(&send_once_sync(&s, &log), 0);
    assert_eq!(log.count("c.txt"), 2, "forget ID did not send it again");
    let unknown = s.cmd(&["ledger", "forget", "nope.txt"]).output().unwrap();
    assert_ne!(
        unknown.status.code(),
        Some(0),
        "forgetting nothing succeeded"
    );

    // Baseline: files present now count as delivered, a following sync sends nothing.
    write(&s.src, "d.txt", b"delta");
    write(&s.src, "e/f.txt", b"phi");
    let before = log.lines().len();
    let out = s
        .cmd(&["baseline", s.src_str(), "--exec", &log.exec, "--send-once"])
        .output()
        .unwrap();
    assert_exit(&out, 0);
    assert_exit(&send_once_sync(&s, &log), 0);
    assert_eq!(
        log.lines().len(),
        before,
        "sent after baseline: {:?}",
        log.counts()
    );
    assert!(ledger_paths(&s).contains("e/f.txt"));
}

#[test]
fn send_once_does_not_resend_what_the_destination_deleted() {
    let s = Scratch::new();
    write(&s.src, "a.txt", b"alpha");
    write(&s.src, "b.txt", b"beta");
    let args = ["--send-once", "--settle", "0"];
    assert_synced(&s, &s.sync(&args));

    std::fs::remove_file(s.dst.join("a.txt")).unwrap();
    assert_exit(&s.sync(&args), 0);
    assert!(
        !s.dst.join("a.txt").exists(),
        "a file the destination deleted was sent again"
    );

    // A changed file does go again, and so does a file new to the source.
    write(&s.src, "b.txt", b"beta, edited");
    write(&s.src, "c.txt", b"gamma");
    assert_exit(&s.sync(&args), 0);
    assert_eq!(std::fs::read(s.dst.join("b.txt")).unwrap(), b"beta, edited");
    assert_eq!(std::fs::read(s.dst.join("c.txt")).unwrap(), b"gamma");
    assert!(!s.dst.join("a.txt").exists());
}

// ---------------------------------------------------------------------------------------
// 2. Routing

#[test]
fn one_source_routed_to_three_destinations_by_include() {
    let s = Scratch::new();
    let (mp4, jpg, all) = (
        s.dir.path().join("dest-mp4"),
        s.dir.path().join("dest-jpg"),
        s.dir.path().join("dest-all"),
    );
    let files: &[&str] = &[
        "v1.mp4",
        "deep/v2.mp4",
        "private/secret.mp4",
        "p1.jpg",
        "deep/p2.jpg",
        "notes.txt",
        "junk.tmp",
        "deep/junk2.tmp",
    ];
    for (i, f) in files.iter().enumerate() {
        write(&s.src, f, &pseudo_random(1000 + i, i as u64));
    }
    let cfg = s.dir.path().join("routes.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"settle = "0"
exclude = ["*.tmp"]
[[mapping]]
source = {src:?}
destination = {mp4:?}
include = ["*.mp4"]
exclude = ["private/**"]
[[mapping]]
source = {src:?}
destination = {jpg:?}
include = ["*.jpg"]
[[mapping]]
source = {src:?}
destination = {all:?}
"#,
            src = s.src_str(),
            mp4 = mp4.to_str().unwrap(),
            jpg = jpg.to_str().unwrap(),
            all = all.to_str().unwrap(),
        ),
    )
    .unwrap();
    let mut daemon = s.spawn(&["run", "--config", cfg.to_str().unwrap()]);

    // The expected content of a destination: these source files, byte for byte.
    let expect = |names: &[&str]| -> Tree {
        names
            .iter()
            .map(|n| (n.as_bytes().to_vec(), std::fs::read(s.src.join(n)).unwrap()))
            .collect()
    };
    let wait_all = |want: &[(&Path, Tree)], daemon: &Daemon| {
        let ok = wait_until(Duration::from_secs(15), || {
            want.iter().all(|(dir, files)| tree(dir) == *files)
        });
        if !ok {
            let report: Vec<String> = want
                .iter()
                .map(|(dir, files)| format!("{}: {}", dir.display(), diff(files, &tree(dir))))
                .collect();
            panic!("{}\n{}", report.join("\n"), daemon.log_text());
        }
    };
    let want_mp4 = ["v1.mp4", "deep/v2.mp4"];
    let want_jpg = ["p1.jpg", "deep/p2.jpg"];
    let want_all = [
        "v1.mp4",
        "deep/v2.mp4",
        "private/secret.mp4",
        "p1.jpg",
        "deep/p2.jpg",
        "notes.txt",
    ];
    wait_all(
        &[
            (&mp4, expect(&want_mp4)),
            (&jpg, expect(&want_jpg)),
            (&all, expect(&want_all)),
        ],
        &daemon,
    );

    // Live: new files go only where their mapping includes them.
    put(&s.src, "live.mp4", b"live video");
    put(&s.src, "deep/live.jpg", b"live photo");
    put(&s.src, "live.tmp", b"scratch");
    let want_mp4 = [&want_mp4[..], &["live.mp4"]].concat();
    let want_jpg = [&want_jpg[..], &["deep/live.jpg"]].concat();
    let want_all = [&want_all[..], &["live.mp4", "deep/live.jpg"]].concat();
    wait_all(
        &[
            (&mp4, expect(&want_mp4)),
            (&jpg, expect(&want_jpg)),
            (&all, expect(&want_all)),
        ],
        &daemon,
    );

    // status: three mappings of the one source, each with its own counts.
    let status = s.status();
    let maps = status["mappings"].as_array().expect("mappings");
    assert_eq!(maps.len(), 3, "{status}");
    for (dir, n) in [
        (&mp4, want_mp4.len()),
        (&jpg, want_jpg.len()),
        (&all, want_all.len()),
    ] {
        let m = maps
            .iter()
            .find(|m| m["destination"].as_str() == dir.to_str())
            .unwrap_or_else(|| panic!("no mapping for {}: {status}", dir.display()));
        assert_eq!(m["delivered_today"], n as u64, "{}: {m}", dir.display());
        assert_eq!(m["pending"], 0, "{m}");
        assert_eq!(m["failed"], 0, "{m}");
        assert_eq!(m["running"], true, "{m}");
    }
    assert_eq!(daemon.signal("TERM"), Some(0), "{}", daemon.log_text());
    // Nothing strayed after the wait either.
    assert_eq!(tree(&mp4), expect(&want_mp4));
    assert_eq!(tree(&jpg), expect(&want_jpg));
    assert_eq!(tree(&all), expect(&want_all));
}

// ---------------------------------------------------------------------------------------
// 3. Gates: dated names, min_age

#[test]
fn dated_sends_only_days_that_have_ended() {
    let s = Scratch::new();
    for f in [
        "20200101/a.jpg",
        "20990101/b.jpg",
        "misc/c.jpg",
        "IMG_20200102_x.jpg",
    ] {
        write(&s.src, f, f.as_bytes());
    }
    let out = s.sync(&["--dated", "%Y%m%d", "--dated-grace", "1h", "--settle", "0"]);
    assert_exit(&out, 0);
    let got: BTreeSet<Vec<u8>> = tree(&s.dst).into_keys().collect();
    let want: BTreeSet<Vec<u8>> = [&b"20200101/a.jpg"[..], b"IMG_20200102_x.jpg"]
        .iter()
        .map(|k| k.to_vec())
        .collect();
    assert_eq!(got, want, "{}", String::from_utf8_lossy(&out.stderr));
    let m = &s.mapping();
    assert_eq!(m["held"], 1, "the future-dated file is held: {m}");
    assert_eq!(m["failed"], 0, "{m}");
    assert_eq!(m["pending"], 0, "{m}");
}

#[test]
fn min_age_holds_fresh_files_and_sends_old_ones() {
    let s = Scratch::new();
    write(&s.src, "fresh.txt", b"just written");
    write(&s.src, "old.txt", b"written long ago");
    age(&s.src.join("old.txt"), 2 * 3600);
    let out = s.sync(&["--min-age", "1h", "--settle", "0"]);
    assert_exit(&out, 0);
    let got: Vec<Vec<u8>> = tree(&s.dst).into_keys().collect();
    assert_eq!(got, vec![b"old.txt".to_vec()]);
    let m = &s.mapping();
    assert_eq!(m["held"], 1, "{m}");
    assert_eq!(m["failed"], 0, "{m}");
}

// ---------------------------------------------------------------------------------------
// 4. remove_source

#[test]
fn remove_source_frees_the_disk_after_delivery() {
    let s = Scratch::new();
    write(&s.src, "a.bin", &pseudo_random(300_000, 1));
    write(&s.src, "sub/b.txt", b"beta");
    write(&s.src, "sub/deeper/c.txt", b"");
    let before = tree(&s.src);
    let out = s.sync(&["--remove-source", "--settle", "0"]);
    assert_exit(&out, 0);
    let got = tree(&s.dst);
    assert_eq!(before, got, "{}", diff(&before, &got));
    assert!(
        tree(&s.src).is_empty(),
        "local files left: {:?}",
        tree(&s.src).keys()
    );
    let m = &s.mapping();
    assert_eq!(m["handoff_waiting"], 0, "{m}");
    assert_eq!(
        m["handoff_failures"].as_array().map(Vec::len),
        Some(0),
        "{m}"
    );
}

#[test]
fn remove_source_keeps_the_file_when_verification_fails() {
    let s = Scratch::new();
    let content = pseudo_random(4096, 7);
    write(&s.src, "f.bin", &content);
    let mut sync = s.spawn(&[
        "sync",
        s.src_str(),
        s.dst_str(),
        "--remove-source",
        "--handoff-delay",
        "3s",
        "--max-attempts",
        "1",
        "--settle",
        "0",
    ]);
    let remote = s.dst.join("f.bin");
    assert!(
        wait_until(Duration::from_secs(10), || std::fs::read(&remote)
            .is_ok_and(|c| c == content)),
        "never delivered: {}",
        sync.log_text()
    );
    // The destination's copy goes bad before the hand-off: same size, other bytes.
    let mut bad = content.clone();
    bad[2000] ^= 0xff;
    std::fs::write(&remote, &bad).unwrap();
    assert_eq!(
        sync.wait_exit(Duration::from_secs(20)),
        Some(1),
        "{}",
        sync.log_text()
    );
    assert_eq!(
        std::fs::read(s.src.join("f.bin")).ok(),
        Some(content),
        "the local file was removed though the destination holds other bytes"
    );
    let m = &s.mapping();
    let failures = m["handoff_failures"].as_array().expect("handoff_failures");
    assert_eq!(failures.len(), 1, "{m}");
    assert_eq!(failures[0]["path"], "f.bin", "{m}");
    let why = failures[0]["last_error"].as_str().unwrap_or_default();
    assert!(why.contains("verification failed"), "{m}");
}

#[test]
fn remove_source_refuses_what_would_lose_data() {
    let s = Scratch::new();
    write(&s.src, "a.txt", b"alpha");
    expect_usage_error(
        s.sync(&["--remove-source", "--complete-sync"]),
        "--complete-sync",
    );
    let out = s
        .cmd(&[
            "sync",
            s.src_str(),
            "--exec",
            "true {path}",
            "--remove-source",
        ])
        .output()
        .unwrap();
    expect_usage_error(out, "--remove-source");
    assert!(!s.dst.exists(), "the destination was touched");
    assert!(s.src.join("a.txt").exists());
}

// ---------------------------------------------------------------------------------------
// 5. on_delivered

/// Writes every hostile name as a file directly in the source (and one in a folder), each
/// with its own content; returns the relative paths.
fn write_hostile(s: &Scratch) -> Vec<String> {
    let mut rels: Vec<String> = hostile_names().into_iter().map(str::to_string).collect();
    rels.push("dir with space/-x $(y)".to_string());
    for (i, rel) in rels.iter().enumerate() {
        write(&s.src, rel, format!("content {i}").as_bytes());
    }
    rels
}

/// The argument lists expected for `{path} {remote}` of each file.
fn path_remote_calls(s: &Scratch, rels: &[String]) -> Vec<Vec<Vec<u8>>> {
    let root = s.src.canonicalize().unwrap();
    let mut want: Vec<Vec<Vec<u8>>> = rels
        .iter()
        .map(|r| {
            vec![
                root.join(r).as_os_str().as_bytes().to_vec(),
                r.as_bytes().to_vec(),
            ]
        })
        .collect();
    want.sort();
    want
}

fn show(calls: &[Vec<Vec<u8>>]) -> Vec<Vec<String>> {
    calls
        .iter()
        .map(|c| {
            c.iter()
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .collect()
}

#[test]
fn on_delivered_runs_once_per_file_with_each_name_as_one_argument() {
    let s = Scratch::new();
    let rels = write_hostile(&s);
    let hook = script(s.dir.path(), "hook.sh", RECORD_ARGS);
    let template = format!("{} {{path}} {{remote}}", quoted(&hook));
    let out = s.sync(&["--settle", "0", "--on-delivered", &template]);
    assert_synced(&s, &out);
    let got = calls(s.dir.path());
    let want = path_remote_calls(&s, &rels);
    assert_eq!(show(&got), show(&want));
    assert_not_pwned(&s);

    // A second sync delivers nothing, so the hook does not run again.
    assert_exit(&s.sync(&["--settle", "0", "--on-delivered", &template]), 0);
    assert_eq!(calls(s.dir.path()).len(), rels.len());
}

// ---------------------------------------------------------------------------------------
// 6. Command destination

#[test]
fn failing_command_is_retried_then_parked_with_its_stderr() {
    let s = Scratch::new();
    write(&s.src, "a.txt", b"alpha");
    let cmd = script(
        s.dir.path(),
        "fail.sh",
        r#"echo run >> "$(dirname "$0")/invocations"
echo "disk on fire" >&2
exit 3"#,
    );
    let out = s
        .cmd(&[
            "sync",
            s.src_str(),
            "--exec",
            &format!("{} {{path}}", quoted(&cmd)),
            "--max-attempts",
            "2",
            "--retry-delay",
            "100ms",
            "--settle",
            "0",
        ])
        .output()
        .unwrap();
    assert_exit(&out, 1);
    let invocations = std::fs::read_to_string(s.dir.path().join("invocations")).unwrap();
    assert_eq!(invocations.lines().count(), 2, "attempts");

    let queue = json(&s.cmd(&["queue", "list", "--json"]).output().unwrap());
    let actions = queue["mappings"][0]["actions"].as_array().expect("actions");
    assert_eq!(actions.len(), 1, "{queue}");
    assert_eq!(actions[0]["state"], "failed", "{queue}");
    assert_eq!(actions[0]["path"], "a.txt", "{queue}");
    let why = actions[0]["last_error"].as_str().unwrap_or_default();
    assert!(
        why.contains("disk on fire") && why.contains("status 3"),
        "{queue}"
    );

    let m = &s.mapping();
    assert_eq!(m["failed"], 1, "{m}");
    let why = m["failures"][0]["last_error"].as_str().unwrap_or_default();
    assert!(
        why.contains("disk on fire") && why.contains("status 3"),
        "{m}"
    );
}

#[test]
fn exec_passes_each_hostile_name_as_one_argument() {
    let s = Scratch::new();
    let rels = write_hostile(&s);
    let cmd = script(s.dir.path(), "record.sh", RECORD_ARGS);
    let out = s
        .cmd(&[
            "sync",
            s.src_str(),
            "--exec",
            &format!("{} {{path}} {{remote}}", quoted(&cmd)),
            "--settle",
            "0",
        ])
        .output()
        .unwrap();
    assert_exit(&out, 0);
    assert_eq!(
        show(&calls(s.dir.path())),
        show(&path_remote_calls(&s, &rels))
    );
    assert_not_pwned(&s);
}

#[test]
fn exec_with_cp_copies_bytes_exactly() {
    let s = Scratch::new();
    std::fs::create_dir_all(&s.dst).unwrap();
    for (i, name) in hostile_names().iter().enumerate() {
        write(&s.src, name, &pseudo_random(i * 7919, i as u64));
    }
    // A name that is not UTF-8 too.
    std::fs::write(
        s.src.join(OsStr::from_bytes(b"bytes-\xff\xfe")),
        pseudo_random(5000, 99),
    )
    .unwrap();
    let template = format!("cp -- {{path}} {}/{{remote}}", quoted(&s.dst));
    let out = s
        .cmd(&["sync", s.src_str(), "--exec", &template, "--settle", "0"])
        .output()
        .unwrap();
    assert_synced(&s, &out);
    assert_not_pwned(&s);
}
