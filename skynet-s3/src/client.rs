//! `S3Client`: one mapping's bucket and prefix as seen through one SDK client, with the state
//! every request of the mapping shares: the resume store, the uploads running now, the
//! directories known clear.
//!
//! Why a module of its own: the [`Connection`](skynet_core::Connection) methods
//! ([`crate::connection`]), multipart uploads and copies ([`crate::multipart`]) and the
//! clean-up of abandoned uploads ([`crate::abandoned`]) all send requests to the same bucket
//! and keep the same records. Here they find them behind methods, so none of those modules
//! reaches into another's fields or imports another to get at them: this one depends on
//! none of them.
//!
//! It holds the operations more than one of them needs and that no Connection method owns:
//! listing, exact-key lookups, deletions (one key, batches, a whole "directory"), aborting a
//! recorded upload, and keeping parent directories clear of files.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_config::meta::region::RegionProviderChain;
use aws_config::BehaviorVersion;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    Credentials, Region, RequestChecksumCalculation, SharedCredentialsProvider,
};
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use aws_sdk_s3::Client;
use aws_smithy_http_client::tls;
use skynet_core::{ConnError, RelPath};

use crate::config::{redact_endpoint, S3Config, S3ConfigError};
use crate::errors::{batch_delete_error, classify, delete_answer};
use crate::keys::KeyMap;
use crate::resume_store::ResumeStore;

/// S3 allows at most this many keys in one DeleteObjects request.
const DELETE_BATCH: usize = 1000;

/// Name of the user metadata entry holding the local mtime (`x-amz-meta-mtime`), as
/// `seconds.nanoseconds` since the Unix epoch, the format rclone uses too.
pub const MTIME_METADATA: &str = "mtime";

/// `seconds.nanoseconds` for the mtime metadata.
pub(crate) fn mtime_text(t: SystemTime) -> String {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => format!("{}.{:09}", d.as_secs(), d.subsec_nanos()),
        Err(e) => {
            let d: Duration = e.duration();
            format!("-{}.{:09}", d.as_secs(), d.subsec_nanos())
        }
    }
}

/// One mapping's bucket and prefix, and the state its requests share (see the module doc).
/// Shared as `Arc<S3Client>` by the connection and the tasks it spawns.
pub(crate) struct S3Client {
    cfg: S3Config,
    sdk: Client,
    keys: KeyMap,
    store: ResumeStore,
    describe: String,
    /// Where requests go, for Setup messages ("AWS S3 (us-east-1)" or the endpoint URL).
    target: String,
    credentials: Option<SharedCredentialsProvider>,
    /// Multipart uploads started by this process and still running: connect() must not abort
    /// them even when they are not (yet) in the resume table.
    live_uploads: Mutex<HashSet<String>>,
    /// When this client was made (ms since the epoch): upload creations announced before
    /// it and never recorded were interrupted by an earlier run (see [`crate::abandoned`]).
    opened_at: i64,
    /// Keys of parent directories this client found free of an object at the key itself
    /// (see [`S3Client::clear_files_above`]), so that it looks once per directory, not per
    /// send. A send onto a key forgets it; a rename, it and everything below it (sorted, so
    /// that is one range, not a walk of the whole set per rename).
    dirs_clear: Mutex<BTreeSet<String>>,
}

/// Removes an upload id from the live set when the send ends, however it ends (the future
/// may be dropped half-way).
pub(crate) struct LiveGuard {
    client: Arc<S3Client>,
    upload_id: String,
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.client.live().remove(&self.upload_id);
    }
}

impl S3Client {
    /// Builds the SDK client from `cfg` and the AWS chain (environment, profile files, web
    /// identity, instance metadata) and opens the resume store in `cfg.state_db`. Sends no
    /// request.
    pub(crate) async fn build(cfg: S3Config) -> Result<Self, S3ConfigError> {
        cfg.validate()?;
        let http_client = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(cfg.connect_timeout)
            .read_timeout(cfg.read_timeout)
            .operation_attempt_timeout(cfg.attempt_timeout)
            .build();
        // Region from the variables and profile only: the instance-metadata lookup of the
        // default chain costs seconds of timeouts off EC2, and S3 works from any region.
        let region = match &cfg.region {
            Some(r) => RegionProviderChain::first_try(Region::new(r.clone())),
            None => RegionProviderChain::first_try(
                aws_config::environment::EnvironmentVariableRegionProvider::new(),
            )
            .or_else(aws_config::profile::ProfileFileRegionProvider::new())
            .or_else(Region::from_static("us-east-1")),
        };
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http_client)
            .timeout_config(timeouts)
            .retry_config(RetryConfig::standard().with_max_attempts(cfg.max_attempts))
            .region(region);
        if let Some(c) = &cfg.credentials {
            loader = loader.credentials_provider(Credentials::new(
                c.access_key_id.clone(),
                c.secret_access_key.clone(),
                c.session_token.clone(),
                None,
                "skynet-explicit",
            ));
        }
        if let Some(ep) = &cfg.endpoint {
            loader = loader.endpoint_url(ep.clone());
        }
        let sdk = loader.load().await;
        let s3_config = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(cfg.path_style)
            // Checksums are computed by skynet (CRC32C of the bytes in memory) and passed as
            // values where it wants them: under this setting, naming only the algorithm makes
            // the SDK send the algorithm header without a checksum.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .build();
        let client = Client::from_conf(s3_config);

        let endpoint = cfg
            .endpoint
            .clone()
            .or_else(|| sdk.endpoint_url().map(str::to_string))
            .map(|e| redact_endpoint(&e));
        let region_name = sdk
            .region()
            .map_or("us-east-1".to_string(), |r| r.to_string());
        let (describe, target) = match &endpoint {
            Some(ep) => (format!("{} (endpoint {ep})", cfg.url()), ep.clone()),
            None => (cfg.url(), format!("AWS S3 ({region_name})")),
        };
        let store = ResumeStore::open(cfg.state_db.as_deref())?;
        Ok(S3Client {
            keys: KeyMap::new(&cfg.prefix),
            credentials: sdk.credentials_provider(),
            cfg,
            sdk: client,
            store,
            describe,
            target,
            live_uploads: Mutex::new(HashSet::new()),
            opened_at: crate::resume_store::now_ms(),
            dirs_clear: Mutex::new(BTreeSet::new()),
        })
    }

    pub(crate) fn cfg(&self) -> &S3Config {
        &self.cfg
    }

    /// The SDK client: one connection pool for every request of the mapping.
    pub(crate) fn sdk(&self) -> &Client {
        &self.sdk
    }

    pub(crate) fn keys(&self) -> &KeyMap {
        &self.keys
    }

    /// The record of multipart uploads in progress.
    pub(crate) fn store(&self) -> &ResumeStore {
        &self.store
    }

    /// The destination as messages name it (`s3://bucket/prefix`, and the endpoint if any).
    pub(crate) fn describe(&self) -> &str {
        &self.describe
    }

    /// Where requests go, for Setup messages ("AWS S3 (us-east-1)" or the endpoint URL).
    pub(crate) fn target(&self) -> &str {
        &self.target
    }

    /// The credentials the AWS chain found, if any (checked by `connect`).
    pub(crate) fn credentials(&self) -> Option<&SharedCredentialsProvider> {
        self.credentials.as_ref()
    }

    /// When this client was made, in ms since the epoch (see [`crate::abandoned`]).
    pub(crate) fn opened_at(&self) -> i64 {
        self.opened_at
    }

    /// The start of every message: which destination, which operation, which key.
    pub(crate) fn what(&self, op: &str, key: &str) -> String {
        format!("{}: {op} {key:?}", self.describe)
    }

    pub(crate) fn bucket(&self) -> &str {
        &self.cfg.bucket
    }

    fn live(&self) -> MutexGuard<'_, HashSet<String>> {
        // The set is consistent after any panic (one insert or remove at a time).
        self.live_uploads.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes that this process is running upload `upload_id` (so `connect` leaves it alone).
    pub(crate) fn add_live(&self, upload_id: &str) {
        self.live().insert(upload_id.to_string());
    }

    /// A guard that forgets `upload_id` as running when it is dropped.
    pub(crate) fn live_guard(self: &Arc<Self>, upload_id: &str) -> LiveGuard {
        LiveGuard {
            client: Arc::clone(self),
            upload_id: upload_id.to_string(),
        }
    }

    /// Ids of the uploads this process is running now.
    pub(crate) fn live_ids(&self) -> HashSet<String> {
        self.live().clone()
    }

    /// Every key (with its size) starting with `prefix`, paging through ListObjectsV2.
    pub(crate) async fn list_prefix(&self, prefix: &str) -> Result<Vec<(String, u64)>, ConnError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .sdk
                .list_objects_v2()
                .bucket(self.bucket())
                .prefix(prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| classify(e, &self.what("list", prefix)))?;
            for obj in page.contents() {
                if let Some(key) = obj.key() {
                    out.push((key.to_string(), obj.size().unwrap_or(0).max(0) as u64));
                }
            }
            match page.next_continuation_token() {
                Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_string()),
                _ => break,
            }
        }
        Ok(out)
    }

    /// The size of the object named exactly `key`, found by listing: the exact key is the
    /// first one in lexical order with that prefix. Unlike HEAD, this answers 'absent' for a
    /// "directory" on every server (servers that store keys as file paths answer HEAD on one
    /// with a bare 500).
    pub(crate) async fn exact_size(&self, key: &str) -> Result<Option<u64>, ConnError> {
        let page = self
            .sdk
            .list_objects_v2()
            .bucket(self.bucket())
            .prefix(key)
            .max_keys(1)
            .send()
            .await
            .map_err(|e| classify(e, &self.what("list", key)))?;
        Ok(page
            .contents()
            .iter()
            .find(|o| o.key() == Some(key))
            .map(|o| o.size().unwrap_or(0).max(0) as u64))
    }

    /// Deletes `keys` in batches of at most 1,000 (DeleteObjects), failing on any key the
    /// server reports as not deleted.
    pub(crate) async fn delete_keys(&self, keys: &[String]) -> Result<(), ConnError> {
        for batch in keys.chunks(DELETE_BATCH) {
            let objects = batch
                .iter()
                .map(|k| ObjectIdentifier::builder().key(k).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ConnError::permanent(format!("{}: {e}", self.describe)))?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| ConnError::permanent(format!("{}: {e}", self.describe)))?;
            let first = batch.first().map(String::as_str).unwrap_or("");
            let out = self
                .sdk
                .delete_objects()
                .bucket(self.bucket())
                .delete(delete)
                .send()
                .await
                .map_err(|e| classify(e, &self.what("delete", first)))?;
            if let Some(err) = out.errors().first() {
                return Err(batch_delete_error(
                    &self.what("delete", err.key().unwrap_or(first)),
                    err.code(),
                    err.message().unwrap_or(""),
                ));
            }
        }
        Ok(())
    }

    pub(crate) async fn delete_key(&self, key: &str) -> Result<(), ConnError> {
        match self
            .sdk
            .delete_object()
            .bucket(self.bucket())
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => delete_answer(classify(e, &self.what("delete", key))),
        }
    }

    /// Aborts an upload and forgets it; an upload the server no longer knows is already gone.
    pub(crate) async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<(), ConnError> {
        let res = self
            .sdk
            .abort_multipart_upload()
            .bucket(self.bucket())
            .key(key)
            .upload_id(upload_id)
            .send()
            .await;
        if let Err(e) = res {
            let f = classify(e, &self.what("abort upload of", key));
            if !f.is_missing_upload() {
                return Err(f.into());
            }
        }
        let id = upload_id.to_string();
        self.store.run(move |s| s.remove(&id)).await
    }

    /// Deletes `keys`, all under `dir` (ending in `/`), then the folder markers `dir` and
    /// every sub-folder of it, deepest first. On real S3 the markers are usually absent and
    /// deleting them is a no-op; servers that store keys as file paths remove their empty
    /// directories that way, which would otherwise block a file of the same name later.
    pub(crate) async fn delete_tree(&self, dir: &str, keys: &[String]) -> Result<(), ConnError> {
        self.delete_keys(keys).await?;
        let mut markers: HashSet<String> = HashSet::new();
        markers.insert(dir.to_string());
        for key in keys {
            let Some(rest) = key.strip_prefix(dir) else {
                continue;
            };
            for (i, b) in rest.bytes().enumerate() {
                if b == b'/' {
                    markers.insert(format!("{dir}{}", &rest[..=i]));
                }
            }
        }
        let mut markers: Vec<String> = markers.into_iter().collect();
        markers.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        self.delete_keys(&markers).await
    }

    /// Deletes every key under `key/` (a "directory" where a file is to go). Returns whether
    /// there was any.
    pub(crate) async fn clear_dir_in_the_way(&self, key: &str) -> Result<bool, ConnError> {
        let under: Vec<String> = self
            .list_prefix(&format!("{key}/"))
            .await?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        if under.is_empty() {
            return Ok(false);
        }
        tracing::info!(
            key,
            count = under.len(),
            "deleting a directory replaced by a file"
        );
        self.delete_tree(&format!("{key}/"), &under).await?;
        Ok(true)
    }

    /// Deletes any object standing where a parent directory of `path` goes, as a send or a
    /// rename on a filesystem replaces a file in the way of the directories it creates. The
    /// engine counts on it: once a send of `a/x` is acknowledged, its ledger forgets a file
    /// `a` (`forget_files_above`), and a merged queue may drop a pending `Delete(a)` for it.
    /// S3 keys are independent, so without this the object `a` survived an upload of `a/x`:
    /// it lingered at the destination unknown to the ledger, or, on servers that store keys
    /// as file paths, the upload failed with HTTP 500 until it was parked (found by the
    /// simulation against real servers: tests/sim_backends.rs keeps the histories). One
    /// exact-key listing per parent directory, then remembered (`dirs_clear`) until a send or
    /// rename lands on it.
    pub(crate) async fn clear_files_above(&self, path: &RelPath) -> Result<(), ConnError> {
        for dir in path.ancestors() {
            let key = self.keys.key(&dir)?;
            if self.clear_known().contains(&key) {
                continue;
            }
            if self.exact_size(&key).await?.is_some() {
                tracing::info!(key, "deleting a file replaced by a directory");
                self.delete_key(&key).await?;
            }
            self.clear_known().insert(key);
        }
        Ok(())
    }

    fn clear_known(&self) -> MutexGuard<'_, BTreeSet<String>> {
        self.dirs_clear.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An object may now stand at `key` (a send): that directory is not known clear.
    pub(crate) fn forget_clear_dir(&self, key: &str) {
        self.clear_known().remove(key);
    }

    /// Objects may now stand at `key` and below it (a rename of a directory): none of the
    /// directories there is known clear. `key/` sorts right after `key`, and everything
    /// below it before `key0` (`0` follows `/`): one range.
    pub(crate) fn forget_clear_dirs(&self, key: &str) {
        let mut known = self.clear_known();
        known.remove(key);
        let below: Vec<String> = known
            .range(format!("{key}/")..format!("{key}0"))
            .cloned()
            .collect();
        for k in below {
            known.remove(&k);
        }
    }
}
