//! `S3Connection`: the [`Connection`] trait over aws-sdk-s3.
//!
//! One SDK client (and so one connection pool) serves every call; it runs on the caller's
//! tokio runtime, never on a runtime of its own. Sends of small files are one PutObject from
//! memory (read first, checked unchanged, then sent, so a half-rewritten file is never
//! published); big files go through [`crate::multipart`], which resumes after interruptions.
//! "Directories" are key prefixes: deleting or renaming one acts on every key under
//! `prefix/dir/`, never on keys that merely start with the same characters.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_config::meta::region::RegionProviderChain;
use aws_config::BehaviorVersion;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    Credentials, Region, RequestChecksumCalculation, SharedCredentialsProvider,
};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumMode, ChecksumType, Delete, ObjectIdentifier};
use aws_sdk_s3::Client;
use aws_smithy_http_client::tls;
use skynet_core::connection::verify_size;
use skynet_core::{
    ConnError, Connection, ErrorKind, RelPath, RemoteEntry, SourceFile, Verification,
};

use crate::bounded::run_bounded;
use crate::config::{redact_endpoint, S3Config, S3ConfigError};
use crate::errors::{batch_delete_error, classify, copy_error, delete_answer, one_line};
use crate::keys::{encode_copy_source, KeyMap};
use crate::resume_store::ResumeStore;

/// S3 allows at most this many keys in one DeleteObjects request.
const DELETE_BATCH: usize = 1000;

/// Name of the user metadata entry holding the local mtime (`x-amz-meta-mtime`), as
/// `seconds.nanoseconds` since the Unix epoch, the format rclone uses too.
pub const MTIME_METADATA: &str = "mtime";

/// A destination in an S3 bucket (or an S3-compatible server).
#[derive(Clone)]
pub struct S3Connection {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) cfg: S3Config,
    pub(crate) client: Client,
    pub(crate) keys: KeyMap,
    pub(crate) store: ResumeStore,
    describe: String,
    /// Where requests go, for Setup messages ("AWS S3 (us-east-1)" or the endpoint URL).
    target: String,
    credentials: Option<SharedCredentialsProvider>,
    /// Multipart uploads started by this process and still running: connect() must not abort
    /// them even when they are not (yet) in the resume table.
    pub(crate) live_uploads: Mutex<HashSet<String>>,
    /// When this connection was made (ms since the epoch): upload creations announced before
    /// it and never recorded were interrupted by an earlier run (see [`crate::abandoned`]).
    pub(crate) opened_at: i64,
    /// Keys of parent directories this connection found free of an object at the key itself
    /// (see [`Inner::clear_files_above`]), so that it looks once per directory, not per send.
    /// A send onto a key forgets it; a rename, it and everything below it (sorted, so that
    /// is one range, not a walk of the whole set per rename).
    dirs_clear: Mutex<std::collections::BTreeSet<String>>,
}

impl S3Connection {
    /// GET of the object at `path`, for `read` and `download`: its key and the answer.
    async fn get(
        &self,
        path: &RelPath,
    ) -> Result<(String, aws_sdk_s3::operation::get_object::GetObjectOutput), ConnError> {
        let inner = &self.inner;
        let key = inner.keys.key(path)?;
        let out = inner
            .client
            .get_object()
            .bucket(inner.bucket())
            .key(&key)
            .send()
            .await
            .map_err(|e| {
                let f = classify(e, &inner.what("get", &key));
                if f.is_plain_server_error() {
                    // A "directory" on s3s-fs: there is no file to read.
                    ConnError::remote_missing(f.message)
                } else {
                    f.into()
                }
            })?;
        Ok((key, out))
    }

    /// Builds the client from `cfg` and the AWS chain (environment, profile files, web
    /// identity, instance metadata) and opens the multipart table in `cfg.state_db`.
    /// Async because the AWS chain may read files; it sends no request: [`Connection::connect`]
    /// checks the bucket and credentials.
    pub async fn new(cfg: S3Config) -> Result<Self, S3ConfigError> {
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
        Ok(S3Connection {
            inner: Arc::new(Inner {
                keys: KeyMap::new(&cfg.prefix),
                credentials: sdk.credentials_provider(),
                cfg,
                client,
                store,
                describe,
                target,
                live_uploads: Mutex::new(HashSet::new()),
                opened_at: crate::resume_store::now_ms(),
                dirs_clear: Mutex::new(Default::default()),
            }),
        })
    }

    /// Shorthand for [`S3Config::from_url`] then [`S3Connection::new`].
    pub async fn from_url(url: &str) -> Result<Self, S3ConfigError> {
        Self::new(S3Config::from_url(url)?).await
    }

    pub fn config(&self) -> &S3Config {
        &self.inner.cfg
    }

    /// The SDK client, for callers (tests) that need a request this type does not offer.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }
}

impl Inner {
    /// A GET whose body broke off half way: the link went, the read starts over.
    fn body_lost(&self, key: &str, e: impl std::fmt::Display) -> ConnError {
        ConnError::connection_lost(one_line(&format!("{}: {e}", self.what("get", key))))
    }

    /// The start of every message: which destination, which operation, which key.
    pub(crate) fn what(&self, op: &str, key: &str) -> String {
        format!("{}: {op} {key:?}", self.describe)
    }

    pub(crate) fn bucket(&self) -> &str {
        &self.cfg.bucket
    }

    /// Every key (with its size) starting with `prefix`, paging through ListObjectsV2.
    pub(crate) async fn list_prefix(&self, prefix: &str) -> Result<Vec<(String, u64)>, ConnError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
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
    /// "directory" on every server (s3s-fs answers HEAD on one with 500).
    pub(crate) async fn exact_size(&self, key: &str) -> Result<Option<u64>, ConnError> {
        let page = self
            .client
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
                .client
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
            .client
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

    /// Server-side copy of `from` (of `size` bytes) onto `to`, keeping its metadata.
    pub(crate) async fn copy_key(&self, from: &str, to: &str, size: u64) -> Result<(), ConnError> {
        if size > self.cfg.copy_threshold {
            return crate::multipart::copy_multipart(self, from, to, size).await;
        }
        self.client
            .copy_object()
            .bucket(self.bucket())
            .copy_source(encode_copy_source(self.bucket(), from))
            .key(to)
            .send()
            .await
            .map_err(|e| copy_error(classify(e, &self.what("copy", from))))?;
        Ok(())
    }

    /// Aborts the recorded multipart uploads of `key` and of every key under `dir_prefix`:
    /// the file they were for is being deleted or moved, so their parts are garbage.
    async fn forget_uploads(&self, key: &str, dir_prefix: &str) -> Result<(), ConnError> {
        let (bucket, key_s, dir_s) = (
            self.bucket().to_string(),
            key.to_string(),
            dir_prefix.to_string(),
        );
        let records = self
            .store
            .run(move |s| {
                let mut all = s.list(&bucket, &dir_s)?;
                all.extend(s.get(&bucket, &key_s)?);
                Ok(all)
            })
            .await?;
        for rec in records {
            crate::multipart::abort_upload(self, &rec.key, &rec.upload_id).await?;
        }
        Ok(())
    }

    /// Deletes `keys`, all under `dir` (ending in `/`), then the folder markers `dir` and
    /// every sub-folder of it, deepest first. On real S3 the markers are usually absent and
    /// deleting them is a no-op; servers that store keys as paths (s3s-fs) remove their empty
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
    /// it lingered at the destination unknown to the ledger (moto), or, on servers that store
    /// keys as paths (s3s-fs), the upload failed with HTTP 500 until it was parked. Found by
    /// running the simulation's histories against real servers (tests/sim_backends.rs, seed
    /// 18: a file replaced by a directory holding a file). One exact-key listing per parent
    /// directory, then remembered (`dirs_clear`) until a send or rename lands on it.
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

    fn clear_known(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<String>> {
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

    async fn send_small(&self, file: &SourceFile, key: &str) -> Result<u64, ConnError> {
        let src = file.clone();
        let data = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, ConnError> {
            use std::io::Read;
            let mut buf = Vec::with_capacity(src.size as usize);
            src.open()?
                .read_to_end(&mut buf)
                .map_err(|e| ConnError::from_io(src.path.display(), &e))?;
            // The bytes are in memory: if the file did not change while they were read, they
            // are one consistent version of it, whatever happens to the file next.
            src.check_unchanged()?;
            Ok(buf)
        })
        .await
        .map_err(|e| ConnError::transient(format!("{}: read task failed: {e}", self.describe)))??;
        let len = data.len() as u64;
        let crc32c = crate::checksum::crc32c_of(&data);
        let data = aws_sdk_s3::primitives::SdkBody::from(data);
        let put = |body: ByteStream| {
            self.client
                .put_object()
                .bucket(self.bucket())
                .key(key)
                .content_length(len as i64)
                .checksum_algorithm(ChecksumAlgorithm::Crc32C)
                .checksum_crc32_c(&crc32c)
                .metadata(MTIME_METADATA, mtime_text(file.mtime))
                .body(body)
                .send()
        };
        // In-memory bodies clone cheaply (shared bytes).
        let first = data.try_clone().ok_or_else(|| {
            ConnError::transient(format!("{}: body not replayable", self.what("put", key)))
        })?;
        if let Err(e) = put(ByteStream::new(first)).await {
            let f = classify(e, &self.what("put", key));
            // A "directory" in the way makes servers that store keys as paths (s3s-fs) fail
            // with a bare 500: clear it and try once more, as the contract says a send
            // replaces a directory. Real S3 never needs this (keys are independent).
            if !f.is_plain_server_error() || !self.clear_dir_in_the_way(key).await? {
                // Such servers also keep the folder a deleted key was the last one in: an
                // empty "directory" in the way, which only its marker's deletion removes
                // (s3s-fs; simulation against it, seed 74). Elsewhere, a no-op.
                if !f.is_plain_server_error() {
                    return Err(f.into());
                }
                // Best effort: the second put says whether the way is clear now.
                let _ = self.delete_keys(&[format!("{key}/")]).await;
            }
            put(ByteStream::new(data))
                .await
                .map_err(|e| classify(e, &self.what("put", key)))?;
        }
        Ok(len)
    }
}

impl Inner {
    /// Compares the CRC32C the server reported for `key` (`remote`) with the local file's,
    /// computed in the same form: whole-object, or composite over the part size an upload
    /// of this size uses (see [`crate::checksum`]). The file is read on the blocking pool.
    async fn compare_crc32c(
        &self,
        file: &SourceFile,
        path: &RelPath,
        remote: &str,
    ) -> Result<Verification, ConnError> {
        // Part sizes an object of this size may have been assembled with: a multipart send,
        // or a multipart copy (a rename of a big object), when they give the reported count.
        let candidates: Vec<u64> = match crate::checksum::composite_parts(remote) {
            None => Vec::new(),
            Some(n) => {
                let mut sizes: Vec<u64> = [self.cfg.part_size, self.cfg.copy_part_size]
                    .into_iter()
                    .map(|preferred| crate::multipart::part_size_for(file.size, preferred))
                    .filter(|&ps| crate::multipart::part_count(file.size, ps) == n)
                    .collect();
                sizes.dedup();
                if sizes.is_empty() {
                    return Ok(Verification::Mismatch(format!(
                        "{path}: destination was assembled from {n} parts, which no part size \
                         skynet uses gives for {} bytes; cannot match its crc32c",
                        file.size
                    )));
                }
                sizes
            }
        };
        let (source, remote_owned) = (file.clone(), remote.to_string());
        let local = tokio::task::spawn_blocking(move || -> std::io::Result<Option<String>> {
            if candidates.is_empty() {
                return crate::checksum::full_crc32c_file(&source).map(Some);
            }
            for part_size in candidates {
                let ours = crate::checksum::composite_crc32c_file(&source, part_size)?;
                if ours == remote_owned {
                    return Ok(Some(ours));
                }
            }
            Ok(None)
        })
        .await
        .map_err(|e| ConnError::transient(format!("{}: hash task failed: {e}", self.describe)))?
        .map_err(|e| ConnError::from_io(file.path.display(), &e))?;
        Ok(match local {
            Some(ours) if ours == remote => Verification::Content {
                algorithm: "crc32c",
            },
            Some(ours) => Verification::Mismatch(format!(
                "{path}: destination content differs (crc32c {ours} here, {remote} there)"
            )),
            None => Verification::Mismatch(format!(
                "{path}: destination content differs (composite crc32c {remote} there)"
            )),
        })
    }
}

/// Nanoseconds since the Unix epoch (negative before it), the resume table's mtime.
pub(crate) use skynet_core::queue::mtime_ns;

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

#[async_trait]
impl Connection for S3Connection {
    fn describe(&self) -> String {
        self.inner.describe.clone()
    }

    async fn connect(&self) -> Result<(), ConnError> {
        let inner = &self.inner;
        let bucket = inner.bucket();
        let setup = |why: String| {
            ConnError::setup(one_line(&format!(
                "{}: cannot use bucket {bucket:?} at {}: {why}",
                inner.describe, inner.target
            )))
        };
        let Some(provider) = &inner.credentials else {
            return Err(setup("no AWS credentials found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a profile)".into()));
        };
        {
            use aws_sdk_s3::config::ProvideCredentials;
            if let Err(e) = provider.provide_credentials().await {
                return Err(setup(format!("no usable AWS credentials: {e}")));
            }
        }
        // A one-key listing checks the bucket, the credentials and the list permission that
        // delete and rename need, and unlike HeadBucket its errors carry a code.
        let probe = inner
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(inner.keys.root())
            .max_keys(1)
            .send()
            .await;
        if let Err(e) = probe {
            let f = classify(e, &inner.what("list", inner.keys.root()));
            return Err(match f.kind {
                ErrorKind::ConnectionLost | ErrorKind::Transient => f.into(),
                _ => setup(f.refusal()),
            });
        }
        inner.clean_stale_uploads().await
    }

    async fn send(&self, file: &SourceFile, to: &RelPath) -> Result<u64, ConnError> {
        let inner = &self.inner;
        let key = inner.keys.key(to)?;
        inner.forget_clear_dir(&key);
        inner.clear_files_above(to).await?;
        // A send replaces a directory in the way (the contract; the ledger forgets the files
        // under `to` once it is acknowledged). S3 would keep `to/...` beside the new object:
        // clear it first, one exact listing of `to/` (found by the simulation against moto,
        // seed 126: a directory replaced by a file left its files at the destination).
        inner.clear_dir_in_the_way(&key).await?;
        if file.size > 0 && file.size >= inner.cfg.multipart_threshold {
            return crate::multipart::send_multipart(inner, file, &key).await;
        }
        // A small version replaces a big one that was being uploaded: drop its parts.
        let (bucket, key_s) = (inner.bucket().to_string(), key.clone());
        if let Some(rec) = inner.store.run(move |s| s.get(&bucket, &key_s)).await? {
            crate::multipart::abort_upload(inner, &rec.key, &rec.upload_id).await?;
        }
        inner.send_small(file, &key).await
    }

    async fn delete(&self, path: &RelPath) -> Result<(), ConnError> {
        let inner = &self.inner;
        let key = inner.keys.key(path)?;
        let dir = inner.keys.dir_prefix(path)?;
        inner.forget_uploads(&key, &dir).await?;
        let under: Vec<String> = inner
            .list_prefix(&dir)
            .await?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        if !under.is_empty() {
            inner.delete_tree(&dir, &under).await?;
        }
        if inner.exact_size(&key).await?.is_some() {
            inner.delete_key(&key).await?;
        }
        Ok(())
    }

    /// S3 has no directories: a folder is a prefix, or a marker object `dir/` that consoles
    /// and some tools create, and that servers storing keys as paths (s3s-fs) keep as an
    /// empty directory after the last key in it is deleted. The marker is deleted only when
    /// no object is named `dir` itself (a file there: kept, and such servers fail on the
    /// marker of a file) and no other key lies under it (one listing of at most two keys);
    /// deleting a marker never touches another key, so a file written meanwhile stays.
    async fn remove_empty_dir(&self, dir: &RelPath) -> Result<bool, ConnError> {
        let inner = &self.inner;
        if inner.exact_size(&inner.keys.key(dir)?).await?.is_some() {
            return Ok(false);
        }
        let marker = inner.keys.dir_prefix(dir)?;
        let page = inner
            .client
            .list_objects_v2()
            .bucket(inner.bucket())
            .prefix(&marker)
            .max_keys(2)
            .send()
            .await
            .map_err(|e| classify(e, &inner.what("list", &marker)))?;
        if page
            .contents()
            .iter()
            .any(|o| o.key().is_some_and(|k| k != marker))
        {
            return Ok(false);
        }
        inner.delete_key(&marker).await?;
        Ok(true)
    }

    async fn rename(&self, from: &RelPath, to: &RelPath) -> Result<(), ConnError> {
        let inner = &self.inner;
        if from == to {
            return Ok(());
        }
        let from_key = inner.keys.key(from)?;
        let to_key = inner.keys.key(to)?;
        let from_dir = inner.keys.dir_prefix(from)?;
        let to_dir = inner.keys.dir_prefix(to)?;

        let exact = inner.exact_size(&from_key).await?;
        let under = inner.list_prefix(&from_dir).await?;
        let is_dir = !under.is_empty();
        if exact.is_none() && under.is_empty() {
            return Err(ConnError::remote_missing(format!(
                "{}: nothing to rename at {from_key:?}",
                inner.describe
            )));
        }
        // Copy everything first, then delete the sources: if this is interrupted, replaying it
        // copies again whatever source is left and converges, and no source is lost before its
        // copy exists.
        let mut moves: Vec<(String, String, u64)> = Vec::with_capacity(under.len() + 1);
        if let Some(size) = exact {
            moves.push((from_key.clone(), to_key.clone(), size));
        }
        for (k, size) in under {
            let target = format!("{to_dir}{}", &k[from_dir.len()..]);
            if target.len() > crate::config::MAX_KEY_LEN {
                return Err(ConnError::permanent(format!(
                    "{}: renaming {k:?} would make a key over 1024 bytes",
                    inner.describe
                )));
            }
            moves.push((k, target, size));
        }
        // Clear the way, as a local rename would: a file replaces a directory at `to` and a
        // directory replaces a file. Both are replay-safe (nothing here is a source). Keys
        // already under `to/` that the source lacks are kept: after an interrupted move they
        // may be files whose source was already deleted.
        inner.forget_clear_dirs(&to_key);
        inner.clear_files_above(to).await?;
        if !is_dir {
            inner.clear_dir_in_the_way(&to_key).await?;
        } else if exact.is_none() && inner.exact_size(&to_key).await?.is_some() {
            inner.delete_key(&to_key).await?;
        }
        run_bounded(
            inner.cfg.concurrency,
            moves.iter().cloned(),
            |(src, dst, size)| {
                let conn = self.clone();
                async move { conn.inner.copy_key(&src, &dst, size).await }
            },
        )
        .await
        .map_err(|halt| {
            halt.into_error(|e| {
                ConnError::transient(format!("{}: copy task failed: {e}", inner.describe))
            })
        })?;
        inner.forget_uploads(&from_key, &from_dir).await?;
        let sources: Vec<String> = moves
            .iter()
            .filter(|m| m.0 != from_key)
            .map(|m| m.0.clone())
            .collect();
        if is_dir {
            inner.delete_tree(&from_dir, &sources).await?;
        }
        if exact.is_some() {
            inner.delete_key(&from_key).await?;
        }
        Ok(())
    }

    async fn stat(&self, path: &RelPath) -> Result<Option<u64>, ConnError> {
        let inner = &self.inner;
        let key = inner.keys.key(path)?;
        match inner
            .client
            .head_object()
            .bucket(inner.bucket())
            .key(&key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(out.content_length().unwrap_or(0).max(0) as u64)),
            Err(e) => {
                let f = classify(e, &inner.what("stat", &key));
                if f.is_missing_object() {
                    Ok(None)
                } else if f.is_plain_server_error() {
                    // s3s-fs answers 500 for a "directory" key: settle it with a listing,
                    // which fails too if the server really is in trouble.
                    inner.exact_size(&key).await
                } else {
                    Err(f.into())
                }
            }
        }
    }

    /// One HeadObject with checksums requested: the size, then the CRC32C the server holds
    /// (skynet uploads with CRC32C) against the local file's, without a download. A server
    /// that reports no CRC32C for the object gives [`Verification::SizeOnly`]; s3s-fs 0.14
    /// reports it for single PUTs but not for multipart uploads.
    async fn verify(&self, file: &SourceFile, path: &RelPath) -> Result<Verification, ConnError> {
        let inner = &self.inner;
        let key = inner.keys.key(path)?;
        let head = match inner
            .client
            .head_object()
            .bucket(inner.bucket())
            .key(&key)
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => {
                let f = classify(e, &inner.what("verify", &key));
                let absent = if f.is_missing_object() {
                    true
                } else if f.is_plain_server_error() {
                    // s3s-fs answers 500 for a "directory" key: settle it with a listing.
                    inner.exact_size(&key).await?.is_none()
                } else {
                    false
                };
                if absent {
                    return Ok(verify_size(file, path, None));
                }
                return Err(f.into());
            }
        };
        let Some(length) = head.content_length() else {
            return Err(ConnError::transient(format!(
                "{}: no Content-Length in the answer",
                inner.what("verify", &key)
            )));
        };
        let by_size = verify_size(file, path, Some(length.max(0) as u64));
        if !by_size.holds() {
            return Ok(by_size);
        }
        let Some(remote) = head.checksum_crc32_c() else {
            return Ok(Verification::SizeOnly);
        };
        let verdict = inner.compare_crc32c(file, path, remote).await?;
        // A whole-object checksum on an object assembled from parts, without the
        // FULL_OBJECT type that S3 reports for such: s3s-fs keeps the checksum of an earlier
        // single PUT of the key after a multipart upload replaces it. Still no pass (the
        // checksum cannot be trusted either way), but say why.
        let multipart_etag = head
            .e_tag()
            .map(|t| t.trim_matches('"'))
            .and_then(|t| t.rsplit_once('-'))
            .is_some_and(|(_, n)| n.parse::<u64>().is_ok());
        let full_object_type = head.checksum_type() == Some(&ChecksumType::FullObject);
        Ok(match verdict {
            Verification::Mismatch(why)
                if multipart_etag
                    && !full_object_type
                    && crate::checksum::composite_parts(remote).is_none() =>
            {
                Verification::Mismatch(format!(
                    "{why}; the server reports a whole-object checksum for a multipart \
                     object, which may be stale"
                ))
            }
            other => other,
        })
    }

    async fn read(&self, path: &RelPath) -> Result<Vec<u8>, ConnError> {
        let inner = &self.inner;
        let (key, out) = self.get(path).await?;
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| inner.body_lost(&key, e))?;
        Ok(body.into_bytes().to_vec())
    }

    /// Streamed, a chunk at a time, into `out`.
    async fn download(&self, path: &RelPath, out: &mut std::fs::File) -> Result<u64, ConnError> {
        use std::io::Write;
        let inner = &self.inner;
        let (key, mut got) = self.get(path).await?;
        let mut n = 0u64;
        while let Some(chunk) = got.body.next().await {
            let chunk = chunk.map_err(|e| inner.body_lost(&key, e))?;
            out.write_all(&chunk)
                .map_err(|e| ConnError::from_io("the local copy", &e))?;
            n += chunk.len() as u64;
        }
        Ok(n)
    }

    async fn list(&self) -> Result<Vec<RemoteEntry>, ConnError> {
        let inner = &self.inner;
        let mut out = Vec::new();
        for (key, size) in inner.list_prefix(inner.keys.root()).await? {
            match inner.keys.rel(&key) {
                Some(path) => out.push(RemoteEntry { path, size }),
                None => tracing::debug!(key, "key is not a file path; not listed"),
            }
        }
        Ok(out)
    }
}
