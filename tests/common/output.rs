//! Checking how a finished `skynet` ended: its exit code, with its stderr in the failure
//! message, and the one error line that bad usage must produce.

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

/// Bad usage: exit 2 and exactly one error line on stderr, naming `needle`.
pub fn expect_usage_error(out: std::process::Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "exit code; stderr: {stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "exactly one error line expected: {stderr}");
    assert!(
        errors[0].contains(needle),
        "error line should name {needle:?}: {stderr}"
    );
}
