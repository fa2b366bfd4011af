//! Making an upload durable on the server before it is acknowledged (`fsync@openssh.com`).
//!
//! A hand-off (`remove_source`) removes the only local copy once the destination verified
//! its copy; over SFTP that check is a size (or a read-back, which the server answers from
//! its page cache). If the server lost power before writing its cache back, the file would be
//! gone from both places. So when the mapping hands off, every uploaded file is flushed with
//! OpenSSH's `fsync@openssh.com` extension before the temporary is closed and renamed, and
//! once more under its final name after the rename (on journaling filesystems, ext4 and XFS,
//! this commits the rename too; SFTP cannot fsync a directory).
//!
//! Whether the server offers it is found out at the first connection (an empty temporary file
//! in the root is flushed and removed). A server without the extension (it answers
//! `OP_UNSUPPORTED`, or refuses it with `PERMISSION_DENIED`, as `sftp-server -P fsync` does) is
//! warned about once, and sends go on without flushing: refusing every hand-off would leave
//! the user nothing better.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use skynet_core::error::ConnError;

use crate::errors::{classify, sftp_code, Op, FX_PERMISSION_DENIED};

/// SFTP status: the server does not implement the request.
const FX_OP_UNSUPPORTED: i32 = 8;

// 0 (the default): not tried yet.
const OFFERED: u8 = 1;
const LACKING: u8 = 2;

/// Whether uploads are flushed, and what the server turned out to offer.
#[derive(Default)]
pub(crate) struct Durability {
    /// Flush uploads (the mapping hands off).
    wanted: bool,
    /// With read-back verification, a server without fsync is only noted (INFO).
    read_back: bool,
    server_has: AtomicU8,
    warned: AtomicBool,
}

impl Durability {
    pub(crate) fn new(wanted: bool, read_back: bool) -> Self {
        Durability {
            wanted,
            read_back,
            ..Durability::default()
        }
    }

    /// Uploads are to be flushed (the mapping hands off).
    pub(crate) fn wanted(&self) -> bool {
        self.wanted
    }

    /// `Some(true)` once the server flushed a file, `Some(false)` once it refused to;
    /// `None` before the first try (or when not wanted).
    pub(crate) fn server_offers(&self) -> Option<bool> {
        match self.server_has.load(Ordering::Relaxed) {
            OFFERED => Some(true),
            LACKING => Some(false),
            _ => None,
        }
    }

    /// Flushes `file` (the handle of `path`) to the server's disk, when wanted and offered.
    /// An error other than "not offered" fails the send: it is not durable.
    pub(crate) fn flush(
        &self,
        file: &mut ssh2::File,
        server: &str,
        path: &Path,
    ) -> Result<(), ConnError> {
        if !self.wanted || self.server_has.load(Ordering::Relaxed) == LACKING {
            return Ok(());
        }
        match file.fsync() {
            Ok(()) => {
                self.server_has.store(OFFERED, Ordering::Relaxed);
                Ok(())
            }
            Err(e)
                if matches!(
                    sftp_code(&e),
                    Some(FX_OP_UNSUPPORTED | FX_PERMISSION_DENIED)
                ) =>
            {
                self.server_has.store(LACKING, Ordering::Relaxed);
                self.warn_once(server, e.message());
                Ok(())
            }
            Err(e) => Err(classify(&e, Op::Write, server, Some(path))),
        }
    }

    fn warn_once(&self, server: &str, why: &str) {
        if self.warned.swap(true, Ordering::Relaxed) {
            return;
        }
        if self.read_back {
            tracing::info!(%server, reason = %why, "the server does not offer fsync@openssh.com; handed-off files are checked by reading them back, not flushed to its disk");
        } else {
            tracing::warn!(%server, reason = %why, "the server does not offer fsync@openssh.com: a file handed off (remove_source) is acknowledged without being flushed to its disk, so a power loss there could lose it; add --verify-read-back to at least check its content");
        }
    }
}
