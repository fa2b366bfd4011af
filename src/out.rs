//! What the program prints besides logs, in three kinds:
//!
//! - [`outln!`]: the output asked for (listings, `status`, a dry run's plan), always printed.
//!   A reader that went away (`skynet ledger list | head -1`) is not a failure: the write
//!   returns [`Closed`], which `main` ends the program with quietly, exit 0. (`println!`
//!   would panic: Rust ignores SIGPIPE, so the write fails with EPIPE instead of killing us.)
//! - [`sayln!`]: confirmations on stdout ("recorded 3 file(s)"), and
//! - [`noteln!`]: remarks on stderr ("2 file(s) held back"); both silenced by `-q`, which
//!   promises only warnings and errors.

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once by `main` from `-q`.
static QUIET: AtomicBool = AtomicBool::new(false);

pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// Standard output was closed by its reader: the program ends quietly with exit 0.
#[derive(Debug)]
pub struct Closed;

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("standard output was closed")
    }
}

impl std::error::Error for Closed {}

/// True when `e` comes from writing to a closed standard output.
pub fn is_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<Closed>())
}

/// Writes `args` to standard output: [`Closed`] for a broken pipe, any other failure (a
/// full disk behind a redirection) as an error naming standard output.
pub fn write(args: fmt::Arguments<'_>) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(Closed.into()),
        Err(e) => Err(anyhow::Error::new(e).context("cannot write to standard output")),
    }
}

/// A line of the output asked for; `?` after it is implied (the enclosing function returns
/// an `anyhow::Result`).
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::out::write(format_args!("{}\n", format_args!($($arg)*)))?
    };
}

/// A confirmation line on stdout, not printed with `-q`.
macro_rules! sayln {
    ($($arg:tt)*) => {
        if !$crate::out::quiet() {
            $crate::out::outln!($($arg)*);
        }
    };
}

/// A remark on stderr, prefixed `skynet: `, not printed with `-q`.
macro_rules! noteln {
    ($($arg:tt)*) => {
        if !$crate::out::quiet() {
            eprintln!("skynet: {}", format_args!($($arg)*));
        }
    };
}

pub(crate) use {noteln, outln, sayln};
