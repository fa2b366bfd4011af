//! `--config FILE` works for every subcommand that touches state (issue 14, item 5): `sync`
//! and `baseline` do every mapping of the file, `status`, `queue` and `ledger` look in its
//! `state_dir`; and a plain `skynet status` finds the daemon's state through the config in
//! the usual place.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Command;

/// Two sources, two destinations, the state where the config says, nowhere else.
struct TwoMappings {
    s: Scratch,
    src2: PathBuf,
    dst2: PathBuf,
    state: PathBuf,
    config: PathBuf,
}

impl TwoMappings {
    fn new() -> TwoMappings {
        let s = Scratch::new();
        let src2 = s.dir.path().join("src2");
        let dst2 = s.dir.path().join("dst2");
        let state = s.dir.path().join("config-state");
        write(&s.src, "a.txt", b"first source");
        write(&src2, "deep/b.txt", b"second source");
        let config = s.dir.path().join("skynet.toml");
        std::fs::write(
            &config,
            format!(
                "state_dir = {state:?}\nsettle = \"0\"\n\
                 [[mapping]]\nsource = {:?}\ndestination = {:?}\n\
                 [[mapping]]\nsource = {:?}\ndestination = {:?}\n",
                s.src,
                s.dst,
                src2,
                dst2,
                state = state
            ),
        )
        .unwrap();
        TwoMappings {
            s,
            src2,
            dst2,
            state,
            config,
        }
    }

    /// `skynet ARGS` with no state directory in its environment, and no config in the
    /// usual places but those under `home`.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = self.s.cmd(args);
        c.env_remove("SKYNET_STATE_DIR")
            .env("HOME", self.home())
            .env("XDG_CONFIG_HOME", self.home().join(".config"))
            .env("XDG_STATE_HOME", self.home().join(".local/state"));
        c
    }

    fn home(&self) -> PathBuf {
        self.s.dir.path().join("home")
    }

    fn config(&self) -> &str {
        self.config.to_str().unwrap()
    }

    fn output(&self, args: &[&str]) -> std::process::Output {
        let out = self.cmd(args).output().unwrap();
        assert_exit(&out, 0);
        out
    }

    fn status_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["status", "--json"];
        all.extend_from_slice(args);
        serde_json::from_slice(&self.output(&all).stdout).expect("status json")
    }
}

fn mapping_count(status: &serde_json::Value) -> usize {
    status["mappings"].as_array().map(Vec::len).unwrap_or(0)
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn sync_config_syncs_every_mapping() {
    let t = TwoMappings::new();
    t.output(&["sync", "--config", t.config()]);
    assert_eq!(tree(&t.s.src), tree(&t.s.dst));
    assert_eq!(tree(&t.src2), tree(&t.dst2));
    // The state is where the config says.
    assert_eq!(
        mapping_count(&t.status_json(&["--state-dir", t.state.to_str().unwrap()])),
        2
    );
    // A change in each, then again.
    write(&t.s.src, "a2.txt", b"more");
    write(&t.src2, "b2.txt", b"more");
    t.output(&["sync", "--config", t.config()]);
    assert_eq!(tree(&t.s.src), tree(&t.s.dst));
    assert_eq!(tree(&t.src2), tree(&t.dst2));
}

#[test]
fn status_queue_and_ledger_read_the_configs_state() {
    let t = TwoMappings::new();
    t.output(&["sync", "--config", t.config()]);
    let status = t.status_json(&["--config", t.config()]);
    assert_eq!(mapping_count(&status), 2, "{status}");
    let ledger = stdout(&t.output(&["ledger", "list", "--config", t.config()]));
    assert!(
        ledger.contains("a.txt") && ledger.contains("deep/b.txt"),
        "{ledger}"
    );
    let queue = stdout(&t.output(&["queue", "list", "--config", t.config()]));
    assert_eq!(queue.matches("0 action(s)").count(), 2, "{queue}");
    // The option may come after the subcommand's own.
    let queue = stdout(&t.output(&["queue", "--config", t.config(), "list", "--json"]));
    assert!(queue.contains("\"mappings\""), "{queue}");
}

#[test]
fn baseline_config_records_every_mapping() {
    let t = TwoMappings::new();
    let out = t.output(&["baseline", "--config", t.config()]);
    assert!(
        stdout(&out).matches("recorded 1 file(s)").count() == 2,
        "{}",
        stdout(&out)
    );
    // Recorded as already there: a sync sends nothing.
    t.output(&["sync", "--config", t.config()]);
    assert!(tree(&t.s.dst).is_empty() && tree(&t.dst2).is_empty());
}

/// Writes `config` at `place` (a path under the fake home).
fn install(t: &TwoMappings, place: &Path) {
    std::fs::create_dir_all(place.parent().unwrap()).unwrap();
    std::fs::copy(&t.config, place).unwrap();
}

#[test]
fn plain_status_finds_the_config_in_the_usual_place() {
    let t = TwoMappings::new();
    t.output(&["sync", "--config", t.config()]);
    // No config in the usual places: the user's own state directory, empty.
    assert_eq!(mapping_count(&t.status_json(&[])), 0);
    // $XDG_CONFIG_HOME/skynet/skynet.toml: status, queue and ledger find its state.
    install(&t, &t.home().join(".config/skynet/skynet.toml"));
    assert_eq!(mapping_count(&t.status_json(&[])), 2);
    let ledger = stdout(&t.output(&["ledger", "list"]));
    assert!(ledger.contains("deep/b.txt"), "{ledger}");
    // Without XDG_CONFIG_HOME: ~/.config/skynet/skynet.toml.
    let out = t
        .cmd(&["status", "--json"])
        .env_remove("XDG_CONFIG_HOME")
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(mapping_count(&status), 2, "{status}");
    // An explicit state directory still wins.
    let elsewhere = t.s.dir.path().join("elsewhere");
    assert_eq!(
        mapping_count(&t.status_json(&["--state-dir", elsewhere.to_str().unwrap()])),
        0
    );
}
