#!/usr/bin/python3
"""End-to-end scenarios for log tailing, with the real programs on loopback.

Reuses tripline_e2e.Fleet (local EC2 endpoint, collector, triplinectl) and runs agents whose
agent.yaml has log sources. Lines are checked in the collector's database (read-only).

  log_e2e.py --bin-dir BUILD --scenario NAME [--keep]

  log_rotation_torture  a writer appends numbered lines while the file is rotated by rename and by
                        copytruncate many times and the agent is killed with SIGKILL at random
                        points; every number must arrive exactly once, in order per file
  log_glob_pickup       files created later that match the glob are picked up; multi-byte and
                        invalid UTF-8, long and partial lines arrive as bytes, flagged
  log_rules             an sshd brute force fires the threshold rule once per window, with the
                        captured fields on the incident; nginx attacks fire the web rules

Exit status 0 only when every check held.
"""

import argparse
import os
import random
import shutil
import signal
import sqlite3
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tripline_e2e as e2e  # noqa: E402
from tripline_e2e import Failure, wait_for  # noqa: E402


# --- a small protobuf reader for the stored events (no generated code needed) -----------------

def _varint(buf, i):
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


def _fields(buf):
    """{field number: [values]}: varints as int, length-delimited as bytes."""
    out, i = {}, 0
    while i < len(buf):
        key, i = _varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _varint(buf, i)
        elif wt == 2:
            n, i = _varint(buf, i)
            v, i = bytes(buf[i:i + n]), i + n
        elif wt == 1:
            v, i = bytes(buf[i:i + 8]), i + 8
        elif wt == 5:
            v, i = bytes(buf[i:i + 4]), i + 4
        else:
            raise Failure(f"unexpected wire type {wt}")
        out.setdefault(num, []).append(v)
    return out


def decode_log_event(event_bytes):
    ev = _fields(event_bytes)
    if 4 not in ev:
        return None
    f = _fields(ev[4][0])
    one = lambda n, d: f.get(n, [d])[0]  # noqa: E731
    fields = {}
    for entry in f.get(10, []):
        kv = _fields(entry)
        fields[kv.get(1, [b""])[0].decode()] = kv.get(2, [b""])[0]
    return {
        "source": one(1, b"").decode(), "path": one(2, b""), "offset": one(3, 0),
        "line": one(4, b""), "truncated": bool(one(5, 0)), "next_offset": one(6, 0),
        "device": one(7, 0), "inode": one(8, 0), "partial": bool(one(9, 0)), "fields": fields,
        "generation": one(12, 0),
    }


def stored_log_events(fleet):
    db = sqlite3.connect(f"file:{fleet.dir}/collector.db?mode=ro", uri=True, timeout=30)
    try:
        rows = db.execute("SELECT event FROM events WHERE kind = 'log' ORDER BY id").fetchall()
    finally:
        db.close()
    return [decode_log_event(r[0]) for r in rows]


def collector_has(fleet, line):
    db = sqlite3.connect(f"file:{fleet.dir}/collector.db?mode=ro", uri=True, timeout=30)
    try:
        return db.execute("SELECT 1 FROM events WHERE kind = 'log' AND instr(event, ?) > 0 LIMIT 1",
                          (line,)).fetchone() is not None
    finally:
        db.close()


def stored_agent_messages(fleet):
    db = sqlite3.connect(f"file:{fleet.dir}/collector.db?mode=ro", uri=True, timeout=30)
    try:
        rows = db.execute("SELECT event FROM events WHERE kind = 'agent' ORDER BY id").fetchall()
    finally:
        db.close()
    out = []
    for (blob,) in rows:
        agent = _fields(_fields(blob)[5][0])
        out.append((agent.get(1, [0])[0], agent.get(2, [b""])[0].decode("utf-8", "replace")))
    return out


# --- agents with log sources -------------------------------------------------------------------

def write_log_agent_config(fleet, name, sources_yaml, rotate_wait="1s"):
    state = os.path.join(fleet.dir, name + "-state")
    cfg = os.path.join(fleet.dir, name + ".yaml")
    with open(cfg, "w") as f:
        f.write(fleet.identity_yaml(e2e.INSTANCE_ID) + f"""\
state_dir: {state}
collector:
  address: {fleet.collector_addr}
  plaintext: true
  enrollment_token_file: {fleet.enrollment_token}
fim:
  paths:
    - path: {fleet.watched}/etc
logs:
  rotate_wait: {rotate_wait}
  sources:
{sources_yaml}
batch:
  max_events: 512
  linger: 10ms
transport:
  backoff_initial: 100ms
  backoff_max: 1s
""")
    return cfg


def start_agent(fleet, cfg, name):
    return fleet.start(name, [fleet.agent_bin, "--config", cfg])


def following(agent):
    if not agent.alive():
        raise Failure(f"{agent.name} exited:\n{agent.tail()}")
    with open(agent.log_path, "rb") as f:
        return b"logs: following" in f.read()


def start_world(fleet, rules=None):
    fleet.start_ec2()
    cfg = fleet.write_collector_config()
    if rules is not None:
        with open(os.path.join(fleet.dir, "rules.yaml"), "w") as f:
            f.write(rules)
    fleet.start_collector(cfg)


# --- scenarios ---------------------------------------------------------------------------------

def scenario_log_rotation_torture(fleet, seed=None, rounds=60, lines_per_round=400):
    seed = seed if seed is not None else int(os.environ.get("TRIPLINE_TORTURE_SEED", time.time()))
    rng = random.Random(seed)
    print(f"torture: seed={seed} rounds={rounds} lines_per_round={lines_per_round}")
    start_world(fleet)
    logs = os.path.join(fleet.dir, "logs")
    os.makedirs(logs)
    app = os.path.join(logs, "app.log")
    cfg = write_log_agent_config(fleet, "agent", f"""\
    - name: app
      paths: ["{app}"]
      parser: raw
      start_at: beginning
""")
    agent = start_agent(fleet, cfg, "agent")
    wait_for("the agent to enroll", fleet.agent_enrolled)

    writer = open(app, "ab", buffering=0)
    # The source's first start: what is in the directory then is old (start_at); from here on
    # every file that appears is new, whether or not an agent is running to see it.
    wait_for("the agent to follow app.log", lambda: following(agent))
    number = renames = truncations = kills = 0
    for r in range(rounds):
        # Append this round's lines in random chunks, some with a pause so the agent reads mid-way.
        left = lines_per_round
        while left:
            n = min(left, rng.randint(1, 120))
            writer.write(b"".join(b"line %08d\n" % (number + i) for i in range(n)))
            number += n
            left -= n
            if rng.random() < 0.2:
                time.sleep(rng.random() * 0.01)
        # No waiting for the agent: a file may be created, written and rotated away (or
        # copytruncated) before any agent run opened it, while the agent reads, restarts or is
        # down; rotated siblings nobody read are found and read (docs/design.md).
        action = rng.random()
        if action < 0.3:
            writer.close()
            os.rename(app, os.path.join(logs, f"app.log.{r}"))
            writer = open(app, "ab", buffering=0)
            renames += 1
        elif action < 0.55:
            shutil.copyfile(app, os.path.join(logs, f"app.log.copy{r}"))
            os.truncate(app, 0)  # the writer's O_APPEND fd goes on at 0
            truncations += 1
        if rng.random() < 0.25:
            time.sleep(rng.random() * 0.05)
            agent.stop(signal.SIGKILL)
            kills += 1
            agent = start_agent(fleet, cfg, f"agent-{kills}")
    writer.close()

    def all_arrived():
        return len({e["line"] for e in stored_log_events(fleet)}) >= number
    try:
        wait_for(f"{number} lines in the collector", all_arrived, timeout=60, interval=0.5)
    except Failure:
        pass  # counted and reported below
    if agent.stop(signal.SIGTERM) != 0:
        raise Failure(f"agent did not stop cleanly:\n{agent.tail()}")

    events = stored_log_events(fleet)
    seen = {}
    for e in events:
        seen[e["line"]] = seen.get(e["line"], 0) + 1
    expected = {b"line %08d" % i for i in range(number)}
    missing = sorted(expected - set(seen))
    extra = sorted(set(seen) - expected)
    duplicates = sum(c - 1 for c in seen.values() if c > 1)
    print(f"torture: written={number} received={len(events)} distinct={len(seen)} "
          f"duplicates={duplicates} missing={len(missing)} renames={renames} "
          f"copytruncates={truncations} sigkills={kills}")
    if missing or extra or duplicates:
        raise Failure(f"missing={missing[:10]} extra={extra[:10]} duplicates={duplicates}")
    # In order per file (device, inode, generation), and no line flagged partial or truncated.
    last = {}
    for e in events:
        key = (e["device"], e["inode"], e["generation"])
        n = int(e["line"].split()[1])
        if key in last and n <= last[key]:
            raise Failure(f"out of order in {key}: {n} after {last[key]}")
        last[key] = n
        if e["partial"] or e["truncated"]:
            raise Failure(f"line flagged partial/truncated: {e}")


def scenario_log_rotated_unopened(fleet):
    """Logs created and rotated away before any agent run opened them: between two looks of a
    running agent (held with SIGSTOP while logrotate runs twice) and while it is down. Every
    line arrives once; archives from before the first start never do."""
    start_world(fleet)
    logs = os.path.join(fleet.dir, "logs")
    os.makedirs(logs)
    app = os.path.join(logs, "app.log")
    with open(app + ".1", "wb") as f:
        f.write(b"archived before the first start\n")
    with open(app + ".2.gz", "wb") as f:
        f.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03compressed")
    with open(app, "wb") as f:
        f.write(b"w 0000\n")
    cfg = write_log_agent_config(fleet, "agent", f"""\
    - name: app
      paths: ["{app}"]
      parser: raw
      start_at: beginning
""", rotate_wait="300ms")
    agent = start_agent(fleet, cfg, "agent")
    wait_for("the agent to enroll", fleet.agent_enrolled)
    wait_for("the agent to follow app.log", lambda: following(agent))
    expected = [b"w 0000"]

    def lines():
        return [e["line"] for e in stored_log_events(fleet)]
    wait_for("the first line", lambda: b"w 0000" in lines())

    def logrotate(tag, n):
        # Numbered rotation with `create`: .2 -> .3, .1 -> .2, app.log -> .1, new app.log; the
        # new file gets lines and is rotated again before anyone looks.
        for gen in range(2):
            for i in (3, 2, 1):
                if os.path.exists(f"{app}.{i}"):
                    os.rename(f"{app}.{i}", f"{app}.{i + 1}")
            os.rename(app, app + ".1")
            with open(app, "wb") as f:
                body = [b"%s %d %04d" % (tag, gen, i) for i in range(n)]
                f.write(b"".join(x + b"\n" for x in body))
            expected.extend(body)

    # Running, but not looking: the kernel queues the events, the files move on meanwhile.
    os.kill(agent.proc.pid, signal.SIGSTOP)
    logrotate(b"held", 50)
    os.kill(agent.proc.pid, signal.SIGCONT)
    wait_for("the lines written while the agent was held",
             lambda: set(expected) <= set(lines()))
    # Down.
    agent.stop(signal.SIGKILL)
    logrotate(b"down", 50)
    agent = start_agent(fleet, cfg, "agent-2")
    wait_for("the lines written while the agent was down",
             lambda: set(expected) <= set(lines()))
    # Nothing read twice after another restart; the old archives never.
    agent.stop(signal.SIGTERM)
    agent = start_agent(fleet, cfg, "agent-3")
    with open(app, "ab") as f:
        f.write(b"last\n")
    expected.append(b"last")
    wait_for("the last line", lambda: b"last" in lines())
    agent.stop(signal.SIGTERM)
    got = lines()
    counts = {}
    for line in got:
        counts[line] = counts.get(line, 0) + 1
    duplicates = {k: c for k, c in counts.items() if c > 1}
    extra = set(counts) - set(expected)
    missing = set(expected) - set(counts)
    print(f"rotated_unopened: expected={len(expected)} received={len(got)} "
          f"duplicates={len(duplicates)} missing={len(missing)} extra={sorted(extra)[:5]}")
    if duplicates or extra or missing:
        raise Failure(f"duplicates={sorted(duplicates)[:5]} extra={sorted(extra)[:5]} "
                      f"missing={sorted(missing)[:5]}")
    if any("binary" in m for _, m in stored_agent_messages(fleet)):
        raise Failure("a compressed archive was reported as a binary log file")


def scenario_log_glob_pickup(fleet):
    start_world(fleet)
    logs = os.path.join(fleet.dir, "logs")
    os.makedirs(logs)
    cfg = write_log_agent_config(fleet, "agent", f"""\
    - name: apps
      paths: ["{logs}/*.log"]
      parser: raw
      start_at: end
      max_line: 1024
      partial_timeout: 500ms
""")
    with open(os.path.join(logs, "old.log"), "wb") as f:
        f.write(b"before the agent started\n")
    agent = start_agent(fleet, cfg, "agent")
    wait_for("the agent to enroll", fleet.agent_enrolled)
    wait_for("the agent to follow old.log", lambda: "old.log" in open(agent.log_path).read())
    with open(os.path.join(logs, "old.log"), "ab") as f:
        f.write(b"after the agent started\n")
    # A file created later is read from its beginning; one that does not match is ignored.
    with open(os.path.join(logs, "new.log"), "wb") as f:
        f.write("grüße 世界\n".encode() + b"bad \xff\xfe bytes\n" + b"x" * 5000 + b"\n")
        f.write(b"no newline yet")
    with open(os.path.join(logs, "ignored.txt"), "wb") as f:
        f.write(b"not a match\n")

    def lines():
        return {e["line"]: e for e in stored_log_events(fleet)}
    want = [b"after the agent started", "grüße 世界".encode(), b"bad \xff\xfe bytes",
            b"x" * 1024, b"no newline yet"]
    got = wait_for("the lines of old.log and new.log",
                   lambda: (lambda m: m if all(w in m for w in want) else None)(lines()))
    if b"before the agent started" in got:
        raise Failure("start_at: end read a line that was there before the agent started")
    if b"not a match" in got:
        raise Failure("a file not matching the glob was tailed")
    if not got[b"x" * 1024]["truncated"]:
        raise Failure("a 5000-byte line was not flagged truncated")
    if got[b"x" * 1024]["next_offset"] - got[b"x" * 1024]["offset"] != 5001:
        raise Failure(f"truncated line does not span its bytes: {got[b'x' * 1024]}")
    if not got[b"no newline yet"]["partial"]:
        raise Failure("a line without newline was not flagged partial")
    if got["grüße 世界".encode()]["partial"] or got["grüße 世界".encode()]["truncated"]:
        raise Failure("a whole line was flagged")
    # A binary file is reported, not tailed.
    with open(os.path.join(logs, "core.log"), "wb") as f:
        f.write(b"\x7fELF\x00\x00\x00binary\n")
    wait_for("an AgentEvent about the binary file",
             lambda: any("binary" in m for _, m in stored_agent_messages(fleet)))
    if any(e["path"].endswith(b"core.log") for e in stored_log_events(fleet)):
        raise Failure("binary file was tailed")
    agent.stop()


def scenario_log_rules(fleet):
    """The shipped rules on real agent input: an SSH brute force opens one incident per window
    for the attacking address only, with the captured fields on it; web attacks open theirs."""
    fleet.start_ec2()
    cfg = fleet.write_collector_config()
    shipped = os.path.join(e2e.ROOT, "packaging", "config", "rules")
    with open(cfg) as f:
        text = f.read()
    with open(cfg, "w") as f:
        f.write("\n".join(f"rules: {shipped}" if line.startswith("rules:") else line
                          for line in text.splitlines()) + "\n")
    fleet.start_collector(cfg)
    logs = os.path.join(fleet.dir, "logs")
    os.makedirs(os.path.join(logs, "nginx"))
    agent_cfg = write_log_agent_config(fleet, "agent", f"""\
    - name: auth
      paths: ["{logs}/auth.log"]
      parser: syslog
      start_at: beginning
    - name: nginx-access
      paths: ["{logs}/nginx/access*.log"]
      start_at: beginning
""")
    agent = start_agent(fleet, agent_cfg, "agent")
    wait_for("the agent to enroll", fleet.agent_enrolled)
    with open(os.path.join(logs, "auth.log"), "ab") as f:
        for i in range(12):
            f.write(b"May  1 10:00:%02d web-1 sshd[%d]: Failed password for invalid user admin%d "
                    b"from 203.0.113.9 port %d ssh2\n" % (i, 900 + i, i, 40000 + i))
        for i in range(3):
            f.write(b"May  1 10:00:%02d web-1 sshd[%d]: Failed password for root from "
                    b"198.51.100.4 port %d ssh2\n" % (i, 950 + i, 41000 + i))
    with open(os.path.join(logs, "nginx", "access.log"), "ab") as f:
        f.write(b'192.0.2.66 - - [01/May/2024:10:00:00 +0000] "GET /../../etc/passwd HTTP/1.1" 400 '
                b'0 "-" "curl/8.0"\n')
        f.write(b'192.0.2.67 - - [01/May/2024:10:00:01 +0000] "GET /p?id=1%20UNION%20SELECT%201 '
                b'HTTP/1.1" 200 10 "-" "sqlmap/1.7"\n')
        f.write(b'192.0.2.68 - - [01/May/2024:10:00:02 +0000] "GET /index.html HTTP/1.1" 200 10 '
                b'"-" "Mozilla/5.0"\n')

    want = {"sshd-brute-force", "web-path-traversal", "web-sql-injection-probe",
            "web-scanner-user-agent"}

    def opened():
        got = {i.get("rule_id") for i in fleet.incidents()}
        return got if want <= got else None
    wait_for(f"incidents of {sorted(want)}", opened)
    # Every line is stored before we count: 15 auth lines and 3 access lines.
    wait_for("the 18 lines", lambda: len(stored_log_events(fleet)) >= 18)
    incidents = fleet.incidents()
    brute = [i for i in incidents if i.get("rule_id") == "sshd-brute-force"]
    if len(brute) != 1:
        raise Failure(f"expected one brute-force incident (one window, one address): {brute}")
    detail = fleet.incident(brute[0]["id"])
    summary = detail.get("incident", detail).get("summary", "") or str(detail)
    for expected in ("ip=203.0.113.9", 'user="admin', "5 times within 60s"):
        if expected not in summary:
            raise Failure(f"brute-force incident does not show {expected!r}: {summary}")
    if "198.51.100.4" in str(incidents):
        raise Failure(f"3 failures from 198.51.100.4 opened an incident: {incidents}")
    linked = detail.get("events", [])
    if len(linked) != 12:
        raise Failure(f"expected the 12 failures of 203.0.113.9 on the incident, got {len(linked)}")
    others = {i.get("rule_id") for i in incidents} - want
    if others:
        raise Failure(f"unexpected incidents: {others}")
    agent.stop()


SCENARIOS = {
    "log_rules": scenario_log_rules,
    "log_rotation_torture": scenario_log_rotation_torture,
    "log_glob_pickup": scenario_log_glob_pickup,
    "log_rotated_unopened": scenario_log_rotated_unopened,
}


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--scenario", choices=sorted(SCENARIOS), required=True)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    fleet = e2e.Fleet(os.path.abspath(args.bin_dir), keep=args.keep)
    return e2e.run_scenario(fleet, args.scenario, lambda: SCENARIOS[args.scenario](fleet))


if __name__ == "__main__":
    sys.exit(main())
