//! The names ignored unless the user asks otherwise (`--no-default-excludes`): files that are
//! incomplete by construction. A browser downloads into `movie.mkv.part` and renames it when
//! done; an editor keeps a swap file beside the one being edited and writes a probe file to
//! test the folder. Sent, they arrive half written, again and again while they grow, and stay
//! at the destination under a name nobody wants (issue 14, item 3). Their final names are
//! ordinary, so a rename out of one of these names sends the finished file (see `watcher`).
//!
//! The list is narrow on purpose: only names programs use for work in progress, never a
//! file type people keep (`*.bak`, `*.log`, `*.o` are the user's choice, with `--exclude`).
//! Nextcloud's `sync-exclude.lst` and Syncthing's own temporary names were the references;
//! rclone and rsync ignore nothing by default, which is why users of both keep writing these
//! lines into their filter files.

/// The default exclude globs, matched against each name at any depth (see
/// [`crate::filter::Filter`]). The README and `--help` list them too (a test in the binary
/// keeps `--help` in step).
pub const DEFAULT_EXCLUDES: &[&str] = &[
    // Downloads in progress: Firefox, Transmission (*.part); Chrome, Edge, Brave, Opera
    // (*.crdownload); old Edge and Internet Explorer, rclone's own partial uploads
    // (*.partial); Safari (a *.download folder); old Opera (*.opdownload); WinSCP
    // (*.filepart); qBittorrent and uTorrent (*.!qB, *.!ut).
    "*.part",
    "*.crdownload",
    "*.partial",
    "*.download",
    "*.opdownload",
    "*.filepart",
    "*.!qB",
    "*.!ut",
    // Temporary files of many programs, among them Microsoft Office (~*.tmp) and Syncthing
    // (.syncthing.*.tmp).
    "*.tmp",
    // Vim: swap files (.name.swp, .swo for a second session), the probe of a writable swap
    // directory (*.swx), and the probe file `4913` it writes and removes before each save.
    "*.swp",
    "*.swo",
    "*.swx",
    "4913",
    // Backups left by vim, Emacs, gedit and others (name~), Emacs lock links (.#name) and
    // auto-saves (#name#), Kate's swap files.
    "*~",
    ".#*",
    "#*#",
    "*.kate-swp",
    // GNOME/GLib's atomic save (.goutputstream-XXXXXX), LibreOffice's lock file
    // (.~lock.name#), Microsoft Office's owner file (~$name).
    ".goutputstream-*",
    ".~lock.*#",
    "~$*",
];

/// [`DEFAULT_EXCLUDES`] as owned strings, first in a list of excludes.
pub fn with_defaults(excludes: &[String]) -> Vec<String> {
    DEFAULT_EXCLUDES
        .iter()
        .map(|s| s.to_string())
        .chain(excludes.iter().cloned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::rel as p;
    use crate::filter::Filter;

    #[test]
    fn temporary_names_are_excluded_and_ordinary_ones_are_not() {
        let f = Filter::new(&with_defaults(&[])).unwrap();
        for temporary in [
            "movie.mkv.part",
            "deep/er/setup.iso.crdownload",
            "big.bin.partial",
            "page.download/data.bin",
            "x.opdownload",
            "x.filepart",
            "x.iso.!qB",
            "x.iso.!ut",
            "~WRL0001.tmp",
            ".syncthing.a.txt.tmp",
            ".notes.txt.swp",
            ".notes.txt.swo",
            "notes.txt.swx",
            "4913",
            "src/4913",
            "notes.txt~",
            ".#notes.txt",
            "#notes.txt#",
            "notes.txt.kate-swp",
            ".goutputstream-X1Y2Z3",
            ".~lock.report.odt#",
            "~$report.docx",
        ] {
            assert!(f.excluded(&p(temporary)), "{temporary} is sent");
        }
        for ordinary in [
            "movie.mkv",
            "partial.txt",
            "part",
            "report.odt",
            "download.zip",
            "downloads/file",
            "tmp/file",
            "4913.jpg",
            "49130",
            "#channel.log",
            "notes~.txt",
            "~notes.txt",
            ".lock",
            "swp",
        ] {
            assert!(!f.excluded(&p(ordinary)), "{ordinary} is excluded");
        }
    }

    #[test]
    fn a_mappings_own_excludes_come_after_the_defaults() {
        let all = with_defaults(&["*.bak".to_string()]);
        assert_eq!(all.len(), DEFAULT_EXCLUDES.len() + 1);
        assert_eq!(all.last().map(String::as_str), Some("*.bak"));
    }
}
