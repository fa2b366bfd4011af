//! The mass-deletion guard: when the deletions waiting to run would remove too much of what
//! the destination holds, they are held until a person confirms them.
//!
//! Why: a complete-sync mirror propagates deletions, so anything that makes the source look
//! empty (an unmounted disk, a folder replaced by an empty one, a script gone wrong) would
//! otherwise wipe the only other copy. Unison's `confirmbigdeletes` and rclone's `--max-delete`
//! guard the same way. The queue applies the rule (see `Queue::set_delete_guard`) to the
//! deletions filed by the catch-up scan and the watcher; this module is the rule alone, kept
//! apart from SQL so it is tested as a table.

use std::fmt;
use std::str::FromStr;

/// Up to this many files, the default rule never holds a deletion for being "more than half":
/// small trees are not nagged (deleting 6 of 10 files is ordinary).
pub const DEFAULT_FLOOR: u64 = 10;

/// From this many delivered files on, removing all of them is always held by default (a tree
/// of one or two files may be emptied without a question).
pub const ALL_FLOOR: u64 = 3;

/// How long deletions reported by the watcher wait before they run, so that a burst of
/// them (an `rm -rf`, a disk going away) is judged as a whole by the guard rather than
/// trickling out one by one before the total is known.
pub const LIVE_DELETE_DELAY_MS: u64 = 2_000;

/// The limit on deletions that may run without confirmation (`--max-delete`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MaxDelete {
    /// More than half of the delivered files (beyond [`DEFAULT_FLOOR`]), or all of them
    /// (from [`ALL_FLOOR`] files on).
    #[default]
    Default,
    /// More than this many files.
    Files(u64),
    /// More than this percentage of the delivered files.
    Percent(u8),
}

impl MaxDelete {
    /// Whether deletions removing `covered` of the destination's `delivered` files must wait
    /// for confirmation. `100%` never holds.
    pub fn holds(self, covered: u64, delivered: u64) -> bool {
        let covered = covered.min(delivered);
        if covered == 0 {
            return false;
        }
        match self {
            MaxDelete::Default => {
                let all = covered == delivered && delivered >= ALL_FLOOR;
                let most = covered > DEFAULT_FLOOR && covered.saturating_mul(2) > delivered;
                all || most
            }
            MaxDelete::Files(n) => covered > n,
            MaxDelete::Percent(p) => covered.saturating_mul(100) > u64::from(p) * delivered,
        }
    }
}

impl fmt::Display for MaxDelete {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaxDelete::Default => f.write_str("more than half of the delivered files"),
            MaxDelete::Files(n) => write!(f, "{n} files"),
            MaxDelete::Percent(p) => write!(f, "{p}% of the delivered files"),
        }
    }
}

/// A `--max-delete` value that is neither a count nor a percentage.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid --max-delete {0:?}: expected a number of files (100) or a percentage (25%)")]
pub struct MaxDeleteError(String);

impl FromStr for MaxDelete {
    type Err = MaxDeleteError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || MaxDeleteError(s.to_string());
        let t = s.trim();
        match t.strip_suffix('%') {
            Some(p) => match p.trim().parse::<u8>() {
                Ok(p) if p <= 100 => Ok(MaxDelete::Percent(p)),
                _ => Err(bad()),
            },
            None => t.parse::<u64>().map(MaxDelete::Files).map_err(|_| bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_as_a_table() {
        use MaxDelete::*;
        // (limit, covered, delivered, held)
        let cases = [
            (Default, 0, 1000, false),
            (Default, 10, 1000, false),
            (Default, 500, 1000, false),
            (Default, 501, 1000, true),
            (Default, 1000, 1000, true),
            // Small trees: "more than half" needs more than the floor...
            (Default, 4, 6, false),
            (Default, 10, 12, false),
            (Default, 11, 12, true),
            // ...but removing everything is always held, unless the tree is tiny.
            (Default, 6, 6, true),
            (Default, 3, 3, true),
            (Default, 2, 2, false),
            (Default, 1, 1, false),
            // Overlapping deletions never count more than there is.
            (Default, 3, 2, false),
            (Percent(100), 3, 2, false),
            // Deletions of files the ledger never had count as nothing.
            (Default, 0, 0, false),
            (Files(0), 1, 1000, true),
            (Files(0), 0, 1000, false),
            (Files(100), 100, 1000, false),
            (Files(100), 101, 1000, true),
            (Files(5000), 1000, 1000, false),
            (Percent(25), 250, 1000, false),
            (Percent(25), 251, 1000, true),
            (Percent(100), 1000, 1000, false),
            (Percent(0), 1, 1000, true),
        ];
        for (limit, covered, delivered, held) in cases {
            assert_eq!(
                limit.holds(covered, delivered),
                held,
                "{limit:?} covered {covered} of {delivered}"
            );
        }
    }

    #[test]
    fn parses_counts_and_percentages() {
        assert_eq!("100".parse(), Ok(MaxDelete::Files(100)));
        assert_eq!("0".parse(), Ok(MaxDelete::Files(0)));
        assert_eq!(" 25% ".parse(), Ok(MaxDelete::Percent(25)));
        for bad in ["", "-1", "101%", "half", "1.5", "%"] {
            assert!(bad.parse::<MaxDelete>().is_err(), "{bad:?} accepted");
        }
    }
}
