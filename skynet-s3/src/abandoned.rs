//! Multipart uploads skynet left behind, and which of them it may abort.
//!
//! S3 keeps (and bills) the parts of an upload until it is completed or aborted, so uploads
//! skynet can no longer finish must be aborted. But a bucket is shared: other tools and other
//! skynet hosts may have uploads in progress, even under skynet's prefix and at skynet's keys,
//! and aborting one destroys their work. So skynet aborts only uploads it can show are its own:
//!
//! - **Recorded** ones: the resume table holds their ids. Aborted when their local file
//!   changed or vanished (here, at connect), or when their path is deleted, moved or sent
//!   afresh (elsewhere: every other abort in this crate names a recorded id, or the id of an
//!   upload the same call has just created).
//! - **Announced** ones: an announcement says a creation of key K began and its upload was
//!   never recorded (the run was killed, or the answer was lost). Its id is unknown, so the
//!   server's uploads of exactly K are listed, and of those not recorded and not running in this
//!   process, skynet aborts only the ones that **hold no part**: skynet sends parts only to an
//!   upload it has recorded (the record is written before the first part, see
//!   [`crate::multipart`]), so an unrecorded upload with parts is someone else's.
//!
//! Uploads of keys skynet did not announce are never touched, whoever made them.
//!
//! Why not also compare times. ListMultipartUploads gives each upload's `Initiated` time, and
//! "initiated no earlier than the announcement, less a margin for clock skew" would exclude
//! others' uploads of K begun before skynet's creation. It is not sound enough to rely on:
//! it compares the server's clock with this machine's (a skew beyond the margin leaves
//! skynet's own upload open, forever), and S3-compatible servers may report meaningless times
//! (one fixed date for every upload, say), where skynet could never abort its own.
//! And it adds little: the parts rule already spares every upload someone is writing to,
//! whenever it began, on any clock. What is left is another writer's upload of the very key
//! skynet was creating, with no part finished yet when skynet lists it: two writers racing
//! for one object, where the other loses at most the part in flight (its next request fails
//! with NoSuchUpload and it can start over).
//!
//! Where the server cannot list uploads (not every S3-compatible server implements
//! ListMultipartUploads), an announced upload cannot be found: skynet
//! warns, naming the key, and a bucket lifecycle rule (AbortIncompleteMultipartUpload) is the
//! remedy.

use aws_sdk_s3::error::SdkError;
use skynet_core::{ConnError, ErrorKind, SourceFile};

use skynet_core::clock::mtime_ns;

use crate::client::S3Client;
use crate::errors::classify;

/// Whether the server answered a listing of uploads.
enum Listing {
    Listed,
    /// The server does not implement ListMultipartUploads, or refuses it to these credentials.
    Unsupported,
}

impl S3Client {
    /// At connect: aborts the recorded uploads that can no longer be resumed (their local file
    /// changed or vanished), then deals with the creations earlier runs announced and never
    /// recorded. Uploads this process is running are left alone.
    pub(crate) async fn clean_stale_uploads(&self) -> Result<(), ConnError> {
        let (bucket, root) = (self.bucket().to_string(), self.keys().root().to_string());
        let records = self.store().run(move |s| s.list(&bucket, &root)).await?;
        let live = self.live_ids();
        for rec in records {
            if live.contains(&rec.upload_id) {
                continue;
            }
            let path = rec.local_path.clone();
            let current = tokio::task::spawn_blocking(move || SourceFile::stat(&path).ok())
                .await
                .ok()
                .flatten();
            let still_matches =
                current.is_some_and(|f| f.size == rec.size && mtime_ns(f.mtime) == rec.mtime_ns);
            if !still_matches {
                tracing::info!(key = %rec.key, "aborting a multipart upload whose file changed");
                self.abort_upload(&rec.key, &rec.upload_id).await?;
            }
        }

        let (bucket, root, before) = (
            self.bucket().to_string(),
            self.keys().root().to_string(),
            self.opened_at(),
        );
        let intents = self
            .store()
            .run(move |s| s.intents(&bucket, &root, before))
            .await?;
        let mut can_list = true;
        for (key, started) in intents {
            if can_list {
                can_list = matches!(self.abort_unrecorded(&key).await?, Listing::Listed);
            }
            if !can_list {
                warn_cannot_list(&key);
            }
            // Settled only now: a start-up cut short (connection lost) looks again.
            let bucket = self.bucket().to_string();
            self.store()
                .run(move |s| s.settle_intent(&bucket, &key, started))
                .await?;
        }
        Ok(())
    }

    /// Before announcing a creation of `key`: an announcement of `key` still there is an
    /// earlier creation in this run that failed (its answer lost, say, after the server had
    /// made the upload). The new announcement replaces it, so whatever upload it left is
    /// aborted now, or reported where the server cannot list uploads.
    pub(crate) async fn settle_earlier_creation(&self, key: &str) -> Result<(), ConnError> {
        let (bucket, key_s) = (self.bucket().to_string(), key.to_string());
        if self
            .store()
            .run(move |s| s.intent(&bucket, &key_s))
            .await?
            .is_none()
        {
            return Ok(());
        }
        if let Listing::Unsupported = self.abort_unrecorded(key).await? {
            warn_cannot_list(key);
        }
        Ok(())
    }

    /// Aborts the uploads of exactly `key` that skynet's announcement of `key` accounts for:
    /// not recorded, not running in this process, holding no part (see the module doc).
    async fn abort_unrecorded(&self, key: &str) -> Result<Listing, ConnError> {
        let Some(listed) = self.uploads_of(key).await? else {
            return Ok(Listing::Unsupported);
        };
        let (bucket, key_s) = (self.bucket().to_string(), key.to_string());
        let recorded = self
            .store()
            .run(move |s| s.get(&bucket, &key_s))
            .await?
            .map(|r| r.upload_id);
        let live = self.live_ids();
        for id in listed {
            if recorded.as_ref() == Some(&id) || live.contains(&id) {
                continue;
            }
            match self.holds_parts(key, &id).await? {
                Some(false) => {
                    tracing::info!(key, upload_id = %id, "aborting a multipart upload skynet created and never recorded");
                    self.abort_upload(key, &id).await?;
                }
                Some(true) => tracing::info!(
                    key,
                    upload_id = %id,
                    "leaving alone another client's multipart upload of a key skynet sends (it \
                     holds parts, which skynet never sends to an upload it has not recorded)"
                ),
                None => {} // completed or aborted meanwhile
            }
        }
        Ok(Listing::Listed)
    }

    /// Ids of the uploads in progress of exactly `key`, or `None` when the server cannot list
    /// uploads. Listed by the key as prefix, so the answer is about this key only.
    async fn uploads_of(&self, key: &str) -> Result<Option<Vec<String>>, ConnError> {
        let mut ids = Vec::new();
        let mut markers: (Option<String>, Option<String>) = (None, None);
        loop {
            let res = self
                .sdk()
                .list_multipart_uploads()
                .bucket(self.bucket())
                .prefix(key)
                .set_key_marker(markers.0.take())
                .set_upload_id_marker(markers.1.take())
                .send()
                .await;
            let page = match res {
                Ok(page) => page,
                Err(e) => {
                    let f = classify(e, &self.what("list uploads of", key));
                    if f.kind == ErrorKind::ConnectionLost {
                        return Err(f.into());
                    }
                    // Some S3-compatible servers do not implement ListMultipartUploads: the
                    // resume table is then the only record of the uploads skynet made.
                    tracing::debug!("{}", f.message);
                    return Ok(None);
                }
            };
            ids.extend(
                page.uploads()
                    .iter()
                    .filter(|u| u.key() == Some(key))
                    .filter_map(|u| u.upload_id().map(str::to_string)),
            );
            // Listings are sorted by key: once the next page starts past `key`, none of it is
            // an upload of `key`.
            match (page.next_key_marker(), page.next_upload_id_marker()) {
                (Some(k), Some(id)) if page.is_truncated() == Some(true) && k == key => {
                    markers = (Some(k.to_string()), Some(id.to_string()));
                }
                _ => return Ok(Some(ids)),
            }
        }
    }

    /// Whether upload `id` of `key` holds at least one part; `None` when the server no longer
    /// knows the upload.
    async fn holds_parts(&self, key: &str, id: &str) -> Result<Option<bool>, ConnError> {
        let res = self
            .sdk()
            .list_parts()
            .bucket(self.bucket())
            .key(key)
            .upload_id(id)
            .max_parts(1)
            .send()
            .await;
        match res {
            Ok(page) => Ok(Some(!page.parts().is_empty())),
            // A success the SDK could not read: some S3-compatible servers name the answer's
            // root element `ListPartsResponse` where S3 says `ListPartsResult`. Its parts are
            // read here; an answer that is no part listing at all proves nothing.
            Err(SdkError::ServiceError(e)) if e.raw().status().is_success() => {
                let body = e.raw().body().bytes().unwrap_or_default();
                let has = |tag: &[u8]| body.windows(tag.len()).any(|w| w == tag);
                if has(b"<ListParts") {
                    Ok(Some(has(b"<Part>")))
                } else {
                    Err(ConnError::transient(format!(
                        "{}: unreadable answer (HTTP {})",
                        self.what("list parts of", key),
                        e.raw().status().as_u16()
                    )))
                }
            }
            Err(e) => {
                let f = classify(e, &self.what("list parts of", key));
                if f.is_missing_upload() {
                    Ok(None)
                } else {
                    Err(f.into())
                }
            }
        }
    }
}

/// Says, naming the key, that an upload skynet announced may be open and cannot be found.
/// (The kill-loop test matches this text.)
fn warn_cannot_list(key: &str) {
    tracing::warn!(
        key = %key,
        "a multipart upload may have been left open by an interrupted run or request; this \
         server cannot list uploads (ListMultipartUploads), so skynet cannot abort it; a \
         bucket lifecycle rule (AbortIncompleteMultipartUpload) removes such uploads"
    );
}
