//! The inotify instance limit exhausted: `skynet run` cannot get an inotify instance, falls
//! back to polling, says so in its log, and still mirrors creations and edits. Alone in its
//! test binary. To leave other processes on the machine alone, skynet runs as a dedicated
//! unprivileged account and only that account's instances (`fs.inotify.max_user_instances`
//! is per user) are used up, by a forked child holding them until the test ends.

mod common;
use common::*;

use std::time::Duration;

/// A child process, running as `uid`, holding every inotify instance that account may have.
struct Hog {
    pid: libc::pid_t,
    release: libc::c_int,
    held: u32,
}

impl Hog {
    fn start(uid: u32, gid: u32) -> Hog {
        let (mut report, mut hold) = ([0; 2], [0; 2]);
        // SAFETY: plain pipe(2) calls into arrays of two ints.
        unsafe {
            assert_eq!(libc::pipe(report.as_mut_ptr()), 0);
            assert_eq!(libc::pipe(hold.as_mut_ptr()), 0);
        }
        // SAFETY: the child only makes async-signal-safe system calls, then _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            unsafe {
                libc::close(report[0]);
                libc::close(hold[1]);
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    libc::_exit(2);
                }
                let mut held: u32 = 0;
                let mut errno = 0;
                loop {
                    let fd = libc::inotify_init1(libc::IN_CLOEXEC);
                    if fd < 0 {
                        errno = *libc::__errno_location();
                        break;
                    }
                    held += 1;
                    if held > 100_000 {
                        break;
                    }
                }
                let msg = [held.to_le_bytes(), (errno as u32).to_le_bytes()].concat();
                libc::write(report[1], msg.as_ptr().cast(), msg.len());
                let mut b = [0u8; 1];
                libc::read(hold[0], b.as_mut_ptr().cast(), 1);
                libc::_exit(0);
            }
        }
        let mut msg = [0u8; 8];
        // SAFETY: reading into a local buffer of the given length.
        let n = unsafe {
            libc::close(report[1]);
            libc::close(hold[0]);
            libc::read(report[0], msg.as_mut_ptr().cast(), msg.len())
        };
        unsafe { libc::close(report[0]) };
        assert_eq!(n, 8, "the inotify hog did not report");
        let held = u32::from_le_bytes(msg[..4].try_into().unwrap());
        let errno = u32::from_le_bytes(msg[4..].try_into().unwrap());
        let hog = Hog {
            pid,
            release: hold[1],
            held,
        };
        assert_eq!(
            errno as i32,
            libc::EMFILE,
            "inotify_init1 did not hit the per-user limit after {held} instances"
        );
        hog
    }
}

impl Drop for Hog {
    fn drop(&mut self) {
        // SAFETY: closing our end of the pipe lets the child exit; then it is reaped.
        unsafe {
            libc::close(self.release);
            let mut status = 0;
            libc::waitpid(self.pid, &mut status, 0);
        }
    }
}

#[test]
fn no_inotify_instance_left_falls_back_to_polling() {
    let limit = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_instances")
        .expect("read the inotify instance limit");
    let s = Scratch::for_user("skynet-inotify");
    let (uid, gid) = s.user.unwrap();
    let hog = Hog::start(uid, gid);
    eprintln!(
        "holding {} inotify instances (limit {})",
        hog.held,
        limit.trim()
    );

    let mut daemon = s.run(&["--settle", "50ms"]);
    write(&s.src, "polled.txt", b"seen by polling");
    let converged = wait_converged(&s.src, &s.dst, true, Duration::from_secs(15));
    let log = daemon.log_text();
    assert!(converged.is_ok(), "{converged:?}\n{log}");
    assert!(
        log.contains("falling back to polling"),
        "the fallback is not in the log: {log}"
    );
    // Edits, not only creations: the same size with other bytes, then a longer version.
    for content in [&b"edit by polling"[..], b"a longer edit, seen by polling"] {
        std::fs::write(s.src.join("polled.txt"), content).expect("edit");
        let edited = wait_converged(&s.src, &s.dst, true, Duration::from_secs(15));
        assert!(edited.is_ok(), "{edited:?}\n{}", daemon.log_text());
    }
    assert_eq!(daemon.signal("TERM"), Some(0), "{}", daemon.log_text());
    drop(hog);
}
