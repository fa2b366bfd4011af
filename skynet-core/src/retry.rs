//! How failed work is tried again: one policy shared by the handler (actions), the hand-off
//! worker and the per-entry stage, so that `--max-attempts`, `--retry-delay` and
//! `--retry-failed-after` mean the same thing everywhere, and the defaults are written once.

use std::time::Duration;

use crate::clock::now_ms;

/// Actions a destination executes at once, unless `--workers` says otherwise.
pub const DEFAULT_WORKERS: usize = 4;

/// When failed work is tried again, and when it is parked (set aside as failed, visible in
/// `status`, until a change of its file, the next run or `queue retry` brings it back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Failed attempts after which a transient error parks the work.
    pub max_attempts: u32,
    /// The first retry's delay, doubled at each further failure up to `cap`.
    pub base: Duration,
    pub cap: Duration,
    /// How long parked work waits before another episode of `max_attempts` on its own,
    /// doubled at each park up to `park_cap`: rclone retries on every run, and a fixed
    /// server or a freed disk should not need `queue retry`. (A change of its file, or the
    /// next start, brings it back at once.)
    pub park_base: Duration,
    pub park_cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base: Duration::from_secs(1),
            cap: Duration::from_secs(300),
            park_base: Duration::from_secs(300),
            park_cap: Duration::from_secs(3600),
        }
    }
}

impl RetryPolicy {
    /// Whether the failure of the try numbered `attempts` (0 for the first) parks the work.
    pub fn parks(&self, attempts: u32) -> bool {
        attempts.saturating_add(1) >= self.max_attempts
    }

    /// The delay before the try after the failed one numbered `attempts`.
    pub fn retry_delay(&self, attempts: u32) -> Duration {
        backoff(self.base, self.cap, attempts)
    }

    /// The delay before parked work, parked `parks` times before, is tried again.
    pub fn park_delay(&self, parks: u32) -> Duration {
        backoff(self.park_base, self.park_cap, parks)
    }
}

/// Capped exponential backoff with jitter (50–100% of the step), so many clients that lost
/// the same server do not all come back at the same instant.
pub fn backoff(base: Duration, cap: Duration, attempt: u32) -> Duration {
    let step = base.saturating_mul(1u32 << attempt.min(20)).min(cap);
    step.mul_f64(crate::clock::jitter())
}

/// How long a worker of due rows (hand-offs, per-entry commands) sleeps before looking
/// again: until the next row is due (`next`, ms), between 20 ms and a second, so that new
/// rows filed meanwhile are seen soon.
pub(crate) fn next_look(next: Option<u64>) -> Duration {
    next.map(|at| Duration::from_millis(at.saturating_sub(now_ms())))
        .unwrap_or(Duration::from_secs(1))
        .clamp(Duration::from_millis(20), Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_doubles_up_to_the_cap_and_jitters_within_half() {
        let p = RetryPolicy {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(10),
            ..RetryPolicy::default()
        };
        for (attempt, step) in [(0, 1), (1, 2), (2, 4), (3, 8), (4, 10), (40, 10)] {
            let d = p.retry_delay(attempt);
            let step = Duration::from_secs(step);
            assert!(d >= step / 2 && d < step, "attempt {attempt}: {d:?}");
        }
    }

    #[test]
    fn work_parks_on_the_failure_of_its_last_attempt() {
        let p = RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        };
        assert!(!p.parks(0));
        assert!(!p.parks(1));
        assert!(p.parks(2));
        assert!(p.parks(u32::MAX));
    }
}
