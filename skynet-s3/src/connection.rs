//! `S3Connection`: the [`Connection`] trait over aws-sdk-s3.
//!
//! One SDK client (and so one connection pool, held by [`crate::client`]) serves every call;
//! it runs on the caller's tokio runtime, never on a runtime of its own. Sends of small files are one PutObject from
//! memory (read first, checked unchanged, then sent, so a half-rewritten file is never
//! published); big files go through [`crate::multipart`], which resumes after interruptions.
//! "Directories" are key prefixes: deleting or renaming one acts on every key under
//! `prefix/dir/`, never on keys that merely start with the same characters.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumMode, ChecksumType};
use aws_sdk_s3::Client;
use skynet_core::connection::verify_size;
use skynet_core::{
    ConnError, Connection, ErrorKind, RelPath, RemoteEntry, SourceFile, Verification,
};

use crate::bounded::run_bounded;
use crate::client::{mtime_text, S3Client, MTIME_METADATA};
use crate::config::{S3Config, S3ConfigError};
use crate::copy::copy_object;
use crate::errors::{classify, one_line};

/// A destination in an S3 bucket (or an S3-compatible server).
#[derive(Clone)]
pub struct S3Connection {
    inner: Arc<S3Client>,
}

impl S3Connection {
    /// Builds the client from `cfg` and the AWS chain (environment, profile files, web
    /// identity, instance metadata) and opens the multipart table in `cfg.state_db`.
    /// Async because the AWS chain may read files; it sends no request: [`Connection::connect`]
    /// checks the bucket and credentials.
    pub async fn new(cfg: S3Config) -> Result<Self, S3ConfigError> {
        Ok(S3Connection {
            inner: Arc::new(S3Client::build(cfg).await?),
        })
    }

    /// GET of the object at `path`, for `read` and `download`: its key and the answer.
    async fn get(
        &self,
        path: &RelPath,
    ) -> Result<(String, aws_sdk_s3::operation::get_object::GetObjectOutput), ConnError> {
        let inner = &self.inner;
        let key = inner.keys().key(path)?;
        let out = inner
            .sdk()
            .get_object()
            .bucket(inner.bucket())
            .key(&key)
            .send()
            .await
            .map_err(|e| {
                let f = classify(e, &inner.what("get", &key));
                if f.is_plain_server_error() {
                    // A "directory" on a server that stores keys as file paths: there is
                    // no file to read.
                    ConnError::remote_missing(f.message)
                } else {
                    f.into()
                }
            })?;
        Ok((key, out))
    }

    /// Shorthand for [`S3Config::from_url`] then [`S3Connection::new`].
    pub async fn from_url(url: &str) -> Result<Self, S3ConfigError> {
        Self::new(S3Config::from_url(url)?).await
    }

    pub fn config(&self) -> &S3Config {
        self.inner.cfg()
    }

    /// The SDK client, for callers (tests) that need a request this type does not offer.
    pub fn client(&self) -> &Client {
        self.inner.sdk()
    }
}

impl S3Client {
    /// A GET whose body broke off half way: the link went, the read starts over.
    fn body_lost(&self, key: &str, e: impl std::fmt::Display) -> ConnError {
        ConnError::connection_lost(one_line(&format!("{}: {e}", self.what("get", key))))
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
            .store()
            .run(move |s| {
                let mut all = s.list(&bucket, &dir_s)?;
                all.extend(s.get(&bucket, &key_s)?);
                Ok(all)
            })
            .await?;
        for rec in records {
            self.abort_upload(&rec.key, &rec.upload_id).await?;
        }
        Ok(())
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
        .map_err(|e| {
            ConnError::transient(format!("{}: read task failed: {e}", self.describe()))
        })??;
        let len = data.len() as u64;
        let crc32c = crate::checksum::crc32c_of(&data);
        let data = aws_sdk_s3::primitives::SdkBody::from(data);
        let put = |body: ByteStream| {
            self.sdk()
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
            // A "directory" in the way makes servers that store keys as file paths fail
            // with a bare 500: clear it and try once more, as the contract says a send
            // replaces a directory. Real S3 never needs this (keys are independent).
            if !f.is_plain_server_error() || !self.clear_dir_in_the_way(key).await? {
                // Such servers also keep the folder a deleted key was the last one in: an
                // empty "directory" in the way, which only its marker's deletion removes
                // (found by the simulation, tests/sim_backends.rs). Elsewhere, a no-op.
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

impl S3Client {
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
                let mut sizes: Vec<u64> = [self.cfg().part_size, self.cfg().copy_part_size]
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
        .map_err(|e| ConnError::transient(format!("{}: hash task failed: {e}", self.describe())))?
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

#[async_trait]
impl Connection for S3Connection {
    fn describe(&self) -> String {
        self.inner.describe().to_string()
    }

    async fn connect(&self) -> Result<(), ConnError> {
        let inner = &self.inner;
        let bucket = inner.bucket();
        let setup = |why: String| {
            ConnError::setup(one_line(&format!(
                "{}: cannot use bucket {bucket:?} at {}: {why}",
                inner.describe(),
                inner.target()
            )))
        };
        let Some(provider) = &inner.credentials() else {
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
            .sdk()
            .list_objects_v2()
            .bucket(bucket)
            .prefix(inner.keys().root())
            .max_keys(1)
            .send()
            .await;
        if let Err(e) = probe {
            let f = classify(e, &inner.what("list", inner.keys().root()));
            return Err(match f.kind {
                ErrorKind::ConnectionLost | ErrorKind::Transient => f.into(),
                _ => setup(f.refusal()),
            });
        }
        inner.clean_stale_uploads().await
    }

    async fn send(&self, file: &SourceFile, to: &RelPath) -> Result<u64, ConnError> {
        let inner = &self.inner;
        let key = inner.keys().key(to)?;
        inner.forget_clear_dir(&key);
        inner.clear_files_above(to).await?;
        // A send replaces a directory in the way (the contract; the ledger forgets the files
        // under `to` once it is acknowledged). S3 would keep `to/...` beside the new object:
        // clear it first, one exact listing of `to/` (found by the simulation against real
        // servers, tests/sim_backends.rs: a directory replaced by a file left its files).
        inner.clear_dir_in_the_way(&key).await?;
        if file.size > 0 && file.size >= inner.cfg().multipart_threshold {
            return crate::multipart::send_multipart(inner, file, &key).await;
        }
        // A small version replaces a big one that was being uploaded: drop its parts.
        let (bucket, key_s) = (inner.bucket().to_string(), key.clone());
        if let Some(rec) = inner.store().run(move |s| s.get(&bucket, &key_s)).await? {
            inner.abort_upload(&rec.key, &rec.upload_id).await?;
        }
        inner.send_small(file, &key).await
    }

    async fn delete(&self, path: &RelPath) -> Result<(), ConnError> {
        let inner = &self.inner;
        let key = inner.keys().key(path)?;
        let dir = inner.keys().dir_prefix(path)?;
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
    /// and some tools create, and that servers storing keys as file paths keep as an
    /// empty directory after the last key in it is deleted. The marker is deleted only when
    /// no object is named `dir` itself (a file there: kept, and such servers fail on the
    /// marker of a file) and no other key lies under it (one listing of at most two keys);
    /// deleting a marker never touches another key, so a file written meanwhile stays.
    async fn remove_empty_dir(&self, dir: &RelPath) -> Result<bool, ConnError> {
        let inner = &self.inner;
        if inner.exact_size(&inner.keys().key(dir)?).await?.is_some() {
            return Ok(false);
        }
        let marker = inner.keys().dir_prefix(dir)?;
        let page = inner
            .sdk()
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
        let from_key = inner.keys().key(from)?;
        let to_key = inner.keys().key(to)?;
        let from_dir = inner.keys().dir_prefix(from)?;
        let to_dir = inner.keys().dir_prefix(to)?;

        let exact = inner.exact_size(&from_key).await?;
        let under = inner.list_prefix(&from_dir).await?;
        let is_dir = !under.is_empty();
        if exact.is_none() && under.is_empty() {
            return Err(ConnError::remote_missing(format!(
                "{}: nothing to rename at {from_key:?}",
                inner.describe()
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
                    inner.describe()
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
            inner.cfg().concurrency,
            moves.iter().cloned(),
            |(src, dst, size)| {
                let conn = self.clone();
                async move { copy_object(&conn.inner, &src, &dst, size).await }
            },
        )
        .await
        .map_err(|halt| {
            halt.into_error(|e| {
                ConnError::transient(format!("{}: copy task failed: {e}", inner.describe()))
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
        let key = inner.keys().key(path)?;
        match inner
            .sdk()
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
                    // Servers that store keys as file paths answer 500 for a "directory"
                    // key: settle it with a listing, which fails too if the server really is
                    // in trouble.
                    inner.exact_size(&key).await
                } else {
                    Err(f.into())
                }
            }
        }
    }

    /// One HeadObject with checksums requested: the size, then the CRC32C the server holds
    /// (skynet uploads with CRC32C) against the local file's, without a download. A server
    /// that reports no CRC32C for the object gives [`Verification::SizeOnly`] (some
    /// S3-compatible servers keep none for multipart uploads).
    async fn verify(&self, file: &SourceFile, path: &RelPath) -> Result<Verification, ConnError> {
        let inner = &self.inner;
        let key = inner.keys().key(path)?;
        let head = match inner
            .sdk()
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
                    // A "directory" key on a server storing keys as file paths: settle it
                    // with a listing.
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
        // FULL_OBJECT type that S3 reports for such: some S3-compatible servers keep the
        // checksum of an earlier single PUT of the key after a multipart upload replaces it.
        // Still no pass (the checksum cannot be trusted either way), but say why.
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
        for (key, size) in inner.list_prefix(inner.keys().root()).await? {
            match inner.keys().rel(&key) {
                Some(path) => out.push(RemoteEntry { path, size }),
                None => tracing::debug!(key, "key is not a file path; not listed"),
            }
        }
        Ok(out)
    }
}
