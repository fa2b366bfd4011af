//! skynet-core: keeps a remote copy of local folders up to date, live.
//!
//! # Data flow
//! Top-down, from a filesystem event to a destination call and back to the ledger
//! (`docs/architecture.md` at the repository root draws it, with where each invariant of the
//! contract is enforced):
//!
//! 1. [`watcher`] turns filesystem events (notify) into [`Action`]s through its event mapper
//!    (`watcher::mapper`); [`scan`] finds what changed while nobody watched (on start, and
//!    after the watcher lost events). Both skip what the mapping's [`filter`] excludes (the
//!    user's globs and, by default, the temporary names of [`default_excludes`]).
//! 2. [`state`] stores them in the mapping's SQLite database, one pending action per path,
//!    merged by the pure rules of [`merge`]; it survives `kill -9`. Deletions that would
//!    remove too much of the destination are held there until confirmed ([`guard`]).
//! 3. [`handler`] drains the queue through a [`Connection`] with N workers, keeping per-path
//!    order, pausing while the link is down, retrying and parking by the [`retry`] policy.
//!    Which sends are due is the [`send_policy`]'s to say (includes, send-once), and when,
//!    the [`gate`]'s (`min_age`, dated names).
//! 4. The ledger (in [`state`]) records what the destination holds after each acknowledged
//!    action; with complete-sync, [`empty_dirs`] then removes the directories the source no
//!    longer has.
//! 5. [`handoff`] works deliveries that need more (`remove_source`, `on_delivered`): a local
//!    file is removed only while it is the delivered inode, unchanged ([`open_writers`]: no
//!    process writing it), and held by every other mapping of the source ([`siblings`]).
//!
//! [`engine`] wires these together for one mapping, and pauses it while its source folder is
//! missing or on another filesystem (an unmounted disk; [`source_root`]).
//!
//! # Destinations
//! Destinations implement [`Connection`] (or [`BlockingConnection`], see [`connection`]);
//! [`local`] is the embedded local-folder one, [`exec`] runs a user's program per action
//! ([`argv`] templates, run by [`command`] with the environment of [`child_env`]; once per
//! top-level entry with [`entries`]), [`throttle`] limits a destination's bandwidth,
//! [`versions`] keeps what a destination deletes or overwrites, and the exported
//! [`conformance`] suite (feature `conformance`) checks any implementation against the
//! contract. Errors are classified once ([`error`]): the handler's whole policy is a match on
//! [`ErrorKind`].
//!
//! # Small parts
//! [`relpath`] (paths that cannot escape their root), [`beneath`] (opening below a root
//! without following links), [`links`] (symlinks met in the source), [`digest`] (SHA-256),
//! [`action`] (send, delete, move). [`clock`] is the engine's one sense of time, which the
//! deterministic simulation (`sim`, feature `sim`) makes virtual.

pub mod action;
pub mod argv;
pub mod beneath;
pub mod child_env;
pub mod clock;
pub mod command;
pub mod connection;
pub mod default_excludes;
pub mod digest;
pub mod empty_dirs;
pub mod engine;
pub mod entries;
pub mod error;
pub mod exec;
pub mod filter;
pub mod gate;
pub mod guard;
pub mod handler;
pub mod handoff;
pub mod links;
pub mod local;
pub mod merge;
pub mod open_writers;
pub mod relpath;
pub mod retry;
pub mod scan;
pub mod send_policy;
pub mod siblings;
pub mod source_root;
pub mod state;
pub mod throttle;
pub mod versions;
pub mod watcher;

#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "sim")]
pub mod sim;

pub use action::{Action, ActionKind};
pub use connection::{
    Blocking, BlockingConnection, Connection, RemoteEntry, SourceFile, Verification,
};
pub use engine::{EngineError, Mapping, MappingOptions};
pub use error::{ConnError, ErrorKind};
pub use exec::{ExecConfig, ExecConnection};
pub use handler::{HandlerConfig, Summary};
pub use local::LocalConnection;
pub use relpath::{RelPath, RelPathError};
pub use throttle::Throttled;
