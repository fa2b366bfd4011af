//! Versions (issue 15), end to end with the real binary on a local folder, over SFTP (a real
//! sshd) and on S3 (s3s-fs): with `--complete-sync --keep-versions`, a deleted file, an
//! overwritten file and a deleted folder of 50 files are each kept, with their bytes, in
//! `.skynet-versions/` at the destination while the live tree equals the source; `versions
//! list` shows them; `versions restore` brings the right bytes back (into the source, or
//! `--to DIR`), and the restore mirrored keeps the copy it replaced; pruning removes only
//! expired versions.

mod common;
use common::remote::{Backend, Tree};
use common::*;

use std::collections::BTreeMap;
use std::process::Output;

const VERSIONS: &[u8] = b".skynet-versions/";

fn sync(s: &Scratch, backend: &Backend, keep: &str) -> Output {
    backend.sync(
        s,
        &[
            "--complete-sync",
            "--keep-versions",
            keep,
            "--max-delete",
            "1000",
        ],
    )
}

/// The destination split into its live tree and its versions, each version under the path
/// it was kept from (the `~YYYYmmdd-HHMMSS` of the component that carries it removed).
fn split(all: Tree) -> (Tree, BTreeMap<Vec<u8>, Vec<Vec<u8>>>) {
    let mut live = Tree::new();
    let mut versions: BTreeMap<Vec<u8>, Vec<Vec<u8>>> = BTreeMap::new();
    for (path, bytes) in all {
        let Some(kept) = path.strip_prefix(VERSIONS) else {
            live.insert(path, bytes);
            continue;
        };
        let original: Vec<Vec<u8>> = kept
            .split(|b| *b == b'/')
            .map(|c| match c.iter().rposition(|b| *b == b'~') {
                Some(i) => c[..i].to_vec(),
                None => c.to_vec(),
            })
            .collect();
        versions
            .entry(original.join(&b'/'))
            .or_default()
            .push(bytes);
    }
    (live, versions)
}

fn contents(backend: &Backend) -> Tree {
    backend.contents().expect("read the destination")
}

fn kept_and_restored(s: &Scratch, backend: Backend) {
    write(&s.src, "keep.txt", b"keep");
    write(&s.src, "doomed.txt", b"old doomed");
    write(&s.src, "over.txt", b"v1");
    for i in 0..50 {
        write(
            &s.src,
            &format!("dir/f{i:02}"),
            format!("file {i}").as_bytes(),
        );
    }
    assert_synced_to(&sync(s, &backend, "1h"), &backend);
    let (_, versions) = split(contents(&backend));
    assert!(
        versions.is_empty(),
        "a first delivery keeps nothing: {versions:?}"
    );

    std::fs::remove_file(s.src.join("doomed.txt")).unwrap();
    write(&s.src, "over.txt", b"v2, longer");
    std::fs::remove_dir_all(s.src.join("dir")).unwrap();
    // The dry run says what would be kept, and changes nothing.
    let plan = backend
        .command(
            s,
            "sync",
            &[
                "--complete-sync",
                "--keep-versions",
                "1h",
                "--max-delete",
                "1000",
                "--dry-run",
            ],
        )
        .output()
        .unwrap();
    assert_exit(&plan, 0);
    let plan = String::from_utf8_lossy(&plan.stdout).into_owned();
    for line in [
        "delete doomed.txt  (the destination's copy kept as a version)",
        "send   over.txt  (the destination's copy kept as a version)",
        "52 kept as versions",
    ] {
        assert!(plan.contains(line), "{line:?} missing from:\n{plan}");
    }
    assert!(
        plan.contains("send   keep.txt") || !plan.contains("keep.txt"),
        "{plan}"
    );
    assert!(
        split(contents(&backend)).1.is_empty(),
        "the dry run kept something"
    );
    assert_synced_to(&sync(s, &backend, "1h"), &backend);
    let (live, versions) = split(contents(&backend));
    assert_eq!(live, tree(&s.src), "the live tree is the source");
    assert_eq!(versions[&b"doomed.txt"[..]], vec![b"old doomed".to_vec()]);
    assert_eq!(versions[&b"over.txt"[..]], vec![b"v1".to_vec()]);
    for i in 0..50 {
        let path = format!("dir/f{i:02}").into_bytes();
        assert_eq!(
            versions.get(&path),
            Some(&vec![format!("file {i}").into_bytes()]),
            "{}",
            String::from_utf8_lossy(&path)
        );
    }

    let listed = json(&s.cmd(&["versions", "list", "--json"]).output().unwrap());
    let rows = listed["mappings"][0]["versions"].as_array().expect("rows");
    assert_eq!(rows.len(), 52, "{listed}");
    assert!(rows.iter().all(|r| r["confirmed"] == true), "{listed}");
    let over = json(
        &s.cmd(&["versions", "list", "over.txt", "--json"])
            .output()
            .unwrap(),
    );
    assert_eq!(
        over["mappings"][0]["versions"].as_array().map(Vec::len),
        Some(1),
        "{over}"
    );

    // Restore never removes what stands in the way: the newer local file stays.
    let out = restore(s, &backend, &["over.txt"]);
    assert_exit(&out, 2);
    assert_eq!(
        std::fs::read(s.src.join("over.txt")).unwrap(),
        b"v2, longer"
    );
    write(&s.src, "dir", b"a file where the folder was");
    assert_exit(&restore(s, &backend, &["dir/f07"]), 2);
    assert_eq!(
        std::fs::read(s.src.join("dir")).unwrap(),
        b"a file where the folder was"
    );
    std::fs::remove_file(s.src.join("dir")).unwrap();
    // Moved away, the old bytes come back, and mirroring them keeps v2.
    std::fs::remove_file(s.src.join("over.txt")).unwrap();
    let out = restore(s, &backend, &["over.txt"]);
    assert_exit(&out, 0);
    assert_eq!(std::fs::read(s.src.join("over.txt")).unwrap(), b"v1");
    let elsewhere = tempfile::tempdir().unwrap();
    let to = elsewhere.path().display().to_string();
    assert_exit(&restore(s, &backend, &["dir/f07", "--to", &to]), 0);
    assert_eq!(
        std::fs::read(elsewhere.path().join("dir/f07")).unwrap(),
        b"file 7"
    );
    assert!(!s.src.join("dir").exists(), "--to wrote into the source");
    // A whole folder: every file of it comes back.
    let whole = tempfile::tempdir().unwrap();
    let to = whole.path().display().to_string();
    assert_exit(&restore(s, &backend, &["dir", "--to", &to]), 0);
    let back = tree(whole.path());
    assert_eq!(back.len(), 50, "{:?}", back.keys());
    assert_eq!(back[&b"dir/f42"[..]], b"file 42");
    assert_synced_to(&sync(s, &backend, "1h"), &backend);
    let (live, versions) = split(contents(&backend));
    assert_eq!(live, tree(&s.src));
    let mut over = versions[&b"over.txt"[..]].clone();
    over.sort();
    assert_eq!(over, vec![b"v1".to_vec(), b"v2, longer".to_vec()]);

    // Pruning: with a keep time of 1 s, every version is expired a second later.
    std::thread::sleep(std::time::Duration::from_millis(1_100));
    assert_synced_to(&sync(s, &backend, "1s"), &backend);
    let all = contents(&backend);
    let (live, versions) = split(all.clone());
    assert!(versions.is_empty(), "left: {:?}", versions.keys());
    assert_eq!(live, tree(&s.src));
    let listed = json(&s.cmd(&["versions", "list", "--json"]).output().unwrap());
    assert_eq!(
        listed["mappings"][0]["versions"].as_array().map(Vec::len),
        Some(0)
    );
}

fn restore(s: &Scratch, backend: &Backend, extra: &[&str]) -> Output {
    let url = backend.url();
    let mut args = vec!["versions", "restore", s.src_str(), url.as_str()];
    args.extend_from_slice(extra);
    backend
        .command_args(s, &args)
        .output()
        .expect("run skynet versions restore")
}

fn assert_synced_to(out: &Output, backend: &Backend) {
    assert_exit(out, 0);
    assert!(backend.leftovers().is_empty(), "{:?}", backend.leftovers());
}

#[test]
fn versions_are_kept_listed_restored_and_pruned_local() {
    let s = Scratch::new();
    let backend = Backend::local(&s);
    kept_and_restored(&s, backend);
}

#[test]
fn versions_are_kept_listed_restored_and_pruned_sftp() {
    let s = Scratch::new();
    kept_and_restored(&s, Backend::sftp("versions"));
}

#[test]
fn versions_are_kept_listed_restored_and_pruned_s3() {
    let s = Scratch::new();
    kept_and_restored(&s, Backend::s3("versions", "mirror"));
}

/// A file the destination holds where a folder of the source goes, unknown to skynet (a
/// backup made before, or state lost), is kept when the folder's first file clears it
/// (found by review: it was removed).
#[test]
fn a_file_in_the_way_of_a_folder_is_kept() {
    let s = Scratch::new();
    let backend = Backend::local(&s);
    write(&s.dst, "a", b"an old file a");
    write(&s.src, "a/b", b"b");
    assert_synced_to(&sync(&s, &backend, "1h"), &backend);
    let (live, versions) = split(contents(&backend));
    assert_eq!(live, tree(&s.src));
    assert_eq!(versions[&b"a"[..]], vec![b"an old file a".to_vec()]);
}

/// A source file under the versions folder's name is never mirrored into it.
#[test]
fn a_source_folder_named_like_the_versions_folder_is_not_mirrored() {
    let s = Scratch::new();
    let backend = Backend::local(&s);
    write(&s.src, ".skynet-versions/evil~20200101-000000", b"planted");
    write(&s.src, "a.txt", b"a");
    // Deeper down, the name is the user's: mirrored.
    write(&s.src, "sub/.skynet-versions/mine", b"mine");
    assert_synced_to(&sync(&s, &backend, "1h"), &backend);
    let all = contents(&backend);
    assert_eq!(
        all.keys().collect::<Vec<_>>(),
        vec![&b"a.txt".to_vec(), &b"sub/.skynet-versions/mine".to_vec()]
    );
}

/// `--versions-dir`: the versions go where the user says, relative to the destination root,
/// and the source's folder of that name is not mirrored.
#[test]
fn versions_go_to_the_configured_folder() {
    let s = Scratch::new();
    let backend = Backend::local(&s);
    write(&s.src, "doomed.txt", b"doomed");
    write(&s.src, "old/kept/planted", b"planted");
    let flags = [
        "--complete-sync",
        "--keep-versions",
        "1h",
        "--versions-dir",
        "old/kept",
    ];
    assert_synced_to(&backend.sync(&s, &flags), &backend);
    std::fs::remove_file(s.src.join("doomed.txt")).unwrap();
    assert_synced_to(&backend.sync(&s, &flags), &backend);
    let all = contents(&backend);
    let names: Vec<String> = all
        .keys()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].starts_with("old/kept/doomed.txt~"), "{names:?}");
    assert_eq!(all.values().next().map(Vec::as_slice), Some(&b"doomed"[..]));
    let out = backend.sync(&s, &["--versions-dir", "x"]);
    expect_usage_error(out, "--keep-versions");
}
