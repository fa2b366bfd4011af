//! One module per subcommand; `prepare` is what `run`, `sync` and `baseline` share.

pub mod baseline;
pub mod dry_run;
pub mod ledger;
pub mod queue;
pub mod run;
pub mod status;
pub mod sync;
pub mod versions;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use skynet_core::argv::Template;
use skynet_core::command::ChildEnv;
use skynet_core::gate::{DatedNames, Gate};
use skynet_core::handoff::{CommandHook, HandoffOptions};
use skynet_core::retry::RetryPolicy;
use skynet_core::{Connection, HandlerConfig, Mapping, MappingOptions, Throttled};

use crate::cli::{ExecPer, MappingArgs};
use crate::config::ResolvedMapping;
use crate::destination::Destination;
use crate::exit::Exit;
use crate::state::{self, MappingLock};

/// A mapping ready to work: its state opened and locked, its connection built.
pub struct Prepared {
    pub mapping: Mapping,
    pub conn: Arc<dyn Connection>,
    pub destination: String,
    /// The mapping's own state directory (its name is the mapping's name in `status`).
    pub state_dir: PathBuf,
    _lock: MappingLock,
}

/// Checks the source, resolves the destination (DEST, or the `--exec` command) and state,
/// takes the lock.
pub async fn prepare(
    src: &Path,
    dest: Option<&str>,
    args: &MappingArgs,
    what: &str,
) -> Result<Prepared> {
    let destination = destination_of(dest, args)?;
    let source = match src.canonicalize() {
        Ok(source) => source,
        // `run` waits for the source of a mapping it mirrored before, whose disk is away: the
        // mapping pauses until it is back. A source never mirrored must exist (a typo).
        Err(e) if what == "run" && e.kind() == std::io::ErrorKind::NotFound => {
            let source =
                std::path::absolute(src).with_context(|| format!("source {}", src.display()))?;
            let known = locate_state(&source, &destination, args)
                .is_ok_and(|p| skynet_core::state::database_path(p.current()).exists());
            if !known {
                return Err(e).with_context(|| format!("source {}", src.display()));
            }
            tracing::warn!(source = %src.display(), "the source is missing; waiting for it");
            source
        }
        Err(e) => return Err(e).with_context(|| format!("source {}", src.display())),
    };
    if source.exists() && !source.is_dir() {
        anyhow::bail!("source {}: not a directory", src.display());
    }
    check_options(&destination, args)?;
    if let Destination::Local(root) = &destination {
        crate::destination::check_overlap(&source, root)?;
    }
    let identity = destination.display();
    warn_option_like_placeholders(&destination, args);
    let state_dir = state_dir_of(&source, &destination, args)?;
    let lock = MappingLock::acquire(
        &state_dir,
        &format!("{} -> {identity} ({what})", source.display()),
    )?;
    state::make_private(&state_dir)?;
    let opts = mapping_options(args)?;
    let mut mapping = Mapping::open(&source, &state_dir, opts)?;
    mapping.queue().set_meta(
        skynet_core::state::meta::SOURCE,
        &source.display().to_string(),
    )?;
    mapping
        .queue()
        .set_meta(skynet_core::state::meta::DESTINATION, &identity)?;
    mapping.queue().set_meta(
        skynet_core::state::meta::NAME,
        args.name.as_deref().unwrap_or_default(),
    )?;
    if destination_is_per_file(&destination, args) {
        let left = mapping.queue().entries_abandon()?;
        if left > 0 {
            tracing::warn!(entries = left, "entries were waiting for their per-entry command; their files are sent per file instead");
        }
    }
    let mut conn = match &destination {
        Destination::Exec(argv) if args.exec_per == Some(ExecPer::TopLevel) => {
            mapping.per_entry(crate::destination::exec_connection(argv, &source, args)?)
        }
        _ => destination.connect(&source, args, &state_dir).await?,
    };
    if let Some(rate) = args.bwlimit {
        conn = Arc::new(Throttled::new(conn, rate));
    }
    let conn = mapping.keeping_versions(conn);
    Ok(Prepared {
        mapping,
        conn,
        destination: identity,
        state_dir,
        _lock: lock,
    })
}

/// A command destination run per file: entries a per-entry run left waiting are sent per
/// file instead (their ledger rows said "recorded", not "delivered").
fn destination_is_per_file(destination: &Destination, args: &MappingArgs) -> bool {
    matches!(destination, Destination::Exec(_)) && args.exec_per != Some(ExecPer::TopLevel)
}

/// Runs `one` on each mapping of the config `file` (with `cli` over its options), one after
/// the other: what `sync --config` and `baseline --config` do. A mapping that fails to start
/// (its source missing, another run holding it) is reported on one line and the others
/// still run, as a cron job wants; the exit code is the highest of them.
pub async fn each_mapping<F, Fut>(file: &Path, cli: &MappingArgs, mut one: F) -> Result<Exit>
where
    F: FnMut(ResolvedMapping) -> Fut,
    Fut: std::future::Future<Output = Result<Exit>>,
{
    let loaded = crate::config::load(file, cli)?;
    let mut worst = Exit::Ok;
    for (i, m) in loaded.mappings.into_iter().enumerate() {
        let what = format!("mapping {} ({})", i + 1, m.source.display());
        tracing::info!(mapping = i + 1, source = %m.source.display(), "next mapping");
        match one(m).await {
            Ok(exit) => worst = worst.max(exit),
            Err(e) if crate::out::is_closed(&e) => return Err(e),
            Err(e) => {
                let line = format!("{e:#}").replace('\n', " ");
                eprintln!("skynet: error: {what}: {line}");
                worst = worst.max(Exit::for_error(&e));
            }
        }
    }
    Ok(worst)
}

/// DEST, or the `--exec` command.
fn destination_of(dest: Option<&str>, args: &MappingArgs) -> Result<Destination> {
    Ok(match (dest, &args.exec) {
        (Some(_), Some(_)) => {
            anyhow::bail!("give a destination or --exec (a command destination), not both")
        }
        (Some(dest), None) => Destination::parse(dest)?.with_args(args)?,
        (None, Some(argv)) => {
            // The whole template only on request (`-v`): its arguments may carry a token.
            tracing::debug!(command = %Template::parse(argv.0.clone()).map(|t| t.as_written()).unwrap_or_default(), "command destination");
            Destination::Exec(argv.0.clone())
        }
        (None, None) => anyhow::bail!("no destination: give DEST or --exec"),
    })
}

/// Warns about each command whose arguments begin with a relative path placeholder
/// (`{remote}`, `{from}`, `{to}`) with no `--` before it: a file named `-f` would reach the
/// program as an option. A warning, not a refusal: some programs take no `--`.
fn warn_option_like_placeholders(destination: &Destination, args: &MappingArgs) {
    let exec = match destination {
        Destination::Exec(argv) => Some(argv),
        _ => None,
    };
    let commands = [
        ("--exec", exec),
        ("--exec-delete", args.exec_delete.as_ref().map(|a| &a.0)),
        ("--exec-move", args.exec_move.as_ref().map(|a| &a.0)),
        ("--on-delivered", args.on_delivered.as_ref().map(|a| &a.0)),
    ];
    for (option, argv) in commands {
        let Some(Ok(template)) = argv.map(|a| Template::parse(a.clone())) else {
            continue;
        };
        for placeholder in template.option_like_placeholders() {
            tracing::warn!(
                "{option} {template}: an argument starts with {placeholder}, so a file named like an option (-f) would be read as one; put -- before it if the program accepts it"
            );
        }
    }
}

/// Where a mapping's state is, and the earlier state that is to become it.
struct StatePlace {
    dir: PathBuf,
    /// State kept elsewhere for the same mapping, moved to `dir` when the mapping starts.
    adopt: Option<PathBuf>,
}

impl StatePlace {
    /// Where the mapping's database is now: `dir`, or the state still to be adopted.
    fn current(&self) -> &Path {
        match &self.adopt {
            Some(old) if !skynet_core::state::database_path(&self.dir).exists() => old,
            _ => &self.dir,
        }
    }
}

/// The state directory of the mapping from `source` to `destination`: its name (`--name`),
/// or a hash of the source and the normalised destination. State kept elsewhere for the
/// same mapping is found, not moved (a dry run changes nothing): under the destination as an
/// earlier version spelled it, under no name before the mapping was named, or under its old
/// name after a rename, and only when it is the same route ([`state::Successor::may_take`]).
fn locate_state(
    source: &Path,
    destination: &Destination,
    args: &MappingArgs,
) -> Result<StatePlace> {
    let root = state::state_root(args.state_dir.as_deref())?;
    let unnamed = root.join(state::mapping_name(source, &destination.state_key()));
    let legacy = destination
        .legacy_state_key(args)
        .map(|key| root.join(state::mapping_name(source, &key)));
    let successor = state::Successor {
        source,
        includes: &args.filters.includes,
        dated: args.dated.as_deref(),
        siblings: &args.sibling_names,
    };
    let Some(name) = &args.name else {
        let adopt = match legacy {
            Some(old) if !unnamed.exists() && successor.may_take(&old, None)? => Some(old),
            _ => None,
        };
        return Ok(StatePlace {
            dir: unnamed,
            adopt,
        });
    };
    state::check_name(name)?;
    let dir = root.join(name);
    if skynet_core::state::database_path(&dir).is_file() {
        // A name given to another source's mapping would mix two ledgers.
        if !successor.may_take(&dir, None)? && !MappingLock::is_held(&dir) {
            let recorded =
                skynet_core::state::Queue::open(&skynet_core::state::database_path(&dir))
                    .ok()
                    .and_then(|q| q.meta(skynet_core::state::meta::SOURCE).ok().flatten())
                    .unwrap_or_default();
            if recorded != source.to_string_lossy() {
                anyhow::bail!(
                    "mapping name {name:?} holds the state of source {recorded}; choose another name for {}",
                    source.display()
                );
            }
        }
        return Ok(StatePlace { dir, adopt: None });
    }
    let mut earlier = Vec::new();
    for candidate in [Some(unnamed), legacy].into_iter().flatten() {
        if successor.may_take(&candidate, None)? {
            earlier.push(candidate);
        }
    }
    if earlier.is_empty() {
        earlier = successor.renamed_from(&root, &destination.display())?;
    }
    let adopt = match earlier.len() {
        0 => None,
        1 => earlier.pop(),
        _ => {
            tracing::warn!(
                candidates = ?earlier,
                "mapping {name}: several earlier states could be this mapping's; starting afresh (move one to {} to keep it)",
                dir.display()
            );
            None
        }
    };
    Ok(StatePlace { dir, adopt })
}

/// A mapping's source, destination and state directory as they are, for a command that reads
/// the state without starting the mapping (nothing is moved or locked).
pub fn existing_state(
    src: &Path,
    dest: &str,
    args: &MappingArgs,
) -> Result<(PathBuf, Destination, PathBuf)> {
    let source = src
        .canonicalize()
        .with_context(|| format!("source {}", src.display()))?;
    let destination = destination_of(Some(dest), args)?;
    let dir = locate_state(&source, &destination, args)?
        .current()
        .to_path_buf();
    if !skynet_core::state::database_path(&dir).is_file() {
        anyhow::bail!(
            "no state for {} -> {}: has it been run or synced (with --name, if it has one)?",
            source.display(),
            destination.display()
        );
    }
    Ok((source, destination, dir))
}

/// The state directory of a mapping that starts, earlier state moved into it.
fn state_dir_of(source: &Path, destination: &Destination, args: &MappingArgs) -> Result<PathBuf> {
    let place = locate_state(source, destination, args)?;
    if let Some(old) = &place.adopt {
        state::adopt_legacy(old, &place.dir)?;
    }
    Ok(place.dir)
}

/// Options that cannot go together, refused before anything starts.
fn check_options(destination: &Destination, args: &MappingArgs) -> Result<()> {
    if args.remove_source && args.complete_sync {
        anyhow::bail!(
            "--remove-source and --complete-sync cannot go together: removing the local copy would delete the remote one"
        );
    }
    if args.remove_source && matches!(destination, Destination::Exec(_)) {
        anyhow::bail!(
            "--remove-source needs a destination that can verify a delivery; a command destination cannot"
        );
    }
    if args.verify_read_back && !matches!(destination, Destination::Sftp { .. }) {
        anyhow::bail!("--verify-read-back is for SFTP destinations");
    }
    let exec = matches!(destination, Destination::Exec(_));
    if !exec
        && (args.exec_delete.is_some()
            || args.exec_move.is_some()
            || args.exec_send_moves
            || args.exec_per.is_some())
    {
        anyhow::bail!(
            "--exec-delete, --exec-move, --exec-send-moves and --exec-per go with --exec"
        );
    }
    if exec
        && args.complete_sync
        && args.exec_move.is_none()
        && !args.exec_send_moves
        && args.exec_per != Some(ExecPer::TopLevel)
    {
        anyhow::bail!(
            "--complete-sync with --exec needs a command for moves: give --exec-move (e.g. \"ssh host mv -- /dst/{{from}} /dst/{{to}}\"), or --exec-send-moves if the --exec command handles {{action}} = move; otherwise a moved folder's old place would stay at the destination"
        );
    }
    if args.keep_versions.is_some_and(|k| k.is_zero()) {
        anyhow::bail!(
            "--keep-versions 0 would keep nothing; leave it out, or give a time such as 30d"
        );
    }
    if args.versions_dir.is_some() && args.keep_versions.is_none() {
        anyhow::bail!("--versions-dir goes with --keep-versions");
    }
    if exec && args.keep_versions.is_some() {
        anyhow::bail!(
            "--keep-versions needs a destination that can move a file aside (a folder, SFTP, S3); a command destination cannot"
        );
    }
    if args.exec_move.is_some() && args.exec_send_moves {
        anyhow::bail!(
            "--exec-send-moves is for a command without --exec-move; give one or the other"
        );
    }
    if args.exec_per == Some(ExecPer::TopLevel) {
        if args.exec_move.is_some() || args.exec_send_moves {
            anyhow::bail!(
                "--exec-per top-level runs the command on an entry at its new place after a move; drop --exec-move/--exec-send-moves"
            );
        }
        if args.send_once || args.bwlimit.is_some() {
            anyhow::bail!(
                "--exec-per top-level runs the command on whole entries: --send-once and --bwlimit do not apply (limit the rate in the command, e.g. rsync --bwlimit)"
            );
        }
        if args.on_delivered.is_some() {
            anyhow::bail!(
                "--on-delivered runs per delivered file; with --exec-per top-level put it in the --exec command"
            );
        }
    }
    Ok(())
}

/// The mapping's exclude globs: the default ones (partial downloads, editors' temporary
/// files), unless `--no-default-excludes`, then the user's.
pub fn excludes(args: &MappingArgs) -> Vec<String> {
    let f = &args.filters;
    if f.no_default_excludes {
        f.excludes.clone()
    } else {
        skynet_core::default_excludes::with_defaults(&f.excludes)
    }
}

/// The files the mapping takes, as the engine judges them (for `baseline`).
pub fn filter(args: &MappingArgs) -> Result<skynet_core::filter::Filter> {
    Ok(
        skynet_core::filter::Filter::with_case(&excludes(args), args.filters.ignore_case)?
            .with_includes(&args.filters.includes)?,
    )
}

pub fn mapping_options(args: &MappingArgs) -> Result<MappingOptions> {
    let defaults = HandlerConfig::default();
    let handler = HandlerConfig {
        workers: args.workers.unwrap_or(defaults.workers).max(1),
        retry: RetryPolicy {
            max_attempts: args
                .max_attempts
                .unwrap_or(defaults.retry.max_attempts)
                .max(1),
            base: args.retry_delay.unwrap_or(defaults.retry.base),
            park_base: args.retry_failed_after.unwrap_or(defaults.retry.park_base),
            park_cap: args
                .retry_failed_after
                .map_or(defaults.retry.park_cap, |d| d.max(defaults.retry.park_cap)),
            ..defaults.retry
        },
        reconnect_cap: args.reconnect_max.unwrap_or(defaults.reconnect_cap),
        reconnect_base: args
            .reconnect_max
            .map(|m| m.min(defaults.reconnect_base))
            .unwrap_or(defaults.reconnect_base),
        ..defaults
    };
    let dated = args
        .dated
        .as_deref()
        .map(|p| DatedNames::new(p, args.dated_grace.unwrap_or(Duration::from_secs(3600))))
        .transpose()?;
    let on_delivered = match &args.on_delivered {
        Some(argv) => {
            let template = Template::parse(argv.0.clone()).context("--on-delivered")?;
            let hook = CommandHook::new(
                template,
                args.exec_timeout
                    .unwrap_or(crate::destination::EXEC_TIMEOUT),
                ChildEnv::passing(args.pass_env.clone()),
            );
            Some(Arc::new(hook) as Arc<dyn skynet_core::handoff::DeliveredHook>)
        }
        None => None,
    };
    Ok(MappingOptions {
        complete_sync: args.complete_sync,
        settle: args.settle.unwrap_or(Duration::from_secs(1)),
        sync_settle: args.settle.unwrap_or_default(),
        excludes: excludes(args),
        poll: args.poll,
        poll_interval: Duration::from_secs(1),
        handler: handler.clone(),
        // -q promises only warnings and errors: no progress line either.
        progress: !crate::out::quiet(),
        include: args.filters.includes.clone(),
        ignore_case: args.filters.ignore_case,
        send_once: args.send_once,
        gate: Gate {
            min_age: args.min_age.unwrap_or_default(),
            dated,
            still_changing: Duration::ZERO,
        },
        max_delete: args.max_delete.unwrap_or_default(),
        keep_versions: args.keep_versions,
        versions_dir: match &args.versions_dir {
            Some(dir) => {
                skynet_core::versions::VersionsDir::parse(dir).map_err(anyhow::Error::msg)?
            }
            None => skynet_core::versions::VersionsDir::default(),
        },
        handoff: HandoffOptions {
            remove_source: args.remove_source,
            on_delivered,
            delay: args.handoff_delay.unwrap_or_default(),
            retry: handler.retry,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// State kept by an older version under the URL as typed is found again under the
    /// normalised name, with its queue, rather than started afresh.
    #[test]
    fn state_under_the_typed_url_is_adopted() {
        let scratch = tempfile::tempdir().unwrap();
        let source = scratch.path().join("src");
        let args = MappingArgs {
            state_dir: Some(scratch.path().join("state")),
            ..MappingArgs::default()
        };
        let typed = "sftp://u@h/x/";
        let old = scratch
            .path()
            .join("state")
            .join(state::mapping_name(&source, typed));
        std::fs::create_dir_all(&old).unwrap();
        // An earlier version's database: its source recorded, and something queued.
        let db = skynet_core::state::database_path(&old);
        let queue = skynet_core::state::Queue::open(&db).unwrap();
        let meta = skynet_core::state::meta::SOURCE;
        queue.set_meta(meta, &source.display().to_string()).unwrap();
        queue.set_meta("marker", "queued work").unwrap();
        drop(queue);
        let dest = Destination::parse(typed).unwrap();
        let dir = state_dir_of(&source, &dest, &args).unwrap();
        assert_ne!(dir, old);
        let adopted = skynet_core::state::Queue::open(&skynet_core::state::database_path(&dir));
        assert_eq!(
            adopted.unwrap().meta("marker").unwrap().as_deref(),
            Some("queued work")
        );
        assert!(!old.exists());
        // Spelled the normalised way, it is the same mapping.
        let again = Destination::parse("sftp://u@h:22/x").unwrap();
        assert_eq!(state_dir_of(&source, &again, &args).unwrap(), dir);
    }
}
