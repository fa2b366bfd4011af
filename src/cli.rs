//! The command line, as in the command-line contract of `docs/contract.md`.

use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::exit::EXIT_CODES_HELP;

#[derive(Debug, Parser)]
#[command(
    name = "skynet",
    version,
    about = "Keeps a remote copy of local folders up to date, live.",
    after_help = EXIT_CODES_HELP
)]
pub struct Cli {
    /// More logging (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only warnings and errors: no progress, notes or confirmations (listings and status
    /// still print). RUST_LOG overrides it for the log.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Watch SRC and mirror it to DEST until SIGINT/SIGTERM (or every mapping of --config).
    #[command(after_help = EXIT_CODES_HELP)]
    Run {
        /// Source folder.
        src: Option<PathBuf>,
        /// Destination: a folder, file:///path, sftp://[user@]host[:port]/path or s3://bucket/prefix
        /// (or none, with --exec).
        dest: Option<String>,
        /// A TOML file with one or more [[mapping]] tables.
        #[arg(long, conflicts_with_all = ["src", "dest"])]
        config: Option<PathBuf>,
        /// Serve Prometheus metrics at http://ADDR/metrics and `status --json` at /status,
        /// e.g. 127.0.0.1:9464 (keep it on loopback: there is no authentication).
        #[arg(long, value_name = "ADDR", value_parser = parse_metrics_addr)]
        metrics: Option<SocketAddr>,
        /// Poll for changes instead of using inotify (network filesystems; skynet falls back
        /// to it by itself when inotify runs out).
        #[arg(long)]
        poll: bool,
        #[command(flatten)]
        opts: MappingArgs,
    },
    /// Catch-up scan, send everything that differs, exit (1 if some actions failed).
    #[command(after_help = EXIT_CODES_HELP)]
    Sync {
        /// Source folder (or none, with --config).
        #[arg(required_unless_present = "config")]
        src: Option<PathBuf>,
        /// Destination: a folder, file:///path, sftp://[user@]host[:port]/path or s3://bucket/prefix
        /// (or none, with --exec or --config).
        #[arg(required_unless_present_any = ["exec", "config"])]
        dest: Option<String>,
        /// Sync every [[mapping]] of this TOML file, one after the other (options given here
        /// override the file's).
        #[arg(long, conflicts_with_all = ["src", "dest"])]
        config: Option<PathBuf>,
        /// List what would be sent, moved and deleted (and what the mass-deletion guard would
        /// hold), judged against the ledger; connect to nothing, change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        opts: MappingArgs,
    },
    /// Show each mapping's queue, failures and connection.
    Status {
        /// Where queues and ledgers are kept [default: the config's state_dir, else the
        /// user's state directory].
        #[arg(long, env = "SKYNET_STATE_DIR")]
        state_dir: Option<PathBuf>,
        /// The mappings' config file: its state_dir is read [default: the first of
        /// $XDG_CONFIG_HOME/skynet/skynet.toml (~/.config/…) and /etc/skynet/skynet.toml].
        #[arg(long)]
        config: Option<PathBuf>,
        /// One JSON object with a `mappings` array.
        #[arg(long)]
        json: bool,
        /// Refresh every SECONDS (default 2) until interrupted.
        #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "2")]
        watch: Option<f64>,
    },
    /// What each destination is believed to hold (send-once: what was delivered).
    Ledger {
        #[command(subcommand)]
        command: LedgerCommand,
        /// Where queues and ledgers are kept [default: the config's state_dir, else the
        /// user's state directory].
        #[arg(long, env = "SKYNET_STATE_DIR", global = true)]
        state_dir: Option<PathBuf>,
        /// The mappings' config file: its state_dir is read [default: the first of
        /// $XDG_CONFIG_HOME/skynet/skynet.toml (~/.config/…) and /etc/skynet/skynet.toml].
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        /// The mapping (its name in `status`), when there are several.
        #[arg(long, global = true)]
        mapping: Option<String>,
    },
    /// What the destination kept of deleted and overwritten files (--keep-versions).
    Versions {
        #[command(subcommand)]
        command: VersionsCommand,
    },
    /// Inspect and edit pending and failed actions.
    Queue {
        #[command(subcommand)]
        command: QueueCommand,
        /// Where queues and ledgers are kept [default: the config's state_dir, else the
        /// user's state directory].
        #[arg(long, env = "SKYNET_STATE_DIR", global = true)]
        state_dir: Option<PathBuf>,
        /// The mappings' config file: its state_dir is read [default: the first of
        /// $XDG_CONFIG_HOME/skynet/skynet.toml (~/.config/…) and /etc/skynet/skynet.toml].
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        /// The mapping (its name in `status`), when there are several.
        #[arg(long, global = true)]
        mapping: Option<String>,
    },
    /// Record the files now in SRC as already sent to DEST (send nothing).
    #[command(after_help = EXIT_CODES_HELP)]
    Baseline {
        /// Source folder (or none, with --config).
        #[arg(required_unless_present = "config")]
        src: Option<PathBuf>,
        /// Destination the files are taken to be at: a folder, file:///path,
        /// sftp://[user@]host[:port]/path or s3://bucket/prefix (or none, with --exec or
        /// --config).
        #[arg(required_unless_present_any = ["exec", "config"])]
        dest: Option<String>,
        /// Record every [[mapping]] of this TOML file (options given here override the
        /// file's).
        #[arg(long, conflicts_with_all = ["src", "dest"])]
        config: Option<PathBuf>,
        /// List the files that would be recorded; record nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        opts: BaselineArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// List delivered files: id, size, when, content hash (send-once).
    List {
        /// One JSON object with a `mappings` array.
        #[arg(long)]
        json: bool,
    },
    /// Forget a delivered file (by PATH relative to the source, a folder, or ID from `list`)
    /// and send it again.
    Forget {
        /// A path relative to the source (a file or a folder), or an ID from `ledger list`.
        what: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum VersionsCommand {
    /// List the kept versions, newest first: when, the path it was kept from, where it is.
    List {
        /// Only the versions of this path (relative to the source; a folder lists those
        /// under it).
        path: Option<String>,
        /// One JSON object with a `mappings` array.
        #[arg(long)]
        json: bool,
        /// Where queues and ledgers are kept [default: the config's state_dir, else the
        /// user's state directory].
        #[arg(long, env = "SKYNET_STATE_DIR")]
        state_dir: Option<PathBuf>,
        /// The mappings' config file: its state_dir is read.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The mapping (its name in `status`), when there are several.
        #[arg(long)]
        mapping: Option<String>,
    },
    /// Bring a kept version of a file back into the source (then mirrored as a normal send).
    Restore {
        /// Source folder of the mapping.
        src: PathBuf,
        /// Destination of the mapping, as given to `run`/`sync`.
        dest: String,
        /// The file, relative to the source.
        path: String,
        /// The version that was current at this time (YYYY-MM-DD HH:MM[:SS], local time)
        /// [default: the newest].
        #[arg(long)]
        at: Option<String>,
        /// Write it under this folder (at its path) instead of into the source.
        #[arg(long)]
        to: Option<PathBuf>,
        /// Where queues and ledgers are kept (default: the user's state directory).
        #[arg(long, env = "SKYNET_STATE_DIR")]
        state_dir: Option<PathBuf>,
        /// The mapping's name, if it has one (`--name`).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        connection: ConnectionArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// List queued and failed actions.
    List {
        /// One JSON object with a `mappings` array.
        #[arg(long)]
        json: bool,
    },
    /// Retry an action now (ID from `queue list`), or every failed one with `all`.
    Retry {
        /// An action's ID from `queue list`, or `all`.
        id: String,
    },
    /// Remove an action without doing it.
    Drop {
        /// An action's ID from `queue list`.
        id: i64,
    },
    /// Confirm deletions held by the mass-deletion guard (ID from `queue list`, or all).
    Release {
        /// A held deletion's ID from `queue list` [default: every held deletion].
        id: Option<i64>,
    },
    /// Accept the source's new filesystem (it really moved to another disk): the next start
    /// records it, instead of pausing as if its disk were unmounted.
    AcceptSource,
}

/// What one run of a command destination's command covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExecPer {
    /// One run per file action.
    File,
    /// One run per top-level entry of the source, settled as a unit.
    TopLevel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostKeyPolicy {
    /// Refuse unknown and changed host keys.
    Strict,
    /// Record unknown host keys (trust on first use); refuse changed ones.
    AcceptNew,
}

/// Options shared by `run`, `sync` and `baseline`. Unset values fall back to the config file
/// (for `run --config`) and then to the defaults.
#[derive(Debug, Clone, Default, Args)]
pub struct MappingArgs {
    /// Propagate deletions (and moves out of the source) to the destination.
    #[arg(long)]
    pub complete_sync: bool,
    /// Name this mapping: its state (queue, ledger) is kept under this name, shown by
    /// `status` and chosen with `--mapping`, so the destination or command can change
    /// without sending everything again. Renaming it keeps the state. Letters, digits,
    /// `.`, `_`, `-`.
    #[arg(long)]
    pub name: Option<String>,
    /// The names of the other mappings of the same config file: their state is never taken
    /// for this one's when it is renamed.
    #[arg(skip)]
    pub sibling_names: Vec<String>,
    /// Where queues and ledgers are kept (default: the user's state directory).
    #[arg(long, env = "SKYNET_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Which files the mapping takes.
    #[command(flatten)]
    pub filters: FilterArgs,
    /// How to reach an SFTP or S3 destination.
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Actions executing at once [default: 4].
    #[arg(long)]
    pub workers: Option<usize>,
    /// How long a file must be unchanged before it is sent, e.g. 1s, 500ms, 0 [default: 1s].
    /// Given to `sync`, files modified within it are held as still changing, for a later
    /// run (without it, a sync sends what its scan finds).
    #[arg(long, value_parser = parse_duration)]
    pub settle: Option<Duration>,
    /// Poll for changes instead of using inotify: `run --poll`, or `poll = true` in the
    /// config (a catch-up sync does not watch).
    #[arg(skip)]
    pub poll: bool,
    /// Failed attempts before an action is parked [default: 5].
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// First retry delay, doubled each time [default: 1s].
    #[arg(long, value_parser = parse_duration)]
    pub retry_delay: Option<Duration>,
    /// `run`: how long an action parked as failed waits before it is tried again by itself
    /// (another --max-attempts), doubled each time it fails again, up to an hour or this
    /// value if longer [default: 5m]. A change of its file, or the next start, retries it
    /// at once.
    #[arg(long, value_parser = parse_duration)]
    pub retry_failed_after: Option<Duration>,
    /// Longest wait between reconnection attempts [default: 30s].
    #[arg(long, value_parser = parse_duration)]
    pub reconnect_max: Option<Duration>,
    /// Send each file once: never again unless its content changes (even if the destination
    /// deletes it); deleting it locally forgets it. See `skynet ledger`.
    #[arg(long)]
    pub send_once: bool,
    /// Send only files unchanged for at least this long, e.g. 10m.
    #[arg(long, value_parser = parse_duration)]
    pub min_age: Option<Duration>,
    /// Send only files or folders whose name carries a date in this strftime pattern (e.g.
    /// %Y%m%d), once that day has ended plus --dated-grace; a dated folder goes as a unit.
    #[arg(long)]
    pub dated: Option<String>,
    /// Grace period after a dated day ends [default: 1h].
    #[arg(long, value_parser = parse_duration)]
    pub dated_grace: Option<Duration>,
    /// Remove each local file once the destination verified it holds the same bytes.
    #[arg(long)]
    pub remove_source: bool,
    /// Wait this long after delivery before the hand-off (verify, --on-delivered, remove).
    #[arg(long, value_parser = parse_duration)]
    pub handoff_delay: Option<Duration>,
    /// SFTP: verify deliveries by reading them back and comparing SHA-256 (--remove-source).
    #[arg(long)]
    pub verify_read_back: bool,
    /// Run this command for each delivered file, e.g. "logger -- delivered {remote}". Split
    /// into words like a shell would, but no shell runs it; placeholders ({path}, {remote},
    /// {action}, {from}, {to}) are replaced inside single arguments.
    #[arg(long, value_parser = parse_argv)]
    pub on_delivered: Option<Argv>,
    /// Command destination: run this command for every action instead of sending to DEST,
    /// e.g. "rsync -a {path} backup:/dst/{remote}". Exit 0 is success.
    #[arg(long, value_parser = parse_argv)]
    pub exec: Option<Argv>,
    /// Command destination: the command for deletes [default: the --exec command].
    #[arg(long, value_parser = parse_argv)]
    pub exec_delete: Option<Argv>,
    /// Command destination: the command for moves, e.g. "ssh host mv -- /dst/{from}
    /// /dst/{to}" [default: send the moved files again at their new place and, with
    /// --complete-sync, run the delete command at the old one].
    #[arg(long, value_parser = parse_argv)]
    pub exec_move: Option<Argv>,
    /// Command destination without --exec-move: run the --exec command for moves too
    /// ({action} is `move`), for a script that handles moves itself.
    #[arg(long)]
    pub exec_send_moves: bool,
    /// Command destination: run the command once per `file` [default], or once per
    /// `top-level` entry of the source (a whole folder as one unit, {path} the folder),
    /// once nothing under it changed for the settle time.
    #[arg(long, value_enum, alias = "exec-unit")]
    pub exec_per: Option<ExecPer>,
    /// Longest a command (--exec, --on-delivered) may run before it is killed [default: 10m].
    #[arg(long, value_parser = parse_duration)]
    pub exec_timeout: Option<Duration>,
    /// Let a command (--exec, --on-delivered) see this secret variable of skynet's
    /// environment (repeatable). By default they never see skynet's credentials
    /// (SKYNET_SFTP_PASSWORD, SKYNET_SFTP_PASSPHRASE, AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, …); everything else passes.
    #[arg(long = "pass-env", value_name = "NAME")]
    pub pass_env: Vec<String>,
    /// Limit sends to this many bytes per second, shared by all workers of the destination:
    /// 500K, 1M (powers of 1000), 10MiB (powers of 1024), or plain bytes. Charged per file,
    /// not per packet.
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub bwlimit: Option<NonZeroU64>,
    /// With --complete-sync: hold deletions that would remove more than this many files (100)
    /// or this share of the delivered files (25%) until confirmed with `skynet queue
    /// release`. Default: more than half of them (beyond 10 files), or all of them. 0 holds
    /// every deletion.
    #[arg(long, value_name = "N|P%")]
    pub max_delete: Option<skynet_core::guard::MaxDelete>,
    /// Keep what the destination would delete or overwrite for this long (e.g. 30d), in
    /// `.skynet-versions/` at its root, named `path~YYYYmmdd-HHMMSS`; see `skynet versions`.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub keep_versions: Option<Duration>,
    /// With --keep-versions: the folder, relative to the destination root, that holds the
    /// versions [default: .skynet-versions]. The source's folder of that name is not mirrored.
    #[arg(long, value_name = "PATH")]
    pub versions_dir: Option<String>,
}

/// Which files a mapping takes: shared by `run`, `sync` and `baseline`.
#[derive(Debug, Clone, Default, Args)]
pub struct FilterArgs {
    /// Ignore paths matching this glob (repeatable). `*.tmp` matches names at any depth.
    #[arg(long = "exclude")]
    pub excludes: Vec<String>,
    /// Globs (--include, --exclude and the default excludes) match names whatever their
    /// case: `*.mkv` matches `a.MKV`.
    #[arg(long)]
    pub ignore_case: bool,
    /// Also send the names ignored by default, partial downloads and editors' temporary
    /// files: *.part *.crdownload *.partial *.download *.opdownload *.filepart *.!qB *.!ut
    /// *.tmp *.swp *.swo *.swx 4913 *~ .#* #*# *.kate-swp .goutputstream-* .~lock.*# ~$*
    #[arg(long)]
    pub no_default_excludes: bool,
    /// Send only files matching this glob (repeatable; routing: one source, several
    /// destinations, each with its own includes). Default: every file.
    #[arg(long = "include")]
    pub includes: Vec<String>,
}

/// How to reach an SFTP or S3 destination: shared by `run`, `sync` and `baseline`.
#[derive(Debug, Clone, Default, Args)]
pub struct ConnectionArgs {
    /// SFTP: private key file (passphrase from SKYNET_SFTP_PASSPHRASE).
    #[arg(long)]
    pub identity: Option<PathBuf>,
    /// SFTP: known_hosts file [default: ~/.ssh/known_hosts].
    #[arg(long)]
    pub known_hosts: Option<PathBuf>,
    /// SFTP: what to do with an unknown host key.
    #[arg(long, value_enum)]
    pub host_key_policy: Option<HostKeyPolicy>,
    /// SFTP/S3: network timeout [default: 30s].
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// S3: endpoint URL of an S3-compatible server.
    #[arg(long)]
    pub s3_endpoint: Option<String>,
    /// S3: path-style addressing (most S3-compatible servers need it).
    #[arg(long)]
    pub s3_path_style: bool,
}

/// The options `baseline` uses: which files the mapping takes, and how to reach its
/// destination (its state is named after it, and it is checked to be reachable). `--help`
/// lists only these; each reads as in [`MappingArgs`] (a test keeps the texts the same).
#[derive(Debug, Clone, Default, Args)]
pub struct BaselineArgs {
    /// Where queues and ledgers are kept (default: the user's state directory).
    #[arg(long, env = "SKYNET_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Name this mapping: its state (queue, ledger) is kept under this name, shown by
    /// `status` and chosen with `--mapping`, so the destination or command can change
    /// without sending everything again. Renaming it keeps the state. Letters, digits,
    /// `.`, `_`, `-`.
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub filters: FilterArgs,
    /// Send each file once: never again unless its content changes (even if the destination
    /// deletes it); deleting it locally forgets it. See `skynet ledger`.
    #[arg(long)]
    pub send_once: bool,
    /// Command destination: run this command for every action instead of sending to DEST,
    /// e.g. "rsync -a {path} backup:/dst/{remote}". Exit 0 is success.
    #[arg(long, value_parser = parse_argv)]
    pub exec: Option<Argv>,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

impl From<BaselineArgs> for MappingArgs {
    fn from(b: BaselineArgs) -> MappingArgs {
        MappingArgs {
            state_dir: b.state_dir,
            name: b.name,
            filters: b.filters,
            send_once: b.send_once,
            exec: b.exec,
            connection: b.connection,
            ..MappingArgs::default()
        }
    }
}

/// A command as a list of words: from the command line (split like a shell would, see
/// [`parse_argv`]) or from a TOML array.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Argv(pub Vec<String>);

/// Splits a command line into words (quotes and backslashes as in a shell); no shell runs it.
pub fn parse_argv(s: &str) -> Result<Argv, String> {
    let words = shell_words::split(s).map_err(|e| format!("invalid command {s:?}: {e}"))?;
    if words.is_empty() {
        return Err("empty command".to_string());
    }
    Ok(Argv(words))
}

/// Parses a bandwidth: `1M` (10^6 bytes/s), `500K`, `10MiB` (2^20), `1.5M`, plain bytes per
/// second, optionally followed by `/s`.
pub fn parse_rate(s: &str) -> Result<NonZeroU64, String> {
    let text = s.trim();
    let text = text.strip_suffix("/s").unwrap_or(text).trim_end();
    let size: bytesize::ByteSize = text.parse().map_err(|_| {
        format!("invalid rate {s:?}: expected bytes per second like 500K, 1M, 10MiB")
    })?;
    NonZeroU64::new(size.as_u64()).ok_or_else(|| format!("invalid rate {s:?}: must be above 0"))
}

/// Parses the `--metrics` address: an IP and a port, like `127.0.0.1:9464` or `[::1]:9464`.
pub fn parse_metrics_addr(s: &str) -> Result<SocketAddr, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("invalid metrics address {s:?}: expected IP:PORT like 127.0.0.1:9464"))
}

/// Parses `1s`, `500ms`, `2m`, or a bare number of seconds (`0`, `1.5`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.parse::<f64>() {
        if secs >= 0.0 && secs.is_finite() {
            return Ok(Duration::from_secs_f64(secs));
        }
    }
    humantime::parse_duration(s).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults the help shows are the engine's (written once, in `skynet_core::retry`
    /// and `HandlerConfig`): a changed default cannot leave the help telling another story.
    #[test]
    fn the_help_shows_the_engines_defaults() {
        use clap::CommandFactory;
        use skynet_core::retry::{RetryPolicy, DEFAULT_WORKERS};
        let show = |d: Duration| match d.as_secs() {
            s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
            s => format!("{s}s"),
        };
        let retry = RetryPolicy::default();
        let handler = skynet_core::HandlerConfig::default();
        let cli = Cli::command();
        let run = cli.find_subcommand("run").expect("run subcommand");
        for (arg, default) in [
            ("workers", DEFAULT_WORKERS.to_string()),
            ("max_attempts", retry.max_attempts.to_string()),
            ("retry_delay", show(retry.base)),
            ("retry_failed_after", show(retry.park_base)),
            ("reconnect_max", show(handler.reconnect_cap)),
        ] {
            let help = run
                .get_arguments()
                .find(|a| a.get_id() == arg)
                .and_then(|a| a.get_help())
                .unwrap_or_else(|| panic!("--{arg} has no help"))
                .to_string();
            assert!(
                help.contains(&format!("[default: {default}]")),
                "--{arg}: the help says {help:?}, the engine's default is {default}"
            );
        }
    }

    #[test]
    fn rates() {
        let r = |s: &str| parse_rate(s).map(NonZeroU64::get);
        assert_eq!(r("1M"), Ok(1_000_000));
        assert_eq!(r("500K"), Ok(500_000));
        assert_eq!(r("500k"), Ok(500_000));
        assert_eq!(r("10MiB"), Ok(10 * 1024 * 1024));
        assert_eq!(r("1.5M"), Ok(1_500_000));
        assert_eq!(r("2048"), Ok(2048));
        assert_eq!(r("1M/s"), Ok(1_000_000));
        for bad in ["", "0", "fast", "5X", "-1M", "1 parsec"] {
            assert!(r(bad).is_err(), "{bad:?} accepted");
        }
    }

    /// `--help` lists the default excludes: every one of them, so the list cannot drift.
    #[test]
    fn help_lists_every_default_exclude() {
        use clap::CommandFactory;
        let mut cli = Cli::command();
        for sub in ["run", "sync"] {
            let cmd = cli.find_subcommand_mut(sub).unwrap();
            let arg = cmd
                .get_arguments()
                .find(|a| a.get_id() == "no_default_excludes")
                .unwrap();
            let help = arg.get_help().unwrap().to_string();
            let listed: Vec<&str> = help.split_whitespace().collect();
            for glob in skynet_core::default_excludes::DEFAULT_EXCLUDES {
                assert!(listed.contains(glob), "{sub} --help lacks {glob}: {help}");
            }
        }
    }

    /// `baseline`'s options say what the same options say for `run` and `sync`.
    #[test]
    fn baseline_options_read_as_everywhere() {
        use clap::CommandFactory;
        let cli = Cli::command();
        let args_of = |sub: &str| -> Vec<(String, String)> {
            let cmd = cli.find_subcommand(sub).unwrap();
            cmd.get_arguments()
                .map(|a| {
                    let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
                    (a.get_id().to_string(), help)
                })
                .collect()
        };
        let sync = args_of("sync");
        for (id, help) in args_of("baseline") {
            if ["src", "dest", "config", "dry_run", "help"].contains(&id.as_str()) {
                continue;
            }
            let theirs = sync.iter().find(|(i, _)| *i == id);
            assert_eq!(theirs.map(|(_, h)| h), Some(&help), "--{id}");
        }
    }

    #[test]
    fn metrics_addresses() {
        assert_eq!(parse_metrics_addr("127.0.0.1:9464").unwrap().port(), 9464);
        assert!(parse_metrics_addr("[::1]:9464").unwrap().ip().is_loopback());
        for bad in ["", "9464", "localhost", "127.0.0.1", "127.0.0.1:99999"] {
            assert!(parse_metrics_addr(bad).is_err(), "{bad:?} accepted");
        }
    }
}
