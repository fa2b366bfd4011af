#!/usr/bin/env python3
"""The measurements behind bench/run (local-folder destination). Standard library only.

Also the shared helpers of the other benchmark scripts (bench/all imports this module).

Four benchmarks, each measured against peers in the same run (the machine is shared and
noisy: read the ratios, not the absolute figures):

1. initial sync: 10,000 files of 4 KiB in 100 directories into an empty folder:
   `skynet sync` vs `rsync -a SRC/ DST/` vs `rclone copy SRC DST`, fresh destination and
   fresh state dir each repetition.
2. burst: 1,000,000 writes round-robin over 1,000 files while `skynet run` watches; samples
   the row count of the queue table (read-only SQLite) and the daemon's RSS, and measures
   the time from the last write until the destination equals the source.
3. no-op catch-up: the same commands again on an unchanged tree (10,000 files; 100,000 with
   --large).
4. big (--only big): one file of --big-mib MiB (default 1 GiB) into an empty folder: skynet
   sync vs rsync -a vs rclone copy; the destination is compared byte for byte, then removed.

Times are wall-clock seconds, median of the repetitions (min shown too); CPU is user+sys of
the process (from wait4), less sensitive to other load than wall time.
"""

import argparse
import datetime
import os
import platform
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time

GOALS = {
    "sync_vs_rclone": 0.8,
    "sync_vs_rsync": 1.5,
    "burst_rows": 1000,
    "burst_rss_mib": 100,
}


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- processes

class Result:
    def __init__(self, wall, cpu, maxrss_kib, rc):
        self.wall, self.cpu, self.maxrss_kib, self.rc = wall, cpu, maxrss_kib, rc


CHILDREN = []  # Popen objects still running, stopped on SIGTERM
WORK = "/tmp"


def run_timed(cmd, env=None, errfile=None):
    """Runs cmd, returns its wall time, CPU time and peak RSS.

    The peak RSS comes from GNU time (%M), not from our own wait4: a child's ru_maxrss
    includes the address space it was forked from (this Python process) until its exec.
    """
    err = open(errfile, "ab") if errfile else subprocess.DEVNULL
    with tempfile.NamedTemporaryFile(prefix="rss.", dir=WORK, delete=False) as f:
        rssfile = f.name
    t0 = time.perf_counter()
    p = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", rssfile] + cmd, env=env,
                         stdout=subprocess.DEVNULL, stderr=err)
    CHILDREN.append(p)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    CHILDREN.remove(p)
    if errfile:
        err.close()
    try:
        with open(rssfile) as f:
            maxrss = int(f.read().split()[-1])
    except (OSError, ValueError, IndexError):
        maxrss = 0
    os.unlink(rssfile)
    if p.returncode != 0:
        tail = ""
        if errfile and os.path.exists(errfile):
            with open(errfile, "rb") as f:
                tail = f.read()[-2000:].decode(errors="replace")
        raise SystemExit(f"bench: command failed ({p.returncode}): {' '.join(cmd)}\n{tail}")
    return Result(wall, ru.ru_utime + ru.ru_stime, maxrss, p.returncode)


def start_bg(cmd, env=None, errfile=None, group=False):
    """Starts a long-running process (a daemon under test); stop it with stop_bg.

    group=True puts it in its own process group, so stop_bg also stops what it spawned
    (lsyncd's rsync and ssh)."""
    err = open(errfile, "ab") if errfile else subprocess.DEVNULL
    p = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=err, start_new_session=group)
    if errfile:
        err.close()
    p.group = group
    CHILDREN.append(p)
    return p


def stop_bg(p, sig=signal.SIGINT, timeout=15):
    """Stops a start_bg process with `sig` (SIGKILL after `timeout` s) and reaps it.

    Returns (exit code, CPU seconds user+sys of the process and its reaped children)."""
    def send(s):
        try:
            if getattr(p, "group", False):
                os.killpg(p.pid, s)
            else:
                os.kill(p.pid, s)
        except ProcessLookupError:
            pass
    if getattr(p, "reaped", None) is not None:  # stopped already (by on_term)
        return p.returncode, p.reaped
    deadline = time.monotonic() + timeout
    pid, status, ru = os.wait4(p.pid, os.WNOHANG)
    if pid == 0:
        send(sig)
    while pid == 0:
        if time.monotonic() > deadline:
            send(signal.SIGKILL)
            pid, status, ru = os.wait4(p.pid, 0)
            break
        time.sleep(0.02)
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
    if getattr(p, "group", False):
        try:
            os.killpg(p.pid, signal.SIGKILL)  # leftovers of the group (rsync, ssh)
        except (ProcessLookupError, PermissionError):
            pass
    p.returncode = os.waitstatus_to_exitcode(status)
    p.reaped = ru.ru_utime + ru.ru_stime
    if p in CHILDREN:
        CHILDREN.remove(p)
    return p.returncode, p.reaped


def on_term(signum, frame):
    for p in list(CHILDREN):
        try:
            stop_bg(p, signal.SIGINT, timeout=5)
        except Exception:
            pass
    raise SystemExit(130)


def free_port():
    """A free TCP port on 127.0.0.1 (the caller binds it soon after)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- trees

def make_tree(root, nfiles, ndirs, size):
    per_dir = max(1, nfiles // ndirs)
    made = 0
    d = 0
    while made < nfiles:
        dirpath = os.path.join(root, f"d{d:04d}")
        os.makedirs(dirpath, exist_ok=True)
        for i in range(min(per_dir, nfiles - made)):
            with open(os.path.join(dirpath, f"f{i:05d}.bin"), "wb") as f:
                f.write(os.urandom(size))
            made += 1
        d += 1


def make_big_file(path, mib):
    """One file of `mib` MiB of random bytes (each MiB different, nothing compresses)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    block = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for i in range(mib):
            f.write(i.to_bytes(8, "little") + block[8:])
    return path


def files_equal(a, b):
    return subprocess.run(["cmp", "-s", a, b]).returncode == 0


def count_files(root):
    n = 0
    for _, _, files in os.walk(root):
        n += sum(1 for f in files if not f.startswith(".skynet-tmp."))
    return n


def trees_equal(src, dst):
    """True when every file of src is in dst with the same bytes (dst may have more)."""
    for dirpath, _, files in os.walk(src):
        rel = os.path.relpath(dirpath, src)
        for name in files:
            a = os.path.join(dirpath, name)
            b = os.path.join(dst, rel, name)
            try:
                with open(a, "rb") as fa, open(b, "rb") as fb:
                    if fa.read() != fb.read():
                        return False
            except FileNotFoundError:
                return False
    return True


# Nothing is deleted until the whole run is over (bench/run removes the work directory):
# on ext4 without a journal (this machine's /), creating a file right after many deletions is
# slow (the inode allocator skips every inode freed in the last 60 s, reading its block:
# recently_deleted() in the profile), which would penalise whichever tool runs first.


# ---------------------------------------------------------------- commands

class Tools:
    def __init__(self, args, work):
        self.skynet = args.skynet
        self.work = work
        self.errlog = os.path.join(work, "stderr.log")
        conf = os.path.join(work, "rclone-empty.conf")
        open(conf, "w").close()
        self.rclone_env = dict(os.environ, RCLONE_CONFIG=conf)
        self.rclone_env.pop("AWS_CA_BUNDLE", None)

    def skynet_sync(self, src, dst, state):
        return run_timed([self.skynet, "-q", "sync", src, dst, "--state-dir", state],
                         errfile=self.errlog)

    def rsync(self, src, dst):
        return run_timed(["rsync", "-a", src + "/", dst + "/"], errfile=self.errlog)

    def rclone(self, src, dst):
        return run_timed(["rclone", "copy", src, dst], env=self.rclone_env, errfile=self.errlog)


def quiesce():
    """Writes back dirty pages first, so no run pays for the previous one's writes."""
    os.sync()
    time.sleep(0.2)


# ---------------------------------------------------------------- benchmarks

def bench_sync(tools, args, work, results):
    src = os.path.join(work, "src10k")
    log(f"making {args.files} files of {args.size} B in {args.dirs} directories")
    make_tree(src, args.files, args.dirs, args.size)
    names = ["skynet", "rsync", "rclone"]
    initial = {n: [] for n in names}
    noop = {n: [] for n in names}
    for rep in range(args.reps):
        order = names[rep % 3:] + names[:rep % 3]  # rotate who goes first
        dsts = {n: os.path.join(work, f"dst-{n}-{rep}") for n in names}
        state = os.path.join(work, f"state-{rep}")
        for phase, store in (("initial", initial), ("no-op", noop)):
            for n in order:
                quiesce()
                if n == "skynet":
                    r = tools.skynet_sync(src, dsts[n], state)
                elif n == "rsync":
                    r = tools.rsync(src, dsts[n])
                else:
                    r = tools.rclone(src, dsts[n])
                store[n].append(r)
                log(f"rep {rep + 1}/{args.reps} {phase:7} {n:6}: {r.wall:6.2f} s wall, "
                    f"{r.cpu:6.2f} s CPU, {r.maxrss_kib / 1024:6.1f} MiB")
        got = count_files(dsts["skynet"])
        if got != args.files or (rep == 0 and not trees_equal(src, dsts["skynet"])):
            raise SystemExit(f"bench: skynet's destination is wrong ({got} files)")
    results["sync"] = initial
    results["noop"] = noop


def bench_big(tools, args, work, results):
    src = os.path.join(work, "big-src")
    log(f"making one file of {args.big_mib} MiB")
    make_big_file(os.path.join(src, "big.bin"), args.big_mib)
    names = ["skynet", "rsync", "rclone"]
    out = {n: [] for n in names}
    for rep in range(args.reps):
        order = names[rep % 3:] + names[:rep % 3]
        for n in order:
            dst = os.path.join(work, f"big-dst-{n}-{rep}")
            quiesce()
            if n == "skynet":
                r = tools.skynet_sync(src, dst, os.path.join(work, f"big-state-{rep}"))
            elif n == "rsync":
                r = tools.rsync(src, dst)
            else:
                r = tools.rclone(src, dst)
            if not files_equal(os.path.join(src, "big.bin"), os.path.join(dst, "big.bin")):
                raise SystemExit(f"bench: {n}: big.bin differs at the destination")
            shutil.rmtree(dst)  # one inode: no effect on later inode allocation
            out[n].append(r)
            log(f"rep {rep + 1}/{args.reps} big {args.big_mib} MiB {n:6}: {r.wall:6.2f} s wall, "
                f"{r.cpu:6.2f} s CPU")
    results["big"] = out


def bench_noop_large(tools, args, work, results):
    n = args.large_files
    src = os.path.join(work, "src-large")
    log(f"making {n} files of 64 B for the large no-op run")
    make_tree(src, n, n // 100, 64)
    dst_s, dst_r = os.path.join(work, "dst-large-skynet"), os.path.join(work, "dst-large-rsync")
    state = os.path.join(work, "state-large")
    quiesce()
    first = tools.skynet_sync(src, dst_s, state)
    log(f"initial skynet sync of {n} files: {first.wall:.2f} s")
    quiesce()
    first_r = tools.rsync(src, dst_r)
    log(f"initial rsync of {n} files: {first_r.wall:.2f} s")
    out = {"skynet": [], "rsync": [], "initial": {"skynet": [first], "rsync": [first_r]}}
    for rep in range(args.reps):
        quiesce()
        out["skynet"].append(tools.skynet_sync(src, dst_s, state))
        quiesce()
        out["rsync"].append(tools.rsync(src, dst_r))
        log(f"rep {rep + 1}/{args.reps} no-op {n}: skynet {out['skynet'][-1].wall:.2f} s, "
            f"rsync {out['rsync'][-1].wall:.2f} s")
    results["noop_large"] = out


class Sampler(threading.Thread):
    """Samples the queue's row count and the daemon's RSS every `interval` seconds."""

    def __init__(self, pid, state_dir, interval=0.05):
        super().__init__(daemon=True)
        self.pid, self.state_dir, self.interval = pid, state_dir, interval
        self.stop_flag = threading.Event()
        self.peak_rows = 0
        self.peak_rss_kib = 0
        self.hwm_kib = 0
        self.samples = 0
        self.db = None

    def find_db(self):
        for name in sorted(os.listdir(self.state_dir)):
            path = os.path.join(self.state_dir, name, "queue.sqlite")
            if os.path.exists(path):
                return path
        return None

    def read_status(self):
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        self.peak_rss_kib = max(self.peak_rss_kib, int(line.split()[1]))
                    elif line.startswith("VmHWM:"):
                        self.hwm_kib = max(self.hwm_kib, int(line.split()[1]))
        except (OSError, ValueError):
            pass

    def rows(self):
        if self.db is None:
            path = self.find_db()
            if path is None:
                return None
            self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
        try:
            return self.db.execute("SELECT COUNT(*) FROM queue").fetchone()[0]
        except sqlite3.Error:
            return None

    def run(self):
        while not self.stop_flag.is_set():
            n = self.rows()
            if n is not None:
                self.peak_rows = max(self.peak_rows, n)
            self.read_status()
            self.samples += 1
            self.stop_flag.wait(self.interval)
        if self.db is not None:
            self.db.close()

    def stop(self):
        self.stop_flag.set()
        self.join()
        self.read_status()


WRITER = r"""
import os, sys
root, n, nfiles = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
paths = []
for dirpath, _, files in sorted(os.walk(root)):
    paths += [os.path.join(dirpath, f) for f in sorted(files)]
paths = paths[:nfiles]
k = len(paths)
W, T = os.O_WRONLY, os.open
write, close = os.write, os.close
# Same-size overwrite, no O_TRUNC: on ext4, closing a file truncated to zero forces its
# writeback (auto_da_alloc), which made 1M truncating writes take minutes without skynet.
for i in range(n):
    fd = T(paths[i % k], W)
    write(fd, b"%015d\n" % i)
    close(fd)
"""


def wait_until(pred, timeout, step=0.05):
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if pred():
            return time.perf_counter() - t0
        time.sleep(step)
    return None


def bench_burst(tools, args, work, results):
    runs = []
    for rep in range(args.burst_reps):
        src = os.path.join(work, f"burst-src-{rep}")
        dst = os.path.join(work, f"burst-dst-{rep}")
        state = os.path.join(work, f"burst-state-{rep}")
        make_tree(src, args.burst_files, max(1, args.burst_files // 100), 16)
        quiesce()
        cmd = [tools.skynet, "-q", "run", src, dst, "--state-dir", state, "--settle",
               args.settle]
        daemon = start_bg(cmd, errfile=tools.errlog)
        try:
            first = wait_until(lambda: count_files(dst) == args.burst_files
                               and trees_equal(src, dst), 60)
            if first is None:
                raise SystemExit("bench: skynet run did not mirror the initial burst tree")
            time.sleep(0.5)  # let the first acknowledgements land
            sampler = Sampler(daemon.pid, state)
            sampler.start()
            t0 = time.perf_counter()
            w = subprocess.run([sys.executable, "-c", WRITER, src, str(args.burst_writes),
                                str(args.burst_files)], check=True)
            t_write = time.perf_counter() - t0
            log(f"burst rep {rep + 1}: {args.burst_writes} writes in {t_write:.2f} s; "
                "waiting for the destination to match")
            conv = wait_until(lambda: trees_equal(src, dst), args.converge_timeout)
            sampler.stop()
        finally:
            _, cpu = stop_bg(daemon)
        r = {
            "writes": args.burst_writes,
            "files": args.burst_files,
            "write_s": t_write,
            "peak_rows": sampler.peak_rows,
            "peak_rss_mib": max(sampler.hwm_kib, sampler.peak_rss_kib) / 1024,
            "cpu_s": cpu,
            "converge_s": conv,
            "samples": sampler.samples,
            "exit": daemon.returncode,
        }
        log(f"burst rep {rep + 1}: peak rows {r['peak_rows']}, peak RSS "
            f"{r['peak_rss_mib']:.1f} MiB, converged "
            f"{'NO' if conv is None else f'{conv:.2f} s'} after the last write, "
            f"daemon CPU {r['cpu_s']:.1f} s")
        runs.append(r)
    results["burst"] = runs


# ---------------------------------------------------------------- report

def med(rs, key="wall"):
    return statistics.median(getattr(r, key) for r in rs)


def low(rs, key="wall"):
    return min(getattr(r, key) for r in rs)


def fmt_t(rs):
    return f"{med(rs):.2f} (min {low(rs):.2f})"


def verdict(ok):
    return "met" if ok else "MISSED"


def machine():
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    load = os.getloadavg()

    def version(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()[0]
        except Exception:
            return "?"

    def inotify():
        try:
            with open("/proc/sys/fs/inotify/max_queued_events") as f:
                return f.read().strip()
        except OSError:
            return "?"

    here = os.path.dirname(os.path.abspath(__file__))
    rev = subprocess.run(["git", "-C", here, "describe", "--always", "--dirty"],
                         capture_output=True, text=True).stdout.strip() or "?"
    return [
        f"date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"machine: {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {mem} RAM, "
        f"{platform.system()} {platform.release()}, load average {load[0]:.2f} at the end",
        f"skynet: git {rev}; {version(['rsync', '--version'])}; {version(['rclone', 'version'])}",
        f"inotify max_queued_events: {inotify()}",
    ]


def report(args, results, started):
    out = []
    out.append("```")
    out += machine()
    out.append(f"command: {' '.join(['bench/run'] + args.passthrough)}  "
               f"(took {time.time() - started:.0f} s)")
    out.append("```")
    out.append("")
    if "sync" in results:
        s = results["sync"]
        n = results["noop"]
        sk, rs, rc = s["skynet"], s["rsync"], s["rclone"]
        r_rc, r_rs = med(sk) / med(rc), med(sk) / med(rs)
        out.append(f"Wall seconds, median of {args.reps} (min); ratios of medians.")
        out.append("")
        out.append("| benchmark | skynet | rsync | rclone | skynet/rsync | skynet/rclone | goal |")
        out.append("|---|---|---|---|---|---|---|")
        out.append(
            f"| sync {args.files} x {args.size} B into an empty folder | {fmt_t(sk)} | "
            f"{fmt_t(rs)} | {fmt_t(rc)} | {r_rs:.2f} | {r_rc:.2f} | "
            f"<= 1.5x rsync: {verdict(r_rs <= GOALS['sync_vs_rsync'])}; "
            f"<= 0.8x rclone: {verdict(r_rc <= GOALS['sync_vs_rclone'])} |")
        out.append(
            f"| same, CPU s (user+sys) | {med(sk, 'cpu'):.2f} | {med(rs, 'cpu'):.2f} | "
            f"{med(rc, 'cpu'):.2f} | {med(sk, 'cpu') / med(rs, 'cpu'):.2f} | "
            f"{med(sk, 'cpu') / med(rc, 'cpu'):.2f} | |")
        out.append(
            f"| same, peak RSS MiB | {med(sk, 'maxrss_kib') / 1024:.0f} | "
            f"{med(rs, 'maxrss_kib') / 1024:.0f} | {med(rc, 'maxrss_kib') / 1024:.0f} | | | |")
        nk, nr, nc = n["skynet"], n["rsync"], n["rclone"]
        out.append(
            f"| no-op sync, {args.files} unchanged files | {fmt_t(nk)} | {fmt_t(nr)} | "
            f"{fmt_t(nc)} | {med(nk) / med(nr):.2f} | {med(nk) / med(nc):.2f} | |")
        out.append(
            f"| same, CPU s | {med(nk, 'cpu'):.2f} | {med(nr, 'cpu'):.2f} | "
            f"{med(nc, 'cpu'):.2f} | {med(nk, 'cpu') / med(nr, 'cpu'):.2f} | "
            f"{med(nk, 'cpu') / med(nc, 'cpu'):.2f} | |")
        if "noop_large" in results:
            L = results["noop_large"]
            out.append(
                f"| initial sync, {args.large_files} x 64 B (1 run) | {fmt_t(L['initial']['skynet'])} "
                f"| {fmt_t(L['initial']['rsync'])} | | "
                f"{med(L['initial']['skynet']) / med(L['initial']['rsync']):.2f} | | |")
            out.append(
                f"| no-op sync, {args.large_files} unchanged files | {fmt_t(L['skynet'])} | "
                f"{fmt_t(L['rsync'])} | | {med(L['skynet']) / med(L['rsync']):.2f} | | |")
        out.append("")
    if "big" in results:
        b = results["big"]
        sk, rs, rc = b["skynet"], b["rsync"], b["rclone"]
        out.append(f"| benchmark | skynet | rsync | rclone | skynet/rsync | skynet/rclone |")
        out.append("|---|---|---|---|---|---|")
        out.append(f"| 1 file of {args.big_mib} MiB into an empty folder | {fmt_t(sk)} | "
                   f"{fmt_t(rs)} | {fmt_t(rc)} | {med(sk) / med(rs):.2f} | "
                   f"{med(sk) / med(rc):.2f} |")
        out.append(f"| same, CPU s | {med(sk, 'cpu'):.2f} | {med(rs, 'cpu'):.2f} | "
                   f"{med(rc, 'cpu'):.2f} | | |")
        out.append("")
    if "burst" in results:
        out.append(f"Burst: `skynet run --settle {args.settle}`, {args.burst_writes} writes "
                   f"(open, overwrite 16 bytes, close) round-robin over {args.burst_files} files.")
        out.append("")
        out.append("| rep | writer s (writes/s) | peak queue rows | peak RSS MiB | "
                   "converged after last write, s | daemon CPU s | goals |")
        out.append("|---|---|---|---|---|---|---|")
        for i, r in enumerate(results["burst"]):
            conv = "not within timeout" if r["converge_s"] is None else f"{r['converge_s']:.2f}"
            goals = (f"rows <= {GOALS['burst_rows']}: "
                     f"{verdict(r['peak_rows'] <= GOALS['burst_rows'])}; "
                     f"RSS < {GOALS['burst_rss_mib']} MiB: "
                     f"{verdict(r['peak_rss_mib'] < GOALS['burst_rss_mib'])}")
            out.append(f"| {i + 1} | {r['write_s']:.2f} ({r['writes'] / r['write_s']:,.0f}) | "
                       f"{r['peak_rows']} | {r['peak_rss_mib']:.1f} | {conv} | "
                       f"{r['cpu_s']:.1f} | {goals} |")
        out.append("")
    print("\n".join(out), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skynet", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--dirs", type=int, default=100)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--burst-writes", type=int, default=1_000_000)
    ap.add_argument("--burst-files", type=int, default=1_000)
    ap.add_argument("--burst-reps", type=int, default=2)
    ap.add_argument("--settle", default="1s", help="skynet run --settle for the burst")
    ap.add_argument("--converge-timeout", type=float, default=120)
    ap.add_argument("--large", action="store_true", help="also the 100,000-file no-op run")
    ap.add_argument("--large-files", type=int, default=100_000)
    ap.add_argument("--big-mib", type=int, default=1024, help="size of the file of --only big")
    ap.add_argument("--only", default="sync,burst",
                    help="comma list of: sync (initial + no-op), big, burst")
    args, _ = ap.parse_known_args()
    args.passthrough = [a for a in sys.argv[1:]
                        if not (a.startswith("--skynet") or a.startswith("--work"))]
    # drop the values of --skynet/--work
    skip = {args.skynet, args.work}
    args.passthrough = [a for a in args.passthrough if a not in skip]
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    started = time.time()
    work = args.work
    global WORK
    WORK = work
    tools = Tools(args, work)
    only = set(args.only.split(","))
    results = {}
    if "sync" in only:
        bench_sync(tools, args, work, results)
        if args.large:
            bench_noop_large(tools, args, work, results)
    if "big" in only:
        bench_big(tools, args, work, results)
    if "burst" in only:
        bench_burst(tools, args, work, results)
    report(args, results, started)


if __name__ == "__main__":
    main()
