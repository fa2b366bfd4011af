//! Temporaries against a real OpenSSH sshd, where SFTP differs from other backends: partial
//! uploads that can resume. `sweep_temps` keeps the one of a queued send (which then resumes)
//! and removes the others; `cleanup` keeps them all. What every backend does with ordinary
//! temporaries (anywhere, carried by a rename, a directory moved aside) is checked by the
//! conformance suite (`skynet_core::conformance::sweep_temps`, `cleanup`).

use std::collections::HashSet;
use std::fs;
use std::path::Path;

use skynet_core::connection::{BlockingConnection, TEMP_PREFIX};
use skynet_core::relpath::RelPath;
use skynet_sftp::testing::SshServer;
use skynet_sftp::{SftpConnection, RESUME_MIN};

use skynet_core::conformance::{local_file as source, rel};

/// Temp files and directories under `root`, by path relative to it.
fn temps(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("read_dir").flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(TEMP_PREFIX) {
                out.push(
                    path.strip_prefix(root)
                        .expect("under root")
                        .display()
                        .to_string(),
                );
            } else if entry.file_type().expect("type").is_dir() {
                stack.push(path);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn sweep_keeps_only_the_resumable_upload_of_a_queued_send() {
    let server = SshServer::start();
    let root = server.remote_dir("sweep");
    let local = server.scratch_dir().join("src");
    fs::create_dir_all(&local).expect("mkdir");

    // The run that gets killed: a real file in `a/`.
    let first = SftpConnection::new(server.config(&root));
    first.connect().expect("connect");
    let small = source(&local, "x", b"hello");
    first.send(&small, &rel("a/x")).expect("send");

    // A big send cut off half-way: its resumable temp, where the next send will look.
    let size = 3 * RESUME_MIN as usize;
    let content: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let big = source(&local, "v.bin", &content);
    let big_to = rel("big/v.bin");
    let resumable = SftpConnection::resume_name(&big_to, &big);
    fs::create_dir_all(root.join("big")).expect("mkdir");
    fs::write(root.join("big").join(&resumable), &content[..size / 2]).expect("plant");
    // The resumable temp of a send no longer queued (its file was deleted since).
    let gone = SftpConnection::resume_name(&rel("big/gone.bin"), &big);
    fs::write(root.join("big").join(&gone), &content[..1000]).expect("plant");

    // After the kill, the source renamed `a` to `b`; the restart replays the move remotely.
    drop(first);
    let second = SftpConnection::new(server.config(&root));
    second.connect().expect("connect");
    second.rename(&rel("a"), &rel("b")).expect("rename");
    // A resumable temp for a queued target, but carried into another directory by a rename:
    // the send will never find it there.
    let carried = SftpConnection::resume_name(&big_to, &small);
    fs::write(root.join("b").join(&carried), b"partial").expect("plant");
    assert_eq!(temps(&root).len(), 3, "{:?}", temps(&root));

    let queued: HashSet<RelPath> = [big_to.clone()].into_iter().collect();
    let removed = second.sweep_temps(&queued).expect("sweep");
    assert_eq!(removed, 2, "left: {:?}", temps(&root));
    assert_eq!(temps(&root), vec![format!("big/{resumable}")]);
    assert_eq!(fs::read(root.join("b/x")).expect("b/x"), b"hello");
    assert!(
        second.stranded_temps(),
        "a kept temp is remembered until its send runs"
    );

    // The queued send resumes from the kept half and leaves no temp behind.
    let sent = second.send(&big, &big_to).expect("send big");
    assert_eq!(sent, (size - size / 2) as u64, "resumed, not restarted");
    assert_eq!(fs::read(root.join("big/v.bin")).expect("v.bin"), content);
    assert!(temps(&root).is_empty(), "{:?}", temps(&root));
    assert!(!second.stranded_temps());

    // Nothing queued: a resumable temp is swept like any other.
    fs::write(root.join("big").join(&resumable), &content[..10]).expect("plant");
    assert_eq!(second.sweep_temps(&HashSet::new()).expect("sweep"), 1);
    assert!(temps(&root).is_empty(), "{:?}", temps(&root));
}

/// `cleanup` after a restart, beside the sends that were in flight: a random temp (never
/// resumable) and a directory moved aside go; a partial upload that the next send resumes
/// stays; nothing elsewhere is looked at.
#[test]
fn cleanup_removes_random_temps_beside_in_flight_paths_and_keeps_resumable_ones() {
    let server = SshServer::start();
    let root = server.remote_dir("cleanup");
    let local = server.scratch_dir().join("src");
    fs::create_dir_all(&local).expect("mkdir");
    let conn = SftpConnection::new(server.config(&root));
    conn.connect().expect("connect");
    let size = 2 * RESUME_MIN as usize;
    let content: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let big = source(&local, "v.bin", &content);
    let big_to = rel("d/v.bin");
    let resumable = SftpConnection::resume_name(&big_to, &big);
    fs::create_dir_all(root.join("d/.skynet-tmp.fedcba9876543210")).expect("plant dir");
    fs::write(root.join("d").join(&resumable), &content[..size / 2]).expect("plant");
    fs::write(root.join("d/.skynet-tmp.0123456789abcdef"), b"x").expect("plant");
    fs::create_dir_all(root.join("e")).expect("mkdir");
    fs::write(root.join("e/.skynet-tmp.0123456789abcdef"), b"x").expect("plant");

    conn.cleanup(&[big_to.clone(), rel("gone/z")])
        .expect("cleanup");
    assert_eq!(
        temps(&root),
        vec![
            format!("d/{resumable}"),
            "e/.skynet-tmp.0123456789abcdef".into()
        ]
    );
    let sent = conn.send(&big, &big_to).expect("send");
    assert_eq!(sent, (size - size / 2) as u64, "resumed, not restarted");
}
