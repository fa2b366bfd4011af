-- Version 3: the mass-deletion guard.

-- How many ledger files a queued delete would remove (itself, or everything below a
-- directory), computed when the delete is filed; NULL until then, 0 for deletes the guard
-- does not judge (skynet's own repairs, deletions a person confirmed). State 5 = held by the
-- guard until confirmed (`skynet queue release`).
ALTER TABLE queue ADD COLUMN covers INTEGER;
-- The guard reads only deletes: keep that cheap however many sends are queued.
CREATE INDEX queue_deletes ON queue(state, covers) WHERE kind = 'delete';
