//! Server-side copies, the first half of a rename (copy everything, then delete the sources).
//!
//! One CopyObject up to the copy threshold; above it (and necessarily above 5 GiB, S3's limit
//! for CopyObject) a multipart copy by UploadPartCopy ranges. A multipart copy is recorded in
//! the resume store like an upload, with no local file, so that a crash in the middle leaves
//! no parts behind: the next `connect` sees a "changed" file and aborts it. Its creation is
//! announced first, like an upload's (see [`crate::abandoned`]).

use std::path::PathBuf;

use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use skynet_core::ConnError;

use crate::bounded::run_bounded;
use crate::client::S3Client;
use crate::errors::{classify, copy_error};
use crate::keys::encode_copy_source;
use crate::multipart::{
    abort_quietly, announce, part_count, part_range, part_size_for, single_attempt,
};
use crate::resume_store::UploadRecord;

/// Server-side copy of `from` (of `size` bytes) onto `to`, keeping its metadata. A missing
/// source is [`ConnError::remote_missing`] (the rename's source is gone).
pub(crate) async fn copy_object(
    inner: &S3Client,
    from: &str,
    to: &str,
    size: u64,
) -> Result<(), ConnError> {
    if size > inner.cfg().copy_threshold {
        return copy_multipart(inner, from, to, size).await;
    }
    inner
        .sdk()
        .copy_object()
        .bucket(inner.bucket())
        .copy_source(encode_copy_source(inner.bucket(), from))
        .key(to)
        .send()
        .await
        .map_err(|e| copy_error(classify(e, &inner.what("copy", from))))?;
    Ok(())
}

/// Server-side copy of an object too big for CopyObject, by UploadPartCopy ranges.
async fn copy_multipart(
    inner: &S3Client,
    from: &str,
    to: &str,
    size: u64,
) -> Result<(), ConnError> {
    let head = inner
        .sdk()
        .head_object()
        .bucket(inner.bucket())
        .key(from)
        .send()
        .await
        .map_err(|e| {
            let f = classify(e, &inner.what("copy", from));
            if f.is_not_found() {
                ConnError::remote_missing(f.message)
            } else {
                f.into()
            }
        })?;
    announce(inner, to).await?;
    let out = inner
        .sdk()
        .create_multipart_upload()
        .bucket(inner.bucket())
        .key(to)
        .set_metadata(head.metadata().cloned())
        .set_content_type(head.content_type().map(str::to_string))
        .customize()
        .config_override(single_attempt())
        .send()
        .await
        .map_err(|e| classify(e, &inner.what("create copy upload of", to)))?;
    let Some(id) = out.upload_id().map(str::to_string) else {
        return Err(ConnError::transient(format!(
            "{}: the server returned no upload id",
            inner.what("copy", to)
        )));
    };
    // Recorded with no local file, so that a crash mid-copy leaves nothing behind:
    // the next connect() finds the file "changed" and aborts the upload.
    let rec = UploadRecord {
        bucket: inner.bucket().to_string(),
        key: to.to_string(),
        upload_id: id.clone(),
        local_path: PathBuf::new(),
        size,
        mtime_ns: i64::MIN,
        part_size: 0,
    };
    inner.store().run(move |s| s.insert(&rec)).await?;
    match copy_parts(inner, from, to, &id, size).await {
        Ok(()) => {
            let done_id = id.clone();
            inner.store().run(move |s| s.remove(&done_id)).await
        }
        Err(e) => {
            abort_quietly(inner, to, &id).await;
            Err(e)
        }
    }
}

async fn copy_parts(
    inner: &S3Client,
    from: &str,
    to: &str,
    id: &str,
    size: u64,
) -> Result<(), ConnError> {
    let part_size = part_size_for(size, inner.cfg().copy_part_size);
    let source = encode_copy_source(inner.bucket(), from);
    let copies = run_bounded(
        inner.cfg().concurrency,
        1..=part_count(size, part_size),
        |n| {
            let (offset, len) = part_range(n, size, part_size);
            let client: Client = inner.sdk().clone();
            let (bucket, key, id, source) = (
                inner.bucket().to_string(),
                to.to_string(),
                id.to_string(),
                source.clone(),
            );
            let what = inner.what(&format!("copy part {n} to"), to);
            async move {
                let out = client
                    .upload_part_copy()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(id)
                    .part_number(n as i32)
                    .copy_source(source)
                    .copy_source_range(format!("bytes={offset}-{}", offset + len - 1))
                    .send()
                    .await
                    .map_err(|e| {
                        let f = classify(e, &what);
                        if f.is_no_such_key() {
                            ConnError::remote_missing(f.message)
                        } else {
                            f.into()
                        }
                    })?;
                let result = out.copy_part_result();
                let etag = result.and_then(|r| r.e_tag()).ok_or_else(|| {
                    ConnError::transient(format!("{what}: no ETag in the answer"))
                })?;
                Ok(CompletedPart::builder()
                    .part_number(n as i32)
                    .e_tag(etag)
                    .set_checksum_crc32_c(
                        result
                            .and_then(|r| r.checksum_crc32_c())
                            .map(str::to_string),
                    )
                    .build())
            }
        },
    )
    .await;
    let mut parts = copies.map_err(|halt| {
        halt.into_error(|e| ConnError::transient(format!("copy task failed: {e}")))
    })?;
    parts.sort_by_key(|p| p.part_number());
    inner
        .sdk()
        .complete_multipart_upload()
        .bucket(inner.bucket())
        .key(to)
        .upload_id(id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .map_err(|e| classify(e, &inner.what("complete copy to", to)))?;
    Ok(())
}
