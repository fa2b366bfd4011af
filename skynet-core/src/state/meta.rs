//! Names of the `meta` rows of the state database: what a run records about itself (its
//! source and destination, whether it is connected, its live counters) for `status`, the
//! metrics and the next run to read.

pub const SOURCE: &str = "source";
pub const DESTINATION: &str = "destination";
/// The mapping's name (`--name`), empty when unnamed: finds its state after a rename.
pub const NAME: &str = "name";
pub const HEARTBEAT: &str = "heartbeat_ms";
pub const CONNECTED: &str = "connected";
pub const LAST_ERROR: &str = "last_error";
pub const BYTES_SENT: &str = "bytes_sent";
pub const DONE: &str = "actions_done";
pub const PID: &str = "pid";
/// Bytes per second sent over the last few seconds.
pub const RATE: &str = "bytes_per_sec";
/// "1" while a run or sync works on the destination; set back to "0" only when it ended
/// cleanly (nothing abandoned mid-send, no temporaries stranded). Found at "1" on start,
/// it means the previous run died, perhaps leaving temporary files anywhere.
pub const RUNNING: &str = "running";
/// "1" while a sweep for temporary files (`Connection::sweep_temps`) is due: set on a
/// start after a run that died, cleared only once a sweep completed, so a run killed
/// before (or during) its sweep hands it on to the next one.
pub const SWEEP_TEMPS: &str = "sweep_temps";
/// Distinct symlinks skipped since this run started (see `links`).
pub const SKIPPED_LINKS: &str = crate::links::SKIPPED_LINKS;
/// Why the running daemon has paused this mapping (its source is missing or unmounted);
/// empty while it works.
pub const PAUSED: &str = "paused";
/// "1" while the running watcher has a catch-up scan due (after a directory rename, or
/// events lost): the destination may still change though the queue is empty.
pub const SCAN_DUE: &str = "scan_due";
