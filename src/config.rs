//! The TOML configuration of `skynet run --config FILE`: defaults at the top level, one
//! `[[mapping]]` table per source/destination pair. Unknown keys are errors naming the key,
//! so a typo never silently disables an option.

use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use skynet_core::guard::MaxDelete;

use crate::cli::{
    parse_duration, parse_metrics_addr, parse_rate, Argv, ConnectionArgs, ExecPer, FilterArgs,
    HostKeyPolicy, MappingArgs,
};

mod check;

#[derive(Debug, Deserialize)]
pub struct ConfigFile {
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// Address of the metrics endpoint (`--metrics`), top level only.
    #[serde(default)]
    pub metrics: Option<String>,
    #[serde(flatten)]
    pub defaults: MappingToml,
    #[serde(default)]
    pub mapping: Vec<MappingEntry>,
}

#[derive(Debug, Deserialize)]
pub struct MappingEntry {
    /// The mapping's name (see `--name`): one mapping's, so never a default for all.
    #[serde(default)]
    pub name: Option<String>,
    pub source: PathBuf,
    /// None for a command destination (`exec`).
    #[serde(default)]
    pub destination: Option<String>,
    #[serde(flatten)]
    pub options: MappingToml,
}

/// The keys of [`MappingToml`]. serde cannot deny unknown keys through `flatten`, so
/// [`check_keys`] does it against this list.
const OPTION_KEYS: &[&str] = &[
    "complete_sync",
    "workers",
    "settle",
    "exclude",
    "ignore_case",
    "default_excludes",
    "poll",
    "max_attempts",
    "retry_delay",
    "retry_failed_after",
    "reconnect_max",
    "identity",
    "known_hosts",
    "host_key_policy",
    "timeout",
    "s3_endpoint",
    "s3_path_style",
    "include",
    "send_once",
    "min_age",
    "dated",
    "dated_grace",
    "remove_source",
    "handoff_delay",
    "verify_read_back",
    "on_delivered",
    "exec",
    "exec_delete",
    "exec_move",
    "exec_send_moves",
    "exec_per",
    "exec_timeout",
    "pass_env",
    "bwlimit",
    "max_delete",
    "keep_versions",
    "versions_dir",
];

/// Keys allowed only at the top level, besides the options and `mapping`.
const TOP_LEVEL_KEYS: &[&str] = &["state_dir", "metrics", "mapping"];

/// Rejects any key that is not an option, naming it and where it stands.
fn check_keys(value: &toml::Table, lines: &check::Lines<'_>, path: &Path) -> Result<()> {
    let unknown = |key: &str, line: Option<usize>, place: &str| {
        let at = line.map(|n| format!(" line {n}")).unwrap_or_default();
        anyhow::anyhow!("config {}{at}: unknown key `{key}` {place}", path.display())
    };
    for key in value.keys() {
        if !OPTION_KEYS.contains(&key.as_str()) && !TOP_LEVEL_KEYS.contains(&key.as_str()) {
            return Err(unknown(key, lines.top(key), "at the top level"));
        }
    }
    if let Some(toml::Value::Array(maps)) = value.get("mapping") {
        for (i, m) in maps.iter().enumerate() {
            let Some(table) = m.as_table() else { continue };
            for key in table.keys() {
                if !OPTION_KEYS.contains(&key.as_str())
                    && !["source", "destination", "name"].contains(&key.as_str())
                {
                    let line = lines.in_mapping(i, key);
                    return Err(unknown(key, line, &format!("in mapping {}", i + 1)));
                }
            }
        }
    }
    Ok(())
}

/// The per-mapping options, all optional so that mapping values override the top level.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct MappingToml {
    pub complete_sync: Option<bool>,
    pub workers: Option<usize>,
    pub settle: Option<String>,
    pub exclude: Option<Vec<String>>,
    pub ignore_case: Option<bool>,
    /// `false`: send the partial-download and editor temporary names too.
    pub default_excludes: Option<bool>,
    pub poll: Option<bool>,
    pub max_attempts: Option<u32>,
    pub retry_delay: Option<String>,
    pub retry_failed_after: Option<String>,
    pub reconnect_max: Option<String>,
    pub identity: Option<PathBuf>,
    pub known_hosts: Option<PathBuf>,
    pub host_key_policy: Option<HostKeyPolicy>,
    pub timeout: Option<String>,
    pub s3_endpoint: Option<String>,
    pub s3_path_style: Option<bool>,
    pub include: Option<Vec<String>>,
    pub send_once: Option<bool>,
    pub min_age: Option<String>,
    pub dated: Option<String>,
    pub dated_grace: Option<String>,
    pub remove_source: Option<bool>,
    pub handoff_delay: Option<String>,
    pub verify_read_back: Option<bool>,
    pub on_delivered: Option<Argv>,
    pub exec: Option<Argv>,
    pub exec_delete: Option<Argv>,
    pub exec_move: Option<Argv>,
    pub exec_send_moves: Option<bool>,
    pub exec_per: Option<ExecPer>,
    pub exec_timeout: Option<String>,
    pub pass_env: Option<Vec<String>>,
    pub bwlimit: Option<RateToml>,
    pub max_delete: Option<MaxDeleteToml>,
    pub keep_versions: Option<String>,
    pub versions_dir: Option<String>,
}

/// A deletion limit in the file: `100` files, or `"25%"` of the delivered ones.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum MaxDeleteToml {
    Files(u64),
    Text(String),
}

impl MaxDeleteToml {
    fn parse(&self) -> Result<MaxDelete> {
        match self {
            MaxDeleteToml::Files(n) => Ok(MaxDelete::Files(*n)),
            MaxDeleteToml::Text(s) => s.parse().map_err(|e| anyhow::anyhow!("max_delete: {e}")),
        }
    }
}

/// A bandwidth in the file: `"1M"`, `"10MiB"`, or a number of bytes per second.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RateToml {
    Bytes(u64),
    Text(String),
}

impl RateToml {
    fn parse(&self) -> Result<NonZeroU64> {
        match self {
            RateToml::Bytes(n) => {
                NonZeroU64::new(*n).ok_or_else(|| anyhow::anyhow!("bwlimit: must be above 0"))
            }
            RateToml::Text(s) => parse_rate(s).map_err(|e| anyhow::anyhow!("bwlimit: {e}")),
        }
    }
}

/// One mapping from the file, resolved: source, destination and options.
#[derive(Debug)]
pub struct ResolvedMapping {
    pub source: PathBuf,
    /// None for a command destination (`exec`).
    pub destination: Option<String>,
    pub args: MappingArgs,
}

fn duration(field: &str, value: &Option<String>) -> Result<Option<Duration>> {
    value
        .as_deref()
        .map(|s| parse_duration(s).map_err(|e| anyhow::anyhow!("{field}: {e}")))
        .transpose()
}

impl MappingToml {
    /// `self` over `base` (mapping over top level).
    /// Every option of the mapping wins over the top level's, except `exclude`: excludes add
    /// up (a top-level `*.tmp` still holds in a mapping that excludes more).
    fn over(&self, base: &MappingToml) -> MappingToml {
        macro_rules! pick {
            ($($f:ident),*) => { MappingToml {
                exclude: match (&base.exclude, &self.exclude) {
                    (Some(b), Some(m)) => Some(b.iter().chain(m).cloned().collect()),
                    (b, m) => m.clone().or_else(|| b.clone()),
                },
                $($f: self.$f.clone().or_else(|| base.$f.clone()),)*
            } };
        }
        pick!(
            complete_sync,
            workers,
            settle,
            ignore_case,
            default_excludes,
            poll,
            max_attempts,
            retry_delay,
            retry_failed_after,
            reconnect_max,
            identity,
            known_hosts,
            host_key_policy,
            timeout,
            s3_endpoint,
            s3_path_style,
            include,
            send_once,
            min_age,
            dated,
            dated_grace,
            remove_source,
            handoff_delay,
            verify_read_back,
            on_delivered,
            exec,
            exec_delete,
            exec_move,
            exec_send_moves,
            exec_per,
            exec_timeout,
            pass_env,
            bwlimit,
            max_delete,
            keep_versions,
            versions_dir
        )
    }

    /// Command-line flags win over the file.
    fn into_args(self, cli: &MappingArgs, state_dir: Option<PathBuf>) -> Result<MappingArgs> {
        let mut excludes = self.exclude.unwrap_or_default();
        excludes.extend(cli.filters.excludes.iter().cloned());
        Ok(MappingArgs {
            name: cli.name.clone(),
            sibling_names: Vec::new(),
            complete_sync: cli.complete_sync || self.complete_sync.unwrap_or(false),
            state_dir: cli.state_dir.clone().or(state_dir),
            workers: cli.workers.or(self.workers),
            settle: cli.settle.or(duration("settle", &self.settle)?),
            filters: FilterArgs {
                excludes,
                ignore_case: cli.filters.ignore_case || self.ignore_case.unwrap_or(false),
                no_default_excludes: cli.filters.no_default_excludes
                    || self.default_excludes == Some(false),
                includes: {
                    let mut v = self.include.unwrap_or_default();
                    v.extend(cli.filters.includes.iter().cloned());
                    v
                },
            },
            poll: cli.poll || self.poll.unwrap_or(false),
            max_attempts: cli.max_attempts.or(self.max_attempts),
            retry_delay: cli
                .retry_delay
                .or(duration("retry_delay", &self.retry_delay)?),
            retry_failed_after: cli
                .retry_failed_after
                .or(duration("retry_failed_after", &self.retry_failed_after)?),
            reconnect_max: cli
                .reconnect_max
                .or(duration("reconnect_max", &self.reconnect_max)?),
            connection: ConnectionArgs {
                identity: cli.connection.identity.clone().or(self.identity),
                known_hosts: cli.connection.known_hosts.clone().or(self.known_hosts),
                host_key_policy: cli.connection.host_key_policy.or(self.host_key_policy),
                timeout: cli
                    .connection
                    .timeout
                    .or(duration("timeout", &self.timeout)?),
                s3_endpoint: cli.connection.s3_endpoint.clone().or(self.s3_endpoint),
                s3_path_style: cli.connection.s3_path_style || self.s3_path_style.unwrap_or(false),
            },
            send_once: cli.send_once || self.send_once.unwrap_or(false),
            min_age: cli.min_age.or(duration("min_age", &self.min_age)?),
            dated: cli.dated.clone().or(self.dated),
            dated_grace: cli
                .dated_grace
                .or(duration("dated_grace", &self.dated_grace)?),
            remove_source: cli.remove_source || self.remove_source.unwrap_or(false),
            handoff_delay: cli
                .handoff_delay
                .or(duration("handoff_delay", &self.handoff_delay)?),
            verify_read_back: cli.verify_read_back || self.verify_read_back.unwrap_or(false),
            on_delivered: cli.on_delivered.clone().or(self.on_delivered),
            exec: cli.exec.clone().or(self.exec),
            exec_delete: cli.exec_delete.clone().or(self.exec_delete),
            exec_move: cli.exec_move.clone().or(self.exec_move),
            exec_send_moves: cli.exec_send_moves || self.exec_send_moves.unwrap_or(false),
            exec_per: cli.exec_per.or(self.exec_per),
            exec_timeout: cli
                .exec_timeout
                .or(duration("exec_timeout", &self.exec_timeout)?),
            pass_env: {
                let mut v = self.pass_env.unwrap_or_default();
                v.extend(cli.pass_env.iter().cloned());
                v
            },
            bwlimit: cli
                .bwlimit
                .or(self.bwlimit.as_ref().map(RateToml::parse).transpose()?),
            max_delete: cli.max_delete.or(self
                .max_delete
                .as_ref()
                .map(MaxDeleteToml::parse)
                .transpose()?),
            keep_versions: cli
                .keep_versions
                .or(duration("keep_versions", &self.keep_versions)?),
            versions_dir: cli.versions_dir.clone().or(self.versions_dir),
        })
    }
}

/// A config file, resolved: its mappings and the daemon-wide settings.
#[derive(Debug)]
pub struct Loaded {
    pub mappings: Vec<ResolvedMapping>,
    /// `state_dir`, relative to the file resolved (what `status` reads for this config).
    pub state_dir: Option<PathBuf>,
    /// The metrics endpoint (`metrics = "127.0.0.1:9464"`).
    pub metrics: Option<SocketAddr>,
}

/// Reads and checks a config file; relative paths in it are relative to the file.
pub fn load(path: &Path, cli: &MappingArgs) -> Result<Loaded> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config {}", path.display()))?;
    parse_config(&text, path, cli)
}

#[cfg(test)]
pub fn parse(text: &str, path: &Path, cli: &MappingArgs) -> Result<Vec<ResolvedMapping>> {
    parse_config(text, path, cli).map(|c| c.mappings)
}

pub fn parse_config(text: &str, path: &Path, cli: &MappingArgs) -> Result<Loaded> {
    let one_line = |e: toml::de::Error| {
        // toml's message spans several lines with a snippet; keep it to one.
        // Some messages span lines themselves ("invalid escape sequence\nexpected ...").
        let msg = e.message().trim().replace('\n', "; ");
        match e.span() {
            Some(span) => {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                anyhow::anyhow!("config {} line {line}: {msg}", path.display())
            }
            None => anyhow::anyhow!("config {}: {msg}", path.display()),
        }
    };
    let table: toml::Table = toml::from_str(text).map_err(one_line)?;
    let lines = check::Lines::of(text);
    check_keys(&table, &lines, path)?;
    check::values(&table, &lines, path)?;
    let file: ConfigFile = toml::from_str(text).map_err(one_line)?;
    if file.mapping.is_empty() {
        bail!("config {}: no [[mapping]] table", path.display());
    }
    let base_dir = path.parent().unwrap_or(Path::new("."));
    let resolve = |p: &Path| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base_dir.join(p)
        }
    };
    let state_dir = file.state_dir.as_deref().map(resolve);
    let metrics = file
        .metrics
        .as_deref()
        .map(parse_metrics_addr)
        .transpose()
        .map_err(|e| anyhow::anyhow!("config {}: metrics: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, m) in file.mapping.iter().enumerate() {
        let merged = m.options.over(&file.defaults);
        let mut args = merged
            .into_args(cli, state_dir.clone())
            .with_context(|| format!("config {}: mapping {}", path.display(), i + 1))?;
        args.name = m.name.clone();
        let destination = m.destination.as_ref().map(|d| {
            if d.contains("://") || Path::new(d).is_absolute() {
                d.clone()
            } else {
                resolve(Path::new(d)).display().to_string()
            }
        });
        if destination.is_none() && args.exec.is_none() {
            bail!(
                "config {}: mapping {} has no `destination` (or `exec` command)",
                path.display(),
                i + 1
            );
        }
        out.push(ResolvedMapping {
            source: resolve(&m.source),
            destination,
            args,
        });
    }
    let names: Vec<String> = file.mapping.iter().filter_map(|m| m.name.clone()).collect();
    let mut seen = std::collections::HashSet::new();
    for name in &names {
        if !seen.insert(name) {
            bail!(
                "config {}: two mappings are named {name:?}; each needs its own name",
                path.display()
            );
        }
    }
    for m in &mut out {
        m.args.sibling_names = names
            .iter()
            .filter(|n| Some(*n) != m.args.name.as_ref())
            .cloned()
            .collect();
    }
    check::distinct(&out, &lines, path)?;
    Ok(Loaded {
        mappings: out,
        state_dir,
        metrics,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> Result<Vec<ResolvedMapping>> {
        parse(
            s,
            Path::new("/etc/skynet/skynet.toml"),
            &MappingArgs::default(),
        )
    }

    #[test]
    fn mapping_overrides_top_level() {
        let maps = parse_str(
            r#"
            settle = "2s"
            workers = 8
            exclude = [".git"]
            [[mapping]]
            source = "photos"
            destination = "/mnt/backup"
            workers = 2
            exclude = ["*.tmp"]
            [[mapping]]
            source = "/abs"
            destination = "sftp://u@h/x"
            complete_sync = true
            "#,
        )
        .unwrap();
        assert_eq!(maps.len(), 2);
        assert_eq!(maps[0].source, Path::new("/etc/skynet/photos"));
        assert_eq!(maps[0].args.workers, Some(2));
        assert_eq!(maps[0].args.settle, Some(Duration::from_secs(2)));
        // Excludes add up; every other option of the mapping wins.
        assert_eq!(
            maps[0].args.filters.excludes,
            vec![".git".to_string(), "*.tmp".to_string()]
        );
        assert_eq!(maps[1].args.filters.excludes, vec![".git".to_string()]);
        assert_eq!(maps[1].args.workers, Some(8));
        assert!(maps[1].args.complete_sync);
        assert_eq!(maps[1].destination.as_deref(), Some("sftp://u@h/x"));
    }

    #[test]
    fn errors_name_the_problem() {
        let e = parse_str("[[mapping]]\nsource = \"a\"\ndestination = \"b\"\ncolour = 1\n")
            .unwrap_err();
        assert!(format!("{e:#}").contains("colour"), "{e:#}");
        let e = parse_str("[[mapping]]\nsource = 1\n").unwrap_err();
        assert!(
            format!("{e:#}").contains("line 2: mapping 1: `source`: expected a string"),
            "{e:#}"
        );
        let e = parse_str("workers = 2\n").unwrap_err();
        assert!(format!("{e:#}").contains("no [[mapping]]"), "{e:#}");
        let e = parse_str("[[mapping]]\nsource = \"a\"\ndestination = \"b\"\nsettle = \"soon\"\n")
            .unwrap_err();
        assert!(format!("{e:#}").contains("settle"), "{e:#}");
    }

    /// A wrong value names its key and the line it is on, wherever it stands; the first one
    /// in the file is the one reported.
    #[test]
    fn a_wrong_value_names_its_key_and_line() {
        let text = |wrong: &str| {
            format!(
                "workers = 2\n[[mapping]]\nsource = \"a\"\ndestination = \"/b\"\n\n[[mapping]]\nsource = \"c\"\n# note\ndestination = \"/d\"\n{wrong}\nretry_delay = \"later\"\n"
            )
        };
        for (wrong, says) in [
            ("workers = \"many\"", "expected usize"),
            ("settle = \"soon\"", "invalid duration \"soon\""),
            ("timeout = 5", "expected a duration in quotes"),
            ("exclude = \"*.tmp\"", "expected a sequence"),
            ("exclude = [\"[a\"]", "[a"),
            ("include = [1]", "expected a string"),
            ("complete_sync = \"yes\"", "expected a boolean"),
            ("bwlimit = -5", "found -5"),
            ("max_delete = []", "expected a number of files"),
            ("host_key_policy = \"lenient\"", "lenient"),
            ("exec = \"rsync {path}\"", "expected a sequence"),
        ] {
            let key = wrong.split(' ').next().unwrap();
            let e = format!("{:#}", parse_str(&text(wrong)).unwrap_err());
            assert!(
                e.starts_with("config /etc/skynet/skynet.toml line 10: mapping 2: "),
                "{wrong}: {e}"
            );
            assert!(e.contains(&format!("`{key}`")), "{wrong}: {e}");
            assert!(e.contains(says), "{wrong}: {e}");
        }
        let e = parse_str("\nsettle = 1\n[[mapping]]\nsource = \"a\"\ndestination = \"/b\"\n")
            .unwrap_err();
        assert!(
            format!("{e:#}").contains("line 2: `settle`: expected a duration"),
            "{e:#}"
        );
        let e = parse_str("[[mapping]]\nsource = \"a\"\ndestination = \"/b\"\n[[mapping]]\n\ndestination = \"/c\"\n")
            .unwrap_err();
        assert!(
            format!("{e:#}").contains("line 6: mapping 2 has no `source`"),
            "{e:#}"
        );
        let e = parse_str("[[mapping]]\nsource = \"a\"\ndestination = \"/b\"\ncolour = 1\n")
            .unwrap_err();
        assert!(
            format!("{e:#}").contains("line 4: unknown key `colour` in mapping 1"),
            "{e:#}"
        );
    }

    /// Two mappings that would share one state are refused, naming both; different
    /// destinations of one source (routing) are fine.
    #[test]
    fn the_same_source_and_destination_twice_is_refused() {
        let scratch = tempfile::tempdir().unwrap();
        let src = scratch.path().join("src");
        std::fs::create_dir(&src).unwrap();
        let config = |second_source: &str, second_destination: &str| {
            format!(
                "[[mapping]]\nsource = {src:?}\ndestination = \"sftp://me@host/x\"\ninclude = [\"*.mp4\"]\n\n[[mapping]]\nsource = \"/elsewhere\"\ndestination = \"/b\"\n\n[[mapping]]\nsource = {second_source:?}\ndestination = {second_destination:?}\ninclude = [\"*.jpg\"]\n"
            )
        };
        let same_spelled_otherwise = [
            (src.display().to_string(), "sftp://me@host:22/x/"),
            (format!("{}/../src/", src.display()), "sftp://me@host/x"),
        ];
        for (source, destination) in same_spelled_otherwise {
            let e = parse_str(&config(&source, destination)).unwrap_err();
            let e = format!("{e:#}");
            assert!(
                e.contains("mapping 1 (line 2) and mapping 3 (line 11)"),
                "{e}"
            );
            assert!(e.contains("merge them"), "{e}");
        }
        let routed = config(&src.display().to_string(), "s3://bucket/x");
        assert_eq!(parse_str(&routed).unwrap().len(), 3);
        // Two commands: the same one twice is one state, two different ones are two.
        let exec = |a: &str, b: &str| {
            format!(
                "[[mapping]]\nsource = {src:?}\nexec = [{a:?}]\n[[mapping]]\nsource = {src:?}\nexec = [{b:?}]\n"
            )
        };
        assert!(parse_str(&exec("true", "true")).is_err());
        assert_eq!(parse_str(&exec("true", "false")).unwrap().len(), 2);
    }

    #[test]
    fn bwlimit_and_metrics() {
        let loaded = parse_config(
            r#"
            metrics = "127.0.0.1:9464"
            bwlimit = "1M"
            [[mapping]]
            source = "a"
            destination = "/b"
            [[mapping]]
            source = "c"
            destination = "/d"
            bwlimit = 2048
            "#,
            Path::new("/etc/skynet/skynet.toml"),
            &MappingArgs::default(),
        )
        .unwrap();
        assert_eq!(loaded.metrics, Some("127.0.0.1:9464".parse().unwrap()));
        let rate = |i: usize| loaded.mappings[i].args.bwlimit.map(NonZeroU64::get);
        assert_eq!(rate(0), Some(1_000_000));
        assert_eq!(rate(1), Some(2048));
        let e =
            parse_str("metrics = \"nowhere\"\n[[mapping]]\nsource = \"a\"\ndestination = \"b\"\n")
                .unwrap_err();
        assert!(format!("{e:#}").contains("metrics"), "{e:#}");
        let e = parse_str("[[mapping]]\nsource = \"a\"\ndestination = \"b\"\nbwlimit = \"fast\"\n")
            .unwrap_err();
        assert!(format!("{e:#}").contains("bwlimit"), "{e:#}");
        // The endpoint is the daemon's, not a mapping's.
        let e = parse_str(
            "[[mapping]]\nsource = \"a\"\ndestination = \"b\"\nmetrics = \"127.0.0.1:1\"\n",
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("metrics"), "{e:#}");
    }

    #[test]
    fn example_config_parses_and_shows_every_option() {
        let text = include_str!("../skynet.example.toml");
        let maps = parse(
            text,
            Path::new("/etc/skynet/skynet.example.toml"),
            &MappingArgs::default(),
        )
        .unwrap();
        assert_eq!(maps.len(), 8);
        for key in OPTION_KEYS
            .iter()
            .chain(["state_dir", "metrics", "source", "destination"].iter())
        {
            let shown = text
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{key} =")));
            assert!(shown, "skynet.example.toml does not show `{key}`");
        }
        let exec = &maps[5];
        assert!(exec.destination.is_none());
        assert_eq!(maps[7].args.exec_per, Some(ExecPer::TopLevel));
        assert!(exec.args.send_once);
        // The example's pass_env belongs to the command destination it explains.
        assert_eq!(exec.args.pass_env, ["SKYNET_RSYNC_TOKEN"]);
        assert_eq!(
            exec.args.exec.as_ref().map(|a| a.0[0].as_str()),
            Some("rsync")
        );
        assert_eq!(exec.args.min_age, Some(Duration::from_secs(300)));
        let dated = &maps[6];
        assert!(dated.args.remove_source);
        assert_eq!(dated.args.dated.as_deref(), Some("%Y%m%d"));
        // Routing: one source, three destinations, each with its own includes.
        assert_eq!(maps[2].source, maps[4].source);
        assert_eq!(
            maps[2].args.filters.includes,
            vec!["*.mp4".to_string(), "*.mov".to_string()]
        );
        // Top-level defaults reach every mapping.
        assert!(maps
            .iter()
            .all(|m| m.args.filters.excludes.contains(&".git".to_string())));
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

            /// Any text: no panic, and an error is one line.
            #[test]
            fn any_text(text in any::<String>()) {
                if let Err(e) = parse_str(&text) {
                    prop_assert!(!format!("{e:#}").contains('\n'), "{e:#}");
                }
            }

            /// TOML-shaped text, with known and unknown keys and values of every type.
            #[test]
            fn toml_shaped(
                top in proptest::collection::vec(("[a-z_]{1,14}", "(\"[^\"\\\\]{0,10}\"|-?[0-9]{1,22}|true|\\[\\]|[0-9.e+-]{1,6})"), 0..3),
                maps in proptest::collection::vec(proptest::collection::vec(("(source|destination|workers|settle|timeout|exclude|poll|[a-z_]{1,10})", "(\"[^\"\\\\]{0,10}\"|-?[0-9]{1,22}|false|\\[\"[a-z*{}\\[]{0,4}\"\\])"), 0..5), 0..3),
            ) {
                let mut text = String::new();
                for (k, v) in &top {
                    text.push_str(&format!("{k} = {v}\n"));
                }
                for m in &maps {
                    text.push_str("[[mapping]]\n");
                    for (k, v) in m {
                        text.push_str(&format!("{k} = {v}\n"));
                    }
                }
                if let Err(e) = parse_str(&text) {
                    prop_assert!(!format!("{e:#}").contains('\n'), "{text}: {e:#}");
                }
            }
        }
    }
}
