#!/usr/bin/python3
"""FIM realtime benchmark: how long from a write to its event stored in the collector, and what the
agent costs while it only watches.

Starts the local EC2 endpoint, a collector and an agent on loopback (the e2e Fleet), then
  1. latency: rewrites N files (default 1000) one at a time, paced, and for each takes the time
     from just after close() to the collector's received_unix_ns of its MODIFIED event (same host,
     same clock); prints p50, p90, p99 and max;
  2. idle: with M files watched (default 100,000), samples the agent's CPU time and RSS over an
     idle period; prints CPU % and RSS.
AIDE has no realtime mode: the figures are printed next to the targets (p99 < 50 ms on loopback;
~0 % idle CPU, RSS <= 12 MB at 100k files). Never asserts.

  fim_latency.py --bin-dir BUILD [--writes N] [--files M] [--idle-seconds S]
"""

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
import tripline_e2e as e2e  # noqa: E402


def proc_stat(pid):
    """(CPU seconds used so far, RSS in MiB) of pid."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
    rss = 0.0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024.0
    return cpu, rss


def rss_breakdown(pid):
    """Where the RSS is: anonymous (heap, stacks) and file-backed (code) MiB, and threads."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile", "RssShmem"):
                out[key] = int(value.split()[0]) / 1024.0
            elif key == "Threads":
                out[key] = int(value)
    # PSS: shared library pages divided among the processes mapping them.
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key == "Pss":
                out[key] = int(value.split()[0]) / 1024.0
    return out


def rss_by_file(pid, top=8):
    """The mapped files holding the most resident pages: [(MiB, name)], largest first."""
    sizes = {}
    name = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()
            if head and "-" in head[0] and len(head) >= 5:  # a mapping's first line
                name = os.path.basename(head[5]) if len(head) > 5 else "[anon]"
            elif head and head[0] == "Rss:":
                sizes[name] = sizes.get(name, 0) + int(head[1])
    return sorted(((kb / 1024.0, n) for n, kb in sizes.items()), reverse=True)[:top]


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, int(round(p / 100.0 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--writes", type=int, default=1000)
    ap.add_argument("--files", type=int, default=100000)
    ap.add_argument("--idle-seconds", type=float, default=10.0)
    ap.add_argument("--pace-ms", type=float, default=20.0, help="time between writes")
    args = ap.parse_args()

    e2e.RULES = "rules: []\n"  # no incidents: the collector only stores
    fleet = e2e.Fleet(os.path.abspath(args.bin_dir))
    try:
        lat_dir = os.path.join(fleet.watched, "etc", "latency")
        os.mkdir(lat_dir)
        for i in range(args.writes):
            with open(os.path.join(lat_dir, f"w{i}"), "w") as f:
                f.write("0")
        bulk = os.path.join(fleet.watched, "etc", "bulk")
        os.mkdir(bulk)
        per_dir = 1000
        for i in range(args.files):
            d = os.path.join(bulk, f"d{i // per_dir}")
            if i % per_dir == 0:
                os.mkdir(d)
            with open(os.path.join(d, f"f{i}"), "w") as f:
                f.write(str(i))
        fleet.start_ec2()
        fleet.start_collector()
        agent = fleet.start_agent()
        e2e.wait_for("the agent to enroll", fleet.agent_enrolled, timeout=120)
        e2e.wait_for("the baseline", lambda: e2e.agent_events(fleet, "BASELINE_COMPLETE"),
                     timeout=300, interval=0.5)
        done = e2e.agent_events(fleet, "BASELINE_COMPLETE")[-1]["event"]["agent"]
        total = args.files + args.writes
        print(f"fim_latency: baseline of {done.get('files')} entries "
              f"({total} files) in {int(done.get('duration_ns', 0)) / 1e9:.2f} s; "
              f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

        # Idle: nothing changes; the agent should sleep in poll().
        time.sleep(1.0)
        cpu0, _ = proc_stat(agent.proc.pid)
        t0 = time.monotonic()
        time.sleep(args.idle_seconds)
        cpu1, rss = proc_stat(agent.proc.pid)
        parts = rss_breakdown(agent.proc.pid)
        by_file = rss_by_file(agent.proc.pid)
        idle_pct = 100.0 * (cpu1 - cpu0) / (time.monotonic() - t0)

        # Latency: one rewrite at a time, paced so each is its own event.
        written = {}
        for i in range(args.writes):
            path = os.path.join(lat_dir, f"w{i}")
            with open(path, "w") as f:
                f.write(f"changed {i}")
            written[os.fsencode(path)] = time.time_ns()
            time.sleep(args.pace_ms / 1000.0)

        def stored():
            got = {}
            for e in e2e.file_events(fleet.events()):
                p = e2e.b64raw(e)
                if p in written and e["event"]["file"]["change"] == "MODIFIED":
                    got.setdefault(p, int(e["received_unix_ns"]))
            if len(got) < len(written):
                raise e2e.Failure(f"{len(got)} of {len(written)} writes stored")
            return got
        got = e2e.wait_for("every write stored", stored, timeout=120, interval=1.0)
        lat = sorted((got[p] - t) / 1e6 for p, t in written.items())

        print()
        print(f"{'measure':<44} {'tripline-agent':>16} {'target':>12}")
        print("-" * 74)
        print(f"{'write -> stored in collector, p50 (ms)':<44} {percentile(lat, 50):>16.1f} {'':>12}")
        print(f"{'write -> stored in collector, p90 (ms)':<44} {percentile(lat, 90):>16.1f} {'':>12}")
        print(f"{'write -> stored in collector, p99 (ms)':<44} {percentile(lat, 99):>16.1f} "
              f"{'< 50':>12}")
        print(f"{'write -> stored in collector, max (ms)':<44} {lat[-1]:>16.1f} {'':>12}")
        print(f"{f'idle CPU watching {total} files (%)':<44} {idle_pct:>16.2f} {'~0':>12}")
        print(f"{f'RSS watching {total} files (MB)':<44} {rss:>16.1f} {'<= 12':>12}")
        print(f"{'  of which anonymous (heap, stacks) (MB)':<44} {parts.get('RssAnon', 0):>16.1f}")
        print(f"{'  of which file-backed (code) (MB)':<44} {parts.get('RssFile', 0):>16.1f}")
        print(f"{'  PSS (shared pages divided among users) (MB)':<44} {parts.get('Pss', 0):>16.1f}")
        print(f"{'  threads':<44} {parts.get('Threads', 0):>16}")
        for mib, name in by_file:
            print(f"{'  resident in ' + name[:28] + ' (MB)':<44} {mib:>16.1f}")
        print(f"({len(lat)} writes, {args.pace_ms:.0f} ms apart; idle sampled over "
              f"{args.idle_seconds:.0f} s)")
        return 0
    finally:
        fleet.close()


if __name__ == "__main__":
    sys.exit(main())
