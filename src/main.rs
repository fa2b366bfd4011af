//! `skynet`: the command-line program. Parses arguments, sets up logging and a tokio runtime,
//! runs one subcommand, and turns its result into the contract's exit code: errors that stop
//! the program (bad arguments, configuration, unusable source or state) print one line and exit 2,
//! or 3 when another process holds the mapping; a closed standard output ends it quietly.

mod cli;
mod commands;
mod config;
mod destination;
mod exit;
mod locate;
mod mapping_status;
mod metrics;
mod out;
mod remote;
mod state;

use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Command};
use exit::Exit;

fn init_logging(verbose: u8, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let default = match (quiet, verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "info,skynet=debug,skynet_core=debug,skynet_sftp=debug,skynet_s3=debug",
        _ => "debug,skynet=trace,skynet_core=trace,skynet_sftp=trace,skynet_s3=trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    use std::io::IsTerminal;
    if std::io::stderr().is_terminal() {
        subscriber.compact().init();
    } else {
        subscriber.with_ansi(false).init();
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<Exit> {
    match cli.command {
        Command::Run {
            src,
            dest,
            config,
            metrics,
            poll,
            mut opts,
        } => {
            opts.poll = poll;
            commands::run::run(
                src.as_deref(),
                dest.as_deref(),
                config.as_deref(),
                metrics,
                &opts,
            )
            .await
        }
        Command::Sync {
            src,
            dest,
            config,
            dry_run,
            opts,
        } => match (config, src) {
            (Some(file), _) => commands::sync::sync_config(&file, dry_run, &opts).await,
            (None, Some(src)) => commands::sync::sync(&src, dest.as_deref(), dry_run, &opts).await,
            (None, None) => anyhow::bail!("sync needs SRC and DEST (or --exec), or --config FILE"),
        },
        Command::Status {
            state_dir,
            config,
            json,
            watch,
        } => {
            let root = locate::state_root(state_dir.as_deref(), config.as_deref())?;
            commands::status::status(&root, json, watch).await
        }
        Command::Queue {
            command,
            state_dir,
            config,
            mapping,
        } => {
            let root = locate::state_root(state_dir.as_deref(), config.as_deref())?;
            commands::queue::queue(&command, &root, mapping.as_deref())
        }
        Command::Baseline {
            src,
            dest,
            config,
            dry_run,
            opts,
        } => {
            let opts = opts.into();
            match (config, src) {
                (Some(file), _) => commands::baseline::baseline_config(&file, dry_run, &opts).await,
                (None, Some(src)) => {
                    commands::baseline::baseline(&src, dest.as_deref(), dry_run, &opts).await
                }
                (None, None) => {
                    anyhow::bail!("baseline needs SRC and DEST (or --exec), or --config FILE")
                }
            }
        }
        Command::Versions { command } => commands::versions::versions(command).await,
        Command::Ledger {
            command,
            state_dir,
            config,
            mapping,
        } => {
            let root = locate::state_root(state_dir.as_deref(), config.as_deref())?;
            commands::ledger::ledger(&command, &root, mapping.as_deref())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.quiet);
    out::set_quiet(cli.quiet);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("skynet: error: cannot start the async runtime: {e}");
            return ExitCode::from(Exit::Usage as u8);
        }
    };
    let result = runtime.block_on(dispatch(cli));
    // Blocking uploads still running after a stop are abandoned; their rows stay queued.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(exit) => ExitCode::from(exit as u8),
        // `skynet ledger list | head -1`: the reader has what it wanted.
        Err(e) if out::is_closed(&e) => ExitCode::SUCCESS,
        Err(e) => {
            // The whole chain on one line: "source ./x: No such file or directory (os error 2)".
            let line = format!("{e:#}").replace('\n', " ");
            eprintln!("skynet: error: {line}");
            ExitCode::from(Exit::for_error(&e) as u8)
        }
    }
}
