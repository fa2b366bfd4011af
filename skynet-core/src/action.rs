//! The three things the engine ever asks a destination to do.

use crate::relpath::RelPath;

/// One pending change, with paths relative to the source root.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Action {
    /// Make the destination hold the current bytes of the local file.
    Send(RelPath),
    /// Remove the path (file or whole directory) from the destination.
    Delete(RelPath),
    /// Rename `from` to `to` at the destination (a file or a whole directory), replacing `to`.
    Move { from: RelPath, to: RelPath },
}

impl Action {
    /// The path the queue files this action under: at most one pending action per key.
    /// For a move it is the target, because that is where the file now lives locally.
    pub fn key(&self) -> &RelPath {
        match self {
            Action::Send(p) | Action::Delete(p) => p,
            Action::Move { to, .. } => to,
        }
    }

    /// The source of a move.
    pub fn from(&self) -> Option<&RelPath> {
        match self {
            Action::Move { from, .. } => Some(from),
            _ => None,
        }
    }

    /// Stable lower-case name, used in the database, logs, status and command placeholders.
    pub fn kind(&self) -> ActionKind {
        match self {
            Action::Send(_) => ActionKind::Send,
            Action::Delete(_) => ActionKind::Delete,
            Action::Move { .. } => ActionKind::Move,
        }
    }

    /// Every path this action touches (one, or two for a move).
    pub fn paths(&self) -> impl Iterator<Item = &RelPath> {
        std::iter::once(self.key()).chain(self.from())
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Send(p) => write!(f, "send {p}"),
            Action::Delete(p) => write!(f, "delete {p}"),
            Action::Move { from, to } => write!(f, "move {from} -> {to}"),
        }
    }
}

/// The kind of an action without its paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionKind {
    Send,
    Delete,
    Move,
}

impl ActionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Send => "send",
            ActionKind::Delete => "delete",
            ActionKind::Move => "move",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "send" => Some(ActionKind::Send),
            "delete" => Some(ActionKind::Delete),
            "move" => Some(ActionKind::Move),
            _ => None,
        }
    }
}
