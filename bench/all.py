#!/usr/bin/env python3
"""The whole benchmark suite in one run, ending in ONE markdown table. Run it via bench/all.

Calls the existing benchmarks as functions, each against its peers in the same run:
  local  (bench.py)  10k x 4 KiB initial sync and no-op vs rsync and rclone; 1 GiB file vs
                     rsync and rclone; 100k no-op catch-up vs rsync; 1M-write burst over
                     1,000 files (queue rows, peak RSS);
  sftp   (bench/sftp) 10k x 4 KiB vs rclone sftp and rsync over ssh; 1 GiB vs scp and rclone;
  s3     (bench/s3)   10k x 4 KiB and 1 GiB vs rclone, into a private s3s-fs;
  live   (live.py)    latency of live mirroring at 100 files/s: skynet run (local folder and
                      SFTP, settle 0 and 1 s) vs lsyncd default.rsyncssh (delay 1).
--quick shrinks every size (for development; its figures mean little).
"""

import argparse
import datetime
import os
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench  # noqa: E402
import live  # noqa: E402
from bench import log  # noqa: E402

FULL = dict(reps=3, files=10_000, size=4096, dirs=100, big_mib=1024, large_files=100_000,
            burst_writes=1_000_000, burst_files=1_000, burst_reps=2, live_rate=100,
            live_seconds=20, live_drain=30)
QUICK = dict(reps=1, files=1_000, size=4096, dirs=100, big_mib=64, large_files=5_000,
             burst_writes=20_000, burst_files=100, burst_reps=1, live_rate=100,
             live_seconds=3, live_drain=10)
SECTIONS = ["local", "sftp", "s3", "live"]


def ns(**kw):
    return argparse.Namespace(**kw)


def uptime():
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


# ---------------------------------------------------------------- sections

def run_local(a, skynet, work, res):
    args = ns(skynet=skynet, reps=a.reps, files=a.files, dirs=a.dirs, size=a.size,
              big_mib=a.big_mib, large_files=a.large_files, burst_writes=a.burst_writes,
              burst_files=a.burst_files, burst_reps=a.burst_reps, settle="1s",
              converge_timeout=120)
    bench.WORK = work
    tools = bench.Tools(args, work)
    out = res["local"] = {}  # filled as it goes: a later failure keeps the earlier rows
    bench.bench_sync(tools, args, work, out)
    bench.bench_noop_large(tools, args, work, out)
    bench.bench_big(tools, args, work, out)
    bench.bench_burst(tools, args, work, out)


def run_sftp(a, skynet, work, res):
    sftp = live.load_script("sftp")
    args = ns(reps=a.reps, files=a.files, size=a.size, big_mib=a.big_mib, workers=4,
              only="small,big")
    res["sftp"] = sftp.measure(args, skynet, work, {})


def run_s3(a, skynet, work, res):
    s3 = live.load_script("s3")
    s3.CHILDREN = bench.CHILDREN  # one list of children for the signal handler
    args = ns(reps=a.reps, files=a.files, size=a.size, big_mib=a.big_mib, only="small,big",
              skynet=skynet)
    out = {}
    res["s3"] = out
    res["s3_server"] = s3.measure(args, work, out)


def run_live(a, skynet, work, res):
    args = ns(live_rate=a.live_rate, live_seconds=a.live_seconds, live_drain=a.live_drain,
              live_only=",".join(live.ROWS))
    live.measure(skynet, work, args, res)


# ---------------------------------------------------------------- table

def med(xs):
    return statistics.median(xs)


def fig(xs):
    """'median (min)' of a list of seconds; the median alone for one repetition."""
    if len(xs) == 1:
        return f"{xs[0]:.2f}"
    return f"{med(xs):.2f} (min {min(xs):.2f})"


def table(a, res):
    rows = []  # (area, benchmark, skynet, peer, peer figure, ratio, note)

    def cmp(area, what, sk, peer, pk, note=""):
        rows.append((area, what, fig(sk), peer, fig(pk), f"{med(sk) / med(pk):.2f}", note))

    n, sz = f"{a.files:,}", f"{a.size // 1024} KiB" if a.size % 1024 == 0 else f"{a.size} B"
    big = f"1 file of {a.big_mib} MiB" if a.big_mib < 1024 else f"1 file of {a.big_mib // 1024} GiB"
    L = res.get("local")
    if L:
        w = lambda rs: [r.wall for r in rs]  # noqa: E731
        for peer in ("rsync", "rclone") if "sync" in L else ():
            cmp("local", f"initial sync, {n} x {sz}", w(L["sync"]["skynet"]), peer,
                w(L["sync"][peer]), "fresh dst + state each rep")
        for peer in ("rsync", "rclone") if "big" in L else ():
            cmp("local", big, w(L["big"]["skynet"]), peer, w(L["big"][peer]))
        for peer in ("rsync", "rclone") if "noop" in L else ():
            cmp("local", f"no-op catch-up, {n} unchanged files", w(L["noop"]["skynet"]), peer,
                w(L["noop"][peer]))
        G = L.get("noop_large")
        if G:
            cmp("local", f"initial sync, {a.large_files:,} x 64 B (1 run)",
                w(G["initial"]["skynet"]), "rsync", w(G["initial"]["rsync"]))
            cmp("local", f"no-op catch-up, {a.large_files:,} unchanged files", w(G["skynet"]),
                "rsync", w(G["rsync"]))
        for i, b in enumerate(L.get("burst", [])):
            conv = "no" if b["converge_s"] is None else f"{b['converge_s']:.2f} s"
            rows.append(("local", f"burst: {b['writes']:,} writes over {b['files']:,} files "
                         f"(rep {i + 1}), settle 1 s",
                         f"{b['peak_rows']} queue rows, {b['peak_rss_mib']:.0f} MiB peak RSS",
                         "(goal)", f"<= {bench.GOALS['burst_rows']} rows, < "
                         f"{bench.GOALS['burst_rss_mib']} MiB",
                         "met" if b["peak_rows"] <= bench.GOALS["burst_rows"]
                         and b["peak_rss_mib"] < bench.GOALS["burst_rss_mib"] else "MISSED",
                         f"writer {b['writes'] / b['write_s']:,.0f} writes/s; dst matched "
                         f"{conv} after the last write; daemon CPU {b['cpu_s']:.1f} s"))
    S = res.get("sftp")
    if S:
        w = lambda name, tool: [x for x, _ in S[(name, tool)]]  # noqa: E731
        for peer, note in (("rclone", "rclone sftp, --transfers 4"), ("rsync", "rsync -a over ssh")):
            if ("small", peer) in S:
                cmp("sftp", f"initial sync, {n} x {sz}", w("small", "skynet"), peer,
                    w("small", peer), note)
        for peer in ("scp", "rclone"):
            if ("big", peer) in S:
                cmp("sftp", big, w("big", "skynet"), peer, w("big", peer))
    T = res.get("s3")
    if T:
        w = lambda rs: [r.wall for r in rs]  # noqa: E731
        if "small" in T:
            cmp("s3", f"initial sync, {n} x {sz}", w(T["small"]["skynet"]), "rclone",
                w(T["small"]["rclone"]), f"into {res.get('s3_server', 's3s-fs')}")
        if "big" in T:
            cmp("s3", big, w(T["big"]["skynet"]), "rclone", w(T["big"]["rclone"]), "multipart")
    V = res.get("live")
    if V:
        def lat(r):
            return (f"p50 {r['p50']:.3f} / p99 {r['p99']:.3f} / max {r['max']:.3f} s, "
                    f"{r['delivered']}/{r['written']}")
        ls = V.get("lsyncd")
        what = f"live latency, {a.live_rate:g} files/s x {a.live_seconds:g} s (4 KiB)"
        labels = {"skynet-local-0": "to local folder, settle 0",
                  "skynet-local-1": "to local folder, settle 1 s (default)",
                  "skynet-sftp-0": "over SFTP, settle 0",
                  "skynet-sftp-1": "over SFTP, settle 1 s (default)"}
        for row, label in labels.items():
            r = V.get(row)
            if not r:
                continue
            if ls and "sftp" in row:
                rows.append(("live", f"{what}, {label}", lat(r), "lsyncd delay 1", lat(ls),
                             f"{r['p50'] / ls['p50']:.2f} (p50), {r['p99'] / ls['p99']:.2f} (p99)",
                             f"CPU s: skynet {r['cpu_s']:.2f}, lsyncd+rsync+ssh {ls['cpu_s']:.2f}"))
            else:
                rows.append(("live", f"{what}, {label}", lat(r), "", "", "",
                             f"reference row; CPU {r['cpu_s']:.2f} s"))
    out = ["| area | benchmark | skynet | peer | peer | skynet/peer | notes |",
           "|---|---|---|---|---|---|---|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skynet", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--command", default="bench/all", help="the command line, for the header")
    ap.add_argument("--quick", action="store_true", help="small sizes, 1 repetition")
    ap.add_argument("--only", default=",".join(SECTIONS), help="comma list of: " + ",".join(SECTIONS))
    for k, v in FULL.items():
        ap.add_argument("--" + k.replace("_", "-"), type=type(v), default=None)
    a = ap.parse_args()
    base = QUICK if a.quick else FULL
    for k, v in base.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    signal.signal(signal.SIGTERM, bench.on_term)
    signal.signal(signal.SIGINT, bench.on_term)
    os.chmod(a.work, 0o755)  # sshd (as root, but StrictModes off) reads keys below it
    only = [s for s in a.only.split(",") if s]
    up_before = uptime()
    log(f"load before: {up_before}")
    started = time.time()
    res, took, failed = {}, {}, {}
    runners = {"local": run_local, "sftp": run_sftp, "s3": run_s3, "live": run_live}
    for section in SECTIONS:
        if section not in only:
            continue
        work = os.path.join(a.work, section)
        os.makedirs(work)
        os.chmod(work, 0o755)
        log(f"===== {section} =====")
        t0 = time.time()
        try:
            runners[section](a, a.skynet, work, res)
        except (Exception, SystemExit) as e:
            if isinstance(e, SystemExit) and e.code == 130:
                raise  # interrupted
            # One broken section (a peer failing, a full disk) must not lose the others.
            failed[section] = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
            log(f"===== {section} FAILED: {e!r}; going on with the next section =====")
        took[section] = time.time() - t0
        log(f"===== {section} done in {took[section]:.0f} s =====")
    up_after = uptime()
    rev = subprocess.run(["git", "-C", HERE, "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", HERE, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()

    def version(cmd, err=False):
        try:
            p = subprocess.run(cmd, capture_output=True, text=True)
            return ((p.stderr if err else p.stdout) or p.stdout or p.stderr).splitlines()[0].strip()
        except Exception:
            return "?"

    print("```")
    print(f"date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(bench.machine()[1])
    print(f"git: {rev}{' (dirty)' if dirty else ''}; skynet binary: {a.skynet}")
    print(f"peers: {version(['rsync', '--version'])}; {version(['rclone', 'version'])}; "
          f"{version(['ssh', '-V'], err=True)}; {version(['lsyncd', '--version'])}")
    print(f"command: {a.command}")
    print(f"sizes: reps {a.reps}, {a.files} x {a.size} B, big {a.big_mib} MiB, no-op "
          f"{a.large_files}, burst {a.burst_writes} writes over {a.burst_files} files x "
          f"{a.burst_reps}, live {a.live_rate:g} files/s x {a.live_seconds:g} s")
    print(f"took: {time.time() - started:.0f} s ("
          + ", ".join(f"{k} {v:.0f} s" for k, v in took.items()) + ")")
    print(f"uptime before: {up_before}")
    print(f"uptime after:  {up_after}")
    print("```")
    print()
    print(f"Wall seconds, median of {a.reps} (min) unless marked; ratio = skynet / peer (medians), "
          "below 1 means skynet is faster. Live latency = close() at the source to the file "
          "being visible with its full size at the destination.")
    print()
    print("\n".join(table(a, res)))
    for section, why in failed.items():
        print(f"\n**{section}: FAILED** (rows of the parts that finished are above): {why}")
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
