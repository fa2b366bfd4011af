-- Version 4: a hand-off removes only the bytes it delivered, and only once every mapping of
-- the source holds them.

-- The identity of the local file when its delivery read it: a hand-off removes the file only
-- while it is still that inode with that ctime (NULL in rows filed by older versions).
ALTER TABLE handoff ADD COLUMN dev INTEGER;
ALTER TABLE handoff ADD COLUMN ino INTEGER;
ALTER TABLE handoff ADD COLUMN ctime_ns INTEGER;

-- The same for each delivered file, so that a sibling mapping's hand-off (another mapping of
-- the same source with remove_source) can tell that this mapping holds the version it is
-- about to remove.
ALTER TABLE ledger ADD COLUMN dev INTEGER;
ALTER TABLE ledger ADD COLUMN ino INTEGER;
ALTER TABLE ledger ADD COLUMN ctime_ns INTEGER;
-- 1: a sibling mapping's hand-off removed the local file after this mapping delivered it.
-- Its absence is skynet's doing, not the user's: never propagated as a deletion. A new
-- delivery of the path clears it.
ALTER TABLE ledger ADD COLUMN handed_off INTEGER NOT NULL DEFAULT 0;
CREATE INDEX ledger_handed_off ON ledger(path) WHERE handed_off = 1;
