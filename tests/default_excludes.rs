//! Partial downloads and editors' temporary files are never sent (issue 14, item 3): a file
//! written as `movie.mkv.part` and renamed when complete goes out once, as `movie.mkv`.
//! `--no-default-excludes` (or `default_excludes = false`) sends them like any file.

mod common;
use common::*;

use std::io::Write;
use std::time::Duration;

/// Names browsers, download tools and editors write while a file is incomplete or open.
const TEMPORARY: &[&str] = &[
    "movie.mkv.part",
    "setup.iso.crdownload",
    "big.bin.partial",
    "scratch.tmp",
    "page.html.download/data",
    ".notes.txt.swp",
    "notes.txt.swx",
    "notes.txt~",
    ".#notes.txt",
    "4913",
    ".~lock.report.odt#",
    ".goutputstream-X1Y2Z3",
    "deep/er/clip.mp4.part",
];

fn names(root: &std::path::Path) -> Vec<String> {
    tree(root)
        .keys()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect()
}

#[test]
fn temporary_names_are_not_sent_by_default() {
    let s = Scratch::new();
    for f in TEMPORARY {
        write(&s.src, f, b"half of it");
    }
    write(&s.src, "done.txt", b"complete");
    let out = s.sync(&["--settle", "0"]);
    assert_exit(&out, 0);
    assert_eq!(names(&s.dst), ["done.txt"]);
    let ledger = s.cmd(&["ledger", "list"]).output().unwrap();
    let ledger = String::from_utf8_lossy(&ledger.stdout);
    assert!(!ledger.contains(".part"), "{ledger}");

    // The download completes: renamed to its final name, it is sent under that name only.
    let part = s.src.join("movie.mkv.part");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&part)
        .unwrap()
        .write_all(b", and the rest")
        .unwrap();
    std::fs::rename(&part, s.src.join("movie.mkv")).unwrap();
    let out = s.sync(&["--settle", "0"]);
    assert_exit(&out, 0);
    assert_eq!(names(&s.dst), ["done.txt", "movie.mkv"]);
    assert_eq!(
        std::fs::read(s.dst.join("movie.mkv")).unwrap(),
        b"half of it, and the rest"
    );

    // Asked for, they are sent like any file.
    let all = s.dir.path().join("all");
    let out = s
        .cmd(&[
            "sync",
            s.src_str(),
            all.to_str().unwrap(),
            "--settle",
            "0",
            "--no-default-excludes",
        ])
        .output()
        .unwrap();
    assert_exit(&out, 0);
    assert_eq!(tree(&all), tree(&s.src));
}

/// A command destination that appends `ACTION REMOTE` to `calls.log` beside it.
fn recorder(s: &Scratch) -> (String, std::path::PathBuf) {
    let script = script(
        s.dir.path(),
        "record",
        r#"printf '%s %s\n' "$1" "$2" >> "$(dirname "$0")/calls.log""#,
    );
    let log = s.dir.path().join("calls.log");
    (format!("{} {{action}} {{remote}}", script.display()), log)
}

fn calls(log: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// `movie.mkv.part` written slowly, then `later.txt`; once `later.txt` was sent (one worker:
/// everything queued before it was tried first), the download is renamed to `movie.mkv`.
/// Returns every call the command destination saw.
fn slow_download(extra: &[&str]) -> Vec<String> {
    let s = Scratch::new();
    let (exec, log) = recorder(&s);
    let mut args = vec![
        "run",
        s.src_str(),
        "--exec",
        &exec,
        "--workers",
        "1",
        "--settle",
        "100ms",
    ];
    args.extend_from_slice(extra);
    let mut daemon = s.spawn(&args);
    let part = s.src.join("movie.mkv.part");
    let mut file = std::fs::File::create(&part).unwrap();
    for chunk in 0..4 {
        file.write_all(format!("chunk {chunk};").as_bytes())
            .unwrap();
        file.flush().unwrap();
        // Longer than the settle time: a name that is not ignored gets sent in between.
        std::thread::sleep(Duration::from_millis(400));
    }
    drop(file);
    put(&s.src, "later.txt", b"after the download's last write");
    assert!(
        wait_until(Duration::from_secs(20), || calls(&log)
            .contains(&"send later.txt".to_string())),
        "later.txt never sent: {:?}\n{}",
        calls(&log),
        daemon.log_text()
    );
    std::fs::rename(&part, s.src.join("movie.mkv")).unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || calls(&log)
            .iter()
            .any(|c| c.ends_with(" movie.mkv"))),
        "movie.mkv never reached the destination: {:?}\n{}",
        calls(&log),
        daemon.log_text()
    );
    assert_eq!(daemon.signal("TERM"), Some(0), "{}", daemon.log_text());
    let ledger = s.cmd(&["ledger", "list"]).output().unwrap();
    let ledger = String::from_utf8_lossy(&ledger.stdout).into_owned();
    assert!(ledger.contains("movie.mkv"), "{ledger}");
    if extra.is_empty() {
        assert!(!ledger.contains(".part"), "{ledger}");
    }
    calls(&log)
}

#[test]
fn a_partial_download_is_sent_once_under_its_final_name() {
    let calls = slow_download(&[]);
    assert_eq!(calls, ["send later.txt", "send movie.mkv"]);
}

#[test]
fn without_default_excludes_the_partial_file_is_sent() {
    let calls = slow_download(&["--no-default-excludes"]);
    assert!(
        calls.iter().any(|c| c == "send movie.mkv.part"),
        "{calls:?}"
    );
}
