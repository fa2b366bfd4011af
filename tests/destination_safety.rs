//! The local destination is the only place written: a directory in it swapped for a link
//! leading outside never redirects a send, delete or rename; a destination spelled so that it
//! lies inside the source (or around it) is refused; special mode bits are never copied.

mod common;
use common::*;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use skynet_sftp::testing::SshServer;

/// Every name under `root` (links included, not followed) with its type, mode and content.
fn snapshot(root: &Path) -> Vec<String> {
    use std::os::unix::ffi::OsStrExt;
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let entry = entry.expect("walk");
        let rel = entry.path().strip_prefix(root).expect("under root");
        let meta = entry.path().symlink_metadata().expect("lstat");
        let content = if meta.is_file() {
            std::fs::read(entry.path()).expect("read")
        } else if meta.file_type().is_symlink() {
            std::fs::read_link(entry.path())
                .expect("readlink")
                .as_os_str()
                .as_bytes()
                .to_vec()
        } else {
            Vec::new()
        };
        out.push(format!(
            "{} {:o} {:?}",
            rel.display(),
            meta.mode(),
            String::from_utf8_lossy(&content)
        ));
    }
    out
}

/// A directory of the destination is swapped for a link to a folder outside it while `run`
/// works (its cache of created parents is warm). The next send, delete and rename under it
/// touch nothing outside; the link is replaced by a real directory and the mapping converges.
#[test]
fn a_directory_swapped_for_a_link_never_redirects_writes() {
    let s = Scratch::new();
    let mut daemon = s.run(&["--settle", "100ms", "--complete-sync"]);
    write(&s.src, "sub/a.txt", b"a, first");
    write(&s.src, "sub/x.txt", b"x, to be deleted");
    write(&s.src, "top.txt", b"top");
    let first = wait_converged(&s.src, &s.dst, true, Duration::from_secs(20));
    assert!(first.is_ok(), "{first:?}\n{}", daemon.log_text());

    // Outside the destination: files with the same names as those under sub/.
    let outside = s.dir.path().join("outside");
    write(&outside, "a.txt", b"outside a");
    write(&outside, "x.txt", b"outside x");
    let before = snapshot(&outside);
    let moved_away = s.dir.path().join("moved-away");
    std::fs::rename(s.dst.join("sub"), &moved_away).unwrap();
    std::os::unix::fs::symlink(&outside, s.dst.join("sub")).unwrap();

    // A delete, a rename and a send, all under the swapped directory.
    std::fs::remove_file(s.src.join("sub/x.txt")).unwrap();
    std::fs::rename(s.src.join("sub/a.txt"), s.src.join("sub/c.txt")).unwrap();
    write(&s.src, "sub/b.txt", b"b, new");

    // Converged, or something outside changed: whichever comes first.
    let mut converged = false;
    wait_until(Duration::from_secs(30), || {
        converged = tree(&s.src) == tree(&s.dst);
        converged || snapshot(&outside) != before
    });
    assert_eq!(
        snapshot(&outside),
        before,
        "the folder outside the destination was changed through the link\n{}",
        daemon.log_text()
    );
    let pending = wait_until(Duration::from_secs(10), || s.mapping()["pending"] == 0);
    assert!(pending, "{}", daemon.log_text());
    let diff = diff(&tree(&s.src), &tree(&s.dst));
    assert!(converged, "not converged: {diff}\n{}", daemon.log_text());
    let sub = s.dst.join("sub").symlink_metadata().unwrap();
    assert!(sub.is_dir(), "the link was not replaced by a directory");
    assert_eq!(snapshot(&outside), before);
    assert!(no_temp_files(&s.dst) && no_temp_files(&outside));
    assert_eq!(daemon.signal("TERM"), Some(0), "{}", daemon.log_text());
}

/// A deletion of a whole directory whose parent in the destination is a link to elsewhere
/// removes nothing there (only the last component used to be checked).
#[test]
fn a_delete_under_a_linked_parent_removes_nothing_outside() {
    let s = Scratch::new();
    write(&s.src, "p/q/r.txt", b"r");
    write(&s.src, "p/keep.txt", b"keep");
    assert_synced(&s, &s.sync(&["--complete-sync"]));

    let outside = s.dir.path().join("outside");
    write(&outside, "q/r.txt", b"someone else's r");
    write(&outside, "q/more.txt", b"someone else's more");
    let before = snapshot(&outside);
    std::fs::remove_dir_all(s.dst.join("p")).unwrap();
    std::os::unix::fs::symlink(&outside, s.dst.join("p")).unwrap();

    std::fs::remove_dir_all(s.src.join("p/q")).unwrap();
    let out = s.sync(&["--complete-sync"]);
    assert_eq!(snapshot(&outside), before, "{}", stderr(&out));
    assert_exit(&out, 0);
}

/// Every spelling of a destination inside the source (through a link, with `..`, with a
/// trailing slash, not existing yet) and of a destination holding the source is refused with
/// exit 2 and one line naming both folders; nothing is created.
#[test]
fn overlapping_destinations_are_refused_however_spelled() {
    let s = Scratch::new();
    write(&s.src, "f.txt", b"f");
    let base = s.dir.path();
    std::os::unix::fs::symlink(&s.src, base.join("link")).unwrap();
    std::os::unix::fs::symlink(base, base.join("up")).unwrap();
    std::fs::create_dir(base.join("other")).unwrap();
    let before = snapshot(base);
    let source = s.src.canonicalize().unwrap().display().to_string();
    let spellings = [
        "link/mirror".to_string(),
        "link/mirror/".into(),
        "link/a/b/c".into(),
        "link".into(),
        "./other/../src/mirror".into(),
        "./nothing/../src/mirror".into(),
        "src//mirror/".into(),
        "up".into(),
        "up/".into(),
        format!("file://{}/link/mirror", base.display()),
    ];
    for dest in &spellings {
        let out = s
            .cmd(&["sync", "src", dest])
            .current_dir(base)
            .output()
            .unwrap();
        let stderr = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{dest}: {stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
        assert_eq!(errors.len(), 1, "{dest}: one line expected: {stderr}");
        assert!(
            errors[0].contains("overlap") && errors[0].contains(&source),
            "{dest}: {stderr}"
        );
        assert_eq!(snapshot(base), before, "{dest}: something was written");
    }
}

/// setuid, setgid and sticky bits on a source file are not copied: the copy is owned by
/// skynet's user (root here), so a copied setuid bit would make a root-owned setuid file.
#[test]
fn special_mode_bits_are_not_copied_to_a_local_destination() {
    let s = Scratch::new();
    write_with_mode(&s.src, "suid", 0o4755);
    write_with_mode(&s.src, "sgid", 0o2750);
    write_with_mode(&s.src, "sticky", 0o1644);
    assert_synced(&s, &s.sync(&[]));
    for (name, want) in [("suid", 0o755), ("sgid", 0o750), ("sticky", 0o644)] {
        let mode = std::fs::metadata(s.dst.join(name)).unwrap().mode() & 0o7777;
        assert_eq!(mode, want, "{name}: mode {mode:o}");
    }
}

/// The same through SFTP, against the real sshd.
#[test]
fn special_mode_bits_are_not_copied_over_sftp() {
    let server = SshServer::start();
    let remote = server.remote_dir("modes");
    let s = Scratch::new();
    write_with_mode(&s.src, "suid", 0o4755);
    write_with_mode(&s.src, "sgid", 0o2750);
    write_with_mode(&s.src, "plain", 0o640);
    let dest = format!(
        "sftp://{}@127.0.0.1:{}{}",
        server.user(),
        server.port(),
        remote.display()
    );
    let key = server.client_key_path();
    let known = server.known_hosts_path();
    let out = s.sync_to(
        &dest,
        &[
            "--identity",
            key.to_str().unwrap(),
            "--known-hosts",
            known.to_str().unwrap(),
        ],
    );
    assert_exit(&out, 0);
    for (name, want) in [("suid", 0o755), ("sgid", 0o750), ("plain", 0o640)] {
        let mode = std::fs::metadata(remote.join(name)).unwrap().mode() & 0o7777;
        assert_eq!(mode, want, "{name}: mode {mode:o}");
    }
}

fn write_with_mode(root: &Path, rel: &str, mode: u32) {
    write(root, rel, rel.as_bytes());
    let path = root.join(rel);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    let got = std::fs::metadata(&path).unwrap().mode() & 0o7777;
    assert_eq!(got, mode, "{rel}: the test could not set its mode");
}

/// A destination that does not exist yet, spelled through a link, with `..` or a trailing
/// slash, names the same mapping state before and after it is created: the second sync finds
/// the first one's ledger (nothing to send) instead of starting a second mapping.
#[test]
fn one_state_per_destination_however_spelled() {
    let s = Scratch::new();
    write(&s.src, "f.txt", b"f");
    let base = s.dir.path();
    std::fs::create_dir(base.join("real")).unwrap();
    std::os::unix::fs::symlink(base.join("real"), base.join("via")).unwrap();
    for (i, dest) in ["via/m1", "./real/../via/m2/", "real/x/../m3/"]
        .iter()
        .enumerate()
    {
        for _ in 0..2 {
            let out = s
                .cmd(&["sync", s.src_str(), dest])
                .current_dir(base)
                .output()
                .unwrap();
            assert_exit(&out, 0);
        }
        let mappings = s.status()["mappings"].as_array().unwrap().len();
        assert_eq!(mappings, i + 1, "{dest}: {}", s.status());
    }
}
