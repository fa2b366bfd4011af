//! The TOML configuration of `skynet run --config FILE`: defaults at the top level, one
//! `[[mapping]]` table per source/destination pair. Unknown keys are errors naming the key,
//! so a typo never silently disables an option.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::cli::{parse_duration, HostKeyPolicy, MappingArgs};

#[derive(Debug, Deserialize)]
pub struct ConfigFile {
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    #[serde(flatten)]
    pub defaults: MappingToml,
    #[serde(default)]
    pub mapping: Vec<MappingEntry>,
}

#[derive(Debug, Deserialize)]
pub struct MappingEntry {
    pub source: PathBuf,
    pub destination: String,
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
    "poll",
    "max_attempts",
    "retry_delay",
    "reconnect_max",
    "identity",
    "known_hosts",
    "host_key_policy",
    "timeout",
    "s3_endpoint",
    "s3_path_style",
];

/// Rejects any key that is not an option, naming it and where it stands.
fn check_keys(value: &toml::Table, path: &Path) -> Result<()> {
    let unknown = |key: &str, place: &str| {
        anyhow::anyhow!("config {}: unknown key `{key}` {place}", path.display())
    };
    for key in value.keys() {
        if !OPTION_KEYS.contains(&key.as_str()) && key != "state_dir" && key != "mapping" {
            return Err(unknown(key, "at the top level"));
        }
    }
    if let Some(toml::Value::Array(maps)) = value.get("mapping") {
        for (i, m) in maps.iter().enumerate() {
            let Some(table) = m.as_table() else { continue };
            for key in table.keys() {
                if !OPTION_KEYS.contains(&key.as_str()) && key != "source" && key != "destination" {
                    return Err(unknown(key, &format!("in mapping {}", i + 1)));
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
    pub poll: Option<bool>,
    pub max_attempts: Option<u32>,
    pub retry_delay: Option<String>,
    pub reconnect_max: Option<String>,
    pub identity: Option<PathBuf>,
    pub known_hosts: Option<PathBuf>,
    pub host_key_policy: Option<HostKeyPolicy>,
    pub timeout: Option<String>,
    pub s3_endpoint: Option<String>,
    pub s3_path_style: Option<bool>,
}

/// One mapping from the file, resolved: source, destination and options.
#[derive(Debug)]
pub struct ResolvedMapping {
    pub source: PathBuf,
    pub destination: String,
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
    fn over(&self, base: &MappingToml) -> MappingToml {
        macro_rules! pick {
            ($($f:ident),*) => { MappingToml { $($f: self.$f.clone().or_else(|| base.$f.clone()),)* } };
        }
        pick!(
            complete_sync,
            workers,
            settle,
            exclude,
            poll,
            max_attempts,
            retry_delay,
            reconnect_max,
            identity,
            known_hosts,
            host_key_policy,
            timeout,
            s3_endpoint,
            s3_path_style
        )
    }

    /// Command-line flags win over the file.
    fn into_args(self, cli: &MappingArgs, state_dir: Option<PathBuf>) -> Result<MappingArgs> {
        let mut excludes = self.exclude.unwrap_or_default();
        excludes.extend(cli.excludes.iter().cloned());
        Ok(MappingArgs {
            complete_sync: cli.complete_sync || self.complete_sync.unwrap_or(false),
            state_dir: cli.state_dir.clone().or(state_dir),
            workers: cli.workers.or(self.workers),
            settle: cli.settle.or(duration("settle", &self.settle)?),
            excludes,
            poll: cli.poll || self.poll.unwrap_or(false),
            max_attempts: cli.max_attempts.or(self.max_attempts),
            retry_delay: cli
                .retry_delay
                .or(duration("retry_delay", &self.retry_delay)?),
            reconnect_max: cli
                .reconnect_max
                .or(duration("reconnect_max", &self.reconnect_max)?),
            identity: cli.identity.clone().or(self.identity),
            known_hosts: cli.known_hosts.clone().or(self.known_hosts),
            host_key_policy: cli.host_key_policy.or(self.host_key_policy),
            timeout: cli.timeout.or(duration("timeout", &self.timeout)?),
            s3_endpoint: cli.s3_endpoint.clone().or(self.s3_endpoint),
            s3_path_style: cli.s3_path_style || self.s3_path_style.unwrap_or(false),
        })
    }
}

/// Reads and checks a config file; relative paths in it are relative to the file.
pub fn load(path: &Path, cli: &MappingArgs) -> Result<Vec<ResolvedMapping>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config {}", path.display()))?;
    parse(&text, path, cli)
}

pub fn parse(text: &str, path: &Path, cli: &MappingArgs) -> Result<Vec<ResolvedMapping>> {
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
    check_keys(&table, path)?;
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
    let mut out = Vec::new();
    for (i, m) in file.mapping.iter().enumerate() {
        let merged = m.options.over(&file.defaults);
        let args = merged
            .into_args(cli, state_dir.clone())
            .with_context(|| format!("config {}: mapping {}", path.display(), i + 1))?;
        let destination =
            if m.destination.contains("://") || Path::new(&m.destination).is_absolute() {
                m.destination.clone()
            } else {
                resolve(Path::new(&m.destination)).display().to_string()
            };
        out.push(ResolvedMapping {
            source: resolve(&m.source),
            destination,
            args,
        });
    }
    Ok(out)
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
        assert_eq!(maps[0].args.excludes, vec!["*.tmp".to_string()]);
        assert_eq!(maps[1].args.workers, Some(8));
        assert!(maps[1].args.complete_sync);
        assert_eq!(maps[1].destination, "sftp://u@h/x");
    }

    #[test]
    fn errors_name_the_problem() {
        let e = parse_str("[[mapping]]\nsource = \"a\"\ndestination = \"b\"\ncolour = 1\n")
            .unwrap_err();
        assert!(format!("{e:#}").contains("colour"), "{e:#}");
        let e = parse_str("[[mapping]]\nsource = 1\n").unwrap_err();
        assert!(format!("{e:#}").contains("line 2"), "{e:#}");
        let e = parse_str("workers = 2\n").unwrap_err();
        assert!(format!("{e:#}").contains("no [[mapping]]"), "{e:#}");
        let e = parse_str("[[mapping]]\nsource = \"a\"\ndestination = \"b\"\nsettle = \"soon\"\n")
            .unwrap_err();
        assert!(format!("{e:#}").contains("settle"), "{e:#}");
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
