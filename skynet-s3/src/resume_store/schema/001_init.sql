-- The resume store's first versioned schema: the three tables as skynet made them before the
-- schema had a version. `IF NOT EXISTS` on purpose: a database from those versions holds some
-- or all of them already (s3_multipart_intent came later) and no version, so it arrives here
-- at version 0 and this migration adopts it, rows and all. Later migrations need no such care.

-- One row per object key with an upload in progress, and the local file's size and mtime when
-- it started (only an unchanged file may continue the upload).
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
-- The parts the server acknowledged, which CompleteMultipartUpload needs and which some
-- servers do not report back in ListParts.
CREATE TABLE IF NOT EXISTS s3_multipart_parts (
    upload_id       TEXT NOT NULL,
    part_number     INTEGER NOT NULL,
    size            INTEGER NOT NULL,
    etag            TEXT NOT NULL,
    checksum_crc32c TEXT,
    PRIMARY KEY (upload_id, part_number)
);
-- Written before CreateMultipartUpload, removed when the upload is recorded above: a row left
-- here means a creation was cut short (the run killed, the answer lost) between the server
-- creating an upload and skynet learning its id, so an upload nobody recorded may be open on
-- the server. The row is what entitles skynet to abort such an upload (see abandoned.rs).
CREATE TABLE IF NOT EXISTS s3_multipart_intent (
    bucket  TEXT NOT NULL,
    key     TEXT NOT NULL,
    started INTEGER NOT NULL,
    PRIMARY KEY (bucket, key)
);
