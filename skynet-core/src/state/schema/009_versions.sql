-- Version 9: copies kept when the destination would delete or overwrite a file
-- (`--keep-versions`, see `crate::versions`).

-- A row names a version: what stood at `original` at the destination, moved aside to
-- `version` (under `.skynet-versions/` at the destination root) at `kept_at` (ms since the
-- epoch). It is filed before the move aside (so that no later move takes its name) and
-- `confirmed` once the destination said it was done; a move that found nothing forgets its
-- row, any other failure leaves it unconfirmed (the move may have happened). A row goes when its version is pruned (older than the keep
-- time); an unconfirmed one (the link lost or the process killed during the move) is pruned
-- the same way, whether or not the version exists.
CREATE TABLE versions (
    version   BLOB    PRIMARY KEY,
    original  BLOB    NOT NULL,
    kept_at   INTEGER NOT NULL,
    confirmed INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX versions_original ON versions(original);
CREATE INDEX versions_kept_at ON versions(kept_at);
