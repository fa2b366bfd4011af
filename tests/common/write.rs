//! Making source trees: writing files (in place, or renamed into place so that a watcher
//! never sees them half written), ageing them, filling many at once, and a seeded generator
//! so that a randomized test can be replayed from the seed it prints.

use std::path::Path;
use std::process::Command;

use super::run::rand_suffix;

/// Writes a file, creating parents.
pub fn write(root: &Path, rel: &str, content: &[u8]) {
    let path = root.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(&path, content).expect("write");
}

/// Writes a file outside `root` and renames it into place, so a watcher sees it appear
/// complete (never empty or half written), however short the settle time.
pub fn put(root: &Path, rel: &str, content: &[u8]) {
    let staging = root
        .parent()
        .expect("root has a parent")
        .join(format!(".staging-{}", rand_suffix()));
    std::fs::write(&staging, content).expect("write staging file");
    let path = root.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::rename(&staging, &path).expect("rename into place");
}

/// Sets a file's modification time to `secs` seconds ago.
pub fn age(path: &Path, secs: u64) {
    let when = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        - secs;
    let ok = Command::new("touch")
        .arg("-d")
        .arg(format!("@{when}"))
        .arg("--")
        .arg(path)
        .status()
        .expect("run touch")
        .success();
    assert!(ok, "touch -d failed on {}", path.display());
}

/// `n` files of 4 KiB spread over 40 folders `dNN/file-NNNNN`.
pub fn populate(root: &Path, n: usize) {
    for i in 0..n {
        write(
            root,
            &format!("d{:02}/file-{i:05}", i % 40),
            &vec![(i % 251) as u8; 4096],
        );
    }
}

/// A small deterministic generator (xorshift64*), so a failing run can be replayed by seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// A number in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
}

/// The seed of a randomized test: `SKYNET_TEST_SEED` when set (to replay a failure), else
/// fixed per test, so CI is reproducible. Printed so that a failure shows it.
pub fn seed(default: u64) -> u64 {
    let seed = std::env::var("SKYNET_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    eprintln!("seed {seed} (replay with SKYNET_TEST_SEED={seed})");
    seed
}
