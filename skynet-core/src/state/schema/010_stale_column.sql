-- Version 10: a stale ledger row says so in its own column.
--
-- A row is stale when the destination may hold something at its path whose content is not
-- known (a send done but not acknowledged, a rename that may or may not have happened, a file
-- standing where a directory went). Until now such a row had size -1, which readers had to
-- know about (and `ledger list` showed as a size). Its size and mtime are no longer
-- meaningful; nothing compares them while `stale` is 1.
--
-- For the record, the states of a `queue` row (first documented in 001, extended since):
-- 0 pending, 1 in flight, 2 parked (failed; tried again after its park), 3 retry,
-- 4 held by a gate (`--min-age`, dated names) until ready_at, 5 deletion held by the
-- mass-deletion guard until confirmed.
ALTER TABLE ledger ADD COLUMN stale INTEGER NOT NULL DEFAULT 0;
UPDATE ledger SET stale = 1, size = 0 WHERE size < 0;
