use super::*;

fn rec(key: &str, id: &str) -> UploadRecord {
    UploadRecord {
        bucket: "b".into(),
        key: key.into(),
        upload_id: id.into(),
        local_path: PathBuf::from("/src/x"),
        size: 10,
        mtime_ns: -5,
        part_size: 5,
    }
}

#[test]
fn records_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let store = ResumeStore::open(Some(&db)).unwrap();
    store.insert(&rec("p/a", "u1")).unwrap();
    store.insert(&rec("p/b", "u2")).unwrap();
    store.insert(&rec("q/c", "u3")).unwrap();
    let part = PartRecord {
        part_number: 1,
        size: 5,
        etag: "\"e\"".into(),
        checksum_crc32c: Some("c==".into()),
    };
    store.record_part("u1", &part).unwrap();
    drop(store);

    let store = ResumeStore::open(Some(&db)).unwrap();
    assert_eq!(store.get("b", "p/a").unwrap(), Some(rec("p/a", "u1")));
    assert_eq!(store.parts("u1").unwrap(), vec![part]);
    let keys: Vec<String> = store
        .list("b", "p/")
        .unwrap()
        .into_iter()
        .map(|r| r.key)
        .collect();
    assert_eq!(keys, ["p/a", "p/b"]);
    // A new upload for the same key replaces the record and drops the old parts.
    store.insert(&rec("p/a", "u9")).unwrap();
    assert!(store.parts("u1").unwrap().is_empty());
    store.remove("u9").unwrap();
    assert_eq!(store.get("b", "p/a").unwrap(), None);
    assert_eq!(store.list("b", "").unwrap().len(), 2);
}

#[test]
fn an_announced_upload_is_reported_until_recorded_or_settled() {
    let store = ResumeStore::open(None).unwrap();
    store.announce("b", "p/big").unwrap();
    store.announce("b", "p/done").unwrap();
    store.announce("b", "q/other").unwrap();
    store.insert(&rec("p/done", "u1")).unwrap();
    assert_eq!(store.intent("b", "p/done").unwrap(), None);
    let started = store.intent("b", "p/big").unwrap().expect("announced");
    // Announced after `before`: the current run's own creations are left alone.
    assert!(store.intents("b", "p/", 0).unwrap().is_empty());
    let later = now_ms() + 1;
    assert_eq!(
        store.intents("b", "p/", later).unwrap(),
        [("p/big".to_string(), started)]
    );
    // Reading does not settle: a start-up cut short finds them again.
    assert_eq!(store.intents("b", "p/", later).unwrap().len(), 1);
    // Settling an older announcement leaves a newer one of the same key.
    store.settle_intent("b", "p/big", started - 1).unwrap();
    assert_eq!(store.intents("b", "p/", later).unwrap().len(), 1);
    store.settle_intent("b", "p/big", started).unwrap();
    assert!(store.intents("b", "p/", later).unwrap().is_empty());
    assert_eq!(store.intents("b", "", later).unwrap().len(), 1);
}

/// The tables exactly as skynet created them before the schema had a version (unversioned,
/// `IF NOT EXISTS`), kept here verbatim so that this test does not follow later migrations.
const UNVERSIONED_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS s3_multipart (
    bucket     TEXT NOT NULL,
    key        TEXT NOT NULL,
    upload_id  TEXT NOT NULL,
    local_path BLOB NOT NULL,
    size       INTEGER NOT NULL,
    mtime_ns   INTEGER NOT NULL,
    part_size  INTEGER NOT NULL,
    created    INTEGER NOT NULL,
    PRIMARY KEY (bucket, key)
);
CREATE TABLE IF NOT EXISTS s3_multipart_parts (
    upload_id       TEXT NOT NULL,
    part_number     INTEGER NOT NULL,
    size            INTEGER NOT NULL,
    etag            TEXT NOT NULL,
    checksum_crc32c TEXT,
    PRIMARY KEY (upload_id, part_number)
);
CREATE TABLE IF NOT EXISTS s3_multipart_intent (
    bucket  TEXT NOT NULL,
    key     TEXT NOT NULL,
    started INTEGER NOT NULL,
    PRIMARY KEY (bucket, key)
);
";

/// The store's version, read the way `open` reads it.
fn version_of(db: &Path) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    schema_version(&conn).unwrap()
}

/// A database made before the schema had a version (tables present, no version) opens with
/// its rows intact and is then at the current version.
#[test]
fn an_unversioned_database_keeps_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch(UNVERSIONED_SCHEMA).unwrap();
        conn.execute(
            "INSERT INTO s3_multipart
             (bucket, key, upload_id, local_path, size, mtime_ns, part_size, created)
             VALUES ('b', 'p/a', 'u1', CAST('/src/x' AS BLOB), 10, -5, 5, 1)",
            [],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO s3_multipart_parts VALUES ('u1', 1, 5, '\"e\"', 'c==')",
            [],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO s3_multipart_intent VALUES ('b', 'p/big', 42)",
            [],
        )
        .unwrap();
    }
    assert_eq!(version_of(&db), 0);

    let store = ResumeStore::open(Some(&db)).unwrap();
    assert_eq!(store.get("b", "p/a").unwrap(), Some(rec("p/a", "u1")));
    assert_eq!(
        store.parts("u1").unwrap(),
        vec![PartRecord {
            part_number: 1,
            size: 5,
            etag: "\"e\"".into(),
            checksum_crc32c: Some("c==".into()),
        }]
    );
    assert_eq!(store.intent("b", "p/big").unwrap(), Some(42));
    drop(store);
    assert_eq!(version_of(&db), MIGRATIONS.len() as i64);
    // Opening again (current now) keeps everything too.
    let store = ResumeStore::open(Some(&db)).unwrap();
    assert_eq!(store.get("b", "p/a").unwrap(), Some(rec("p/a", "u1")));
}

/// The store shares its file with the queue, whose schema `PRAGMA user_version` numbers:
/// opening the store must leave that number alone, in either order, or the queue would run
/// its migrations again (or refuse the database as too new).
#[test]
fn the_queue_and_the_store_share_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = skynet_core::state::database_path(dir.path());
    let user_version = || -> i64 {
        rusqlite::Connection::open(&db)
            .unwrap()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap()
    };
    drop(skynet_core::state::Queue::open(&db).unwrap());
    let queue_version = user_version();
    assert!(queue_version > 0);
    let store = ResumeStore::open(Some(&db)).unwrap();
    store.insert(&rec("p/a", "u1")).unwrap();
    drop(store);
    assert_eq!(user_version(), queue_version);
    drop(skynet_core::state::Queue::open(&db).unwrap());
    assert_eq!(version_of(&db), MIGRATIONS.len() as i64);

    // The other order: the store first, on a new file.
    let other = dir.path().join("other.sqlite");
    drop(ResumeStore::open(Some(&other)).unwrap());
    drop(skynet_core::state::Queue::open(&other).unwrap());
    let store = ResumeStore::open(Some(&other)).unwrap();
    store.insert(&rec("p/b", "u2")).unwrap();
}

/// A schema newer than this build knows is refused, not used.
#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    drop(ResumeStore::open(Some(&db)).unwrap());
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute("UPDATE s3_schema_version SET version = 99", [])
        .unwrap();
    match ResumeStore::open(Some(&db)) {
        Err(S3ConfigError::StateDbTooNew { found, known, .. }) => {
            assert_eq!((found, known), (99, MIGRATIONS.len() as i64));
        }
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("a newer schema was accepted"),
    }
}
