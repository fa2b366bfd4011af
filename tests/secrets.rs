//! Secrets and trust boundaries, through the real binary (issue 13): what skynet passes to
//! the programs it runs, what it stores in its state directory, what `status` and the logs
//! show, and who may read the state.

mod common;
use common::*;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Secret values set in skynet's environment; none may reach a child program or the state.
const SECRETS: &[(&str, &str)] = &[
    ("SKYNET_SFTP_PASSWORD", "pw-7f3a9c-sftp"),
    ("SKYNET_SFTP_PASSPHRASE", "pp-41be02-key"),
    ("AWS_SECRET_ACCESS_KEY", "sk-9d2c77-aws"),
    ("AWS_ACCESS_KEY_ID", "AKIA0E5D1C-aws"),
    ("AWS_SESSION_TOKEN", "tok-33aa81-aws"),
];

/// A script that appends its whole environment to `env.txt` beside itself.
fn env_dump(dir: &Path) -> PathBuf {
    script(dir, "dump-env", r#"env >> "$(dirname "$0")/env.txt""#)
}

fn with_secrets(mut cmd: std::process::Command) -> std::process::Command {
    for (k, v) in SECRETS {
        cmd.env(k, v);
    }
    cmd
}

fn dumped(tools: &Path) -> String {
    std::fs::read_to_string(tools.join("env.txt")).expect("the program ran and wrote env.txt")
}

fn leaked<'a>(
    text: &str,
    secrets: impl IntoIterator<Item = &'a (&'a str, &'a str)>,
) -> Vec<&'a str> {
    secrets
        .into_iter()
        .filter(|(_, v)| text.contains(v))
        .map(|(k, _)| *k)
        .collect()
}

#[test]
fn programs_skynet_runs_do_not_inherit_its_secrets() {
    let s = Scratch::new();
    put(&s.src, "a.txt", b"a");
    let tools = tempfile::tempdir().unwrap();
    let dump = env_dump(tools.path());
    let template = format!("{} {{path}}", dump.display());

    // The command destination.
    let out = with_secrets(s.cmd(&["sync", s.src_str(), "--settle", "0", "--exec", &template]))
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let env = dumped(tools.path());
    assert!(
        env.contains("SKYNET_PATH="),
        "documented variables are set: {env}"
    );
    assert_eq!(
        leaked(&env, SECRETS),
        Vec::<&str>::new(),
        "--exec child saw secrets"
    );

    // The delivery hook.
    std::fs::remove_file(tools.path().join("env.txt")).unwrap();
    let out = with_secrets(s.cmd(&[
        "sync",
        s.src_str(),
        s.dst_str(),
        "--settle",
        "0",
        "--on-delivered",
        &template,
    ]))
    .output()
    .unwrap();
    assert_synced(&s, &out);
    let env = dumped(tools.path());
    assert_eq!(
        leaked(&env, SECRETS),
        Vec::<&str>::new(),
        "--on-delivered child saw secrets"
    );

    // A variable the user allows through reaches the program; the others still do not.
    std::fs::remove_file(tools.path().join("env.txt")).unwrap();
    put(&s.src, "b.txt", b"b");
    let out = with_secrets(s.cmd(&[
        "sync",
        s.src_str(),
        "--settle",
        "0",
        "--exec",
        &template,
        "--pass-env",
        "AWS_SECRET_ACCESS_KEY",
    ]))
    .output()
    .unwrap();
    assert_exit(&out, 0);
    let env = dumped(tools.path());
    assert_eq!(
        leaked(&env, SECRETS),
        vec!["AWS_SECRET_ACCESS_KEY"],
        "only the allowed variable passes"
    );
}

/// Every byte of every file under `dir`, with the names of those holding `needle`.
fn files_holding(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                    out.push(p);
                }
            }
        }
    }
    out
}

#[test]
fn refused_destinations_leave_no_credential_in_the_state_or_status() {
    let s = Scratch::new();
    put(&s.src, "a.txt", b"a");
    // A mapping that ran, so the state directory and `status` have something to show.
    assert_synced(&s, &s.sync(&["--settle", "0"]));
    let before = mapping_dirs(&s.state);
    for (dest, secret) in [
        (
            "sftp://alice:hunter2-c0ffee@127.0.0.1:1/x",
            "hunter2-c0ffee",
        ),
        (
            "s3://AKIDEXAMPLE:wJalr-s3cr3t-KEY@bucket-x/p",
            "wJalr-s3cr3t-KEY",
        ),
    ] {
        let out = s
            .cmd(&["sync", s.src_str(), dest, "--timeout", "1s"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{dest} refused: {stderr}");
        assert!(!stderr.contains(secret), "{secret} in the error: {stderr}");
        let holding = files_holding(&s.state, secret);
        assert!(holding.is_empty(), "{secret} stored in {holding:?}");
        assert_eq!(
            mapping_dirs(&s.state),
            before,
            "{dest}: refused, yet state was made"
        );
        let status = s.cmd(&["status", "--json"]).output().unwrap();
        assert!(status.status.success(), "status failed");
        let text = String::from_utf8_lossy(&status.stdout);
        assert!(text.contains("mappings"), "status showed nothing: {text}");
        assert!(!text.contains(secret), "{secret} in status --json: {text}");
    }
}

/// The mapping directories under the state root.
fn mapping_dirs(state: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(state)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs
}

#[test]
fn one_sftp_destination_spelled_two_ways_is_one_mapping() {
    let s = Scratch::new();
    put(&s.src, "a.txt", b"a");
    // Nothing listens on port 1: each attempt fails to connect, after its state exists.
    for dest in [
        "sftp://alice@127.0.0.1:1/x",
        "sftp://alice@127.0.0.1:1/x/",
        "SFTP://alice@127.0.0.1:1//x",
    ] {
        let out = s
            .cmd(&["sync", s.src_str(), dest, "--timeout", "1s"])
            .output()
            .unwrap();
        // Accepted, then unreachable: it tried to connect (not refused as a bad URL).
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("cannot reach"), "{dest}: {stderr}");
    }
    let dirs = mapping_dirs(&s.state);
    assert_eq!(dirs.len(), 1, "one mapping expected: {dirs:?}");
    // Port 22 written or implied is the same server.
    let t = Scratch::new();
    put(&t.src, "a.txt", b"a");
    for dest in ["sftp://alice@127.0.0.1:22/x", "sftp://alice@127.0.0.1/x"] {
        let out = t
            .cmd(&[
                "sync",
                t.src_str(),
                dest,
                "--timeout",
                "1s",
                "--known-hosts",
                "/dev/null",
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Whatever listens on port 22 here (nothing, or an sshd whose key is unknown).
        let tried = stderr.contains("cannot reach") || stderr.contains("host key");
        assert!(tried, "{dest}: {stderr}");
    }
    let dirs = mapping_dirs(&t.state);
    assert_eq!(dirs.len(), 1, "one mapping expected: {dirs:?}");
    let status = t.status();
    let shown = status["mappings"][0]["destination"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(shown, "sftp://alice@127.0.0.1:22/x", "normalised identity");
}

#[test]
fn command_templates_are_shown_as_the_program_and_a_count_of_arguments() {
    let s = Scratch::new();
    put(&s.src, "a.txt", b"a");
    let tools = tempfile::tempdir().unwrap();
    let prog = script(tools.path(), "deliver", "exit 0");
    let template = format!("{} --token=tk-5e1f0d-secret {{path}}", prog.display());
    let out = s
        .cmd(&["sync", s.src_str(), "--settle", "0", "--exec", &template])
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("tk-5e1f0d-secret"),
        "template logged: {stderr}"
    );
    let status = s.cmd(&["status", "--json"]).output().unwrap();
    let text = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(
        !text.contains("tk-5e1f0d-secret"),
        "template in status: {text}"
    );
    assert!(text.contains("deliver"), "the program is named: {text}");
    assert!(
        text.contains("2 arguments"),
        "the arguments are counted: {text}"
    );
    let holding = files_holding(&s.state, "tk-5e1f0d-secret");
    assert!(holding.is_empty(), "template stored in {holding:?}");
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Every file and directory under the state root, with its mode.
fn state_modes(state: &Path) -> Vec<(PathBuf, u32)> {
    let mut out = Vec::new();
    for dir in mapping_dirs(state) {
        out.push((dir.clone(), mode(&dir)));
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            out.push((e.path(), mode(&e.path())));
        }
    }
    out
}

#[test]
fn state_is_readable_by_its_owner_only() {
    let s = Scratch::new();
    put(&s.src, "a.txt", b"a");
    let out = s.sync(&["--settle", "0"]);
    assert_synced(&s, &out);
    assert_eq!(mode(&s.state), 0o700, "state root created private");
    let modes = state_modes(&s.state);
    assert!(modes.len() >= 2, "{modes:?}");
    for (path, m) in &modes {
        let want = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(*m, want, "{} is {m:o}", path.display());
    }

    // State left looser by an older version is tightened, with a warning.
    for (path, _) in &modes {
        let loose = if path.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(loose)).unwrap();
    }
    let out = s.sync(&["--settle", "0"]);
    assert_synced(&s, &out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("tightened"), "a warning says so: {stderr}");
    for (path, m) in state_modes(&s.state) {
        let want = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(m, want, "{} is {m:o} after reopening", path.display());
    }
}

#[test]
fn a_placeholder_that_may_read_as_an_option_is_warned_about() {
    let s = Scratch::new();
    put(&s.src, "-f", b"a file named like an option");
    let tools = tempfile::tempdir().unwrap();
    let prog = script(tools.path(), "note", RECORD_ARGS);
    let risky = format!("{} delivered {{remote}}", prog.display());
    let out = s.sync(&["--settle", "0", "--on-delivered", &risky]);
    assert_synced(&s, &out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("{remote}") && stderr.contains("--"),
        "a warning suggests `--`: {stderr}"
    );
    // With `--` before it, no warning, and the name arrives after the `--`.
    let t = Scratch::new();
    put(&t.src, "-f", b"x");
    let tools = tempfile::tempdir().unwrap();
    let prog = script(tools.path(), "note", RECORD_ARGS);
    let safe = format!("{} delivered -- {{remote}}", prog.display());
    let out = t.sync(&["--settle", "0", "--on-delivered", &safe]);
    assert_synced(&t, &out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("{remote}"), "no warning: {stderr}");
    let got = calls(tools.path());
    assert_eq!(
        got,
        vec![vec![b"delivered".to_vec(), b"--".to_vec(), b"-f".to_vec()]]
    );
}

/// The examples users copy (README, `--help`, the example config) put `--` before any
/// placeholder that may begin an argument with `-` (`{remote}`, `{from}`, `{to}` are relative
/// paths; a file named `-f` would reach the program as an option).
#[test]
fn examples_put_a_double_dash_before_relative_placeholders() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut examples: Vec<(String, Vec<String>)> = Vec::new();
    let help = run_help();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    for (name, text) in [("run --help", &help), ("README.md", &readme)] {
        // Quoted commands after an option taking one, or after "e.g." in help text.
        for marker in [
            "--exec \"",
            "--exec-delete \"",
            "--exec-move \"",
            "--on-delivered \"",
            "e.g. \"",
        ] {
            for (at, _) in text.match_indices(marker) {
                let rest = &text[at + marker.len()..];
                let Some(end) = rest.find('"') else { continue };
                let words = shell_words::split(&rest[..end].replace('\n', " ")).unwrap_or_default();
                examples.push((format!("{name}: {}", &rest[..end]), words));
            }
        }
    }
    let toml = std::fs::read_to_string(root.join("skynet.example.toml")).unwrap();
    for line in toml.lines() {
        let line = line.trim_start_matches('#').trim();
        for key in ["exec", "exec_delete", "exec_move", "on_delivered"] {
            let Some(rest) = line.strip_prefix(key) else {
                continue;
            };
            let Some(array) = rest.trim_start().strip_prefix('=') else {
                continue;
            };
            let array = array.split(']').next().unwrap_or_default();
            let words: Vec<String> = array
                .split('"')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect();
            examples.push((format!("skynet.example.toml: {line}"), words));
        }
    }
    assert!(examples.len() >= 6, "examples found: {examples:?}");
    for (name, words) in &examples {
        let mut dashes = false;
        for w in words {
            dashes |= w == "--";
            let risky = ["{remote}", "{from}", "{to}"]
                .iter()
                .any(|p| w.starts_with(p));
            assert!(
                !risky || dashes,
                "{name}: {w} may read as an option; put -- before it"
            );
        }
    }
}

fn run_help() -> String {
    let out = std::process::Command::new(skynet_bin())
        .args(["run", "--help"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}
