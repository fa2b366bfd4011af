//! What one mapping's state database says about it (queue counts, held and failed work,
//! hand-offs, today's deliveries, connection), read for `skynet status` and for the metrics
//! server's `/status`, which show the same figures.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;
use skynet_core::clock::now_ms;
use skynet_core::state::meta;
use skynet_core::state::HandoffRow;
use skynet_core::state::{today, EntryRow, Queue, QueueRow};

use crate::state::{self, MappingLock};

#[derive(Debug, Serialize)]
pub struct MappingStatus {
    pub name: String,
    pub source: String,
    pub destination: String,
    pub running: bool,
    pub connected: bool,
    pub pending: u64,
    pub in_flight: u64,
    pub retrying: u64,
    /// Held back by a gate (`min_age`, dated names) until their time.
    pub held: u64,
    pub failed: u64,
    /// Deletions held by the mass-deletion guard until `skynet queue release`.
    pub deletions_held: u64,
    /// Why the daemon paused this mapping (its source is missing or unmounted), if it did.
    pub paused: Option<String>,
    /// The running daemon has a catch-up scan due (after a directory rename or lost events):
    /// the destination may still change though nothing is queued.
    pub scan_due: bool,
    pub last_error: Option<String>,
    pub bytes_sent: u64,
    /// Over the last few seconds, while running.
    pub bytes_per_sec: u64,
    pub delivered_today: u64,
    pub delivered_today_bytes: u64,
    /// Sends whose local file was gone before it could be delivered (removed by the user,
    /// or by another mapping's hand-off): never counted as delivered.
    pub vanished: u64,
    /// Deliveries waiting for their hand-off (verify, on_delivered, remove the local copy).
    pub handoff_waiting: u64,
    /// Symlinks in the source that the last run or sync skipped (never followed, not sent).
    pub skipped_links: u64,
    pub failures: Vec<QueueRow>,
    pub handoff_failures: Vec<HandoffRow>,
    /// The actions a gate holds (still changing, `min_age`, dated names), first
    /// [`HELD_SHOWN`]: `ready_at` is when the gate opens, `last_error` why. (Deletions the
    /// guard holds are counted in `deletions_held`, with their own line.)
    pub held_files: Vec<QueueRow>,
    /// Files no mapping of this source takes, as of the last scan: count and a few names.
    pub unrouted: Skipped,
    /// Files a `dated` gate never sends (no date in the name), as of the last scan.
    pub undated: Skipped,
    /// Waiting hand-offs that said why (a writer has the file open, another mapping of the
    /// source has not delivered it yet, the last failure before a retry).
    pub handoff_waits: Vec<HandoffRow>,
    /// Top-level entries waiting for their command (`--exec-per top-level`), with why
    /// (`last_error`) and when they are looked at next (`ready_at`); `parked`: failed.
    pub entries: Vec<EntryRow>,
    /// Versions kept at the destination (`--keep-versions`), and when the oldest was kept.
    pub versions_kept: u64,
    pub oldest_version: Option<u64>,
}

/// How many held actions `status` lists (all of them: `skynet queue list`).
pub const HELD_SHOWN: usize = 20;

/// Files a scan left aside: how many, and the first few names.
#[derive(Debug, Default, Serialize)]
pub struct Skipped {
    pub count: u64,
    pub names: Vec<String>,
}

impl Skipped {
    fn read(queue: &Queue, key: &str) -> Result<Skipped> {
        let (count, names) =
            skynet_core::scan::Skipped::decode(&queue.meta(key)?.unwrap_or_default());
        Ok(Skipped { count, names })
    }
}

/// The directory name that names a mapping in `status`, `queue` and `ledger`.
pub fn mapping_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Milliseconds since the epoch as local time, for people.
pub fn local_time(ms: u64) -> String {
    use chrono::TimeZone;
    match chrono::Local.timestamp_millis_opt(ms.min(i64::MAX as u64) as i64) {
        chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) => {
            t.format("%Y-%m-%d %H:%M:%S").to_string()
        }
        chrono::LocalResult::None => "-".to_string(),
    }
}

/// Reads one mapping's status from its state directory.
pub fn read(dir: &Path) -> Result<MappingStatus> {
    let queue = Queue::open(&skynet_core::state::database_path(dir))?;
    let counts = queue.counts()?;
    let running = MappingLock::is_held(dir);
    let number = |key: &str| -> Result<u64> {
        Ok(queue.meta(key)?.and_then(|v| v.parse().ok()).unwrap_or(0))
    };
    let fresh = now_ms().saturating_sub(number(meta::HEARTBEAT)?) < 5_000;
    let live = running && fresh;
    let connected = live && queue.meta(meta::CONNECTED)?.as_deref() == Some("1");
    let last_error = queue
        .meta(meta::LAST_ERROR)?
        .filter(|e| !e.is_empty())
        .or(queue.last_error()?);
    let rows = queue.rows()?;
    let held_files = rows
        .iter()
        .filter(|r| r.state == "held")
        .take(HELD_SHOWN)
        .cloned()
        .collect();
    let failures = rows.into_iter().filter(|r| r.state == "failed").collect();
    let (handoff_failures, handoff_waiting): (Vec<HandoffRow>, Vec<HandoffRow>) =
        queue.handoff_rows()?.into_iter().partition(|r| r.parked);
    let (delivered_today, delivered_today_bytes) = queue.delivered_on(&today())?;
    // An entry whose command gave up is a failure like a parked action (monitoring reads
    // `failed` and `last_error`).
    let entries = queue.entry_rows()?;
    let entries_failed = entries.iter().filter(|e| e.parked).count() as u64;
    let last_error = last_error.or_else(|| {
        entries
            .iter()
            .find(|e| e.parked)
            .and_then(|e| e.last_error.clone())
    });
    let (versions_kept, oldest_version) = queue.versions_summary()?;
    Ok(MappingStatus {
        name: mapping_name(dir),
        source: queue.meta(meta::SOURCE)?.unwrap_or_default(),
        destination: crate::destination::shown(&queue.meta(meta::DESTINATION)?.unwrap_or_default()),
        running,
        connected,
        pending: counts.pending + counts.retrying,
        in_flight: counts.in_flight,
        retrying: counts.retrying,
        held: counts.held,
        failed: counts.failed + entries_failed,
        deletions_held: counts.deletions_held,
        paused: queue.meta(meta::PAUSED)?.filter(|p| live && !p.is_empty()),
        scan_due: live && queue.meta(meta::SCAN_DUE)?.as_deref() == Some("1"),
        last_error,
        bytes_sent: number(meta::BYTES_SENT)?,
        bytes_per_sec: if live { number(meta::RATE)? } else { 0 },
        delivered_today,
        delivered_today_bytes,
        vanished: queue.vanished()?,
        handoff_waiting: handoff_waiting.len() as u64,
        skipped_links: number(meta::SKIPPED_LINKS)?,
        failures,
        handoff_failures,
        held_files,
        unrouted: Skipped::read(&queue, skynet_core::scan::UNROUTED_KEY)?,
        undated: Skipped::read(&queue, skynet_core::scan::UNDATED_KEY)?,
        handoff_waits: handoff_waiting
            .into_iter()
            .filter(|r| r.last_error.is_some())
            .collect(),
        entries,
        versions_kept,
        oldest_version,
    })
}

pub fn read_all(root: &Path) -> Result<Vec<MappingStatus>> {
    let dirs: Vec<PathBuf> = state::mapping_dirs(root)?;
    dirs.iter().map(|d| read(d)).collect()
}

/// What `status --json` prints (and `run --metrics` serves at `/status`).
pub fn to_json(all: &[MappingStatus]) -> serde_json::Value {
    serde_json::json!({ "mappings": all })
}
