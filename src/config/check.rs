//! Checks of a config file that need to say *where*: each value on its own, so a mistake
//! names its key and the line it stands on; and mappings that would share one state.
//!
//! serde's `flatten` (the options shared by the top level and each `[[mapping]]`) loses
//! toml's positions: a wrong value inside a mapping used to be reported at the mapping's
//! header, or at "line 1", without its key. So every key is checked alone first, against the
//! same types and parsers the whole file goes through afterwards, with its line from toml's
//! spans.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use serde::Deserialize;
use toml::Spanned;

use super::{MappingToml, ResolvedMapping, OPTION_KEYS};
use crate::cli::{parse_metrics_addr, MappingArgs};
use crate::destination::Destination;

/// Where each value of the file stands.
pub struct Lines<'a> {
    text: &'a str,
    top: BTreeMap<String, Spanned<toml::Value>>,
    mappings: Vec<BTreeMap<String, Spanned<toml::Value>>>,
}

#[derive(Deserialize)]
struct MappingSpans {
    #[serde(default)]
    mapping: Vec<BTreeMap<String, Spanned<toml::Value>>>,
}

impl<'a> Lines<'a> {
    /// The positions of `text`, which parsed already as a table (so this cannot fail but
    /// for a `mapping` that is not an array of tables, which [`super::check_keys`] reports).
    pub fn of(text: &'a str) -> Lines<'a> {
        Lines {
            text,
            top: toml::from_str(text).unwrap_or_default(),
            mappings: toml::from_str::<MappingSpans>(text)
                .map(|m| m.mapping)
                .unwrap_or_default(),
        }
    }

    fn line_at(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    /// The line of `key` at the top level.
    pub fn top(&self, key: &str) -> Option<usize> {
        self.top.get(key).map(|v| self.line_at(v.span().start))
    }

    /// The line of `key` in mapping `index` (from 0).
    pub fn in_mapping(&self, index: usize, key: &str) -> Option<usize> {
        let value = self.mappings.get(index)?.get(key)?;
        Some(self.line_at(value.span().start))
    }

    /// Where a mapping is: its `source` line, else its first key's.
    pub fn mapping(&self, index: usize) -> Option<usize> {
        let table = self.mappings.get(index)?;
        let value = table
            .get("source")
            .or_else(|| table.values().min_by_key(|v| v.span().start))?;
        Some(self.line_at(value.span().start))
    }
}

/// Checks every value of the file alone: its type, and what parsing it takes (durations,
/// rates, globs are parsed later, but the same way). The first wrong one is reported as
/// `config FILE line N: mapping M: `key`: what is wrong`.
pub fn values(table: &toml::Table, lines: &Lines<'_>, path: &Path) -> Result<()> {
    let at = |line: Option<usize>| match line {
        Some(n) => format!("config {} line {n}", path.display()),
        None => format!("config {}", path.display()),
    };
    // In the file's order: the first mistake reported is the first one met reading it.
    let mut top: Vec<(&String, &toml::Value)> = table.iter().collect();
    top.sort_by_key(|(key, _)| lines.top(key));
    for (key, value) in top {
        let problem = match key.as_str() {
            "mapping" => None,
            "state_dir" => expect_string(value).err(),
            "metrics" => expect_string(value)
                .and_then(|s| parse_metrics_addr(s).map_err(|e| anyhow!(e)))
                .err(),
            _ => option(key, value).err(),
        };
        if let Some(e) = problem {
            return Err(anyhow!("{}: `{key}`: {e:#}", at(lines.top(key))));
        }
    }
    let Some(toml::Value::Array(mappings)) = table.get("mapping") else {
        return Ok(());
    };
    for (i, m) in mappings.iter().enumerate() {
        let Some(m) = m.as_table() else { continue };
        if !m.contains_key("source") {
            return Err(anyhow!(
                "{}: mapping {} has no `source`",
                at(lines.mapping(i)),
                i + 1
            ));
        }
        let mut keys: Vec<(&String, &toml::Value)> = m.iter().collect();
        keys.sort_by_key(|(key, _)| lines.in_mapping(i, key));
        for (key, value) in keys {
            let problem = match key.as_str() {
                "source" | "destination" => expect_string(value).err(),
                _ => option(key, value).err(),
            };
            if let Some(e) = problem {
                return Err(anyhow!(
                    "{}: mapping {}: `{key}`: {e:#}",
                    at(lines.in_mapping(i, key)),
                    i + 1
                ));
            }
        }
    }
    Ok(())
}

fn expect_string(value: &toml::Value) -> Result<&str> {
    value
        .as_str()
        .ok_or_else(|| anyhow!("expected a string, found {}", value.type_str()))
}

/// One option alone, through the same deserialisation and parsing as the whole file.
fn option(key: &str, value: &toml::Value) -> Result<()> {
    if !OPTION_KEYS.contains(&key) {
        // Reported by `check_keys`, with where it stands.
        return Ok(());
    }
    let mut single = toml::Table::new();
    single.insert(key.to_string(), value.clone());
    let parsed: MappingToml = toml::Value::Table(single)
        .try_into()
        .map_err(|e: toml::de::Error| anyhow!("{}", expected(key, value, e.message())))?;
    parsed
        .into_args(&MappingArgs::default(), None)
        .map_err(|e| {
            // "settle: invalid duration": the key is named already.
            let msg = format!("{e:#}");
            anyhow!("{}", msg.strip_prefix(&format!("{key}: ")).unwrap_or(&msg))
        })?;
    // Globs are compiled by the engine; a bad one is found here, with its line.
    if let Some(globs) = parsed_globs(key, value) {
        skynet_core::filter::Filter::new(&globs).map_err(|e| anyhow!("{e}"))?;
    }
    Ok(())
}

/// serde's message for a value of the wrong type, said in the file's terms where serde's
/// are obscure (an untagged enum, a duration given as a bare number).
fn expected(key: &str, value: &toml::Value, message: &str) -> String {
    let found = match value {
        toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_) => {
            value.to_string()
        }
        other => other.type_str().to_string(),
    };
    match key {
        "bwlimit" => {
            format!("expected a rate like \"2M\" or \"10MiB\", or bytes per second, found {found}")
        }
        "max_delete" => {
            format!("expected a number of files (100) or a share (\"25%\"), found {found}")
        }
        _ if message.contains("expected a string") && is_duration(key) => {
            format!("expected a duration in quotes, like \"5s\" or \"500ms\", found {found}")
        }
        _ => message.trim().replace('\n', "; "),
    }
}

fn is_duration(key: &str) -> bool {
    matches!(
        key,
        "settle"
            | "retry_delay"
            | "retry_failed_after"
            | "reconnect_max"
            | "timeout"
            | "min_age"
            | "dated_grace"
            | "handoff_delay"
            | "exec_timeout"
    )
}

fn parsed_globs(key: &str, value: &toml::Value) -> Option<Vec<String>> {
    if key != "include" && key != "exclude" {
        return None;
    }
    value.as_array().map(|a| {
        a.iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    })
}

/// Refuses two mappings that would share one state (queue, ledger, lock): the same source
/// and the same destination, e.g. two routes of a source to one place differing only by
/// `include`. Run, they would wait on each other's lock ("another skynet is already
/// running"); said here, the message names both and what to do.
///
/// The identity compared is [`identity`]: relax it there (mappings that carry a `name` of
/// their own get a state of their own, issue 14 item 4).
pub fn distinct(mappings: &[ResolvedMapping], lines: &Lines<'_>, path: &Path) -> Result<()> {
    let mut seen: Vec<((PathBuf, String), usize)> = Vec::new();
    for (i, m) in mappings.iter().enumerate() {
        let Some(id) = identity(m) else { continue };
        if let Some((_, first)) = seen.iter().find(|(other, _)| *other == id) {
            let place = |n: usize| match lines.mapping(n) {
                Some(line) => format!("mapping {} (line {line})", n + 1),
                None => format!("mapping {}", n + 1),
            };
            let shown = mappings[i]
                .destination
                .as_deref()
                .map(crate::destination::redact)
                .unwrap_or_else(|| "the same command".to_string());
            return Err(anyhow!(
                "config {}: {} and {} both send {} to {shown}: they would share one queue and ledger, and only one could run; name each (`name = \"…\"`), or merge them into one [[mapping]] (its `include` taking both lists)",
                path.display(),
                place(*first),
                place(i),
                id.0.display(),
            ));
        }
        seen.push((id, i));
    }
    Ok(())
}

/// What names a mapping's state: its source folder and its destination as the state's name
/// is derived from them (see `commands::state_dir_of`). `None` when the destination does not
/// parse: that error is reported, with its context, when the mapping starts.
fn identity(m: &ResolvedMapping) -> Option<(PathBuf, String)> {
    // A named mapping keeps its state under its name (names are checked distinct): named
    // routes may share a source and a destination.
    if m.args.name.is_some() {
        return None;
    }
    let destination = match (&m.destination, &m.args.exec) {
        (Some(d), _) => Destination::parse(d).ok()?.with_args(&m.args).ok()?,
        (None, Some(argv)) => Destination::Exec(argv.0.clone()),
        (None, None) => return None,
    };
    let source = m
        .source
        .canonicalize()
        .unwrap_or_else(|_| m.source.components().collect());
    Some((source, destination.state_key()))
}
