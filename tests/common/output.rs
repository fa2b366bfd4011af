//! Checking how a finished `skynet` ended: its exit code, with its stderr in the failure
//! message; the one error line that bad usage or a bad setup must produce; the JSON it
//! printed.

use std::process::Output;

/// The exit code of a finished command, with its stderr in the message when it differs.
pub fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Everything a finished command wrote to stderr, as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The JSON a command printed on stdout, once it exited 0.
pub fn json(out: &Output) -> serde_json::Value {
    assert_exit(out, 0);
    serde_json::from_slice(&out.stdout).expect("json on stdout")
}

/// Bad usage: exit 2 and exactly one error line on stderr, naming `needle`.
pub fn expect_usage_error(out: std::process::Output, needle: &str) {
    expect_setup_error(&out, &[needle], &[]);
}

/// A setup error: exit 2 and exactly one error line on stderr, naming every needle, while
/// the whole stderr contains none of `secrets`. Returns that line.
pub fn expect_setup_error(out: &Output, needles: &[&str], secrets: &[&str]) -> String {
    let stderr = stderr(out);
    assert_eq!(out.status.code(), Some(2), "exit code; stderr: {stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "exactly one error line expected: {stderr}");
    for needle in needles {
        assert!(
            errors[0].contains(needle),
            "error line should name {needle:?}: {stderr}"
        );
    }
    for secret in secrets {
        assert!(!stderr.contains(secret), "a secret leaked: {stderr}");
    }
    errors[0].to_string()
}
