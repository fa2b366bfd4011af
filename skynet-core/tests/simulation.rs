//! The deterministic simulation of the engine (issue 12): thousands of seeded histories of
//! changes, crashes, restarts, refused and lost calls, link losses and watcher overflows, each
//! run by the real watcher mapping, queue, ledger, scan and handler against an in-memory
//! destination in virtual time, then checked against the behaviour contract.
//!
//! `SKYNET_SIM_CASES=N` runs N seeds (default 10,000), `SKYNET_SIM_FIRST=N` starts elsewhere,
//! `SKYNET_SIM_SEED=N` replays one seed exactly (with its minimised history on failure), and
//! `RUST_LOG=skynet_core=debug` logs what the engine did.

use skynet_core::sim;

#[test]
fn histories_converge() {
    // `RUST_LOG=skynet_core=debug` with `SKYNET_SIM_SEED` shows what the engine did.
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
    let settings = sim::Settings::from_env(10_000);
    let outcome = sim::explore(&settings);
    eprintln!(
        "simulation: {} histories ({} steps) from seed {} in {:.1} s on {} threads",
        outcome.ran,
        outcome.steps,
        settings.first,
        outcome.elapsed.as_secs_f64(),
        settings.threads
    );
    if let Some(report) = outcome.failure {
        panic!("{report}");
    }
    assert_eq!(outcome.ran, settings.cases, "every seed ran");
}

use sim::{Fault, Setup, Step};

fn plain(complete_sync: bool) -> Setup {
    Setup::plain(complete_sync)
}

fn check(seed: u64, setup: &Setup, steps: &[Step]) {
    if let Err(f) = sim::run_virtual(seed, setup, steps) {
        panic!("regression (seed {seed}): {f}\n  setup: {setup:?}\n  steps: {steps:?}");
    }
}

/// Minimised histories the simulation found, kept as fixed cases (each failed before its fix).
#[test]
fn histories_found_by_the_simulation() {
    // Seed 896, run on the merge rules before the rename-cycle fix: a plain swap of two files
    // (`mv a/f2 a/swap-tmp; mv f0 a/f2; mv a/swap-tmp f0`) lost `f0`. Seed 21 is a 3-cycle
    // that lost `c d/f2` the same way.
    check(
        896,
        &plain(true),
        &[
            Step::Create {
                dir: 1,
                name: 2,
                len: 1,
            },
            Step::Create {
                dir: 0,
                name: 0,
                len: 0,
            },
            Step::Wait { ms: 400 },
            Step::Rotate {
                pick: 216,
                len: 2,
                dirs: false,
            },
        ],
    );
    check(
        21,
        &plain(true),
        &[
            Step::Create {
                dir: 2,
                name: 0,
                len: 0,
            },
            Step::Create {
                dir: 3,
                name: 2,
                len: 100,
            },
            Step::Create {
                dir: 0,
                name: 4,
                len: 1,
            },
            Step::Wait { ms: 2500 },
            Step::Rotate {
                pick: 116,
                len: 3,
                dirs: false,
            },
        ],
    );
    // Seed 12: a file replaced by a directory. The send of `f1/x` replaced the file `f1` at
    // the destination, but the ledger kept `f1` as a file; a later catch-up scan would have
    // deleted the directory `f1` remotely (and `f1/x` with it) before sending it again.
    check(
        12,
        &plain(true),
        &[
            Step::Create {
                dir: 0,
                name: 1,
                len: 100,
            },
            Step::Wait { ms: 2500 },
            Step::FileToDir { pick: 96 },
        ],
    );
    // Seed 49, without complete-sync: a send done whose flush failed (the link dropped), the
    // file moved out before the retry. The retry found it gone and recorded nothing: the
    // destination held `f3`, the ledger did not know it.
    check(
        49,
        &plain(false),
        &[
            Step::Fail {
                skip: 1,
                fault: Fault::LinkDown { attempts: 3 },
            },
            Step::Create {
                dir: 0,
                name: 3,
                len: 100,
            },
            Step::Wait { ms: 400 },
            Step::MoveOut {
                pick: 57,
                dir: false,
            },
        ],
    );
    // Seed 66: the watcher's queue overflowed with the creation of `a/` in it. notify adds a
    // directory's watch when it reads its creation, so `a/` was never watched: `a/f4`,
    // created after the catch-up scan, was never sent.
    check(
        66,
        &plain(true),
        &[
            Step::Create {
                dir: 1,
                name: 1,
                len: 100,
            },
            Step::Overflow,
            Step::Wait { ms: 10 },
            Step::Create {
                dir: 1,
                name: 4,
                len: 100,
            },
        ],
    );
    // Seed 322, without complete-sync: a directory swap (`mv "c d" t; mv a "c d"; mv t a`)
    // while `a/f0` was still settling. The move `a -> "c d"` found no `a` remotely, so it
    // did not happen and the local files were sent instead, but the ledger dropped its rows
    // under `"c d"`: it denied `"c d/f4"`, which the destination still held.
    check(
        322,
        &Setup {
            settle_ms: 50,
            ..plain(false)
        },
        &[
            Step::Create {
                dir: 3,
                name: 4,
                len: 1,
            },
            Step::Wait { ms: 400 },
            Step::Create {
                dir: 1,
                name: 0,
                len: 7,
            },
            Step::Wait { ms: 40 },
            Step::Rotate {
                pick: 221,
                len: 2,
                dirs: true,
            },
        ],
    );
    // Seed 390: a file replaced by a directory whose only file was then renamed away. The
    // removal of `f0` was not filed (something stood at `f0` again) and the empty directory
    // sent nothing: the destination kept the file `f0`.
    check(
        390,
        &plain(true),
        &[
            Step::Create {
                dir: 0,
                name: 0,
                len: 100,
            },
            Step::Create {
                dir: 2,
                name: 3,
                len: 1,
            },
            Step::MoveOut {
                pick: 102,
                dir: false,
            },
            Step::Wait { ms: 400 },
            Step::FileToDir { pick: 11 },
            Step::RenameFile {
                pick: 6,
                dir: 0,
                name: 0,
            },
        ],
    );
    // Seed 1328, without complete-sync: `a/f0` replaced by a directory; the send of `a/f0/x`
    // replaced the remote file, but its acknowledgement was lost twice (a lost reply, then
    // the link), and `a/f0/x` was renamed away before the retry. The ledger went on saying
    // the destination held the file `a/f0`.
    check(
        1328,
        &plain(false),
        &[
            Step::Fail {
                skip: 4,
                fault: Fault::LinkDownAfter { attempts: 3 },
            },
            Step::Fail {
                skip: 3,
                fault: Fault::ReplyLost,
            },
            Step::Create {
                dir: 1,
                name: 0,
                len: 1,
            },
            Step::Wait { ms: 400 },
            Step::FileToDir { pick: 153 },
            Step::Wait { ms: 2500 },
            Step::RenameFile {
                pick: 26,
                dir: 2,
                name: 1,
            },
        ],
    );
    // Seed 1600: an append made while the send of `c d/f1` was in flight (after a kill and a
    // restart), its events lost to an overflow. The catch-up scan left the file to the send
    // under way, which had read the older version: the append never reached the destination.
    check(
        1600,
        &Setup {
            latency_ms: 30,
            ..plain(true)
        },
        &[
            Step::Fail {
                skip: 1,
                fault: Fault::LinkDownAfter { attempts: 0 },
            },
            Step::Create {
                dir: 3,
                name: 1,
                len: 100,
            },
            Step::Fail {
                skip: 4,
                fault: Fault::Kill { done: true },
            },
            Step::Create {
                dir: 2,
                name: 1,
                len: 1,
            },
            Step::Wait { ms: 400 },
            Step::Append { pick: 217, len: 38 },
            Step::Overflow,
        ],
    );
    // Seed 6655: `mv a D1`, then a file renamed into `D1/b`, then `D1` replaced by a file, all
    // read in one batch. notify named the rename's target by the old path `a/b/f2`; neither
    // name existed any more, and the watcher kept the old one: the destination got a file at
    // `a/b/f2` that nothing would delete.
    check(
        6655,
        &plain(true),
        &[
            Step::Create {
                dir: 3,
                name: 3,
                len: 3000,
            },
            Step::FileToDir { pick: 121 },
            Step::FileToDir { pick: 177 },
            Step::Create {
                dir: 2,
                name: 2,
                len: 7,
            },
            Step::Create {
                dir: 1,
                name: 1,
                len: 3000,
            },
            Step::Wait { ms: 150 },
            Step::RenameDir { pick: 50, name: 1 },
            Step::RenameOnto { pick: 68, onto: 30 },
            Step::DirToFile { pick: 225 },
        ],
    );
    // Seed 6854: the directory `a` moved out of the source, `a` made again by a rename into
    // it (whose own events were not reported: the new `a` was not watched yet). The move out
    // expired as a delete only when nothing stood at `a`: `a/b/f1` stayed at the destination.
    check(
        6854,
        &plain(true),
        &[
            Step::Create {
                dir: 3,
                name: 2,
                len: 100,
            },
            Step::Create {
                dir: 2,
                name: 1,
                len: 3000,
            },
            Step::Wait { ms: 2500 },
            Step::MoveOut {
                pick: 27,
                dir: true,
            },
            Step::RenameFile {
                pick: 44,
                dir: 1,
                name: 3,
            },
        ],
    );
    // Seed 7397: `a/f4` replaced by a directory (its delete merged into the send that
    // followed), whose only file left before that send ran. The send found a directory and
    // sent the files in it, none: the destination kept the file `D1/f4`.
    check(
        7397,
        &plain(true),
        &[
            Step::Create {
                dir: 1,
                name: 4,
                len: 3000,
            },
            Step::Create {
                dir: 1,
                name: 2,
                len: 100,
            },
            Step::Wait { ms: 400 },
            Step::RenameFile {
                pick: 250,
                dir: 2,
                name: 3,
            },
            Step::FileToDir { pick: 237 },
            Step::DeleteTree { pick: 10 },
            Step::RenameDir { pick: 96, name: 1 },
            Step::Wait { ms: 1 },
            Step::Kill,
            Step::MoveOut {
                pick: 22,
                dir: false,
            },
        ],
    );
    // Seed 7557, without complete-sync: the directory `a/b` replaced by a file whose send lost
    // its reply (it did replace `a/b/f1` at the destination), then renamed away before the
    // retry. The retry found it gone; the ledger went on listing `a/b/f1`.
    check(
        7557,
        &plain(false),
        &[
            Step::Create {
                dir: 2,
                name: 4,
                len: 100,
            },
            Step::RenameFile {
                pick: 60,
                dir: 1,
                name: 1,
            },
            Step::Create {
                dir: 2,
                name: 1,
                len: 7,
            },
            Step::Create {
                dir: 0,
                name: 2,
                len: 1,
            },
            Step::Fail {
                skip: 4,
                fault: Fault::ReplyLost,
            },
            Step::Wait { ms: 150 },
            Step::DirToFile { pick: 193 },
            Step::Create {
                dir: 0,
                name: 4,
                len: 7,
            },
            Step::Wait { ms: 150 },
            Step::RenameOnto {
                pick: 192,
                onto: 165,
            },
            Step::Kill,
        ],
    );
    // Seed 9173: the send of `D2/b/f2` was delivered but its flush failed (the link dropped),
    // and an append queued a newer send, so the failed one was dropped as redundant; then the
    // file was renamed to `a/r0`. Nothing said the destination held `D2/b/f2`: the rename
    // became a send of `a/r0` without deleting the old name, which stayed.
    check(
        9173,
        &Setup {
            latency_ms: 5,
            ..plain(true)
        },
        &[
            Step::Fail {
                skip: 5,
                fault: Fault::LinkDown { attempts: 2 },
            },
            Step::Create {
                dir: 2,
                name: 2,
                len: 3000,
            },
            Step::RenameDir { pick: 216, name: 2 },
            Step::Wait { ms: 10 },
            Step::Create {
                dir: 2,
                name: 3,
                len: 100,
            },
            Step::Create {
                dir: 3,
                name: 4,
                len: 0,
            },
            Step::Delete { pick: 34 },
            Step::Wait { ms: 10 },
            Step::Append { pick: 38, len: 58 },
            Step::Wait { ms: 10 },
            Step::RenameFile {
                pick: 48,
                dir: 1,
                name: 0,
            },
        ],
    );
    // Seed 16012 (found by a soak): `mv a D2`, a new `a`, then a directory swap of `D2/b` and
    // `a` through `D2/swap-tmp`. The queue merged the renames into `move a -> a/b`, which no
    // destination can do: it was parked and the mirror never converged.
    check(
        16012,
        &plain(true),
        &[
            Step::Create {
                dir: 2,
                name: 0,
                len: 0,
            },
            Step::Wait { ms: 10 },
            Step::RenameDir { pick: 186, name: 2 },
            Step::Create {
                dir: 1,
                name: 0,
                len: 100,
            },
            Step::Rotate {
                pick: 118,
                len: 2,
                dirs: true,
            },
            Step::Create {
                dir: 2,
                name: 1,
                len: 3000,
            },
        ],
    );
    // Seed 42185 (found by a soak): the send of `c d/r2` lost its reply and waited to retry;
    // `c d` was renamed to `D2`, the file renamed back into a new `c d`, then the engine was
    // killed before those events were read. The catch-up scan left `c d/r2` to the queued
    // send, which ran before the queued move carried it off to `D2/r2`: `c d/r2` was missing.
    check(
        42185,
        &plain(true),
        &[
            Step::Create {
                dir: 3,
                name: 4,
                len: 3000,
            },
            Step::Fail {
                skip: 0,
                fault: Fault::ReplyLost,
            },
            Step::RenameFile {
                pick: 33,
                dir: 3,
                name: 2,
            },
            Step::Wait { ms: 400 },
            Step::RenameDir { pick: 238, name: 2 },
            Step::Wait { ms: 400 },
            Step::RenameFile {
                pick: 42,
                dir: 3,
                name: 2,
            },
            Step::Kill,
        ],
    );
    // Seed 51727 (found by a soak): `mv a D2` was in flight when the engine was killed; after
    // the restart (the rename to be retried) `D2/b/f2` was renamed onto `c d/f1`. Its pending
    // send became a send of `c d/f1`, and nothing deleted `D2/b/f2`, where the retried rename
    // then put the old file: only a pending move counted as carrying it there.
    check(
        51727,
        &Setup {
            latency_ms: 5,
            ..plain(true)
        },
        &[
            Step::Create {
                dir: 3,
                name: 1,
                len: 0,
            },
            Step::Create {
                dir: 2,
                name: 2,
                len: 7,
            },
            Step::Wait { ms: 2500 },
            Step::RenameDir { pick: 84, name: 2 },
            Step::Burst {
                pick: 48,
                times: 11,
            },
            Step::Create {
                dir: 2,
                name: 0,
                len: 0,
            },
            Step::Wait { ms: 1 },
            Step::Kill,
            Step::RenameOnto {
                pick: 234,
                onto: 20,
            },
        ],
    );
    // Seed 69785 (found by a soak): `mv a D0` while the send of `a/b/f0` was in flight, the
    // rename's events lost to an overflow. The catch-up scan did not know `a/b/f0` (not in the
    // ledger yet); the send then delivered it, and nothing deleted it.
    check(
        69785,
        &Setup {
            settle_ms: 300,
            latency_ms: 30,
            ..plain(true)
        },
        &[
            Step::Create {
                dir: 2,
                name: 0,
                len: 1,
            },
            Step::Create {
                dir: 1,
                name: 2,
                len: 3000,
            },
            Step::Wait { ms: 400 },
            Step::RenameDir { pick: 175, name: 0 },
            Step::Overflow,
        ],
    );
    // Seed 73244 (found by a soak), no faults at all: `rm "c d/f2"; mv "c d" D0`, then a new
    // `c d/f2`. Its send superseded the pending delete and ran after the directory move, which
    // carried the old `c d/f2` to `D0/f2`, where it stayed.
    check(
        73244,
        &plain(true),
        &[
            Step::Create {
                dir: 3,
                name: 2,
                len: 100,
            },
            Step::Wait { ms: 2500 },
            Step::Delete { pick: 206 },
            Step::RenameDir { pick: 118, name: 0 },
            Step::Wait { ms: 1 },
            Step::Create {
                dir: 3,
                name: 2,
                len: 1,
            },
            Step::Restart,
        ],
    );
    // Seed 32, once the check saw directories (issue 14): a folder renamed, then the
    // watcher's events lost (overflow). The catch-up scan sent the new name and deleted the
    // old name's files; the old folder stayed at the destination, empty.
    check(
        32,
        &plain(true),
        &[
            Step::Create {
                dir: 1,
                name: 3,
                len: 7,
            },
            Step::Wait { ms: 400 },
            Step::RenameDir { pick: 67, name: 1 },
            Step::Overflow,
        ],
    );
    // Seed 34685 (found by a soak of the first fix): `c d/f4` deleted (`c d` kept at the
    // destination: the source still had it), then `c d` renamed and the new name replaced by
    // a file. The merged deletion of the new name dropped the pending rename, which no ledger
    // file needed; nothing acknowledged named `c d` again and it stayed, empty.
    check(
        34685,
        &plain(true),
        &[
            Step::Create {
                dir: 3,
                name: 4,
                len: 7,
            },
            Step::Wait { ms: 400 },
            Step::Delete { pick: 238 },
            Step::Wait { ms: 2500 },
            Step::RenameDir { pick: 24, name: 1 },
            Step::DirToFile { pick: 54 },
        ],
    );
    // Seed 304802 (found by a soak): `a/m2` moved in (never sent), the directory swap
    // `mv a/b a/swap-tmp; mv a/m2 a/b; mv a/swap-tmp a/m2`, then `mv a D0`. The move of
    // `a/m2` onto `a/b` found no source remotely; its repair (delete `a/b`, send what is
    // there) was filed behind `move a -> D0`, which had carried the old `a/b/f3` to
    // `D0/b/f3` by then: it stayed.
    check(
        304802,
        &Setup {
            settle_ms: 50,
            ..plain(true)
        },
        &[
            Step::Create {
                dir: 2,
                name: 3,
                len: 0,
            },
            Step::Wait { ms: 150 },
            Step::Fail {
                skip: 1,
                fault: Fault::LinkDownAfter { attempts: 1 },
            },
            Step::MoveIn {
                dir: 1,
                name: 2,
                tree: true,
            },
            Step::Wait { ms: 10 },
            Step::Rotate {
                pick: 129,
                len: 2,
                dirs: true,
            },
            Step::RenameDir { pick: 180, name: 0 },
            Step::Wait { ms: 1 },
            Step::Restart,
        ],
    );
    // Versions on (issue 15). Seed 2144: a stale ledger row for a parent (a file once, a
    // folder now) made the move aside take the live folder away ("missing c d/f2"); parents
    // are now asked of the destination. Seed 773: a version recorded only after its move was
    // lost to a crash in between, and the next move aside of the same path in the same second
    // took its name, replacing it ("versions keep everything: 7 bytes first sent to c d/f2");
    // versions are filed before the move again. Seed 4310: a move aside whose reply was lost
    // forgot its row, and the next one took the name of the version it had made; only
    // "nothing there" forgets a row now.
    let versions = |complete_sync: bool, workers: usize| Setup {
        workers,
        versions: true,
        ..plain(complete_sync)
    };
    check(
        2144,
        &versions(false, 1),
        &[
            Step::Create {
                dir: 3,
                name: 1,
                len: 100,
            },
            Step::DirToFile { pick: 84 },
            Step::FileToDir { pick: 233 },
            Step::Wait { ms: 10 },
            Step::Burst {
                pick: 83,
                times: 19,
            },
            Step::FileToDir { pick: 197 },
            Step::Create {
                dir: 3,
                name: 2,
                len: 1,
            },
        ],
    );
    check(
        773,
        &versions(true, 4),
        &[
            Step::Create {
                dir: 3,
                name: 2,
                len: 7,
            },
            Step::Wait { ms: 2500 },
            Step::Create {
                dir: 2,
                name: 3,
                len: 100,
            },
            Step::Create {
                dir: 1,
                name: 0,
                len: 1,
            },
            Step::Fail {
                skip: 2,
                fault: Fault::Kill { done: true },
            },
            Step::Append { pick: 26, len: 1 },
            Step::Wait { ms: 1 },
            Step::Fail {
                skip: 0,
                fault: Fault::Kill { done: true },
            },
            Step::Wait { ms: 1 },
        ],
    );
    check(
        4310,
        &versions(true, 1),
        &[
            Step::Fail {
                skip: 2,
                fault: Fault::ReplyLost,
            },
            Step::Fail {
                skip: 1,
                fault: Fault::LinkDownAfter { attempts: 0 },
            },
            Step::Create {
                dir: 3,
                name: 2,
                len: 100,
            },
            Step::Wait { ms: 400 },
            Step::Write { pick: 128, len: 7 },
        ],
    );
}
