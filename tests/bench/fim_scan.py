#!/usr/bin/python3
"""FIM scan benchmark: `tripline-agent scan` against `aide --init` on the same trees and attributes.

For each tree (default: a large-file tree, /usr/lib/x86_64-linux-gnu, and a many-small-files tree,
/usr/share) both tools take a baseline with the same attributes (AIDE: p+i+n+u+g+s+m+c+sha256;
tripline: mode, inode, links, owner, size, mtime, ctime, sha256), cold (page cache dropped first,
when this process may write /proc/sys/vm/drop_caches) and warm (every file read once before).
AIDE runs as shipped (one worker) and with as many workers as there are CPUs.

Prints wall time, CPU time (user + system), files/s, MB/s and peak RSS side by side, and
tripline's speedup over AIDE in wall and in CPU time (the CPU figure holds on a busy machine
where the wall figure depends on what else runs). The tools take turns within each of --runs
rounds, so load from other processes falls on all of them alike; each figure is the median of
the runs, and the wall times' range is printed too.
Never asserts: figures only. Needs the Debian `aide` package (`make bench` installs it).

  fim_scan.py --bin-dir BUILD [--tree DIR]... [--runs N]
"""

import argparse
import json
import os
import statistics
import resource
import shutil
import subprocess
import sys
import tempfile
import time

DEFAULT_TREES = ["/usr/lib/x86_64-linux-gnu", "/usr/share"]


def find_binary(bin_dir, name):
    for dirpath, _, files in os.walk(bin_dir):
        if name in files and os.access(os.path.join(dirpath, name), os.X_OK):
            return os.path.join(dirpath, name)
    sys.exit(f"fim_scan: {name} not found under {bin_dir}: build first")


def drop_caches():
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def warm(tree):
    """Reads every regular file once (without following symlinks) so the next runs are warm."""
    buf = bytearray(1 << 20)
    for dirpath, dirnames, files in os.walk(tree):
        for name in files:
            p = os.path.join(dirpath, name)
            try:
                if not os.path.isfile(p) or os.path.islink(p):
                    continue
                with open(p, "rb", buffering=0) as f:
                    while f.readinto(buf):
                        pass
            except OSError:
                pass


def measure(argv):
    """Runs argv; returns (wall s, CPU s (user + system), peak RSS MiB, exit code, stdout, stderr).
    RUSAGE_CHILDREN keeps the largest peak of any child so far, so each run is made from a fresh
    helper process whose only child it is."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        t0 = time.monotonic()
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = p.communicate()
        wall = time.monotonic() - t0
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        payload = (f"{wall}\n{ru.ru_utime + ru.ru_stime}\n{ru.ru_maxrss}\n{p.returncode}\n".encode()
                   + out + b"\0" + err)
        with os.fdopen(w, "wb") as f:
            f.write(payload)
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    wall, cpu, rss, code, rest = data.split(b"\n", 4)
    out, _, err = rest.partition(b"\0")
    return (float(wall), float(cpu), int(rss) / 1024.0, int(code), out.decode(errors="replace"),
            err.decode(errors="replace"))


def aide_config(work, tree, workers):
    cfg = os.path.join(work, f"aide-{workers}.conf")
    with open(cfg, "w") as f:
        f.write(f"""\
database_in=file:{work}/aide.db
database_out=file:{work}/aide.db.new
gzip_dbout=no
log_level=error
report_level=minimal
num_workers={workers}
Checks = p+i+n+u+g+s+m+c+sha256
{tree} Checks
""")
    return cfg


def tripline_config(work, tree):
    cfg = os.path.join(work, "tripline.yaml")
    with open(cfg, "w") as f:
        f.write(f"""\
state_dir: {work}/tripline-state
fim:
  paths:
    - path: {tree}
      attributes: [mode, inode, links, owner, size, mtime, ctime, sha256]
      max_hash_bytes: 1099511627776
      one_filesystem: false
""")
    return cfg


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--tree", action="append", help="tree to scan (repeatable)")
    ap.add_argument("--runs", type=int, default=3, help="runs per tool, cache state and tree")
    args = ap.parse_args()
    agent = find_binary(args.bin_dir, "tripline-agent")
    aide = shutil.which("aide")
    if aide is None:
        sys.exit("fim_scan: aide not installed (apt-get install aide; `make bench` does it)")
    trees = args.tree or DEFAULT_TREES
    cpus = os.cpu_count() or 1
    can_drop = drop_caches()
    aide_version = subprocess.run([aide, "--version"], capture_output=True, text=True)
    print(f"fim_scan: {os.uname().release}, {cpus} CPUs, "
          f"{(aide_version.stdout or aide_version.stderr).splitlines()[0]}, tripline-agent {agent}")
    if not can_drop:
        print("fim_scan: cannot write /proc/sys/vm/drop_caches: cold runs skipped")
    print("attributes: AIDE p+i+n+u+g+s+m+c+sha256; tripline mode,inode,links,owner,size,mtime,"
          "ctime,sha256")
    print()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
          "(wall times stretch on a shared machine; CPU s does not)")
    header = (f"{'tree':<26} {'cache':<5} {'tool':<24} {'wall s':>7} {'CPU s':>6} {'files/s':>9} "
              f"{'MB/s':>6} {'peak RSS MB':>11} {'speedup (wall)':>14} {'(CPU)':>6}   "
              f"(wall range)")
    print(header)
    print("-" * len(header))
    tools = [(f"aide --init ({1} worker)", "aide1"), (f"aide --init ({cpus} workers)", "aiden"),
             ("tripline-agent scan", "tripline")]
    for tree in trees:
        work = tempfile.mkdtemp(prefix="fim-scan-bench-")
        try:
            files = bytes_hashed = None
            for cache in (["cold"] if can_drop else []) + ["warm"]:
                if cache == "warm":
                    warm(tree)
                runs = {key: [] for _, key in tools}
                for _ in range(args.runs):
                    for label, key in tools:
                        if cache == "cold":
                            drop_caches()
                        if key == "tripline":
                            argv = [agent, "scan", "--config", tripline_config(work, tree), "--json"]
                        else:
                            argv = [aide, "--init", "-c",
                                    aide_config(work, tree, 1 if key == "aide1" else cpus)]
                        wall, cpu, rss, code, out, err = measure(argv)
                        if code != 0:
                            print(f"fim_scan: {label} on {tree} exited {code}: {err.strip()[-400:]}",
                                  file=sys.stderr)
                        if key == "tripline" and code == 0:
                            report = json.loads(out)
                            files, bytes_hashed = report["files"], report["bytes_hashed"]
                        runs[key].append((wall, cpu, rss))
                results = {key: tuple(statistics.median(r[i] for r in v) for i in range(3))
                           for key, v in runs.items()}
                for label, key in tools:
                    wall, cpu, rss = results[key]
                    fps = f"{files / wall:,.0f}" if files else "?"
                    mbs = f"{bytes_hashed / wall / 1e6:,.0f}" if bytes_hashed is not None else "?"
                    tw, tc, _ = results["tripline"]
                    sw = "" if key == "tripline" else f"{wall / tw:.1f}x"
                    sc = "" if key == "tripline" else f"{cpu / tc:.1f}x"
                    walls = [r[0] for r in runs[key]]
                    print(f"{tree:<26} {cache:<5} {label:<24} {wall:>7.2f} {cpu:>6.2f} {fps:>9} "
                          f"{mbs:>6} {rss:>11.1f} {sw:>14} {sc:>6}   "
                          f"({min(walls):.2f}-{max(walls):.2f})")
            print(f"{'':<26} {files} entries, {bytes_hashed / 1e6 if bytes_hashed else 0:,.0f} MB "
                  f"hashed; load average now: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
            print()
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
