//! `skynet status`: per mapping (one source, one destination), what is queued, held, failed
//! and handed off, what was delivered today and how fast, and whether it is connected.
//! `--json` for scripts, `--watch` to keep it on screen.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use skynet_core::clock::now_ms;

use crate::exit::Exit;
use crate::mapping_status::{local_time, read_all, to_json};
use crate::out::outln;

/// Prints the status of every mapping under the state root `root` (see `locate`).
pub async fn status(root: &Path, json: bool, watch: Option<f64>) -> Result<Exit> {
    let Some(every) = watch else {
        print(root, json)?;
        return Ok(Exit::Ok);
    };
    let every = Duration::from_secs_f64(every.clamp(0.1, 3600.0));
    let terminal = std::io::stdout().is_terminal();
    loop {
        if terminal && !json {
            // Clear the screen and go home, like `watch`.
            crate::out::write(format_args!("\x1b[2J\x1b[H"))?;
        }
        print(root, json)?;
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = tokio::signal::ctrl_c() => return Ok(Exit::Ok),
        }
    }
}

fn print(root: &Path, json: bool) -> Result<()> {
    let all = read_all(root)?;
    if json {
        outln!("{}", to_json(&all));
        return Ok(());
    }
    if all.is_empty() {
        outln!("no mappings in {}", root.display());
    }
    for m in &all {
        outln!("{}  {} -> {}", m.name, m.source, m.destination);
        outln!(
            "  {}, {}; pending {}, in flight {}, held {}, failed {}",
            if m.running { "running" } else { "stopped" },
            if m.connected {
                "connected"
            } else {
                "not connected"
            },
            m.pending,
            m.in_flight,
            m.held,
            m.failed,
        );
        outln!(
            "  delivered today {} file(s), {}; {}/s; {} sent since start",
            m.delivered_today,
            bytes(m.delivered_today_bytes),
            bytes(m.bytes_per_sec),
            bytes(m.bytes_sent)
        );
        if let Some(why) = &m.paused {
            outln!("  paused: {why}");
        }
        if m.scan_due {
            outln!("  a catch-up scan is due (after a directory rename or lost events)");
        }
        if m.deletions_held > 0 {
            outln!(
                "  {} deletion(s) held by the mass-deletion guard: confirm with `skynet queue release --mapping {}`, or see `skynet queue list`",
                m.deletions_held, m.name
            );
        }
        for h in &m.held_files {
            let when = if h.ready_at > 0 {
                format!(" until {}", local_time(h.ready_at))
            } else {
                String::new()
            };
            outln!(
                "  held #{} {} {}{when}: {}",
                h.id,
                h.kind.as_str(),
                h.path,
                h.last_error.as_deref().unwrap_or("")
            );
        }
        if m.held as usize > m.held_files.len() {
            outln!("  … see `skynet queue list` for every held action");
        }
        for (what, s) in [
            (
                "match no mapping of this source (include globs)",
                &m.unrouted,
            ),
            (
                "have no date in their name (--dated): never sent",
                &m.undated,
            ),
        ] {
            if s.count > 0 {
                outln!("  {} file(s) {what}, e.g. {}", s.count, s.names.join(", "));
            }
        }
        if m.vanished > 0 {
            outln!(
                "  vanished {} file(s): removed locally before they could be sent (not delivered)",
                m.vanished
            );
        }
        if m.handoff_waiting > 0 || !m.handoff_failures.is_empty() {
            outln!(
                "  hand-off: {} waiting, {} failed",
                m.handoff_waiting,
                m.handoff_failures.len()
            );
        }
        if m.versions_kept > 0 {
            outln!(
                "  {} version(s) kept at the destination, the oldest from {} (`skynet versions list`)",
                m.versions_kept,
                m.oldest_version.map(local_time).unwrap_or_default()
            );
        }
        if m.skipped_links > 0 {
            outln!(
                "  skipped {} symbolic link(s) (not followed, not sent)",
                m.skipped_links
            );
        }
        if let Some(e) = &m.last_error {
            outln!("  last error: {e}");
        }
        for f in &m.failures {
            outln!(
                "  failed #{} {} {}: {} ({})",
                f.id,
                f.kind.as_str(),
                f.path,
                f.last_error.as_deref().unwrap_or(""),
                next_retry(f.ready_at, m.running)
            );
        }
        for w in m.handoff_waits.iter().take(5) {
            outln!(
                "  hand-off waits {}: {}",
                w.path,
                w.last_error.as_deref().unwrap_or("")
            );
        }
        if m.handoff_waits.len() > 5 {
            outln!("  … and {} more waiting", m.handoff_waits.len() - 5);
        }
        for e in &m.entries {
            let what = if e.parked {
                format!("command failed for {}", e.entry)
            } else {
                format!("waiting {}", e.entry)
            };
            let why = e.last_error.as_deref().unwrap_or("due");
            if e.parked {
                outln!(
                    "  entry {what}: {why} ({})",
                    next_retry(e.ready_at, m.running)
                );
            } else {
                outln!("  entry {what}: {why}");
            }
        }
        for f in &m.handoff_failures {
            outln!(
                "  hand-off failed {}: {}",
                f.path,
                f.last_error.as_deref().unwrap_or("")
            );
        }
    }
    Ok(())
}

/// A byte count for people: 1.5 MiB.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// When a parked action is tried again by itself: at `ready_at` while a daemon runs, else at
/// the next start (a `sync` or `run`).
fn next_retry(ready_at: u64, running: bool) -> String {
    let now = now_ms();
    if !running {
        "tried again at the next sync or run, or `skynet queue retry`".to_string()
    } else if ready_at <= now {
        "being tried again".to_string()
    } else {
        let secs = (ready_at - now).div_ceil(1000);
        format!(
            "tried again in {}",
            humantime::format_duration(std::time::Duration::from_secs(secs))
        )
    }
}
