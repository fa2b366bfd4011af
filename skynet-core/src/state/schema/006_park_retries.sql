-- Version 6: parked actions come back by themselves. `parks` counts how many times a row was
-- parked (each park waits longer before the next automatic episode); a parked row's
-- `ready_at` is when that episode starts.
ALTER TABLE queue ADD COLUMN parks INTEGER NOT NULL DEFAULT 0;
