-- Version 9: copies kept when the destination would delete or overwrite a file
-- (`--keep-versions`, see `crate::versions`).

-- A row names a version: what stood at `original` at the destination, moved aside to
-- `version` (under `.skynet-versions/` at the destination root) at `kept_at` (ms since the
-- epoch). It is filed once the destination moved it aside (`confirmed` = 1): a crash in
-- between leaves a version the state does not know (never pruned, found by its name), never
-- a row naming nothing. A row goes when its version is pruned (older than the keep time).
CREATE TABLE versions (
    version   BLOB    PRIMARY KEY,
    original  BLOB    NOT NULL,
    kept_at   INTEGER NOT NULL,
    confirmed INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX versions_original ON versions(original);
CREATE INDEX versions_kept_at ON versions(kept_at);
