//! Exit codes of the command-line contract.

/// 0 success; 1 the work ran but some actions failed; 2 bad usage or configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    SomeFailed = 1,
    Usage = 2,
}
