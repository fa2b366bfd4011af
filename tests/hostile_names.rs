//! File names that break shell scripts pass through skynet as names: spaces, newlines, quotes,
//! `$(…)`, leading dashes, unicode, 255-byte names and bytes that are not UTF-8, both in a
//! sync and through live renames and deletes.

mod common;
use common::*;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

fn hostile_names() -> Vec<Vec<u8>> {
    let mut names: Vec<Vec<u8>> = [
        "with space",
        "new\nline",
        "quote'\"s",
        "$(touch pwned)",
        "`touch pwned2`",
        "-rf",
        "--help",
        "ünïcødé 😀",
        "semi;colon|pipe&amp",
        "star*question?[x]",
        "back\\slash",
        " leading and trailing ",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    names.push(vec![b'n'; 255]);
    names.push(b"not-utf8-\xff\xfe".to_vec());
    names
}

#[test]
fn sync_and_live_changes_keep_hostile_names_intact() {
    let s = Scratch::new();
    for (i, name) in hostile_names().iter().enumerate() {
        let dir = s.src.join(OsStr::from_bytes(name));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(OsStr::from_bytes(name)), format!("content {i}")).unwrap();
    }
    let out = s.sync(&[]);
    assert_synced(&s, &out);

    // Live: rename and delete hostile names.
    let mut daemon = s.run(&["--complete-sync", "--settle", "50ms"]);
    std::thread::sleep(Duration::from_millis(300));
    std::fs::rename(s.src.join("-rf"), s.src.join("$(rm -rf x)")).unwrap();
    std::fs::remove_dir_all(s.src.join("new\nline")).unwrap();
    std::fs::write(s.src.join("--help/--help"), b"changed").unwrap();
    let converged = wait_converged(&s.src, &s.dst, true, Duration::from_secs(20));
    assert_eq!(daemon.signal("INT"), Some(0));
    assert!(converged.is_ok(), "{converged:?}\n{}", daemon.log_text());
    for stray in ["pwned", "pwned2", "x"] {
        assert!(
            !std::path::Path::new(stray).exists(),
            "a file name was run as a command"
        );
        assert!(
            !s.dir.path().join(stray).exists(),
            "a file name was run as a command"
        );
    }
}
