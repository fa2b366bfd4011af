//! A command destination as people script it (issue 14, item 8): one run per top-level entry
//! settled as a unit (`--exec-per top-level`), moves that never hand a directory to a command
//! written for files, and the README's own command examples run as written.

mod common;
use common::*;

use std::path::Path;
use std::time::Duration;

/// `sync SRC --exec TEMPLATE EXTRA…`.
fn exec_sync(s: &Scratch, template: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["sync", s.src_str(), "--exec", template, "--settle", "0"];
    args.extend_from_slice(extra);
    s.cmd(&args).output().expect("run skynet sync")
}

fn text(args: &[Vec<u8>]) -> Vec<String> {
    args.iter()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

fn recorded(dir: &Path) -> Vec<Vec<String>> {
    calls(dir).iter().map(|c| text(c)).collect()
}

/// `run SRC --exec "PROGRAM {path}" --exec-per top-level --settle SETTLE`.
fn per_entry_daemon(s: &Scratch, program: &Path, settle: &str) -> Daemon {
    let template = format!("{} {{path}}", quoted(program));
    s.spawn(&[
        "run",
        s.src_str(),
        "--exec",
        &template,
        "--exec-per",
        "top-level",
        "--settle",
        settle,
    ])
}

/// One command per top-level entry, `{path}` the entry; nothing again while nothing changed;
/// a change deep inside runs the entry's command once more, and only that entry's.
#[test]
fn top_level_runs_one_command_per_entry() {
    let s = Scratch::new();
    put(&s.src, "album/cd1/01.flac", b"one");
    put(&s.src, "album/cd2/02.flac", b"two");
    put(&s.src, "album/cover.jpg", b"jpg");
    put(&s.src, "single.txt", b"single");
    let tools = tempfile::tempdir().unwrap();
    let rec = script(tools.path(), "record.sh", RECORD_ARGS);
    let template = format!("{} {{action}} {{path}} {{remote}}", quoted(&rec));
    let out = exec_sync(&s, &template, &["--exec-per", "top-level"]);
    assert_exit(&out, 0);
    let src = s.src.display().to_string();
    let want = vec![
        vec!["send".to_string(), format!("{src}/album"), "album".into()],
        vec![
            "send".to_string(),
            format!("{src}/single.txt"),
            "single.txt".into(),
        ],
    ];
    assert_eq!(recorded(tools.path()), want);

    assert_exit(&exec_sync(&s, &template, &["--exec-per", "top-level"]), 0);
    assert_eq!(
        recorded(tools.path()).len(),
        2,
        "ran again with nothing changed"
    );

    put(&s.src, "album/cd2/03.flac", b"three");
    assert_exit(&exec_sync(&s, &template, &["--exec-per", "top-level"]), 0);
    let got = recorded(tools.path());
    assert_eq!(got.len(), 3, "{got:?}");
    let albums = got.iter().filter(|c| c[2] == "album").count();
    assert_eq!(albums, 2, "{got:?}");
}

/// The daemon waits for the whole folder to settle: a folder filled over a few seconds, one
/// file at a time, is copied by one `rsync` run holding every file.
#[test]
fn a_folder_being_filled_is_sent_once_whole() {
    let s = Scratch::new();
    std::fs::create_dir_all(&s.dst).unwrap();
    let tools = tempfile::tempdir().unwrap();
    let counter = script(
        tools.path(),
        "rsync-counted",
        &format!(
            r#"echo run >> "$(dirname "$0")/runs"
exec rsync -a "$1" {}/"#,
            quoted(&s.dst)
        ),
    );
    let mut daemon = per_entry_daemon(&s, &counter, "2s");
    for i in 0..8 {
        put(
            &s.src,
            &format!("torrent/part{}/file{i}.bin", i % 3),
            &[i as u8; 2048],
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    if let Err(diff) = wait_converged(&s.src, &s.dst, true, Duration::from_secs(30)) {
        panic!("not delivered: {diff}\n{}", daemon.log_text());
    }
    // Nothing more may come: give a second run the time it would need to show.
    std::thread::sleep(Duration::from_secs(3));
    let runs = std::fs::read_to_string(tools.path().join("runs")).unwrap_or_default();
    assert_eq!(runs.lines().count(), 1, "{}", daemon.log_text());
    assert_eq!(daemon.signal("TERM"), Some(0), "{}", daemon.log_text());
}

/// With complete-sync, an entry the source lost runs the delete command once its files'
/// deletions went through; a failing command parks the entry (exit 1, shown by `status`)
/// and the next sync tries it again by itself.
#[test]
fn a_removed_entry_is_deleted_and_a_failing_one_parks_then_recovers() {
    let s = Scratch::new();
    put(&s.src, "gone/a.txt", b"a");
    put(&s.src, "gone/b/c.txt", b"c");
    put(&s.src, "kept/d.txt", b"d");
    let tools = tempfile::tempdir().unwrap();
    let rec = script(tools.path(), "record.sh", RECORD_ARGS);
    let flag = tools.path().join("broken");
    let send = script(
        tools.path(),
        "send.sh",
        &format!(
            r#"if [ -e {} ]; then echo "remote full" >&2; exit 1; fi
{RECORD_ARGS}"#,
            quoted(&flag)
        ),
    );
    let template = format!("{} {{action}} {{remote}}", quoted(&send));
    let delete = format!("{} {{action}} {{remote}}", quoted(&rec));
    let opts = [
        "--exec-per",
        "top-level",
        "--complete-sync",
        "--exec-delete",
        &delete,
        "--max-attempts",
        "2",
        "--retry-delay",
        "50ms",
    ];
    assert_exit(&exec_sync(&s, &template, &opts), 0);
    assert_eq!(recorded(tools.path()).len(), 2);

    std::fs::remove_dir_all(s.src.join("gone")).unwrap();
    put(&s.src, "kept/e.txt", b"e");
    std::fs::write(&flag, b"").unwrap();
    let out = exec_sync(&s, &template, &opts);
    assert_exit(&out, 1);
    let got = recorded(tools.path());
    assert!(
        got.contains(&vec!["delete".to_string(), "gone".into()]),
        "{got:?}"
    );
    let m = &s.mapping();
    let entries = m["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 1, "{m}");
    assert_eq!(entries[0]["entry"], "kept", "{m}");
    assert_eq!(entries[0]["parked"], true, "{m}");
    assert!(
        entries[0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("remote full")),
        "{m}"
    );

    std::fs::remove_file(&flag).unwrap();
    assert_exit(&exec_sync(&s, &template, &opts), 0);
    let got = recorded(tools.path());
    let kept = got.iter().filter(|c| c[1] == "kept").count();
    assert_eq!(kept, 2, "{got:?}");
    assert!(s.mapping()["entries"]
        .as_array()
        .is_some_and(|e| e.is_empty()));
}

/// A move inside the source, per file and without `--exec-move`: the command written for
/// files gets each moved file at its new place, never the directory. `--exec-send-moves`
/// hands the move to the command; complete-sync without either is refused (the old place
/// would stay at the destination).
#[test]
fn a_moved_folder_never_reaches_the_send_command_as_a_directory() {
    for send_moves in [false, true] {
        let s = Scratch::new();
        put(&s.src, "d/x.txt", b"x");
        put(&s.src, "d/y/z.txt", b"z");
        let tools = tempfile::tempdir().unwrap();
        let rec = script(tools.path(), "record.sh", RECORD_ARGS);
        let template = format!("{} {{action}} {{remote}}", quoted(&rec));
        let mut args = vec!["run", s.src_str(), "--exec", &template, "--settle", "0"];
        if send_moves {
            args.extend(["--exec-send-moves", "--complete-sync"]);
        }
        let mut daemon = s.spawn(&args);
        let sent = |n: usize| {
            wait_until(Duration::from_secs(20), || {
                recorded(tools.path()).len() >= n
            })
        };
        assert!(sent(2), "{}", daemon.log_text());
        std::fs::rename(s.src.join("d"), s.src.join("e")).unwrap();
        let want: Vec<Vec<String>> = if send_moves {
            vec![vec!["move".into(), "e".into()]]
        } else {
            vec![
                vec!["send".into(), "e/x.txt".into()],
                vec!["send".into(), "e/y/z.txt".into()],
            ]
        };
        assert!(sent(2 + want.len()), "{}", daemon.log_text());
        std::thread::sleep(Duration::from_millis(500));
        let got = recorded(tools.path());
        let after: Vec<Vec<String>> = got
            .into_iter()
            .filter(|c| !(c[0] == "send" && c[1].starts_with("d/")))
            .collect();
        assert_eq!(
            after,
            want,
            "send_moves {send_moves}\n{}",
            daemon.log_text()
        );
        assert_eq!(daemon.signal("TERM"), Some(0), "{}", daemon.log_text());
    }
    let s = Scratch::new();
    let out = exec_sync(&s, "true {path}", &["--complete-sync"]);
    expect_usage_error(out, "--exec-move");
}

/// Every `--exec "…"` example in the README runs as written (the host part of a remote
/// destination made local), delivering every file, nested ones included.
#[test]
fn the_readme_command_examples_run_as_written() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("read README.md");
    let examples: Vec<&str> = readme
        .split("--exec \"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .filter(|t| !t.starts_with("CMD "))
        .collect();
    assert!(examples.len() >= 2, "examples found: {examples:?}");
    for example in examples {
        let s = Scratch::new();
        put(&s.src, "top.txt", b"top");
        put(&s.src, "a/b/deep.txt", b"deep");
        std::fs::create_dir_all(&s.dst).unwrap();
        let template = example.replace("host:/dst", s.dst_str());
        let per = readme
            .split(example)
            .nth(1)
            .and_then(|rest| rest.lines().next())
            .is_some_and(|line| line.contains("--exec-per top-level"));
        let mut extra = vec![];
        if per {
            extra.extend(["--exec-per", "top-level"]);
        }
        let out = exec_sync(&s, &template, &extra);
        assert_exit(&out, 0);
        if let Err(diff) = wait_converged(&s.src, &s.dst, true, Duration::from_secs(5)) {
            panic!("README example {example:?} did not deliver: {diff}");
        }
    }
}

/// A stop does not wait for an entry's long command: it is killed, the daemon ends at once,
/// and the entry stays due for the next run.
#[test]
fn a_stop_kills_a_long_entry_command_and_keeps_the_entry_due() {
    let s = Scratch::new();
    put(&s.src, "big/file.bin", b"data");
    let tools = tempfile::tempdir().unwrap();
    let slow = script(
        tools.path(),
        "slow.sh",
        r#"touch "$(dirname "$0")/started"
sleep 60"#,
    );
    let mut daemon = per_entry_daemon(&s, &slow, "0");
    let started = tools.path().join("started");
    assert!(
        wait_until(Duration::from_secs(20), || started.exists()),
        "{}",
        daemon.log_text()
    );
    let asked = std::time::Instant::now();
    assert_eq!(daemon.signal("TERM"), Some(0), "{}", daemon.log_text());
    assert!(
        asked.elapsed() < Duration::from_secs(20),
        "waited {:?} for the command",
        asked.elapsed()
    );
    let m = &s.mapping();
    let entries = m["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 1, "{m}");
    assert_eq!(entries[0]["entry"], "big", "{m}");
    assert_eq!(entries[0]["parked"], false, "{m}");
}
