//! Which multipart uploads skynet aborts: only the ones it recorded or announced itself.
//! Uploads of other tools and other skynet hosts in the same bucket, even under skynet's
//! prefix, are other people's work in progress and must survive skynet's start-up and its
//! sends. Against moto, which lists uploads in progress, and s3s-fs, which cannot.
//!
//! moto 5.2.1 answers `2010-11-10T20:48:33Z` as the `Initiated` time of every upload (one
//! reason skynet does not compare times, see `abandoned.rs`), and names the root element of
//! its ListParts answer `ListPartsResponse` where S3 says `ListPartsResult`, which the SDK
//! cannot read: skynet reads that answer's parts itself.

use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use aws_smithy_http_client::tls;
use skynet_core::conformance::{local_file as local, rel};
use skynet_core::Connection;
use skynet_s3::testing::{pseudo_random as content, MotoServer, S3Server};
use skynet_s3::{S3Config, S3Connection, MIB};

async fn connect(cfg: S3Config) -> S3Connection {
    let conn = S3Connection::new(cfg).await.expect("build connection");
    conn.connect().await.expect("connect");
    conn
}

/// A moto server with `bucket`, another tool's client of it, and skynet's config for the
/// prefix `pre` with its state database `db` (in `_state`, removed on drop).
struct Moto {
    server: MotoServer,
    other: Client,
    _state: tempfile::TempDir,
    db: std::path::PathBuf,
    cfg: S3Config,
}

impl Moto {
    async fn start(bucket: &str) -> Moto {
        let server = MotoServer::start();
        server.create_bucket(bucket).await;
        let other = other_tool(&server);
        let state = tempfile::tempdir().unwrap();
        let db = state.path().join("state.db");
        let mut cfg = server.config(bucket, "pre");
        cfg.state_db = Some(db.clone());
        Moto {
            server,
            other,
            _state: state,
            db,
            cfg,
        }
    }
}

/// Another tool: a plain SDK client, built here, sharing nothing with skynet but the server.
fn other_tool(server: &MotoServer) -> Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .http_client(http)
        .endpoint_url(server.endpoint())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            server.access_key(),
            server.secret_key(),
            None,
            None,
            "other-tool",
        ))
        .force_path_style(true)
        .build();
    Client::from_conf(conf)
}

async fn create_upload(client: &Client, bucket: &str, key: &str) -> String {
    client
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("create upload of {key}: {e:?}"))
        .upload_id()
        .expect("upload id")
        .to_string()
}

/// Uploads part `n` of upload `id`; returns its ETag.
async fn upload_part(
    client: &Client,
    bucket: &str,
    key: &str,
    id: &str,
    n: i32,
    body: &[u8],
) -> String {
    client
        .upload_part()
        .bucket(bucket)
        .key(key)
        .upload_id(id)
        .part_number(n)
        .body(body.to_vec().into())
        .send()
        .await
        .unwrap_or_else(|e| panic!("upload part {n} of {key} ({id}): {e:?}"))
        .e_tag()
        .expect("part ETag")
        .to_string()
}

/// Completes upload `id` of `key` from its parts' ETags. moto 5.2.1 completes it but names the
/// root element of its answer `CompleteMultipartUploadResponse` (S3 says `...Result`), which
/// the Rust SDK reads as an error answer with status 200: that answer is taken as done, and
/// the callers read the object back, which is what counts.
async fn complete(client: &Client, bucket: &str, key: &str, id: &str, etags: &[String]) {
    let parts: Vec<CompletedPart> = etags
        .iter()
        .enumerate()
        .map(|(i, etag)| {
            CompletedPart::builder()
                .part_number(i as i32 + 1)
                .e_tag(etag)
                .build()
        })
        .collect();
    let res = client
        .complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await;
    match res {
        Ok(_) => {}
        Err(SdkError::ServiceError(e)) if e.raw().status().as_u16() == 200 => {}
        Err(e) => panic!("complete upload of {key} ({id}): {e:?}"),
    }
}

async fn object(client: &Client, bucket: &str, key: &str) -> Vec<u8> {
    client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("get {key}: {e:?}"))
        .body
        .collect()
        .await
        .expect("read object")
        .into_bytes()
        .to_vec()
}

/// (key, upload id) of every upload in progress in `bucket`, sorted.
async fn uploads(client: &Client, bucket: &str) -> Vec<(String, String)> {
    let out = client
        .list_multipart_uploads()
        .bucket(bucket)
        .send()
        .await
        .expect("list uploads");
    let mut all: Vec<(String, String)> = out
        .uploads()
        .iter()
        .map(|u| {
            (
                u.key().unwrap_or_default().to_string(),
                u.upload_id().unwrap_or_default().to_string(),
            )
        })
        .collect();
    all.sort();
    all
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// Writes what skynet writes just before CreateMultipartUpload: the announcement that an
/// upload of `key` is about to exist. `started` is in ms since the epoch.
fn announce(db: &std::path::Path, bucket: &str, key: &str, started: i64) {
    let sql = rusqlite::Connection::open(db).expect("open state db");
    sql.execute(
        "INSERT OR REPLACE INTO s3_multipart_intent (bucket, key, started) VALUES (?1, ?2, ?3)",
        rusqlite::params![bucket, key, started],
    )
    .expect("announce");
}

fn intents(db: &std::path::Path) -> Vec<String> {
    let sql = rusqlite::Connection::open(db).expect("open state db");
    let mut stmt = sql
        .prepare("SELECT key FROM s3_multipart_intent ORDER BY key")
        .expect("prepare");
    let keys = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .expect("query")
        .collect::<Result<Vec<_>, _>>()
        .expect("rows");
    keys
}

/// Another client's upload in progress under skynet's prefix survives skynet's start-up and
/// completes afterwards with its content, also when it is for a key skynet itself was
/// creating an upload of when it was interrupted (another skynet host mirroring the same
/// folder, say): that one holds parts, which skynet never sends to an upload it has not
/// recorded, so it cannot be skynet's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_clients_upload_survives_start_up() {
    let bucket = "shared-bucket";
    let Moto {
        server: _server,
        other,
        _state,
        db,
        cfg,
    } = Moto::start(bucket).await;
    // A first run creates the state tables, then is interrupted while announcing `shared.bin`.
    drop(connect(cfg.clone()).await);
    announce(&db, bucket, "pre/shared.bin", now_ms() - 1);

    let first = content(5 * MIB as usize, 1);
    let second = b"the rest of it".to_vec();
    let mut theirs = Vec::new();
    for key in ["pre/theirs.bin", "pre/shared.bin", "elsewhere/theirs.bin"] {
        let id = create_upload(&other, bucket, key).await;
        let etag = upload_part(&other, bucket, key, &id, 1, &first).await;
        theirs.push((key, id, etag));
    }

    let conn = connect(cfg).await;
    let mut want: Vec<(String, String)> = theirs
        .iter()
        .map(|(k, id, _)| (k.to_string(), id.clone()))
        .collect();
    want.sort();
    assert_eq!(
        uploads(&other, bucket).await,
        want,
        "skynet's start-up aborted another client's uploads"
    );
    for (key, id, etag) in &theirs {
        let last = upload_part(&other, bucket, key, id, 2, &second).await;
        complete(&other, bucket, key, id, &[etag.clone(), last]).await;
        let got = object(&other, bucket, key).await;
        assert!(
            got.len() == first.len() + second.len(),
            "{key}: {}",
            got.len()
        );
        assert!(got[..first.len()] == first[..] && got[first.len()..] == second[..]);
    }
    drop(conn);
}

/// An upload a killed run created but never recorded (its announcement is all that is left)
/// is aborted by the next start-up, and the announcement goes with it; another client's
/// upload without parts, for a key skynet never announced, stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_announced_but_never_recorded_is_aborted_at_start_up() {
    let bucket = "interrupted";
    let Moto {
        server: _server,
        other,
        _state,
        db,
        cfg,
    } = Moto::start(bucket).await;
    drop(connect(cfg.clone()).await);

    // The killed run: announced, created, killed before it could record the id.
    announce(&db, bucket, "pre/big.bin", now_ms() - 1);
    let stray = create_upload(&other, bucket, "pre/big.bin").await;
    let foreign = create_upload(&other, bucket, "pre/someone-else.bin").await;
    assert_eq!(uploads(&other, bucket).await.len(), 2);

    let _conn = connect(cfg).await;
    assert_eq!(
        uploads(&other, bucket).await,
        [("pre/someone-else.bin".to_string(), foreign)],
        "the interrupted run's upload {stray} should be aborted, and only it"
    );
    assert!(intents(&db).is_empty(), "{:?}", intents(&db));
}

/// A creation that failed after the server made the upload (its answer lost) leaves an upload
/// nobody recorded; the retried send, which announces the same key again, aborts it first
/// rather than leave it open until the next start-up, or forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_creations_upload_is_aborted_when_the_send_is_retried() {
    let bucket = "retried";
    let Moto {
        server: _server,
        other,
        _state,
        db,
        mut cfg,
    } = Moto::start(bucket).await;
    cfg.multipart_threshold = 5 * MIB;
    cfg.part_size = 5 * MIB;
    let conn = connect(cfg).await;

    // This run's first attempt: announced, created on the server, the answer never came.
    announce(&db, bucket, "pre/big.bin", now_ms());
    let stray = create_upload(&other, bucket, "pre/big.bin").await;

    let dir = tempfile::tempdir().unwrap();
    let bytes = content(7 * MIB as usize, 3);
    let src = local(dir.path(), "big", &bytes);
    // moto completes skynet's upload too, but skynet cannot read its answer (see `complete`):
    // the send fails at that last step, with the object in place.
    if let Err(e) = conn.send(&src, &rel("big.bin")).await {
        assert!(e.message.contains("complete upload of"), "{}", e.message);
    }
    assert!(object(&other, bucket, "pre/big.bin").await == bytes);
    assert_eq!(
        uploads(&other, bucket).await,
        Vec::<(String, String)>::new(),
        "the failed creation's upload {stray} was left open"
    );
    assert!(intents(&db).is_empty(), "{:?}", intents(&db));
}

/// Where the server cannot list uploads (s3s-fs), an announced upload cannot be found: the
/// start-up still connects, warns (naming the key; the kill-loop test reads that warning) and
/// settles the announcement, and the upload, which skynet cannot prove its own, stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_cannot_list_uploads_keeps_them_and_start_up_goes_on() {
    let server = S3Server::start();
    server.create_bucket("nolist").await;
    let state = tempfile::tempdir().unwrap();
    let db = state.path().join("state.db");
    let mut cfg = server.config("nolist", "pre");
    cfg.state_db = Some(db.clone());
    let first = connect(cfg.clone()).await;
    announce(&db, "nolist", "pre/big.bin", now_ms() - 1);
    let stray = create_upload(first.client(), "nolist", "pre/big.bin").await;
    drop(first);

    let _conn = connect(cfg).await;
    assert!(intents(&db).is_empty(), "{:?}", intents(&db));
    assert_eq!(server.in_progress_uploads(), [stray]);
}
