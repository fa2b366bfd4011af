-- Version 8: entries whose command is due (a command destination run once per top-level
-- entry of the source, `--exec-per top-level`; see `crate::entries`).

-- A row names a top-level entry of the source (a folder or a file) whose files changed since
-- its command last succeeded. It is filed before the change of a file under it is
-- acknowledged, so a crash never loses one, and goes once the command succeeded on the
-- entry as it stood unchanged. `generation` grows with every change filed: a command that ran
-- while another change came in clears nothing.
CREATE TABLE entries (
    entry      BLOB    PRIMARY KEY,
    generation INTEGER NOT NULL,
    ready_at   INTEGER NOT NULL DEFAULT 0,
    attempts   INTEGER NOT NULL DEFAULT 0,
    parked     INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
) WITHOUT ROWID;
