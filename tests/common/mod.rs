//! Shared helpers for the end-to-end tests of the `skynet` binary, one concern per module:
//! [`run`] starts the program (scratch folders, background daemons), [`output`] checks how it
//! ended, [`tree`] compares trees and waits for convergence, [`write`] makes source trees,
//! [`churn`] disturbs a running program, [`scripts`] are programs for it to run, and
//! [`remote`] gives the same scenario on a local folder, SFTP or S3.
//!
//! Everything but `remote` is re-exported here, so a test reads `use common::*;` and calls
//! `tree`, `write` or `wait_converged` by name. Each test binary uses only some of the
//! helpers, hence `dead_code` is allowed.
#![allow(dead_code)]

pub mod churn;
pub mod output;
pub mod remote;
pub mod run;
pub mod scripts;
pub mod tree;
pub mod write;

// A test binary that uses nothing from one of them would warn of an unused import.
#[allow(unused_imports)]
pub use {churn::*, output::*, run::*, scripts::*, tree::*, write::*};
