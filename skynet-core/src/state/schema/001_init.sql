-- Version 1 of a mapping's state database.

-- Pending, in-flight, retrying and parked actions. `seq` orders them: an action waits for every
-- older action on a related path (equal, ancestor or descendant) so per-path order is kept.
CREATE TABLE queue (
    seq        INTEGER PRIMARY KEY,
    path       BLOB    NOT NULL,           -- the key: the target of a move
    kind       TEXT    NOT NULL,           -- send | delete | move
    from_path  BLOB,                       -- the source of a move
    state      INTEGER NOT NULL,           -- 0 pending, 1 in flight, 2 parked, 3 retry
    ready_at   INTEGER NOT NULL,           -- ms since the epoch: settle time or backoff
    attempts   INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at INTEGER NOT NULL
);
-- At most one pending action per path: the merge rules keep it so, the index proves it.
CREATE UNIQUE INDEX queue_one_pending ON queue(path) WHERE state = 0;
CREATE INDEX queue_by_path ON queue(path);
CREATE INDEX queue_by_state ON queue(state, seq);

-- What the destination holds after acknowledged actions.
CREATE TABLE ledger (
    path     BLOB PRIMARY KEY,
    size     INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    hash     BLOB,
    sent_at  INTEGER NOT NULL
) WITHOUT ROWID;

-- Facts about the mapping and its running daemon, for `status`.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
