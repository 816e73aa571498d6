#!/usr/bin/python3
"""Log tailing benchmark: lines/s and MB/s from file append to stored, and CPU at 10k lines/s.

Runs, one after the other on the same machine and the same input:
  tripline   a tripline-agent tailing the file, batching, signing and streaming to a
             tripline-collector on loopback, which verifies and stores every line in SQLite
             (stored = the line is a row in the collector's database)
  rsyslog    rsyslogd with imfile (inotify mode) writing each line to a file with omfile
             (stored = the line is in the output file)
  tail -F    coreutils tail following the file into another file (stored = in that file)

For each: the time from the first append of N lines (written as fast as possible) until the
last line is stored, and the CPU (user+sys) the tailing process used meanwhile (in all, and per
line); then CPU at a steady 10k lines/s for a few seconds (percent of one core, which is also
microseconds per line at that rate). For tripline the CPU figures are the agent's alone; the
collector's CPU is printed on its own line. Figures only, no assertions.

  log_tail_bench.py --bin-dir BUILD [--lines 200000] [--steady-seconds 5] [--rules PATH]

--rules: the collector's rules (a file or a directory, e.g. packaging/config/rules, whose `app`
rules then run on every line) instead of the one file rule of the integration tests.
"""

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import tripline_e2e as e2e  # noqa: E402

LINE_BYTES = 100
CLK_TCK = os.sysconf("SC_CLK_TCK")


def make_line(i):
    head = b"2024-05-01T10:00:00Z app[123]: INFO request id=%010d path=/api/items " % i
    return head + b"x" * (LINE_BYTES - 1 - len(head)) + b"\n"


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(0.02)
    raise RuntimeError(f"timed out waiting for {what}")


def write_burst(path, start, n, chunk=1000):
    with open(path, "ab", buffering=0) as f:
        for i in range(start, start + n, chunk):
            f.write(b"".join(make_line(j) for j in range(i, min(i + chunk, start + n))))


def write_steady(path, start, seconds, rate=10000, ticks_per_second=100):
    per_tick = rate // ticks_per_second
    t0 = time.monotonic()
    i = start
    with open(path, "ab", buffering=0) as f:
        for tick in range(seconds * ticks_per_second):
            f.write(b"".join(make_line(j) for j in range(i, i + per_tick)))
            i += per_tick
            delay = t0 + (tick + 1) / ticks_per_second - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    return i - start


def measure(name, pid, path, stored_count, lines, steady_seconds, store_pid=None):
    """Burst then steady phase against one tailer whose stored line count is stored_count().
    store_pid: a separate storing process (the collector), whose burst CPU is reported apart."""
    c0, t0 = cpu_seconds(pid), time.monotonic()
    p0 = cpu_seconds(store_pid) if store_pid else 0.0
    write_burst(path, 0, lines)
    t1 = wait_until(lambda: stored_count() >= lines, 600, f"{name} to store {lines} lines")
    c1 = cpu_seconds(pid)
    p1 = cpu_seconds(store_pid) if store_pid else 0.0
    s0, cs0 = time.monotonic(), cpu_seconds(pid)
    steady = write_steady(path, lines, steady_seconds)
    wait_until(lambda: stored_count() >= lines + steady, 120, f"{name} steady lines")
    cs1, s1 = cpu_seconds(pid), time.monotonic()
    return {
        "name": name,
        "lines_per_s": lines / (t1 - t0),
        "mb_per_s": lines * LINE_BYTES / (t1 - t0) / 1e6,
        "seconds": t1 - t0,
        "cpu_burst": c1 - c0,
        "store_cpu_burst": p1 - p0,
        "cpu_pct_10k": 100.0 * (cs1 - cs0) / (s1 - s0),
    }


def count_lines(path):
    try:
        with open(path, "rb") as f:
            return f.read().count(b"\n")
    except FileNotFoundError:
        return 0


def bench_tripline(bin_dir, lines, steady_seconds, rules=None):
    fleet = e2e.Fleet(bin_dir)
    try:
        fleet.start_ec2()
        config = fleet.write_collector_config()
        if rules:
            with open(config) as f:
                text = f.read()
            with open(config, "w") as f:
                f.write("".join(f"rules: {rules}\n" if line.startswith("rules: ") else line
                                for line in text.splitlines(keepends=True)))
        fleet.start_collector(config)
        logs = os.path.join(fleet.dir, "logs")
        os.makedirs(logs)
        path = os.path.join(logs, "app.log")
        open(path, "wb").close()
        cfg = os.path.join(fleet.dir, "agent.yaml")
        with open(cfg, "w") as f:
            f.write(fleet.identity_yaml(e2e.INSTANCE_ID) + f"""\
state_dir: {fleet.dir}/agent-state
log_level: warn
collector: {{address: "{fleet.collector_addr}", plaintext: true,
            enrollment_token_file: {fleet.enrollment_token}}}
fim: {{paths: [{fleet.watched}/etc]}}
logs:
  sources:
    - {{name: app, paths: ["{path}"], start_at: beginning}}
""")
        agent = fleet.start("agent", [fleet.agent_bin, "--config", cfg])
        wait_until(fleet.agent_enrolled, 30, "the agent to enroll")
        db = sqlite3.connect(f"file:{fleet.dir}/collector.db?mode=ro", uri=True, timeout=30)

        def stored():
            return db.execute("SELECT COUNT(*) FROM events WHERE kind = 'log'").fetchone()[0]
        r = measure("tripline agent -> collector (SQLite)", agent.proc.pid, path, stored, lines,
                    steady_seconds, store_pid=fleet.collector.proc.pid)
        db.close()
        return r
    finally:
        fleet.close()


def bench_rsyslog(lines, steady_seconds):
    rsyslogd = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
    d = tempfile.mkdtemp(prefix="tripline-bench-rsyslog-")
    try:
        path, out = os.path.join(d, "app.log"), os.path.join(d, "out.log")
        open(path, "wb").close()
        conf = os.path.join(d, "rsyslog.conf")
        with open(conf, "w") as f:
            f.write(f"""\
global(workDirectory="{d}")
module(load="imfile" mode="inotify")
template(name="line" type="string" string="%msg%\\n")
ruleset(name="bench") {{ action(type="omfile" file="{out}" template="line") }}
input(type="imfile" File="{path}" Tag="app" ruleset="bench")
""")
        proc = subprocess.Popen([rsyslogd, "-n", "-f", conf, "-i", os.path.join(d, "pid")],
                                stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "err"), "wb"))
        try:
            time.sleep(0.5)  # rsyslog gives no readiness signal; its first lines are counted anyway
            return measure("rsyslog imfile -> omfile", proc.pid, path, lambda: count_lines(out),
                           lines, steady_seconds)
        finally:
            proc.terminate()
            proc.wait(10)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def bench_tail(lines, steady_seconds):
    d = tempfile.mkdtemp(prefix="tripline-bench-tail-")
    try:
        path, out = os.path.join(d, "app.log"), os.path.join(d, "out.log")
        open(path, "wb").close()
        with open(out, "wb") as sink:
            proc = subprocess.Popen(["tail", "-n", "+1", "-F", path], stdout=sink)
            try:
                return measure("tail -F -> file", proc.pid, path, lambda: count_lines(out), lines,
                               steady_seconds)
            finally:
                proc.terminate()
                proc.wait(10)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--lines", type=int, default=200000)
    ap.add_argument("--steady-seconds", type=int, default=5)
    ap.add_argument("--rules", help="the collector's rules file or directory")
    args = ap.parse_args()
    rules = os.path.abspath(args.rules) if args.rules else None
    results = [bench_tripline(os.path.abspath(args.bin_dir), args.lines, args.steady_seconds,
                              rules),
               bench_rsyslog(args.lines, args.steady_seconds),
               bench_tail(args.lines, args.steady_seconds)]
    print(f"log_tail: {args.lines} lines of {LINE_BYTES} bytes "
          f"({args.lines * LINE_BYTES / 1e6:.1f} MB) appended as fast as possible, "
          f"then {args.steady_seconds}s at 10k lines/s; {os.cpu_count()} CPUs; collector rules: "
          f"{rules or 'one file rule'}")
    print(f"{'':40} {'lines/s':>10} {'MB/s':>7} {'seconds':>8} {'CPU s':>7} {'us/line':>8} "
          f"{'CPU% @10k/s':>12}")
    for r in results:
        print(f"{r['name']:40} {r['lines_per_s']:>10.0f} {r['mb_per_s']:>7.1f} "
              f"{r['seconds']:>8.2f} {r['cpu_burst']:>7.2f} {1e6 * r['cpu_burst'] / args.lines:>8.2f} "
              f"{r['cpu_pct_10k']:>11.1f}%")
    t = results[0]
    print(f"(tripline: CPU is the agent's alone; during the burst the collector used "
          f"{t['store_cpu_burst']:.2f} CPU s ({1e6 * t['store_cpu_burst'] / args.lines:.2f} "
          f"us/line), verifying signatures and storing every line)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
