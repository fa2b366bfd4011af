//! What scripts and cron jobs rely on (issue 14, item 9): listings end quietly when their
//! reader goes away, a run refused for the lock has its own exit code, `-q` prints nothing
//! but errors, globs can ignore case, config mistakes name their key and line, and each
//! subcommand's `--help` shows only what it uses.

mod common;
use common::*;

use std::os::fd::{FromRawFd, OwnedFd};
use std::process::Stdio;
use std::time::Duration;

/// A pipe whose reading end is already closed: whatever is written to the other end fails
/// with EPIPE at once, as when `| head -1` has read its line and gone. (Closing it before the
/// program starts makes the broken pipe certain, where a real `head` races the writer.)
fn closed_pipe() -> OwnedFd {
    let mut fds = [0; 2];
    // SAFETY: `pipe` fills both descriptors on success; each is owned exactly once below.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just created and are not owned elsewhere.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    write
}

#[test]
fn listings_end_quietly_when_the_reader_goes_away() {
    let s = Scratch::new();
    // Long names: the ledger's listing (about 250 KiB) outgrows the pipe's buffer and
    // `head`'s first read, so the real pipeline below breaks for certain too.
    for i in 0..1000 {
        write(&s.src, &format!("{i:04}-{}", "n".repeat(200)), b"x");
    }
    assert_synced(&s, &s.sync(&[]));
    let listings: &[&[&str]] = &[
        &["ledger", "list"],
        &["ledger", "list", "--json"],
        &["queue", "list"],
        &["status"],
        &["status", "--json"],
    ];
    for args in listings {
        let out = s
            .cmd(args)
            .stdout(Stdio::from(closed_pipe()))
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(0),
            "skynet {}: a closed pipe must end it quietly; stderr: {stderr}",
            args.join(" ")
        );
        assert!(stderr.is_empty(), "skynet {}: {stderr}", args.join(" "));
    }
    // The same through a real `head -1`, as a script writes it.
    let bin = skynet_bin();
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(r#"set -o pipefail; "$0" ledger list | head -1 >/dev/null; echo "exit=$?""#)
        .arg(&bin)
        .env("SKYNET_STATE_DIR", &s.state)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("exit=0"), "{stdout}");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("panicked"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn quiet_prints_no_chatter() {
    let s = Scratch::new();
    write(&s.src, "new.txt", b"too young to send");
    // Without -q the held file is explained...
    let out = s.sync(&["--min-age", "1h"]);
    assert_exit(&out, 0);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("held back"), "{stderr}");
    // ...with -q, nothing but errors. (RUST_LOG, which the tests set, would override -q.)
    let quiet = |args: &[&str]| s.cmd(args).env_remove("RUST_LOG").output().unwrap();
    let out = quiet(&["sync", s.src_str(), s.dst_str(), "--min-age", "1h", "-q"]);
    assert_exit(&out, 0);
    assert_eq!(String::from_utf8_lossy(&out.stderr), "", "-q sync");
    let out = quiet(&["-q", "queue", "retry", "all"]);
    assert_exit(&out, 0);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "", "-q queue retry");
    let out = quiet(&["baseline", "-q", s.src_str(), s.dst_str()]);
    assert_exit(&out, 0);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "", "-q baseline");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "", "-q baseline");
}

#[test]
fn ignore_case_makes_globs_match_any_case() {
    let s = Scratch::new();
    for f in [
        "a.MKV",
        "b.mkv",
        "c.Mkv",
        "notes.txt",
        "junk/x.TMP.log",
        "Junk/y.mkv",
    ] {
        write(&s.src, f, f.as_bytes());
    }
    let out = s.sync(&["--include", "*.mkv", "--exclude", "junk", "--ignore-case"]);
    assert_exit(&out, 0);
    let names: Vec<String> = tree(&s.dst)
        .keys()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    assert_eq!(names, ["a.MKV", "b.mkv", "c.Mkv"]);

    // Per mapping in a config file.
    let dst2 = s.dir.path().join("dst2");
    let cfg = s.dir.path().join("skynet.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[mapping]]\nsource = {:?}\ndestination = {:?}\nexclude = [\"*.MKV\", \"junk\"]\nignore_case = true\n",
            s.src_str(),
            dst2.to_str().unwrap()
        ),
    )
    .unwrap();
    let mut daemon = s.spawn(&["run", "--config", cfg.to_str().unwrap(), "--settle", "0"]);
    assert!(
        wait_until(Duration::from_secs(15), || tree(&dst2)
            .contains_key(&b"notes.txt"[..])),
        "{}",
        daemon.log_text()
    );
    assert_eq!(daemon.signal("TERM"), Some(0), "{}", daemon.log_text());
    let names: Vec<String> = tree(&dst2)
        .keys()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    assert_eq!(names, ["notes.txt"]);
}

#[test]
fn the_same_source_and_destination_twice_is_refused_at_load() {
    let s = Scratch::new();
    let cfg = s.dir.path().join("routes.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[mapping]]\nsource = {src:?}\ndestination = {dst:?}\ninclude = [\"*.mp4\"]\n\n\
             [[mapping]]\nsource = {src:?}\ndestination = {dst:?}\ninclude = [\"*.jpg\"]\n",
            src = s.src_str(),
            dst = s.dst_str()
        ),
    )
    .unwrap();
    // Bounded: were it accepted, `run` would mirror until stopped.
    let mut daemon = s.spawn(&["run", "--config", cfg.to_str().unwrap()]);
    let code = daemon.wait_exit(Duration::from_secs(15));
    let log = daemon.log_text();
    assert_eq!(code, Some(2), "{log}");
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "{log}");
    let line = errors[0];
    for needle in ["mapping 1", "mapping 2", "merge"] {
        assert!(line.contains(needle), "should name {needle:?}: {line}");
    }
    assert!(!line.contains("already running"), "{line}");
    assert!(!s.dst.exists(), "nothing may start");
}

#[test]
fn a_wrong_value_in_a_mapping_names_the_key_and_its_line() {
    let s = Scratch::new();
    let cases = [
        // (the wrong line, the key)
        ("workers = \"many\"", "workers"),
        ("settle = \"soon\"", "settle"),
        ("include = \"*.mp4\"", "include"),
        ("complete_sync = \"yes\"", "complete_sync"),
    ];
    for (wrong, key) in cases {
        let cfg = s.dir.path().join("wrong.toml");
        std::fs::write(
            &cfg,
            format!(
                "settle = \"1s\"\n\n[[mapping]]\nsource = {src:?}\ndestination = {dst:?}\n\n\
                 [[mapping]]\nsource = {src:?}\ndestination = \"{dst}2\"\n# a comment\n{wrong}\n",
                src = s.src_str(),
                dst = s.dst_str()
            ),
        )
        .unwrap();
        let out = s
            .cmd(&["run", "--config", cfg.to_str().unwrap()])
            .output()
            .unwrap();
        expect_usage_error(out.clone(), "line 11");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&format!("`{key}`")), "{stderr}");
        assert!(stderr.contains("mapping 2"), "{stderr}");
    }
}

/// The options listed under "Options:" in `skynet ARGS --help`.
fn help(s: &Scratch, args: &[&str]) -> String {
    let out = s.cmd(args).arg("--help").output().unwrap();
    assert_exit(&out, 0);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn each_help_lists_only_what_its_subcommand_uses() {
    let s = Scratch::new();
    let baseline = help(&s, &["baseline"]);
    for unused in [
        "--workers",
        "--settle",
        "--complete-sync",
        "--poll",
        "--max-attempts",
        "--retry-delay",
        "--min-age",
        "--dated",
        "--remove-source",
        "--on-delivered",
        "--exec-delete",
        "--exec-timeout",
        "--bwlimit",
        "--max-delete",
        "--metrics",
    ] {
        assert!(
            !baseline.contains(unused),
            "baseline --help lists {unused}:\n{baseline}"
        );
    }
    for used in [
        "--send-once",
        "--include",
        "--exclude",
        "--exec",
        "--dry-run",
    ] {
        assert!(baseline.contains(used), "baseline --help lacks {used}");
    }
    let sync = help(&s, &["sync"]);
    for unused in ["--poll", "--metrics"] {
        assert!(
            !sync.contains(unused),
            "sync --help lists {unused}:\n{sync}"
        );
    }
    let status = help(&s, &["status"]);
    assert!(!status.contains("--workers"), "{status}");
    // Every positional argument says what it is (beside it, or on the next line).
    for (args, text) in [(&["sync"][..], &sync), (&["baseline"][..], &baseline)] {
        let lines: Vec<&str> = text.lines().collect();
        for name in ["SRC", "DEST"] {
            let (required, optional) = (format!("<{name}>"), format!("[{name}]"));
            let arg = required.as_str();
            let at = lines
                .iter()
                .position(|l| {
                    let l = l.trim_start();
                    l.starts_with(&required) || l.starts_with(&optional)
                })
                .unwrap_or_else(|| panic!("{args:?} --help has no {arg}:\n{text}"));
            let beside = lines[at].trim().len() > arg.len() + 4;
            let below = lines.get(at + 1).is_some_and(|l| {
                let l = l.trim();
                !l.is_empty() && !l.starts_with('[') && !l.starts_with('-')
            });
            assert!(
                beside || below,
                "{args:?} --help: {arg} has no help text:\n{text}"
            );
        }
    }
    // The exit codes a script tests are documented, "another run holds the lock" too.
    for text in [help(&s, &[]), sync] {
        let documented = text
            .lines()
            .any(|l| l.trim_start().starts_with("3 ") && l.contains("lock"));
        assert!(documented, "no exit code 3 in:\n{text}");
    }
}
