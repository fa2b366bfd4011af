-- Version 2: what the workflows need (send-once, hand-off after delivery, status for humans).

-- The ledger gets a stable id per row, so `skynet ledger forget ID` can name a row; the
-- content hash column (already there) is now filled in send-once mode.
CREATE TABLE ledger_v2 (
    id       INTEGER PRIMARY KEY,
    path     BLOB    NOT NULL UNIQUE,
    size     INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    hash     BLOB,
    sent_at  INTEGER NOT NULL
);
INSERT INTO ledger_v2 (path, size, mtime_ns, hash, sent_at)
    SELECT path, size, mtime_ns, hash, sent_at FROM ledger ORDER BY path;
DROP TABLE ledger;
ALTER TABLE ledger_v2 RENAME TO ledger;

-- Deliveries waiting for their hand-off (verify, on_delivered, remove the local file).
-- Filed in the same transaction that acknowledges the send, so a crash never skips one;
-- a hand-off whose local file changed or vanished since is dropped, never acted on.
CREATE TABLE handoff (
    path       BLOB    PRIMARY KEY,
    size       INTEGER NOT NULL,
    mtime_ns   INTEGER NOT NULL,
    state      INTEGER NOT NULL DEFAULT 0,  -- 0 waiting, 2 parked (gave up; see last_error)
    ready_at   INTEGER NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
) WITHOUT ROWID;

-- Files and bytes delivered per local day (YYYY-MM-DD), for `status`.
CREATE TABLE daily (
    day   TEXT    PRIMARY KEY,
    files INTEGER NOT NULL,
    bytes INTEGER NOT NULL
) WITHOUT ROWID;
