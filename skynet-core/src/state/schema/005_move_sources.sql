-- Version 5: rows by the source of a move. Merging a chain of renames asks which queued rows
-- touch a path (as target or as source) to keep rename cycles in order; without this index
-- each such question read the whole queue.
CREATE INDEX queue_by_from ON queue(from_path);
