//! The clauses about changing the destination: send, delete, rename, and sends in batches.

use super::{rel, Check, Options};
use crate::connection::Connection;
use crate::error::ErrorKind;
use crate::relpath::RelPath;

const V1: &[u8] = b"first version";
const V2: &[u8] = b"second, longer version of the file";

/// **Replace on send**, **idempotence**: a send creates the parents of its target; replaying
/// it is harmless; sending another version replaces the content, shorter or longer.
pub async fn send_creates_parents_and_replaces(conn: &dyn Connection, opts: &Options) {
    let c = Check::start(conn, opts, "send_creates_parents_and_replaces").await;
    let (v1, v2) = (c.file("v1", V1), c.file("v2", V2));
    c.send(&v1, "a/b/c/file.txt").await;
    c.send(&v1, "a/b/c/file.txt").await;
    c.expect_content("a/b/c/file.txt", V1, "send, replayed")
        .await;
    c.send(&v2, "a/b/c/file.txt").await;
    c.expect_content("a/b/c/file.txt", V2, "replace by longer")
        .await;
    c.send(&v1, "a/b/c/file.txt").await;
    c.expect_content("a/b/c/file.txt", V1, "replace by shorter")
        .await;
    assert_eq!(c.listing().await, ["a/b/c/file.txt"], "{}", c.name);
    c.finish(&["a"]).await;
}

/// **Replace on send** for sizes that backends treat apart: an empty file, and one of several
/// MiB (several write chunks; past the resume threshold of SFTP), at the root.
pub async fn empty_and_large_files(conn: &dyn Connection, opts: &Options) {
    let c = Check::start(conn, opts, "empty_and_large_files").await;
    let empty = c.file("empty", b"");
    c.send(&empty, "empty").await;
    c.expect_content("empty", b"", "empty file").await;
    let big: Vec<u8> = (0..3 * 1024 * 1024 + 17)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let big_src = c.file("big", &big);
    c.send(&big_src, "big.bin").await;
    c.expect_content("big.bin", &big, "3 MiB file").await;
    // An empty file replaces a full one.
    c.send(&empty, "big.bin").await;
    c.expect_content("big.bin", b"", "emptied").await;
    assert_eq!(c.listing().await, ["big.bin", "empty"], "{}", c.name);
    c.finish(&["big.bin", "empty"]).await;
}

/// **Delete** removes a file, or a whole directory tree, and nothing that merely shares a
/// prefix with it (`p/a.jpg` is not `p/a.jpg.bak`, `d` is not `dd` nor `d.txt`). A missing
/// path is success.
pub async fn delete_is_exact(conn: &dyn Connection, opts: &Options) {
    let c = Check::start(conn, opts, "delete_is_exact").await;
    let one = c.file("one", b"1");
    for p in ["p/a.jpg", "p/a.jpg.bak", "d/x", "d/sub/y", "dd/z", "d.txt"] {
        c.send(&one, p).await;
    }
    let delete = |p: &'static str| async move {
        conn.delete(&rel(p))
            .await
            .unwrap_or_else(|e| panic!("delete_is_exact: delete {p}: {e}"))
    };
    delete("p/a.jpg").await;
    c.expect_absent("p/a.jpg", "delete file").await;
    c.expect_content("p/a.jpg.bak", b"1", "delete is exact")
        .await;
    delete("p/a.jpg").await; // missing now: success
    delete("never/was").await;
    delete("d").await;
    c.expect_absent("d/x", "delete dir").await;
    c.expect_absent("d/sub/y", "delete dir").await;
    c.expect_content("dd/z", b"1", "delete dir is prefix-exact")
        .await;
    c.expect_content("d.txt", b"1", "delete dir is prefix-exact")
        .await;
    assert_eq!(
        c.listing().await,
        ["d.txt", "dd/z", "p/a.jpg.bak"],
        "{}: what is left",
        c.name
    );
    c.finish(&["p", "dd", "d.txt"]).await;
}

/// **Rename** moves a file or a whole directory, creating the target's parents and replacing
/// the target, and nothing that shares a prefix with the source. A missing source is
/// [`ErrorKind::RemoteMissing`] (the handler then sends the local target); a backend that
/// cannot read back cannot tell, and may succeed, as long as nothing changes.
pub async fn rename_files_and_directories(conn: &dyn Connection, opts: &Options) {
    let c = Check::start(conn, opts, "rename_files_and_directories").await;
    let (one, v1, v2) = (c.file("one", b"1"), c.file("v1", V1), c.file("v2", V2));
    let rename = |from: &'static str, to: &'static str| async move {
        conn.rename(&rel(from), &rel(to))
            .await
            .unwrap_or_else(|e| panic!("rename_files_and_directories: {from} -> {to}: {e}"))
    };
    // A file to a new place.
    c.send(&one, "p/a.jpg").await;
    rename("p/a.jpg", "q/r/moved.jpg").await;
    c.expect_absent("p/a.jpg", "rename source gone").await;
    c.expect_content("q/r/moved.jpg", b"1", "rename target")
        .await;

    // A missing source.
    match (
        conn.rename(&rel("not/there"), &rel("x")).await,
        opts.reads_back,
    ) {
        (Err(e), _) => assert_eq!(e.kind, ErrorKind::RemoteMissing, "{}: {e}", c.name),
        (Ok(()), true) => panic!("{}: rename of a missing source succeeded", c.name),
        (Ok(()), false) => {}
    }
    c.expect_absent("x", "rename of a missing source").await;

    // Onto an existing file.
    c.send(&v1, "over/target").await;
    c.send(&v2, "over/source").await;
    rename("over/source", "over/target").await;
    c.expect_content("over/target", V2, "rename replaces").await;
    c.expect_absent("over/source", "rename replaces").await;

    // A directory with its contents, to a new place, and nothing sharing its prefix.
    for p in ["tree/one", "tree/sub/two", "treex/keep"] {
        c.send(&one, p).await;
    }
    rename("tree", "moved/tree2").await;
    c.expect_absent("tree/one", "dir rename").await;
    c.expect_content("moved/tree2/one", b"1", "dir rename")
        .await;
    c.expect_content("moved/tree2/sub/two", b"1", "dir rename")
        .await;
    c.expect_content("treex/keep", b"1", "dir rename is prefix-exact")
        .await;

    assert_eq!(
        c.listing().await,
        [
            "moved/tree2/one",
            "moved/tree2/sub/two",
            "over/target",
            "q/r/moved.jpg",
            "treex/keep"
        ],
        "{}: what is left",
        c.name
    );
    c.finish(&["moved", "over", "q", "treex", "p", "tree"])
        .await;
}

/// **Replace on send**, the way: a send replaces a directory standing at its target, and a
/// file standing where one of its parent directories goes, as on a filesystem. The engine
/// counts on it (once a send is acknowledged its ledger forgets the files under and above
/// that path). Found by running the simulation's histories against real S3 servers, which
/// kept both.
pub async fn send_replaces_what_is_in_its_way(conn: &dyn Connection, opts: &Options) {
    let c = Check::start(conn, opts, "send_replaces_what_is_in_its_way").await;
    let (one, v1, v2) = (c.file("one", b"1"), c.file("v1", V1), c.file("v2", V2));
    for p in ["way/dir/x", "way/dir/sub/y", "way/file"] {
        c.send(&one, p).await;
    }
    c.send(&v1, "way/dir").await;
    c.expect_content("way/dir", V1, "send replaces a dir").await;
    c.expect_absent("way/dir/x", "send replaces a dir").await;
    c.expect_absent("way/dir/sub/y", "send replaces a dir")
        .await;
    c.send(&v2, "way/file/inside").await;
    c.expect_content("way/file/inside", V2, "send replaces a parent file")
        .await;
    assert_eq!(
        c.listing().await,
        ["way/dir", "way/file/inside"],
        "{}: send replaces what is in its way",
        c.name
    );
    c.finish(&["way"]).await;
}

/// **Send batch**: several unrelated sends in one call, one result per item, in order, each
/// with the contract of `send` (its byte count is the file's size for a fresh send). An item
/// that fails (its source vanished) fails alone; the others are delivered. Replaying the batch
/// is harmless. Runs more items than [`Connection::send_batch_size`].
pub async fn send_batch(conn: &dyn Connection, opts: &Options) {
    let c = Check::start(conn, opts, "send_batch").await;
    let n = conn.send_batch_size().clamp(1, 64) + 2;
    let items: Vec<_> = (0..n)
        .map(|i| {
            // Sizes differ, so a result given for the wrong item shows.
            let content = format!("item {i} {}", "x".repeat(i));
            let file = c.file(&format!("b{i}"), content.as_bytes());
            (file, rel(&format!("batch/{}/f{i}", i % 3)))
        })
        .collect();
    let vanished = 1;
    std::fs::remove_file(&items[vanished].0.path).expect("remove a source");
    let results = conn.send_batch(&items).await;
    assert_eq!(results.len(), n, "{}: one result per item", c.name);
    for (i, ((file, to), result)) in items.iter().zip(&results).enumerate() {
        match result {
            Err(e) if i == vanished => {
                assert_ne!(e.kind, ErrorKind::ConnectionLost, "{}: {e}", c.name)
            }
            Ok(_) if i == vanished => panic!("{}: a vanished source was sent", c.name),
            Ok(sent) => assert_eq!(*sent, file.size, "{}: bytes sent for {to}", c.name),
            Err(e) => panic!("{}: item {i} ({to}) failed with its neighbour: {e}", c.name),
        }
    }
    let delivered: Vec<_> = items
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != vanished)
        .map(|(_, item)| item.clone())
        .collect();
    for (file, to) in &delivered {
        let want = std::fs::read(&file.path).expect("read source");
        c.expect_content_rel(to, &want, "batch").await;
    }
    c.expect_absent_rel(&items[vanished].1, "vanished item")
        .await;
    for result in conn.send_batch(&delivered).await {
        result.unwrap_or_else(|e| panic!("{}: replayed batch: {e}", c.name));
    }
    let mut want: Vec<String> = delivered.iter().map(|(_, to)| to.display()).collect();
    want.sort();
    assert_eq!(c.listing().await, want, "{}: what is left", c.name);
    c.finish(&["batch"]).await;
}

/// **Confinement** of names: hostile names (spaces, newlines, quotes, `$(…)`, leading dashes,
/// the longest name the destination holds, bytes that are not UTF-8) pass through untouched,
/// as names, never as commands or options, for send, rename and delete.
pub async fn hostile_names(conn: &dyn Connection, opts: &Options) {
    let c = Check::start(conn, opts, "hostile_names").await;
    let long = "n".repeat(opts.max_name_len);
    let mut hostile = vec![
        "with space".to_string(),
        "quote'\"s".into(),
        "$(touch pwned)".into(),
        "-rf".into(),
        "--help".into(),
        "ünïcødé 😀".into(),
        "semi;colon|pipe&amp".into(),
        "star*question?".into(),
        "back\\slash".into(),
        long.clone(),
        format!("dir with space/{long}"),
    ];
    if opts.newline_names {
        hostile.push("new\nline".into());
    } else {
        // Refused, as a failure: a name the destination cannot hold is never "delivered".
        let src = c.file("newline", b"n");
        assert!(
            conn.send(&src, &rel("hostile/new\nline")).await.is_err(),
            "hostile_names: a newline name the destination cannot hold was reported sent"
        );
    }
    hostile.sort();
    for (i, name) in hostile.iter().enumerate() {
        let src = c.file(&format!("h{i}"), name.as_bytes());
        c.send(&src, &format!("hostile/{name}")).await;
    }
    for name in &hostile {
        c.expect_content(&format!("hostile/{name}"), name.as_bytes(), "hostile name")
            .await;
    }
    conn.rename(&rel("hostile/-rf"), &rel("hostile/$(touch renamed)"))
        .await
        .expect("rename hostile");
    c.expect_content("hostile/$(touch renamed)", b"-rf", "rename hostile")
        .await;
    c.expect_absent("hostile/-rf", "rename hostile").await;
    if opts.non_utf8_names {
        let one = c.file("one", b"1");
        let raw = RelPath::from_bytes(b"raw/bad\xff\xfename").expect("raw path");
        c.send_rel(&one, &raw).await;
        c.expect_content_rel(&raw, b"1", "non-UTF-8 name").await;
        conn.delete(&raw).await.expect("delete non-UTF-8 name");
        c.expect_absent_rel(&raw, "non-UTF-8 delete").await;
    }
    conn.delete(&rel("hostile"))
        .await
        .expect("delete hostile dir");
    c.expect_absent(&format!("hostile/{long}"), "delete hostile")
        .await;
    assert!(
        !std::path::Path::new("pwned").exists() && !std::path::Path::new("renamed").exists(),
        "{}: a file name was executed as a command",
        c.name
    );
    c.finish(&["raw"]).await;
}
