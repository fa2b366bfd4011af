//! The clauses about directories: removing empty ones, and never reaching outside the root.

use super::{rel, Check, Options};
use crate::connection::Connection;
use crate::error::ErrorKind;

/// **Empty directories**: `remove_empty_dir` removes an empty directory and nothing else:
/// never a directory that holds a file, never a file. A backend that implements it answers
/// `true` for an empty directory, an emptied parent and a missing path. A send into a removed
/// directory makes it again.
pub async fn empty_dirs(conn: &dyn Connection, opts: &Options) {
    let c = Check::start(conn, opts, "empty_dirs").await;
    let one = c.file("one", b"1");
    for p in ["e/full/keep", "e/file", "e/nested/empty/x", "e/gone/x"] {
        c.send(&one, p).await;
    }
    // Left empty by deleting their files: `e/gone` and `e/nested/empty` (a filesystem keeps
    // them; an object store may not).
    for p in ["e/gone/x", "e/nested/empty/x"] {
        conn.delete(&rel(p)).await.expect("delete");
    }
    let call = |p: &'static str| async move {
        conn.remove_empty_dir(&rel(p))
            .await
            .unwrap_or_else(|e| panic!("empty_dirs: remove_empty_dir {p}: {e}"))
    };
    assert!(
        !call("e/full").await,
        "empty_dirs: a directory holding a file"
    );
    assert!(!call("e/file").await, "empty_dirs: a file");
    assert!(!call("e").await, "empty_dirs: a directory holding files");
    c.expect_content("e/full/keep", b"1", "kept").await;
    c.expect_content("e/file", b"1", "kept").await;
    let gone = call("e/gone").await;
    let nested = call("e/nested/empty").await;
    let missing = call("never/was").await;
    if opts.removes_empty_dirs {
        assert!(gone, "empty_dirs: an empty directory was kept");
        assert!(nested, "empty_dirs: an empty directory was kept");
        assert!(
            call("e/nested").await,
            "empty_dirs: emptied parent was kept"
        );
        assert!(missing, "empty_dirs: a missing path is not gone");
    }
    c.send(&one, "e/gone/again").await;
    c.expect_content("e/gone/again", b"1", "sent again").await;
    assert_eq!(
        c.listing().await,
        ["e/file", "e/full/keep", "e/gone/again"],
        "empty_dirs: what is left"
    );
    c.finish(&["e"]).await;
}

/// **Confinement** and **modes**, for a backend whose files are a folder of this machine
/// ([`Options::local_root`]): a directory of the destination replaced by a link to a folder
/// outside it is never followed: no send, delete, rename or `remove_empty_dir` reaches that
/// folder, and a send makes the path a real directory again. Only permission bits are copied:
/// never setuid, setgid or sticky.
pub async fn confinement(conn: &dyn Connection, opts: &Options) {
    use std::os::unix::fs::PermissionsExt;
    let root = opts
        .local_root
        .as_deref()
        .expect("confinement: needs Options::local_root");
    let c = Check::start(conn, opts, "confinement").await;
    let outside = c.dir().join("outside");
    for name in ["x", "y", "z"] {
        let path = outside.join("sub").join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir outside");
        std::fs::write(&path, b"outside").expect("write outside");
    }
    let one = c.file("one", b"1");
    for p in ["linked/sub/x", "linked/sub/y", "linked/sub/z"] {
        c.send(&one, p).await;
    }
    std::fs::remove_dir_all(root.join("linked")).expect("remove a destination directory");
    std::os::unix::fs::symlink(&outside, root.join("linked")).expect("plant a link");
    conn.delete(&rel("linked/sub/y"))
        .await
        .expect("confinement: delete under a link finds nothing");
    conn.delete(&rel("linked/sub"))
        .await
        .expect("confinement: delete under a link finds nothing");
    match conn.rename(&rel("linked/sub/z"), &rel("moved-z")).await {
        Err(e) => assert_eq!(e.kind, ErrorKind::RemoteMissing, "confinement: rename: {e}"),
        Ok(()) => panic!("confinement: a rename moved a file from under a link"),
    }
    let untouched = |what: &str| {
        for name in ["x", "y", "z"] {
            assert_eq!(
                std::fs::read(outside.join("sub").join(name))
                    .ok()
                    .as_deref(),
                Some(&b"outside"[..]),
                "confinement: {what} changed the folder behind the link ({name})"
            );
        }
    };
    std::fs::create_dir_all(outside.join("empty")).expect("mkdir outside");
    conn.remove_empty_dir(&rel("linked/empty"))
        .await
        .expect("confinement: remove_empty_dir under a link finds nothing");
    assert!(
        !conn
            .remove_empty_dir(&rel("linked"))
            .await
            .expect("remove_empty_dir"),
        "confinement: a link was taken for an empty directory"
    );
    assert!(
        outside.join("empty").is_dir(),
        "confinement: remove_empty_dir removed a directory behind a link"
    );
    assert!(
        root.join("linked")
            .symlink_metadata()
            .is_ok_and(|m| m.file_type().is_symlink()),
        "confinement: remove_empty_dir removed the link"
    );
    untouched("delete or rename");
    c.send(&one, "linked/sub/x").await;
    untouched("send");
    c.expect_content("linked/sub/x", b"1", "send replaces the link")
        .await;

    let mut special = c.file("special", b"s");
    special.mode = 0o7755;
    c.send(&special, "linked/special").await;
    let mode = std::fs::metadata(root.join("linked/special"))
        .expect("stat the copy")
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o7777,
        0o755,
        "modes: setuid, setgid or sticky copied"
    );
    c.finish(&["linked"]).await;
}
