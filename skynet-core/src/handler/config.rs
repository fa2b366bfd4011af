//! How a handler is tuned: workers, retries, reconnects, acknowledgement batches, and the
//! switches that make `sync` end instead of waiting forever.

use std::time::Duration;

use crate::retry::{RetryPolicy, DEFAULT_WORKERS};

/// Tuning of the handler. The defaults suit a daemon; tests shorten the delays.
#[derive(Debug, Clone)]
pub struct HandlerConfig {
    /// Actions executing at once.
    pub workers: usize,
    /// When a failed action is tried again, and when it is parked.
    pub retry: RetryPolicy,
    pub reconnect_base: Duration,
    pub reconnect_cap: Duration,
    /// Acknowledge at the latest after this many results or this much time.
    pub ack_batch: usize,
    pub ack_delay: Duration,
    /// `sync`: return once nothing is left to do (parked actions aside).
    pub exit_when_drained: bool,
    /// `sync`: give up on a [`ErrorKind::Setup`](crate::error::ErrorKind::Setup) error instead of retrying forever.
    pub fail_on_setup_error: bool,
    /// `sync`: give up after this many failed attempts when the destination was never
    /// reached in this run (a dead or silent server ends the sync instead of hanging it).
    /// Once connected, outages are waited out.
    pub give_up_unreached_after: Option<u32>,
    /// Deletions are propagated: a send that finds its local file gone also removes the
    /// path remotely (a crash may have left a copy there that the ledger never recorded).
    pub complete_sync: bool,
    /// How long to let executing actions finish after a stop request.
    pub stop_grace: Duration,
}

impl Default for HandlerConfig {
    fn default() -> Self {
        HandlerConfig {
            workers: DEFAULT_WORKERS,
            retry: RetryPolicy::default(),
            reconnect_base: Duration::from_millis(500),
            reconnect_cap: Duration::from_secs(30),
            ack_batch: 512,
            ack_delay: Duration::from_millis(100),
            exit_when_drained: false,
            fail_on_setup_error: false,
            give_up_unreached_after: None,
            complete_sync: false,
            stop_grace: Duration::from_secs(5),
        }
    }
}
