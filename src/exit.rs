//! Exit codes of the command-line contract.

/// 0 success; 1 the work ran but some actions failed; 2 bad usage or configuration; 3 another
/// process holds the mapping (a cron job's previous run still going is not a broken command
/// line). Ordered by severity: with several mappings, the highest is the program's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exit {
    Ok = 0,
    SomeFailed = 1,
    Usage = 2,
    Busy = 3,
}

impl Exit {
    /// The exit code for an error that stopped the program (or one mapping of several).
    pub fn for_error(e: &anyhow::Error) -> Exit {
        if e.chain().any(|c| c.is::<crate::state::Busy>()) {
            Exit::Busy
        } else {
            Exit::Usage
        }
    }
}

/// What `--help` says about exit codes (top level, `run`, `sync`, `baseline`).
pub const EXIT_CODES_HELP: &str = "Exit codes:
  0  success
  1  the work ran but some actions failed (see `skynet queue list`)
  2  bad usage or configuration (one line on stderr names the problem)
  3  another skynet holds a mapping's lock (it is still running); that mapping was left alone";
