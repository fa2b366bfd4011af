//! Programs for `skynet` to run (`--exec`, `--on-delivered` and the like): shell scripts
//! written into the scratch, and a script body that records the arguments of each call, so
//! that a test can check that every file name reached the program as one argument.

use std::path::{Path, PathBuf};

/// Writes an executable `#!/bin/sh` script `name` into `dir` and returns its path. The body
/// is fixed text: file names reach the script as arguments, never inside its text.
pub fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// A script body that records each invocation's arguments in a file of its own under
/// `calls/` beside the script, NUL-terminated (read them with [`calls`]).
pub const RECORD_ARGS: &str = r#"d="$(dirname "$0")/calls"
mkdir -p "$d"
printf '%s\0' "$@" > "$(mktemp "$d/call.XXXXXX")""#;

/// The argument lists of every invocation of a [`RECORD_ARGS`] script in `dir`, sorted.
pub fn calls(dir: &Path) -> Vec<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir.join("calls")) else {
        return out;
    };
    for entry in entries.flatten() {
        let bytes = std::fs::read(entry.path()).expect("read call record");
        let mut args: Vec<Vec<u8>> = bytes.split(|b| *b == 0).map(<[u8]>::to_vec).collect();
        // The record ends with a NUL: drop the empty piece after it.
        if args.last().is_some_and(Vec::is_empty) {
            args.pop();
        }
        out.push(args);
    }
    out.sort();
    out
}

/// A path as one shell word, for a command template (`--exec`, `--on-delivered`).
pub fn quoted(path: &Path) -> String {
    shell_words::quote(path.to_str().expect("utf-8 temp path")).into_owned()
}
