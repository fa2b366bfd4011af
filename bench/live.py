#!/usr/bin/env python3
"""Live mirroring latency: `skynet run` vs lsyncd (default.rsyncssh, delay 1). Stdlib only.

    python3 bench/live.py --skynet BIN [--rate 100] [--seconds 20] [--only LIST]

(bench/all runs it as part of the whole suite.) For each row, a fresh source with 10
directories of one file (already mirrored before the clock starts) and a mirror process are started;
then a writer creates RATE files per second for SECONDS seconds (4 KiB each, written and
closed directly, no temp name; the close time is recorded) while a sampler in the same
process stats every not-yet-seen destination path every 5 ms and records when the file is
there with its full size. Latency = visible at the destination - closed at the source.
Reports, per row: p50 / p99 / max latency and the count delivered within the drain timeout.

Rows (--only): skynet-local-0, skynet-local-1 (skynet run to a local folder, --settle 0 and
the default 1 s), skynet-sftp-0, skynet-sftp-1 (to a private sshd on 127.0.0.1 over SFTP),
lsyncd (lsyncd 2.2 default.rsyncssh, delay = 1: rsync over ssh to the same sshd).
"""

import argparse
import importlib.machinery
import importlib.util
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench  # noqa: E402  (shared helpers: log, start_bg, stop_bg, wait_until)
from bench import log, start_bg, stop_bg, wait_until  # noqa: E402

ROWS = ["skynet-local-0", "skynet-local-1", "skynet-sftp-0", "skynet-sftp-1", "lsyncd"]
NDIRS = 10


def load_script(name):
    """Imports one of the extension-less scripts of bench/ (sftp, s3) as a module."""
    path = os.path.join(HERE, name)
    loader = importlib.machinery.SourceFileLoader(f"bench_{name}", path)
    spec = importlib.util.spec_from_loader(loader.name, loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def probe(src, dst, rate, seconds, size, drain_timeout):
    """Writes rate*seconds files into src at a steady rate; returns the latencies (s) of
    those that became visible at dst with their full size, and the count written."""
    n = int(rate * seconds)
    rels = [os.path.join(f"d{i % NDIRS}", f"f{i:06d}.bin") for i in range(n)]
    closed = [0.0] * n
    done = [0]  # files closed so far, published after closed[i] is set
    payload = os.urandom(size)

    def writer():
        t0 = time.monotonic()
        for i in range(n):
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            fd = os.open(os.path.join(src, rels[i]), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, payload)
            os.close(fd)
            closed[i] = time.monotonic()
            done[0] = i + 1

    w = threading.Thread(target=writer, daemon=True)
    w.start()
    seen = {}
    pending = set()
    added = 0
    dpaths = [os.path.join(dst, r) for r in rels]
    last_close = None
    while True:
        upto = done[0]
        while added < upto:
            pending.add(added)
            added += 1
        for i in list(pending):
            try:
                st = os.stat(dpaths[i])
            except FileNotFoundError:
                continue
            if st.st_size == size:
                seen[i] = time.monotonic()
                pending.discard(i)
        if added == n:
            if last_close is None:
                last_close = closed[n - 1]
            if not pending or time.monotonic() - last_close > drain_timeout:
                break
        time.sleep(0.005)
    w.join()
    return [seen[i] - closed[i] for i in sorted(seen)], n


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def lsyncd_config(path, src, dst, sshd, work):
    with open(path, "w") as f:
        f.write(f"""settings {{
    logfile = "{work}/lsyncd.log",
    statusFile = "{work}/lsyncd.status",
    nodaemon = true,
}}
sync {{
    default.rsyncssh,
    source = "{src}",
    host = "root@127.0.0.1",
    targetdir = "{dst}",
    delay = 1,
    rsync = {{ archive = true, compress = false }},
    ssh = {{
        port = {sshd.port},
        identityFile = "{sshd.key}",
        options = {{
            UserKnownHostsFile = "{sshd.known_hosts}",
            StrictHostKeyChecking = "yes",
            BatchMode = "yes",
        }},
    }},
}}
""")


def measure(skynet, work, args, results, sshd=None):
    """Runs the rows of args.live_only; fills results["live"][row] with a dict of
    p50/p99/max (s), delivered, written, cpu_s (the mirror process tree's user+sys)."""
    rows = [r for r in args.live_only.split(",") if r]
    own_sshd = None
    if sshd is None and any("sftp" in r or r == "lsyncd" for r in rows):
        sftp = load_script("sftp")
        os.chmod(work, 0o755)
        own_sshd = sshd = sftp.Sshd(os.path.join(work, "live-sshd-home"))
        log(f"live: sshd on 127.0.0.1:{sshd.port}")
    out = results.setdefault("live", {})
    errlog = os.path.join(work, "live-stderr.log")
    env = dict(os.environ)
    env.pop("SSH_AUTH_SOCK", None)
    try:
        for row in rows:
            base = os.path.join(work, f"live-{row}")
            src, dst, state = base + "-src", base + "-dst", base + "-state"
            for d in range(NDIRS):  # one file each: skynet mirrors files, not empty folders
                os.makedirs(os.path.join(src, f"d{d}"))
                with open(os.path.join(src, f"d{d}", "ready"), "w") as f:
                    f.write("ready\n")
            os.makedirs(dst)
            os.chmod(base + "-dst", 0o755)
            if row.startswith("skynet"):
                settle = row.rsplit("-", 1)[1]
                dest = dst
                extra = []
                if "-sftp-" in row:
                    dest = f"sftp://root@127.0.0.1:{sshd.port}{dst}"
                    extra = ["--identity", sshd.key, "--known-hosts", sshd.known_hosts]
                cmd = [skynet, "-q", "run", src, dest, "--state-dir", state,
                       "--settle", settle] + extra
                p = start_bg(cmd, env=env, errfile=errlog)
                sig = signal.SIGINT
            else:
                conf = base + ".lua"
                lsyncd_config(conf, src, dst, sshd, work)
                p = start_bg(["lsyncd", "-nodaemon", conf], env=env, errfile=errlog, group=True)
                sig = signal.SIGTERM
            try:
                ready = wait_until(lambda: all(os.path.exists(os.path.join(dst, f"d{d}", "ready"))
                                               for d in range(NDIRS)), 60)
                if ready is None:
                    tail = open(errlog, errors="replace").read()[-2000:]
                    raise SystemExit(f"bench: live {row}: initial tree not mirrored in 60 s\n{tail}")
                time.sleep(1.5)  # the initial sync's acknowledgements / lsyncd's startup rsync
                log(f"live {row}: writing {args.live_rate} files/s for {args.live_seconds} s")
                lat, written = probe(src, dst, args.live_rate, args.live_seconds, 4096,
                                     args.live_drain)
            finally:
                rc, cpu = stop_bg(p, sig)
            r = {"p50": pct(lat, 50), "p99": pct(lat, 99), "max": max(lat, default=float("nan")),
                 "mean": statistics.mean(lat) if lat else float("nan"),
                 "delivered": len(lat), "written": written, "cpu_s": cpu}
            out[row] = r
            log(f"live {row}: p50 {r['p50']:.3f} s, p99 {r['p99']:.3f} s, max {r['max']:.3f} s, "
                f"{r['delivered']}/{written} delivered, mirror CPU {cpu:.2f} s")
    finally:
        if own_sshd:
            own_sshd.stop()
    return out


def add_args(ap):
    ap.add_argument("--live-rate", type=float, default=100, help="files per second")
    ap.add_argument("--live-seconds", type=float, default=20)
    ap.add_argument("--live-drain", type=float, default=30,
                    help="seconds to wait after the last write for stragglers")
    ap.add_argument("--live-only", default=",".join(ROWS), help="comma list of: " + ",".join(ROWS))


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skynet", required=True)
    add_args(ap)
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, bench.on_term)
    signal.signal(signal.SIGINT, bench.on_term)
    work = tempfile.mkdtemp(prefix="skynet-bench-live.", dir=os.environ.get("BENCH_TMP", "/tmp"))
    try:
        res = measure(os.path.abspath(args.skynet), work, args, {})
        print("| row | p50 s | p99 s | max s | delivered | mirror CPU s |")
        print("|---|---|---|---|---|---|")
        for row, r in res.items():
            print(f"| {row} | {r['p50']:.3f} | {r['p99']:.3f} | {r['max']:.3f} | "
                  f"{r['delivered']}/{r['written']} | {r['cpu_s']:.2f} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
