//! Histories: what the user does to the source, what the kernel and the engine go through,
//! drawn from a seed.
//!
//! A history is data, generated up front: replaying it needs nothing but itself, and the
//! minimiser can drop steps from it. Steps that pick a file or directory name an index
//! (`pick`) resolved against the source tree as it is when the step runs, so any sub-history
//! is still a valid history.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How the engine is configured for one history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setup {
    /// Propagate deletions (the destination must equal the source) or not (a superset).
    pub complete_sync: bool,
    /// Handler workers.
    pub workers: usize,
    /// Sends per `send_batch` call the destination asks for.
    pub send_batch: usize,
    /// Settle time of sends, in ms.
    pub settle_ms: u64,
    /// Simulated time each destination call takes, in ms (0: it only yields).
    pub latency_ms: u64,
    /// Keep what the destination deletes or overwrites (`--keep-versions`); then nothing a
    /// send put there may be lost.
    pub versions: bool,
}

impl Setup {
    /// The plainest engine: one worker, no batching, no latency, no settle time (the fixed
    /// regression histories use it, in virtual time and against real servers).
    pub fn plain(complete_sync: bool) -> Setup {
        Setup {
            complete_sync,
            workers: 1,
            send_batch: 1,
            settle_ms: 0,
            latency_ms: 0,
            versions: false,
        }
    }
}

/// A failure a destination call can meet (see [`Step::Fail`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Fails with a transient error; the operation did not happen.
    Refused,
    /// The operation happened, but its reply was lost (a transient error).
    ReplyLost,
    /// The connection drops before the operation; reconnecting fails `attempts` times.
    LinkDown { attempts: u8 },
    /// The operation happened, then the connection dropped.
    LinkDownAfter { attempts: u8 },
    /// The engine is killed (SIGKILL) during the call: the operation may have happened
    /// (`done`) or not; nothing after it runs.
    Kill { done: bool },
}

/// One step of a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Creates (or overwrites) `dirs[dir]/f{name}` with `len` bytes, making parents.
    Create { dir: u8, name: u8, len: u16 },
    /// Overwrites a file.
    Write { pick: u8, len: u16 },
    /// Appends to a file.
    Append { pick: u8, len: u8 },
    /// Truncates a file to nothing.
    Truncate { pick: u8 },
    /// Writes one file `times` times in a row.
    Burst { pick: u8, times: u8 },
    /// Renames a file to `dirs[dir]/r{name}`, replacing a file there.
    RenameFile { pick: u8, dir: u8, name: u8 },
    /// Renames a file onto another existing file.
    RenameOnto { pick: u8, onto: u8 },
    /// Renames a directory to `D{name}` at the root, or onto an empty directory there.
    RenameDir { pick: u8, name: u8 },
    /// Rotates `len` files (or directories) through a temporary name:
    /// `mv p0 t; mv p1 p0; …; mv t p(len-1)`; a swap for two.
    Rotate { pick: u8, len: u8, dirs: bool },
    /// Replaces a file by a directory holding a file: `rm f; mkdir f; write f/x`.
    FileToDir { pick: u8 },
    /// Replaces a directory by a file: `rm -r d; write d`.
    DirToFile { pick: u8 },
    /// Removes a file.
    Delete { pick: u8 },
    /// Removes a directory and everything in it.
    DeleteTree { pick: u8 },
    /// Moves a file or directory out of the source (to a folder beside it).
    MoveOut { pick: u8, dir: bool },
    /// Moves a file or a small tree made outside the source into `dirs[dir]/m{name}`.
    MoveIn { dir: u8, name: u8, tree: bool },
    /// The watcher reads every event the kernel has queued, as one batch.
    Deliver,
    /// Time passes (ms): the watcher reads its events first, then the engine works.
    Wait { ms: u16 },
    /// The kernel's event queue overflows: queued events are lost, a rescan is flagged.
    Overflow,
    /// The engine is killed (SIGKILL) now and started again.
    Kill,
    /// The engine is stopped cleanly (SIGINT) and started again.
    Restart,
    /// The destination call after `skip` more calls meets `fault`.
    Fail { skip: u8, fault: Fault },
}

/// The directories `Create`, `RenameFile` and `MoveIn` write into: the root and a few
/// nested levels, so that names collide often.
pub const DIRS: [&str; 4] = ["", "a", "a/b", "c d"];

/// Mixed into the seed for the draw of [`Setup::versions`].
const VERSIONS_STREAM: u64 = 0x7665_7273_696f_6e73;

/// A history drawn from `seed`.
pub fn generate(seed: u64) -> (Setup, Vec<Step>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let setup = Setup {
        complete_sync: rng.gen_bool(0.7),
        workers: rng.gen_range(1..=4),
        send_batch: if rng.gen_bool(0.5) { 1 } else { 8 },
        settle_ms: [0, 0, 50, 300][rng.gen_range(0..4)],
        latency_ms: [0, 1, 5, 30][rng.gen_range(0..4)],
        // Drawn apart, so that the main stream (and every seed reported so far) is unchanged.
        versions: StdRng::seed_from_u64(seed ^ VERSIONS_STREAM).gen_bool(0.3),
    };
    let len = rng.gen_range(1..=32);
    let steps = (0..len).map(|_| step(&mut rng)).collect();
    (setup, steps)
}

fn step(rng: &mut StdRng) -> Step {
    let pick = rng.gen();
    let size = |rng: &mut StdRng| -> u16 { [0u16, 1, 7, 100, 3000][rng.gen_range(0..5)] };
    match rng.gen_range(0..100) {
        0..=13 => Step::Create {
            dir: rng.gen_range(0..DIRS.len() as u8),
            name: rng.gen_range(0..5),
            len: size(rng),
        },
        14..=19 => Step::Write {
            pick,
            len: size(rng),
        },
        20..=22 => Step::Append {
            pick,
            len: rng.gen_range(1..=64),
        },
        23 => Step::Truncate { pick },
        24..=25 => Step::Burst {
            pick,
            times: rng.gen_range(2..=20),
        },
        26..=31 => Step::RenameFile {
            pick,
            dir: rng.gen_range(0..DIRS.len() as u8),
            name: rng.gen_range(0..4),
        },
        32..=35 => Step::RenameOnto {
            pick,
            onto: rng.gen(),
        },
        36..=38 => Step::RenameDir {
            pick,
            name: rng.gen_range(0..3),
        },
        39..=44 => Step::Rotate {
            pick,
            len: rng.gen_range(2..=4),
            dirs: rng.gen_bool(0.3),
        },
        45..=46 => Step::FileToDir { pick },
        47..=48 => Step::DirToFile { pick },
        49..=51 => Step::Delete { pick },
        52 => Step::DeleteTree { pick },
        53 => Step::MoveOut {
            pick,
            dir: rng.gen_bool(0.3),
        },
        54 => Step::MoveIn {
            dir: rng.gen_range(0..DIRS.len() as u8),
            name: rng.gen_range(0..3),
            tree: rng.gen_bool(0.5),
        },
        55..=64 => Step::Deliver,
        65..=82 => Step::Wait {
            ms: [1, 10, 40, 150, 400, 2500][rng.gen_range(0..6)],
        },
        83 => Step::Overflow,
        84..=86 => Step::Kill,
        87 => Step::Restart,
        _ => Step::Fail {
            skip: rng.gen_range(0..6),
            fault: match rng.gen_range(0..5) {
                0 => Fault::Refused,
                1 => Fault::ReplyLost,
                2 => Fault::LinkDown {
                    attempts: rng.gen_range(0..4),
                },
                3 => Fault::LinkDownAfter {
                    attempts: rng.gen_range(0..4),
                },
                _ => Fault::Kill {
                    done: rng.gen_bool(0.5),
                },
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_one_history() {
        assert_eq!(generate(7), generate(7));
        assert_ne!(generate(7).1, generate(8).1);
    }
}
