-- Version 7: directories that complete-sync may have to remove at the destination.

-- A row names a directory the destination may hold empty: the parent of a path that was
-- deleted or renamed away there (`due` = 1: to be looked at), or one kept when it was looked
-- at, because the source still had it or it held something (`due` = 0: looked at again after
-- the next catch-up scan, which may find it gone from the source). Rows are filed in the
-- transaction that acknowledges the deletion or rename, so a crash never loses one; a row
-- goes once its directory is removed.
CREATE TABLE dest_dirs (
    path BLOB    PRIMARY KEY,
    due  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX dest_dirs_due ON dest_dirs(due) WHERE due = 1;
