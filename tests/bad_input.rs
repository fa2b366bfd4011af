//! Bad input, through the real binary: malformed and mistyped config files, unknown keys,
//! odd destination URLs (ports 0, 99999 and non-numeric, users, IPv6 hosts, percent-encoding,
//! passwords), missing paths. Each exits 2 with one line on stderr naming the bad thing, never
//! a panic. Then bounded property tests: the SFTP and S3 URL parsers never panic on any string
//! and every error is one line; random config files through the binary likewise. (The
//! binary's own parsers are fuzzed in unit tests of `src/config.rs` and `src/destination.rs`.)

mod common;
use common::*;

use proptest::prelude::*;
use std::process::Output;

/// Exit 2, exactly one line on stderr, containing every needle and none of `secrets`.
fn one_line_error(out: &Output, needles: &[&str], secrets: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(2), "exit code; stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line expected: {stderr}");
    for needle in needles {
        assert!(
            lines[0].contains(needle),
            "should name {needle:?}: {stderr}"
        );
    }
    for secret in secrets {
        assert!(!stderr.contains(secret), "{secret:?} leaked: {stderr}");
    }
    lines[0].to_string()
}

fn run_config(s: &Scratch, text: &str) -> Output {
    let cfg = s.dir.path().join("skynet.toml");
    std::fs::write(&cfg, text).unwrap();
    s.cmd(&["run", "--config", cfg.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

// A value of the wrong type inside a [[mapping]] names its key and its line (serde's
// `flatten` used to lose both: "line 1", or the mapping's header, and no key).
#[test]
fn bad_config_files() {
    let s = Scratch::new();
    let (src, dst) = (s.src_str().to_string(), s.dst_str().to_string());
    let mapping = format!("[[mapping]]\nsource = {src:?}\ndestination = {dst:?}\n");
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            "[[mapping]\nsource = \"x\"\n".into(),
            vec!["skynet.toml", "line 1"],
        ),
        ("[[mapping]]\nsource = \"unclosed\n".into(), vec!["line 2"]),
        ("workers = 2\nworkers = 3\n".into(), vec!["line 2"]),
        ("= 3\n".into(), vec!["line 1"]),
        (
            "[[mapping]]\nsource = 1\ndestination = \"d\"\n".into(),
            vec!["line 2"],
        ),
        (
            format!("{mapping}workers = \"four\"\n"),
            vec!["skynet.toml line 4", "`workers`"],
        ),
        (
            format!("{mapping}workers = -1\n"),
            vec!["line 4", "`workers`"],
        ),
        (
            format!("{mapping}settle = 5\n"),
            vec!["line 4", "`settle`", "\"5s\""],
        ),
        (
            format!("{mapping}settle = \"soon\"\n"),
            vec!["line 4", "`settle`", "soon"],
        ),
        (
            format!("{mapping}timeout = \"-1s\"\n"),
            vec!["line 4", "`timeout`"],
        ),
        (
            format!("{mapping}complete_sync = \"yes\"\n"),
            vec!["line 4", "`complete_sync`"],
        ),
        (
            format!("{mapping}exclude = \"*.tmp\"\n"),
            vec!["line 4", "`exclude`"],
        ),
        (
            format!("{mapping}exclude = [\"[unclosed\"]\n"),
            vec!["line 4", "[unclosed"],
        ),
        (
            format!("{mapping}host_key_policy = \"lenient\"\n"),
            vec!["line 4", "lenient"],
        ),
        (
            format!("{mapping}complete_synk = true\n"),
            vec!["complete_synk", "mapping 1", "line 4"],
        ),
        (
            format!("colour = \"blue\"\n{mapping}"),
            vec!["colour", "top level"],
        ),
        ("mapping = 3\n".into(), vec!["line 1"]),
        ("state_dir = 1\n".into(), vec!["line 1"]),
        ("".into(), vec!["no [[mapping]]"]),
        (
            format!("[[mapping]]\nsource = \"no-such-dir\"\ndestination = {dst:?}\n"),
            vec!["no-such-dir"],
        ),
        (
            format!("[[mapping]]\nsource = {src:?}\ndestination = \"gopher://h/x\"\n"),
            vec!["gopher"],
        ),
    ];
    for (text, needles) in &cases {
        let out = run_config(&s, text);
        let line = one_line_error(&out, needles, &[]);
        assert!(line.starts_with("skynet: error:"), "{text:?}: {line}");
    }
    // A missing config file, and a directory given as one.
    let out = s
        .cmd(&["run", "--config", "/nonexistent/skynet.toml"])
        .output()
        .unwrap();
    one_line_error(&out, &["/nonexistent/skynet.toml"], &[]);
    let out = s.cmd(&["run", "--config", s.src_str()]).output().unwrap();
    one_line_error(&out, &[s.src_str()], &[]);
    assert!(!s.dst.exists(), "a bad config sent something");
}

#[test]
fn bad_destinations() {
    let s = Scratch::new();
    write(&s.src, "f.txt", b"x");
    let cases: &[(&str, &[&str], &[&str])] = &[
        ("sftp://h:0/x", &["port"], &[]),
        ("sftp://h:99999/x", &["port", "99999"], &[]),
        ("sftp://h:abc/x", &["port", "abc"], &[]),
        ("sftp://h:-1/x", &["port"], &[]),
        ("sftp://:22/x", &["host"], &[]),
        ("sftp://u@/x", &["host"], &[]),
        ("sftp://@h/x", &["user"], &[]),
        (
            "sftp://u:hunter2@h/x",
            &["SKYNET_SFTP_PASSWORD"],
            &["hunter2"],
        ),
        ("sftp://::1/x", &["[::1]"], &[]),
        ("sftp://[::1/x", &["IPv6"], &[]),
        ("sftp://[::1]x/p", &["IPv6"], &[]),
        ("sftp://h", &["path"], &[]),
        ("sftp://h/a%00b", &["NUL"], &[]),
        ("sftp://h/x?y=1", &["query"], &[]),
        ("sftp://%ff@h/x", &["UTF-8"], &[]),
        ("s3://", &["bucket"], &[]),
        ("s3:///p", &["bucket"], &[]),
        ("s3://a/p", &["bucket"], &[]),
        ("s3://Bad_Bucket!/p", &["bucket"], &[]),
        ("s3://bkt/a//b", &["prefix"], &[]),
        ("s3://bkt/a/../b", &["prefix"], &[]),
        (
            "s3://AKID:s3cr3tKEY@bkt/p",
            &["credentials"],
            &["s3cr3tKEY"],
        ),
        ("s3://bkt/p?versionId=1", &["query"], &[]),
        ("file://relative/x", &["absolute"], &[]),
        ("file:///tmp/%ff", &["UTF-8"], &[]),
        ("gopher://h/x", &["gopher"], &[]),
        ("", &["destination"], &[]),
    ];
    for (dest, needles, secrets) in cases {
        let out = s
            .cmd(&["sync", s.src_str(), dest, "--timeout", "1s"])
            .env_remove("AWS_ENDPOINT_URL")
            .output()
            .unwrap();
        let line = one_line_error(&out, needles, secrets);
        assert!(line.starts_with("skynet: error:"), "{dest}: {line}");
    }
    // An S3 endpoint that is not an http(s) URL.
    let out = s
        .cmd(&[
            "sync",
            s.src_str(),
            "s3://bkt/p",
            "--s3-endpoint",
            "ftp://h:1",
        ])
        .output()
        .unwrap();
    one_line_error(&out, &["ftp://h:1"], &[]);
    // A missing source, and a file as the source.
    let missing = s.dir.path().join("no-such-source");
    let out = s
        .cmd(&["sync", missing.to_str().unwrap(), s.dst_str()])
        .output()
        .unwrap();
    one_line_error(&out, &["no-such-source"], &[]);
    let file = s.src.join("f.txt");
    let out = s
        .cmd(&["sync", file.to_str().unwrap(), s.dst_str()])
        .output()
        .unwrap();
    one_line_error(&out, &["not a directory"], &[]);
}

/// Well-formed SFTP URLs whose server cannot be reached (IPv6 loopback with a user and
/// percent-encoded parts, a closed port): `sync` gives up with one line naming the server.
#[test]
fn unreachable_well_formed_sftp_urls() {
    let s = Scratch::new();
    write(&s.src, "f.txt", b"x");
    let key = s.dir.path().join("no-such-key");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for (dest, needle) in [
        (
            "sftp://j%40doe@[::1]:1/with%20space".to_string(),
            "[::1]:1".to_string(),
        ),
        (
            format!("sftp://me@127.0.0.1:{closed}/~/x"),
            format!("127.0.0.1:{closed}"),
        ),
    ] {
        let started = std::time::Instant::now();
        let mut cmd = s.cmd(&[
            "sync",
            s.src_str(),
            &dest,
            "--timeout",
            "1s",
            "--reconnect-max",
            "200ms",
        ]);
        cmd.arg("--identity").arg(&key);
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(!out.status.success(), "{dest}: {stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error:")).collect();
        assert_eq!(errors.len(), 1, "{dest}: {stderr}");
        assert!(
            errors[0].contains(&needle),
            "{dest}: should name {needle}: {stderr}"
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{dest}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    /// Any string: no panic; an error is one line.
    #[test]
    fn sftp_url_parser_never_panics(tail in any::<String>(), raw in any::<String>()) {
        for url in [format!("sftp://{tail}"), raw] {
            if let Err(e) = skynet_sftp::SftpUrl::parse(&url) {
                let msg = e.to_string();
                prop_assert!(!msg.contains('\n'), "{msg}");
            }
            if let Err(e) = skynet_sftp::SftpConfig::from_url(&url) {
                prop_assert!(!e.to_string().contains('\n'), "{e}");
            }
        }
    }

    #[test]
    fn sftp_url_parser_on_url_like_strings(
        user in "[a-z%@:0-9]{0,6}",
        host in "(\\[?[0-9a-f:]{0,8}\\]?|[a-z.]{0,8})",
        port in "(:[0-9a-z-]{0,7})?",
        path in "(/[~a-z%0-9 ?#]{0,6}){0,3}",
    ) {
        let url = if user.is_empty() {
            format!("sftp://{host}{port}{path}")
        } else {
            format!("sftp://{user}@{host}{port}{path}")
        };
        match skynet_sftp::SftpUrl::parse(&url) {
            Ok(u) => {
                prop_assert!(!u.host.is_empty());
                prop_assert!(u.port != Some(0));
            }
            Err(e) => prop_assert!(!e.to_string().contains('\n'), "{e}"),
        }
    }

    #[test]
    fn s3_url_parser_never_panics(tail in any::<String>(), shaped in "[a-zA-Z0-9._/@:?#%-]{0,40}") {
        for url in [format!("s3://{tail}"), format!("s3://{shaped}")] {
            match skynet_s3::S3Config::from_url(&url) {
                Ok(cfg) => {
                    prop_assert!(cfg.validate().is_ok());
                    prop_assert!(!cfg.prefix.starts_with('/') && !cfg.prefix.ends_with('/'));
                }
                Err(e) => prop_assert!(!e.to_string().contains('\n'), "{e}"),
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random config files through the binary: the source never exists, so every outcome is
    /// an error, and it is one line, exit 2, no panic.
    #[test]
    fn random_config_files_through_the_binary(
        keys in proptest::collection::vec(
            ("(workers|settle|timeout|exclude|complete_sync|host_key_policy|retry_delay|s3_endpoint|identity|[a-z_]{1,8})",
             "(\"[^\"\\\\\n]{0,12}\"|-?[0-9]{1,20}|true|\\[\\]|\\[\"[*a-z]{0,3}\"\\]|[a-z\\[\\]{}=\"]{0,4})"),
            0..4),
        destination in "[a-z0-9:/@%\\[\\]._-]{0,24}",
    ) {
        let s = Scratch::new();
        let mut text = format!("[[mapping]]\nsource = \"/nonexistent/src\"\ndestination = {destination:?}\n");
        for (k, v) in keys {
            text.push_str(&format!("{k} = {v}\n"));
        }
        let out = run_config(&s, &text);
        let stderr = String::from_utf8_lossy(&out.stderr);
        prop_assert!(!stderr.contains("panicked"), "{text}\n{stderr}");
        prop_assert_eq!(out.status.code(), Some(2), "{}\n{}", text, stderr);
        prop_assert_eq!(stderr.lines().count(), 1, "{}\n{}", text, stderr);
    }
}
