//! Multipart uploads: how big files are sent (see [`crate::copy`] for big server-side copies).
//!
//! An upload is recorded in the resume table as soon as it is created and each part as soon
//! as the server acknowledges it, so a send interrupted by a lost link, a crash or a restart
//! continues with the parts still missing: the server's ListParts confirms what it holds,
//! and only an unchanged local file (same size and mtime) may continue an upload. Uploads that
//! can no longer complete (file changed, replaced by a small PUT, path deleted) are aborted so
//! that no orphaned parts pile up on the server.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use skynet_core::clock::mtime_ns;
use skynet_core::{ConnError, ErrorKind, SourceFile};

use crate::bounded::{run_bounded, Halt};
use crate::client::{mtime_text, S3Client, MTIME_METADATA};
use crate::config::{MAX_PARTS, MAX_SINGLE_OBJECT, MIB, MIN_PART_SIZE};
use crate::errors::classify;
use crate::resume_store::{PartRecord, UploadRecord};

/// The part size for a file of `size` bytes: the preferred size, raised (to whole MiB) when
/// 10,000 parts of it would not hold the file, and never under S3's 5 MiB minimum. With the
/// 5 GiB part maximum this covers every object up to S3's 5 TiB limit.
pub fn part_size_for(size: u64, preferred: u64) -> u64 {
    let needed = size.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB;
    preferred
        .max(needed)
        .clamp(MIN_PART_SIZE, MAX_SINGLE_OBJECT)
}

/// How many parts of `part_size` make `size` bytes.
pub(crate) fn part_count(size: u64, part_size: u64) -> u64 {
    size.div_ceil(part_size).max(1)
}

/// Offset and length of part `n` (1-based).
pub(crate) fn part_range(n: u64, size: u64, part_size: u64) -> (u64, u64) {
    let offset = (n - 1) * part_size;
    (offset, part_size.min(size - offset))
}

/// Aborts without reporting failure: used when another error is already being returned.
pub(crate) async fn abort_quietly(inner: &S3Client, key: &str, upload_id: &str) {
    if let Err(e) = inner.abort_upload(key, upload_id).await {
        tracing::warn!("{e}");
    }
}

/// What the server holds of an upload: part number to (size, ETag, CRC32C).
type ServerParts = HashMap<i32, (u64, Option<String>, Option<String>)>;

async fn server_parts(
    inner: &S3Client,
    key: &str,
    upload_id: &str,
) -> Result<Option<ServerParts>, ConnError> {
    let mut out = ServerParts::new();
    let mut marker: Option<String> = None;
    loop {
        let res = inner
            .sdk()
            .list_parts()
            .bucket(inner.bucket())
            .key(key)
            .upload_id(upload_id)
            .set_part_number_marker(marker.take())
            .send()
            .await;
        let page = match res {
            Ok(p) => p,
            Err(e) => {
                let f = classify(e, &inner.what("list parts of", key));
                if f.is_missing_upload() {
                    return Ok(None);
                }
                return Err(f.into());
            }
        };
        for p in page.parts() {
            if let Some(n) = p.part_number() {
                let size = p.size().unwrap_or(0).max(0) as u64;
                out.insert(
                    n,
                    (
                        size,
                        p.e_tag().map(str::to_string),
                        p.checksum_crc32_c().map(str::to_string),
                    ),
                );
            }
        }
        match page.next_part_number_marker() {
            Some(next) if page.is_truncated() == Some(true) => marker = Some(next.to_string()),
            _ => break,
        }
    }
    Ok(Some(out))
}

/// An upload ready to receive parts: its id, part size and the parts already on the server.
struct Upload {
    id: String,
    part_size: u64,
    done: Vec<PartRecord>,
}

/// Finds the recorded upload of `key` and keeps it if the local file is the same version and
/// the server still has it; aborts it otherwise.
async fn resumable(
    inner: &S3Client,
    file: &SourceFile,
    key: &str,
) -> Result<Option<Upload>, ConnError> {
    let (bucket, key_s) = (inner.bucket().to_string(), key.to_string());
    let Some(rec) = inner.store().run(move |s| s.get(&bucket, &key_s)).await? else {
        return Ok(None);
    };
    let same_file = rec.size == file.size
        && rec.mtime_ns == mtime_ns(file.mtime)
        && rec.local_path == file.path
        && rec.part_size >= MIN_PART_SIZE
        && part_count(file.size, rec.part_size) <= MAX_PARTS;
    if !same_file {
        tracing::info!(
            key,
            "local file changed since its upload started; starting over"
        );
        inner.abort_upload(key, &rec.upload_id).await?;
        return Ok(None);
    }
    let Some(on_server) = server_parts(inner, key, &rec.upload_id).await? else {
        let id = rec.upload_id.clone();
        inner.store().run(move |s| s.remove(&id)).await?;
        return Ok(None);
    };
    if on_server.is_empty() {
        // Nothing to resume. Also what some servers list for an upload id they no longer
        // have (one completed or aborted by a process killed before it dropped its record),
        // whose parts they then refuse: start over. The abort fails there too, so the record
        // goes whatever the abort's result.
        abort_quietly(inner, key, &rec.upload_id).await;
        let id = rec.upload_id.clone();
        inner.store().run(move |s| s.remove(&id)).await?;
        return Ok(None);
    }
    let id = rec.upload_id.clone();
    let stored: HashMap<i32, PartRecord> = inner
        .store()
        .run(move |s| s.parts(&id))
        .await?
        .into_iter()
        .map(|p| (p.part_number, p))
        .collect();
    let mut done = Vec::new();
    for n in 1..=part_count(file.size, rec.part_size) {
        let (_, len) = part_range(n, file.size, rec.part_size);
        let number = n as i32;
        let Some((size, etag, crc)) = on_server.get(&number) else {
            continue;
        };
        if *size != len {
            continue;
        }
        match stored.get(&number) {
            Some(p) if p.size == len => done.push(p.clone()),
            _ => {
                // Acknowledged by the server but not recorded (interrupted in between):
                // usable when the server reports its ETag.
                if let Some(etag) = etag {
                    done.push(PartRecord {
                        part_number: number,
                        size: len,
                        etag: etag.clone(),
                        checksum_crc32c: crc.clone(),
                    });
                }
            }
        }
    }
    tracing::info!(key, parts = done.len(), "resuming multipart upload");
    Ok(Some(Upload {
        id: rec.upload_id,
        part_size: rec.part_size,
        done,
    }))
}

async fn create_upload(
    inner: &Arc<S3Client>,
    file: &SourceFile,
    key: &str,
) -> Result<Upload, ConnError> {
    let part_size = part_size_for(file.size, inner.cfg().part_size);
    announce(inner, key).await?;
    let out = inner
        .sdk()
        .create_multipart_upload()
        .bucket(inner.bucket())
        .key(key)
        .checksum_algorithm(ChecksumAlgorithm::Crc32C)
        .metadata(MTIME_METADATA, mtime_text(file.mtime))
        .customize()
        .config_override(single_attempt())
        .send()
        .await
        .map_err(|e| classify(e, &inner.what("create upload of", key)))?;
    let Some(id) = out.upload_id().map(str::to_string) else {
        return Err(ConnError::transient(format!(
            "{}: the server returned no upload id",
            inner.what("create upload of", key)
        )));
    };
    inner.add_live(&id);
    let rec = UploadRecord {
        bucket: inner.bucket().to_string(),
        key: key.to_string(),
        upload_id: id.clone(),
        local_path: file.path.clone(),
        size: file.size,
        mtime_ns: mtime_ns(file.mtime),
        part_size,
    };
    inner.store().run(move |s| s.insert(&rec)).await?;
    Ok(Upload {
        id,
        part_size,
        done: Vec::new(),
    })
}

/// Notes in the resume table that an upload of `key` is being created, so that an upload the
/// server makes but skynet never records (the run killed, the answer lost) can be found and
/// aborted later (see [`crate::abandoned`]). An earlier announcement of `key` still there is
/// settled first: this one replaces it.
pub(crate) async fn announce(inner: &S3Client, key: &str) -> Result<(), ConnError> {
    inner.settle_earlier_creation(key).await?;
    let (bucket, key) = (inner.bucket().to_string(), key.to_string());
    inner.store().run(move |s| s.announce(&bucket, &key)).await
}

/// Config for CreateMultipartUpload: one attempt, no retry by the SDK. A retried creation
/// whose first answer was lost leaves an upload nobody will ever record, and the second
/// creation, recorded, would clear the announcement that lets skynet find the first. Failed
/// here, the send fails, the announcement stays, and skynet's own retry settles it (see
/// [`announce`]).
pub(crate) fn single_attempt() -> aws_sdk_s3::config::Builder {
    aws_sdk_s3::config::Builder::new().retry_config(RetryConfig::disabled())
}

/// The failure of one part, and whether it showed that the upload is gone on the server.
struct PartError {
    err: ConnError,
    upload_gone: bool,
    /// The server answered AccessDenied (some servers' answer for an unknown upload id).
    denied: bool,
}

/// Everything one part task needs, owned, so it can run as its own task.
#[derive(Clone)]
struct PartJob {
    inner: Arc<S3Client>,
    key: String,
    upload_id: String,
    /// The local file, read through [`SourceFile::open`] (never a link, a FIFO or a file
    /// swapped in since the stat).
    file: SourceFile,
}

impl PartJob {
    async fn upload(self, number: i32, offset: u64, len: u64) -> Result<PartRecord, PartError> {
        let plain = |err| PartError {
            err,
            upload_gone: false,
            denied: false,
        };
        let file = self.file.clone();
        let (data, crc32c) = tokio::task::spawn_blocking(move || {
            read_range(&file, offset, len).map(|d| {
                let crc = crate::checksum::crc32c_of(&d);
                (d, crc)
            })
        })
        .await
        .map_err(|e| plain(ConnError::transient(format!("read task failed: {e}"))))?
        .map_err(plain)?;
        let what = self
            .inner
            .what(&format!("upload part {number} of"), &self.key);
        let out = self
            .inner
            .sdk()
            .upload_part()
            .bucket(self.inner.bucket())
            .key(&self.key)
            .upload_id(&self.upload_id)
            .part_number(number)
            .content_length(len as i64)
            .checksum_algorithm(ChecksumAlgorithm::Crc32C)
            .checksum_crc32_c(&crc32c)
            .body(ByteStream::from(data))
            .send()
            .await
            .map_err(|e| {
                let f = classify(e, &what);
                let upload_gone = f.names_upload_unknown();
                let denied = f.is_access_denied();
                PartError {
                    err: f.into(),
                    upload_gone,
                    denied,
                }
            })?;
        let Some(etag) = out.e_tag() else {
            return Err(plain(ConnError::transient(format!(
                "{what}: no ETag in the answer"
            ))));
        };
        let part = PartRecord {
            part_number: number,
            size: len,
            etag: etag.to_string(),
            // The server's echo where it gives one (S3 does), else the value it accepted.
            checksum_crc32c: Some(out.checksum_crc32_c().map_or(crc32c, str::to_string)),
        };
        let (id, rec) = (self.upload_id.clone(), part.clone());
        self.inner
            .store()
            .run(move |s| s.record_part(&id, &rec))
            .await
            .map_err(plain)?;
        Ok(part)
    }
}

/// True when the local file is gone: the handler then settles the send as vanished, so no
/// retry will ever resume this upload.
fn local_gone(path: &std::path::Path) -> bool {
    use std::io::ErrorKind as K;
    matches!(std::fs::symlink_metadata(path), Err(e) if matches!(e.kind(), K::NotFound | K::NotADirectory))
}

/// Reads `len` bytes at `offset`; a short read means the file shrank while being sent.
fn read_range(source: &SourceFile, offset: u64, len: u64) -> Result<Vec<u8>, ConnError> {
    let path = &source.path;
    let file = source.open()?;
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, offset).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            ConnError::transient(format!(
                "{}: changed while being sent; will send again",
                path.display()
            ))
        } else {
            ConnError::from_io(path.display(), &e)
        }
    })?;
    Ok(buf)
}

/// Sends `file` to `key` as a multipart upload, resuming a recorded one when possible.
/// Returns the bytes uploaded by this call (less than the size when parts were already there).
pub(crate) async fn send_multipart(
    inner: &Arc<S3Client>,
    file: &SourceFile,
    key: &str,
) -> Result<u64, ConnError> {
    // A "directory" in the way: for a big file one listing is cheap, and servers that store
    // keys as file paths could not complete the upload over it.
    inner.clear_dir_in_the_way(key).await?;
    let resumable = resumable(inner, file, key).await?;
    // Some servers answer AccessDenied, not NoSuchUpload, for an upload id they no longer
    // have (one completed or aborted by a process killed before it could drop its record):
    // for a resumed upload, that too means "gone, start over". A fresh upload refused the
    // same way is a real refusal.
    let resumed = resumable.is_some();
    let upload = match resumable {
        Some(u) => {
            inner.add_live(&u.id);
            u
        }
        None => create_upload(inner, file, key).await?,
    };
    let _live = inner.live_guard(&upload.id);
    let Upload {
        id,
        part_size,
        mut done,
    } = upload;

    let have: std::collections::HashSet<i32> = done.iter().map(|p| p.part_number).collect();
    let todo: Vec<u64> = (1..=part_count(file.size, part_size))
        .filter(|n| !have.contains(&(*n as i32)))
        .collect();
    let job = PartJob {
        inner: Arc::clone(inner),
        key: key.to_string(),
        upload_id: id.clone(),
        file: file.clone(),
    };
    let uploaded = run_bounded(inner.cfg().concurrency, todo, |n| {
        let (offset, len) = part_range(n, file.size, part_size);
        job.clone().upload(n as i32, offset, len)
    })
    .await;
    let sent = match uploaded {
        Ok(parts) => {
            let sent = parts.iter().map(|p| p.size).sum();
            done.extend(parts);
            sent
        }
        Err(Halt::Failed(PartError {
            err,
            upload_gone,
            denied,
        })) => {
            // The other parts were aborted as `run_bounded` returned.
            if upload_gone || (resumed && denied) {
                let id = id.clone();
                inner.store().run(move |s| s.remove(&id)).await?;
                return Err(ConnError::transient(format!(
                    "{}; the upload is gone, starting over",
                    err.message
                )));
            } else if err.kind == ErrorKind::Permanent || local_gone(&file.path) {
                abort_quietly(inner, key, &id).await;
            }
            // Otherwise the upload stays recorded and the retry resumes it.
            return Err(err);
        }
        Err(Halt::Panicked(e)) => {
            return Err(ConnError::transient(format!(
                "{}: part task failed: {e}",
                inner.what("upload", key)
            )))
        }
    };

    // The parts hold one version of the file only if it did not change while they were read.
    let src = file.clone();
    let unchanged = tokio::task::spawn_blocking(move || src.check_unchanged())
        .await
        .map_err(|e| ConnError::transient(format!("stat task failed: {e}")))?;
    if let Err(e) = unchanged {
        abort_quietly(inner, key, &id).await;
        return Err(e);
    }

    done.sort_by_key(|p| p.part_number);
    let parts: Vec<CompletedPart> = done
        .iter()
        .map(|p| {
            CompletedPart::builder()
                .part_number(p.part_number)
                .e_tag(&p.etag)
                .set_checksum_crc32_c(p.checksum_crc32c.clone())
                .build()
        })
        .collect();
    let res = inner
        .sdk()
        .complete_multipart_upload()
        .bucket(inner.bucket())
        .key(key)
        .upload_id(&id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await;
    if let Err(e) = res {
        let f = classify(e, &inner.what("complete upload of", key));
        if f.is_completion_hopeless(resumed) {
            // Start over on the next try rather than fail the same way forever. The record
            // goes even when the abort fails (some servers refuse to abort an id they no
            // longer have, e.g. one a killed run completed): kept, it would be resumed forever.
            abort_quietly(inner, key, &id).await;
            let gone = id.clone();
            inner.store().run(move |s| s.remove(&gone)).await?;
            return Err(ConnError::transient(format!(
                "{}; starting the upload over",
                f.message
            )));
        }
        return Err(f.into());
    }
    let done_id = id.clone();
    inner.store().run(move |s| s.remove(&done_id)).await?;
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_sizes_fit_s3_limits() {
        assert_eq!(part_size_for(64 * MIB, 8 * MIB), 8 * MIB);
        assert_eq!(part_size_for(64 * MIB, MIB), MIN_PART_SIZE);
        let five_tib = 5 * 1024 * 1024 * MIB;
        let ps = part_size_for(five_tib, 8 * MIB);
        assert!(part_count(five_tib, ps) <= MAX_PARTS, "{ps}");
        assert!(ps <= MAX_SINGLE_OBJECT && ps.is_multiple_of(MIB));
        assert_eq!(part_range(3, 20, 8), (16, 4));
        assert_eq!(part_count(16, 8), 2);
    }
}
