//! The engine's sense of time: wall-clock milliseconds for the queue, monotonic instants for
//! the watcher and handler, and the jitter of retry delays.
//!
//! Why a module of its own: the deterministic simulation (`sim`, feature `sim`) runs the real
//! watcher mapping, queue and handler on one thread under tokio's paused clock. For a history
//! to replay exactly from its seed, every reading of time and every random delay the engine
//! makes must come from that thread's virtual clock and seeded generator, not from the
//! machine. Outside a simulation these are the plain system readings.
//!
//! Monotonic time is [`tokio::time::Instant`]: the system's monotonic clock, except inside a
//! runtime whose clock is paused (the simulation), where it is the virtual one. The watcher
//! thread runs outside any runtime and reads the system clock through it.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

pub use tokio::time::Instant;

thread_local! {
    /// The simulation running on this thread: its wall clock at `origin`, and its generator.
    static VIRTUAL: Cell<Option<Virtual>> = const { Cell::new(None) };
}

#[derive(Clone, Copy)]
struct Virtual {
    epoch_ms: u64,
    origin: Instant,
    rng: u64,
}

/// Milliseconds since the Unix epoch: the system clock, or the simulation's virtual one.
pub fn now_ms() -> u64 {
    if let Some(v) = VIRTUAL.get() {
        return v.epoch_ms + Instant::now().duration_since(v.origin).as_millis() as u64;
    }
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Nanoseconds since the epoch of a file's mtime, as stored in the ledger.
/// (Negative before the epoch; saturating where an i64 of nanoseconds ends, in 2262.)
pub fn mtime_ns(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos().min(i64::MAX as u128) as i64,
        Err(e) => -(e.duration().as_nanos().min(i64::MAX as u128) as i64),
    }
}

/// A factor in [0.5, 1) that spreads retry delays (see `retry::backoff`): random, or drawn
/// from the simulation's seeded generator.
pub fn jitter() -> f64 {
    match VIRTUAL.get() {
        Some(mut v) => {
            // splitmix64: small, good enough for spreading delays, and reproducible.
            v.rng = v.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = v.rng;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            VIRTUAL.set(Some(v));
            0.5 + (z >> 11) as f64 / (1u64 << 53) as f64 * 0.5
        }
        None => 0.5 + rand::random::<f64>() * 0.5,
    }
}

/// Makes this thread's readings virtual until the guard is dropped: wall-clock time starts at
/// `epoch_ms` and advances with tokio's (paused) clock; jitter comes from `seed`. Must be
/// called inside the runtime whose clock drives the simulation.
#[cfg(feature = "sim")]
pub fn simulate(epoch_ms: u64, seed: u64) -> SimulatedClock {
    VIRTUAL.set(Some(Virtual {
        epoch_ms,
        origin: Instant::now(),
        rng: seed,
    }));
    SimulatedClock(())
}

/// Restores the system clock on this thread when dropped (see [`simulate`]).
#[cfg(feature = "sim")]
pub struct SimulatedClock(());

#[cfg(feature = "sim")]
impl Drop for SimulatedClock {
    fn drop(&mut self) {
        VIRTUAL.set(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_is_between_a_half_and_one() {
        for _ in 0..1000 {
            let j = jitter();
            assert!((0.5..1.0).contains(&j), "{j}");
        }
    }

    #[test]
    fn system_time_is_used_outside_a_simulation() {
        let sys = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        assert!(now_ms().abs_diff(sys) < 5_000);
    }
}
