#!/usr/bin/python3
"""End-to-end scenarios with the real programs on loopback.

Starts the local EC2 endpoint (tests/fakes/ec2_endpoint.py, which checks every SigV4 signature with
botocore), a tripline-collector and one or more tripline-agents, each with its own temporary
directory and OS-chosen ports, then drives them through the file system and checks the outcome
through `triplinectl --json` and the endpoint's recorded state.

  tripline_e2e.py --bin-dir BUILD --demo             the demo: prints the incident, the audit trail
                                                      and the isolated interfaces
  tripline_e2e.py --bin-dir BUILD --scenario NAME    one test scenario (see SCENARIOS)

Exit status 0 only when every check held.
"""

import argparse
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FAKE_EC2 = os.path.join(ROOT, "tests", "fakes", "ec2_endpoint.py")
FAKE_IMDS = os.path.join(ROOT, "tests", "fakes", "imds_endpoint.py")
ACCOUNT_ID = "111122223333"

INSTANCE_ID = "i-0123456789abcdef0"
ISOLATION_GROUP = "sg-0isolation000001"
ACCESS_KEY = "AKIDTRIPLINEDEMO0001"
SECRET_KEY = "demo-secret-key-for-the-local-endpoint-only"

SEED = {
    "instances": [{
        "instance_id": INSTANCE_ID,
        "vpc_id": "vpc-0demo0000000001",
        "state": "running",
        "iam_instance_profile_arn": "arn:aws:iam::111122223333:instance-profile/web",
        "tags": {"Name": "web-1"},
        "interfaces": [
            {"interface_id": "eni-0web000000000001", "subnet_id": "subnet-0a", "private_ip": "10.0.1.5",
             "device_index": 0, "group_ids": ["sg-0web0000000000001", "sg-0ssh0000000000001"]},
            {"interface_id": "eni-0mgmt00000000001", "subnet_id": "subnet-0b", "private_ip": "10.0.2.5",
             "device_index": 1, "group_ids": ["sg-0mgmt000000000001"]},
        ],
    }],
    "security_groups": [
        {"group_id": "sg-0web0000000000001", "vpc_id": "vpc-0demo0000000001", "group_name": "web"},
        {"group_id": "sg-0ssh0000000000001", "vpc_id": "vpc-0demo0000000001", "group_name": "ssh"},
        {"group_id": "sg-0mgmt000000000001", "vpc_id": "vpc-0demo0000000001", "group_name": "mgmt"},
        {"group_id": ISOLATION_GROUP, "vpc_id": "vpc-0demo0000000001", "group_name": "tripline-isolation"},
    ],
    "instance_profiles": {"web": {"roles": ["web-role"]}},
}
SEED["instances"][0]["volumes"] = [
    {"device_name": "/dev/xvda", "volume_id": "vol-0root00000000001", "delete_on_termination": True}]

RULES = """\
rules:
  - id: etc-changed
    title: A file under a watched etc directory changed
    severity: high
    match:
      kind: file
      paths: ["{watched}/etc/**"]
      changes: [created, modified, deleted, renamed, attrib]
    response: [isolate]
"""


class Failure(Exception):
    pass


def find_binary(bin_dir, name):
    for dirpath, _, files in os.walk(bin_dir):
        if name in files and os.access(os.path.join(dirpath, name), os.X_OK):
            return os.path.join(dirpath, name)
    raise Failure(f"{name} not found under {bin_dir}: build first")


def wait_for(what, predicate, timeout=30.0, interval=0.05):
    """Polls predicate until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Failure as e:  # a check that may still become true
            last_error = e
        time.sleep(interval)
    raise Failure(f"timed out after {timeout:.0f}s waiting for {what}" +
                  (f" (last: {last_error})" if last_error else ""))


def write_secret(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")


class Process:
    def __init__(self, name, argv, log_path, env=None):
        self.name, self.argv, self.log_path = name, argv, log_path
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True)

    def alive(self):
        return self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode

    def tail(self, n=40):
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
            return "\n".join(lines[-n:])
        except OSError:
            return "(no log)"


class Fleet:
    """One temporary world: the EC2 endpoint, a collector, agents, and triplinectl to look at them."""

    def __init__(self, bin_dir, keep=False, verbose=False):
        self.bin_dir = bin_dir
        self.agent_bin = find_binary(bin_dir, "tripline-agent")
        self.collector_bin = find_binary(bin_dir, "tripline-collector")
        self.ctl_bin = find_binary(bin_dir, "triplinectl")
        self.dir = tempfile.mkdtemp(prefix="tripline-e2e-")
        self.keep, self.verbose = keep, verbose
        self.procs = []
        self.watched = os.path.join(self.dir, "host")
        os.makedirs(os.path.join(self.watched, "etc", "ssh"))
        with open(os.path.join(self.watched, "etc", "hostname"), "w") as f:
            f.write("web-1\n")
        with open(os.path.join(self.watched, "etc", "ssh", "sshd_config"), "w") as f:
            f.write("PermitRootLogin no\n")
        self.operator_token = os.path.join(self.dir, "operator-token")
        self.enrollment_token = os.path.join(self.dir, "enrollment-token")
        write_secret(self.operator_token, os.urandom(32).hex())
        write_secret(self.enrollment_token, os.urandom(32).hex())
        self.ec2_addr = None
        self.collector_addr = None
        self.collector = None
        self.identity_cert = self.identity_key = None
        self.imds = {}  # instance id -> address of its fake IMDSv2

    # --- processes -------------------------------------------------------------------------

    def start(self, name, argv, env=None):
        p = Process(name, argv, os.path.join(self.dir, name + ".log"), env)
        self.procs.append(p)
        return p

    def read_ready(self, path, proc):
        def ready():
            if not proc.alive():
                raise Failure(f"{proc.name} exited with {proc.proc.returncode}:\n{proc.tail()}")
            try:
                with open(path) as f:
                    text = f.read().strip()
                return text or None
            except FileNotFoundError:
                return None
        return wait_for(f"{proc.name} to listen", ready, timeout=30)

    def start_ec2(self, seed=SEED):
        seed_path = os.path.join(self.dir, "ec2-seed.json")
        with open(seed_path, "w") as f:
            json.dump(seed, f)
        ready = os.path.join(self.dir, "ec2.ready")
        p = self.start("ec2-endpoint", ["/usr/bin/python3", FAKE_EC2, "--listen", "127.0.0.1:0",
                                        "--ready-file", ready, "--region", "us-east-1",
                                        "--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY,
                                        "--seed", seed_path])
        self.ec2_addr = self.read_ready(ready, p)
        return p

    def identity_pki(self):
        """The test's stand-in for AWS's regional certificate: a self-signed RSA-2048 key pair
        (as AWS's are), made once per fleet."""
        if self.identity_cert is None:
            key = os.path.join(self.dir, "aws-identity.key")
            cert = os.path.join(self.dir, "aws-identity.pem")
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                            "-subj", "/CN=test-ec2-instance-identity-us-east-1", "-keyout", key,
                            "-out", cert], check=True, capture_output=True)
            self.identity_cert, self.identity_key = cert, key
        return self.identity_cert, self.identity_key

    def start_imds(self, instance_id, name=None, extra_args=()):
        """A fake IMDSv2 for `instance_id` serving an identity document signed with the fleet's
        test certificate; its address (one per instance id unless `name` is given)."""
        if name is None and instance_id in self.imds:
            return self.imds[instance_id]
        cert, key = self.identity_pki()
        label = name or f"imds-{instance_id}"
        ready = os.path.join(self.dir, label + ".ready")
        p = self.start(label, ["/usr/bin/python3", FAKE_IMDS, "--listen", "127.0.0.1:0",
                               "--ready-file", ready, "--instance-id", instance_id,
                               "--region", "us-east-1", "--account-id", ACCOUNT_ID,
                               "--identity-cert", cert, "--identity-key", key, *extra_args])
        addr = self.read_ready(ready, p)
        if name is None:
            self.imds[instance_id] = addr
        return addr

    def identity_yaml(self, instance_id, imds_addr=None):
        """agent.yaml lines that make the agent learn `instance_id` from a fake IMDSv2."""
        addr = imds_addr or self.start_imds(instance_id)
        return f"imds:\n  endpoint: http://{addr}\n  timeout: 2s\n"

    def write_collector_config(self, isolation_group=ISOLATION_GROUP, port=0, response="",
                               mode="auto", identity=True):
        """`isolation_group` None: the collector finds or creates its groups per VPC; `response`:
        more lines under response: (indented two spaces); `identity` False: the explicit opt-out
        for agents off EC2."""
        if identity:
            cert, _ = self.identity_pki()
            identity_section = f"""\
identity:
  aws_certificates:
    - {{region: us-east-1, file: {cert}}}
  allowed_accounts: ["{ACCOUNT_ID}"]
"""
        else:
            identity_section = "identity:\n  require_document: false\n"
        rules = os.path.join(self.dir, "rules.yaml")
        with open(rules, "w") as f:
            f.write(RULES.format(watched=self.watched))
        cfg = os.path.join(self.dir, "collector.yaml")
        with open(cfg, "w") as f:
            f.write(f"""\
# Demo collector: plaintext gRPC on loopback only (say so on purpose; TLS is the default).
listen: 127.0.0.1:{port}
tls:
  plaintext: true
database: {self.dir}/collector.db
rules: {rules}
enrollment_token_file: {self.enrollment_token}
operator_token_file: {self.operator_token}
{identity_section}aws:
  region: us-east-1
  endpoint: http://{self.ec2_addr}
  retry_base: 5ms
""" + (f"  isolation_security_group: {isolation_group}\n" if isolation_group else "") + f"""\
response:
  mode: {mode}
""" + response)
        return cfg

    def start_collector(self, config=None, secret_key=SECRET_KEY):
        config = config or self.write_collector_config()
        ready = os.path.join(self.dir, "collector.ready")
        if os.path.exists(ready):
            os.unlink(ready)
        env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=secret_key)
        env.pop("AWS_SESSION_TOKEN", None)
        env["AWS_EC2_METADATA_DISABLED"] = "true"  # never reach for 169.254.169.254 in tests
        self.collector = self.start("collector", [self.collector_bin, "--config", config,
                                                  "--ready-file", ready], env)
        self.collector_addr = self.read_ready(ready, self.collector)
        return self.collector

    def write_agent_config(self, name, agent_id=INSTANCE_ID, extra="", watch_extra=None,
                           heartbeat=None):
        """`extra`: YAML appended as is (e.g. a spool section); `watch_extra`: one more FIM root;
        `heartbeat`: the agent's heartbeat interval (default: the agent's own). The agent learns
        `agent_id` from a fake IMDSv2 and proves it with the signed document."""
        state = os.path.join(self.dir, name + "-state")
        cfg = os.path.join(self.dir, name + ".yaml")
        identity = self.identity_yaml(agent_id)
        with open(cfg, "w") as f:
            f.write(identity + f"""\
state_dir: {state}
collector:
  address: {self.collector_addr}
  plaintext: true
  enrollment_token_file: {self.enrollment_token}
fim:
  paths:
    - path: {self.watched}/etc
      recursive: true
      exclude: ["*.swp"]
""" + (f"    - path: {watch_extra}\n" if watch_extra else "") + """\
batch:
  max_events: 512
  linger: 10ms
""" + (f"  heartbeat: {heartbeat}\n" if heartbeat else "") + """\
transport:
  backoff_initial: 100ms
  backoff_max: 2s
""" + extra)
        return cfg

    def start_agent(self, name="agent", agent_id=INSTANCE_ID, extra="", watch_extra=None,
                    heartbeat=None):
        return self.start(name, [self.agent_bin, "--config",
                                 self.write_agent_config(name, agent_id, extra, watch_extra,
                                                         heartbeat)])

    def close(self, failed=False):
        for p in reversed(self.procs):
            p.stop()
        if failed or self.keep:
            for p in self.procs:
                print(f"--- {p.name} log ({p.log_path}) ---\n{p.tail()}", file=sys.stderr)
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    # --- looking ---------------------------------------------------------------------------

    def ctl(self, *args, expect_ok=True):
        argv = [self.ctl_bin, "--collector", self.collector_addr, "--plaintext",
                "--token-file", self.operator_token, *args]
        # Output is a pipe: give the tables room to show request ids and errors whole.
        r = subprocess.run(argv, capture_output=True, timeout=30,
                           env={**os.environ, "COLUMNS": "200"})
        if expect_ok and r.returncode != 0:
            raise Failure(f"{' '.join(args)}: exit {r.returncode}: {r.stderr.decode(errors='replace')}")
        return r

    def ctl_json(self, *args):
        return json.loads(self.ctl("--json", *args).stdout)

    def ec2_get(self, what):
        with urllib.request.urlopen(f"http://{self.ec2_addr}/_tripline/{what}", timeout=10) as r:
            return json.load(r)

    def ec2_post(self, what, obj):
        req = urllib.request.Request(f"http://{self.ec2_addr}/_tripline/{what}",
                                     data=json.dumps(obj).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.load(r)

    def ec2_inject(self, action, code, http_status, count):
        body = json.dumps({"action": action, "code": code, "http_status": http_status,
                           "count": count}).encode()
        req = urllib.request.Request(f"http://{self.ec2_addr}/_tripline/inject", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()

    def interface_groups(self):
        """{eni id: [group ids]} of the demo instance, as the EC2 endpoint holds them now."""
        state = self.ec2_get("state")
        for inst in state["instances"]:
            if inst["instance_id"] == INSTANCE_ID:
                return {i["interface_id"]: list(i["group_ids"]) for i in inst["interfaces"]}
        raise Failure(f"{INSTANCE_ID} not in the endpoint's state")

    def agent_enrolled(self, agent_id=INSTANCE_ID):
        """The agent is enrolled and watching: its FIM baseline is complete, so a change made from
        now on is reported (one made while the first baseline is taken may become baseline)."""
        agents = self.ctl_json("agents").get("agents", [])
        if not any(a.get("agent_id") == agent_id for a in agents):
            return False
        return any(e.get("event", {}).get("agent", {}).get("kind") == "BASELINE_COMPLETE"
                   for e in self.events(agent_id))

    def events(self, agent_id=INSTANCE_ID):
        out, after = [], 0
        while True:
            page = self.ctl_json("events", "--agent", agent_id, "--limit", "1000", "--after", str(after))
            out.extend(page.get("events", []))
            nxt = int(page.get("next_after_id", 0) or 0)
            if not nxt or nxt == after:
                return out
            after = nxt

    def incidents(self):
        return self.ctl_json("incidents").get("incidents", [])

    def incident(self, incident_id):
        return self.ctl_json("incident", "show", str(incident_id))


def b64path(event):
    import base64
    return base64.b64decode(event["event"]["file"]["path"]).decode("utf-8", "replace")


def file_events(events):
    return [e for e in events if "file" in e.get("event", {})]


def wait_rule_incident(fleet, rule_id="etc-changed", status=None, timeout=30):
    def found():
        for inc in fleet.incidents():
            if inc.get("rule_id") == rule_id and (status is None or inc.get("status") == status):
                return inc
        return None
    return wait_for(f"an incident of rule {rule_id}" + (f" in status {status}" if status else ""),
                    found, timeout)


# --- scenarios -----------------------------------------------------------------------------------

def scenario_isolate(fleet, demo=False):
    """One write under the watched /etc isolates the instance: every interface ends in the isolation
    group alone, each call is in the audit trail with its AWS request id, the incident is contained."""
    fleet.start_ec2()
    fleet.start_collector()
    fleet.start_agent()
    wait_for("the agent to enroll", fleet.agent_enrolled)
    before = fleet.interface_groups()
    if any(groups == [ISOLATION_GROUP] for groups in before.values()):
        raise Failure(f"instance isolated before anything happened: {before}")

    target = os.path.join(fleet.watched, "etc", "ssh", "sshd_config")
    with open(target, "a") as f:
        f.write("PermitRootLogin yes\n")
    if demo:
        print(f"\n>>> wrote {target}\n")

    inc = wait_rule_incident(fleet, status="contained")
    wait_for("the isolation to finish", lambda: all(
        a["status"] in ("done", "failed") for a in fleet.incident(inc["id"])["actions"]
        if a["kind"] == "isolate"))
    detail = fleet.incident(inc["id"])
    after = fleet.interface_groups()
    if set(after) != set(before) or any(g != [ISOLATION_GROUP] for g in after.values()):
        raise Failure(f"interfaces not isolated: {after}")

    evs = detail.get("events", [])
    if not any(b64path(e) == target and e["event"]["file"].get("change") == "MODIFIED" for e in evs):
        raise Failure(f"incident does not carry the MODIFIED event of {target}: {evs}")
    actions = detail.get("actions", [])
    modify = [a for a in actions if a.get("kind") == "ec2:ModifyNetworkInterfaceAttribute"]
    if sorted(a.get("target") for a in modify) != sorted(list(before) * 2):
        raise Failure(f"expected two ModifyNetworkInterfaceAttribute per interface (untrack, then "
                      f"isolation group): {actions}")
    for a in actions:
        if a.get("kind", "").startswith("ec2:") and (a.get("status") != "done" or not a.get("aws_request_id")):
            raise Failure(f"AWS action not done with a request id: {a}")
    # The endpoint saw exactly these calls, each signed correctly.
    calls = [c for c in fleet.ec2_get("calls") if c.get("action") != "_admin"]
    if not calls or not all(c.get("signature_ok") for c in calls):
        raise Failure(f"EC2 calls not all correctly signed: {calls}")
    agents = fleet.ctl_json("agents")["agents"]
    if agents[0].get("isolation_state") != "isolated":
        raise Failure(f"agent isolation state: {agents[0]}")

    if demo:
        print(fleet.ctl("incident", "show", str(inc["id"])).stdout.decode())
        print(fleet.ctl("actions").stdout.decode())
        print(">>> interfaces of", INSTANCE_ID, "at the EC2 endpoint")
        for eni in sorted(after):
            print(f"    {eni}: {','.join(before[eni])} -> {','.join(after[eni])}")
        print(f"\n>>> {len(calls)} EC2 API calls, every SigV4 signature verified by botocore")
        print(f">>> DEMO OK: {INSTANCE_ID} isolated after one file change")


def scenario_unenrolled_key(fleet, demo=False):
    """A second agent claiming the same instance id with another key is refused, and nothing it
    sends is stored; the enrolled agent keeps working."""
    fleet.start_ec2()
    fleet.start_collector()
    fleet.start_agent("honest")
    wait_for("the agent to enroll", fleet.agent_enrolled)
    pinned = fleet.ctl_json("agents")["agents"][0]["public_key"]
    impostor = fleet.start_agent("impostor")
    wait_for("the impostor to be refused",
             lambda: "another key" in impostor.tail(200) or None, timeout=30)
    if fleet.ctl_json("agents")["agents"][0]["public_key"] != pinned:
        raise Failure("the pinned key changed")
    fleet.procs.remove(impostor)
    impostor.stop()
    # The honest agent's events still arrive.
    with open(os.path.join(fleet.watched, "etc", "hostname"), "w") as f:
        f.write("web-2\n")
    wait_rule_incident(fleet)


def scenario_ec2_error(fleet, demo=False):
    """An EC2 error is recorded on the incident with AWS's code and message; nothing is marked
    isolated."""
    fleet.start_ec2()
    fleet.start_collector(fleet.write_collector_config(isolation_group="sg-0doesnotexist00001"))
    fleet.start_agent()
    wait_for("the agent to enroll", fleet.agent_enrolled)
    with open(os.path.join(fleet.watched, "etc", "hostname"), "w") as f:
        f.write("changed\n")
    inc = wait_rule_incident(fleet)

    def failed_action():
        acts = fleet.incident(inc["id"]).get("actions", [])
        return [a for a in acts if a.get("status") == "failed"] or None
    failed = wait_for("a failed EC2 action", failed_action)
    if not any(a.get("error_code") == "InvalidGroup.NotFound" and a.get("error_message") for a in failed):
        raise Failure(f"AWS error code/message not recorded: {failed}")
    detail = fleet.incident(inc["id"])["incident"]
    if detail.get("status") == "contained":
        raise Failure("incident marked contained although isolation failed")
    if any(g == ["sg-0doesnotexist00001"] for g in fleet.interface_groups().values()):
        raise Failure("interfaces changed although the call failed")


def scenario_collector_restart(fleet, demo=False):
    """The agent reconnects when the collector restarts; a change made while it was down arrives
    once, in order, and the chain continues."""
    fleet.start_ec2()
    cfg = fleet.write_collector_config()
    fleet.start_collector(cfg)
    fleet.start_agent()
    wait_for("the agent to enroll", fleet.agent_enrolled)
    first = os.path.join(fleet.watched, "etc", "first.conf")
    with open(first, "w") as f:
        f.write("1\n")
    wait_for("the first event", lambda: any(b64path(e) == first for e in file_events(fleet.events())))
    port = fleet.collector_addr.rsplit(":", 1)[1]
    fleet.procs.remove(fleet.collector)
    if fleet.collector.stop() != 0:
        raise Failure(f"collector did not exit cleanly on SIGTERM:\n{fleet.collector.tail()}")
    second = os.path.join(fleet.watched, "etc", "second.conf")
    with open(second, "w") as f:
        f.write("2\n")
    # Same port, so the agent's configured address still holds.
    fleet.start_collector(fleet.write_collector_config(port=int(port)))
    wait_for("the event written while the collector was down",
             lambda: any(b64path(e) == second for e in file_events(fleet.events())), timeout=60)
    # Writing a new file is a CREATED and, when the write lands after the first look, a
    # MODIFIED: both are real changes. A redelivered batch would store the same event twice.
    mine = [e["event"] for e in file_events(fleet.events()) if b64path(e) == second]
    created = [ev for ev in mine if ev["file"]["change"] == "CREATED"]
    if len(created) != 1:
        raise Failure(f"{second}: {len(created)} CREATED events stored, want 1: {mine}")
    keys = [json.dumps(ev, sort_keys=True) for ev in mine]
    if len(keys) != len(set(keys)):
        raise Failure(f"{second}: the same event was stored twice: {mine}")
    seqs = [int(e["event"]["seq"]) for e in fleet.events()]
    if seqs != sorted(seqs) or len(seqs) != len(set(seqs)):
        raise Failure(f"event seqs not increasing and unique: {seqs}")


def scenario_bad_config(fleet, demo=False):
    """Malformed configs stop both programs with the file, line and reason."""
    fleet.start_ec2()
    bad = os.path.join(fleet.dir, "bad-collector.yaml")
    with open(bad, "w") as f:
        f.write("listen: 127.0.0.1:0\ndatabase: x.db\ntreshold: 3\n")
    r = subprocess.run([fleet.collector_bin, "--config", bad], capture_output=True, timeout=30)
    err = r.stderr.decode(errors="replace")
    if r.returncode != 2 or f"{bad}:3:1" not in err or "treshold" not in err:
        raise Failure(f"collector on a bad config: exit {r.returncode}, stderr: {err}")
    bad_rules = os.path.join(fleet.dir, "bad-rules.yaml")
    with open(bad_rules, "w") as f:
        f.write("rules:\n  - id: x\n    title: t\n    severity: apocalyptic\n    match: {kind: file}\n")
    cfg = fleet.write_collector_config()
    with open(cfg) as f:
        text = f.read().replace(os.path.join(fleet.dir, "rules.yaml"), bad_rules)
    with open(cfg, "w") as f:
        f.write(text)
    r = subprocess.run([fleet.collector_bin, "--config", cfg], capture_output=True, timeout=30)
    err = r.stderr.decode(errors="replace")
    if r.returncode != 2 or f"{bad_rules}:4:" not in err:
        raise Failure(f"collector on bad rules: exit {r.returncode}, stderr: {err}")
    bad_agent = os.path.join(fleet.dir, "bad-agent.yaml")
    with open(bad_agent, "w") as f:
        f.write("agent_id: i-1\ncollector:\n  address: 127.0.0.1:1\n  plaintext: maybe\n")
    r = subprocess.run([fleet.agent_bin, "--config", bad_agent], capture_output=True, timeout=30)
    err = r.stderr.decode(errors="replace")
    if r.returncode != 2 or f"{bad_agent}:4:" not in err:
        raise Failure(f"agent on a bad config: exit {r.returncode}, stderr: {err}")


def scenario_unreachable_collector(fleet, demo=False):
    """An agent whose collector is not there retries with backoff instead of exiting, and delivers
    once the collector appears."""
    fleet.start_ec2()
    # Reserve a port, then start the agent against it before the collector exists.
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    fleet.collector_addr = f"127.0.0.1:{port}"
    agent = fleet.start_agent()
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        if not agent.alive():
            raise Failure(f"agent exited without a collector:\n{agent.tail()}")
        time.sleep(0.1)
    fleet.start_collector(fleet.write_collector_config(port=port))
    wait_for("the agent to enroll", fleet.agent_enrolled, timeout=30)

# --- delivery under faults -----------------------------------------------------------------------
#
# Each scenario makes many files under a watched directory that no rule matches, breaks something
# in the middle, and then checks the collector's database: every file's CREATED event stored
# exactly once, in the order the files were made, and the agent's batch chain stored without a
# gap. Each prints one "fault-table:" line (scenario, events sent, stored, duplicates).

FAULT_EVENTS = int(os.environ.get("TRIPLINE_E2E_FAULT_EVENTS", "20000"))


def fault_world(fleet, extra=""):
    """EC2 endpoint, collector and an agent that also watches host/data; returns the data dir."""
    fleet.start_ec2()
    fleet.start_collector()
    data = os.path.join(fleet.watched, "data")
    os.makedirs(data, exist_ok=True)
    fleet.start_agent(extra=extra, watch_extra=data)
    wait_watching(fleet, data)
    return data


def wait_watching(fleet, directory, agent_log=None, runs=1):
    """Returns once the agent's `runs`-th baseline scan is complete (files made during a scan
    become part of the baseline, not events) and a probe file written in `directory` has been
    stored. The probe is rewritten on every look, since a write before the watch goes unseen."""
    agent_log = agent_log or os.path.join(fleet.dir, "agent.log")

    def scanned():
        with open(agent_log, "rb") as f:
            return f.read().count(b"baseline complete") >= runs
    wait_for("the agent's baseline scan", scanned, timeout=60, interval=0.1)
    probe = os.path.join(directory, "probe")

    def seen():
        with open(probe, "w") as f:
            f.write(f"probe {time.monotonic_ns()}\n")  # new contents: a change even to a baseline
        return db_query(fleet, "SELECT COUNT(*) FROM events WHERE path=?", (probe.encode(),))[0][0]
    wait_for(f"the agent to watch {directory}", seen, timeout=60, interval=0.2)


def create_files(directory, prefix, count):
    """Makes `count` small files, paced so the kernel's inotify queue (16384 events) keeps up."""
    names = []
    for i in range(count):
        path = os.path.join(directory, f"{prefix}-{i:06d}")
        with open(path, "w") as f:
            f.write("x")
        names.append(path.encode())
        if i % 200 == 199:
            time.sleep(0.01)
    return names


class FileMaker:
    """create_files on a thread, so a fault can strike while events are still being produced."""

    def __init__(self, directory, prefix, count):
        import threading
        self.names = []
        self.thread = threading.Thread(
            target=lambda: self.names.extend(create_files(directory, prefix, count)))
        self.thread.start()

    def join(self):
        self.thread.join()
        return self.names


def db_query(fleet, sql, args=()):
    db = os.path.join(fleet.dir, "collector.db")
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def stored_created(fleet):
    """CREATED events stored for the agent, not counting wait_watching's probe."""
    return db_query(fleet, "SELECT COUNT(*) FROM events WHERE agent_id=? AND kind='file' AND "
                           "change='created' AND CAST(path AS TEXT) NOT LIKE '%/probe'",
                    (INSTANCE_ID,))[0][0]


def wait_stored(fleet, at_least, timeout=240):
    wait_for(f"{at_least} CREATED events stored", lambda: stored_created(fleet) >= at_least,
             timeout=timeout, interval=0.2)


def spool_dir(fleet, name="agent"):
    return os.path.join(fleet.dir, name + "-state", "spool")


def spool_segments(fleet, name="agent"):
    d = spool_dir(fleet, name)
    return sorted(os.path.join(d, n) for n in os.listdir(d) if n.startswith("segment-"))


def spooled_names(fleet, prefix, name="agent"):
    """The file names that appear in the agent's spool segments (the batch bytes hold paths as is)."""
    import re
    found = set()
    pattern = re.compile(re.escape(prefix.encode()) + rb"-\d{6}")
    for seg in spool_segments(fleet, name):
        with open(seg, "rb") as f:
            found.update(pattern.findall(f.read()))
    return found


def kill_collector(fleet, sig=signal.SIGKILL):
    """Stops the collector with `sig`; returns its port, for a restart at the same address."""
    port = int(fleet.collector_addr.rsplit(":", 1)[1])
    fleet.procs.remove(fleet.collector)
    fleet.collector.stop(sig=sig)
    return port


def check_delivery(fleet, scenario, names):
    """Every name's CREATED stored exactly once, in creation order; the batch chain without gaps."""
    rows = db_query(fleet, "SELECT id, batch_seq, seq, kind, path, change FROM events "
                           "WHERE agent_id=? ORDER BY id", (INSTANCE_ID,))
    index = {n: i for i, n in enumerate(names)}
    created = [bytes(r[4]) for r in rows
               if r[3] == "file" and r[5] == "created" and bytes(r[4]) in index]
    counts = {}
    for n in created:
        counts[n] = counts.get(n, 0) + 1
    duplicates = sum(c - 1 for c in counts.values())
    keys = {}
    for r in rows:
        keys[(r[1], r[2])] = keys.get((r[1], r[2]), 0) + 1
    duplicates += sum(c - 1 for c in keys.values())
    stored = len(counts)
    print(f"fault-table: scenario={scenario} sent={len(names)} stored={stored} "
          f"duplicates={duplicates}")
    missing = [n.decode() for n in names if n not in counts]
    if missing:
        raise Failure(f"{len(missing)} events never stored, e.g. {missing[:3]}")
    if duplicates:
        raise Failure(f"{duplicates} events stored more than once")
    firsts, seen = [], set()
    for n in created:
        if n not in seen:
            seen.add(n)
            firsts.append(index[n])
    if firsts != sorted(firsts):
        bad = next(i for i in range(1, len(firsts)) if firsts[i] < firsts[i - 1])
        raise Failure(f"events stored out of order near file #{firsts[bad]}")
    batch_ids = [r[1] for r in rows]
    if batch_ids != sorted(batch_ids):
        raise Failure("events stored out of batch order")
    seqs = [r[0] for r in db_query(fleet, "SELECT batch_seq FROM batches WHERE agent_id=? "
                                          "ORDER BY batch_seq", (INSTANCE_ID,))]
    if seqs != list(range(1, len(seqs) + 1)):
        raise Failure(f"batch chain has gaps: {len(seqs)} batches, last {seqs[-1] if seqs else 0}")
    integrity = db_query(fleet, "SELECT COUNT(*) FROM incidents WHERE rule_id LIKE 'integrity%'")
    if integrity[0][0]:
        raise Failure(f"{integrity[0][0]} integrity incidents opened by an honest agent")


def scenario_collector_kill9(fleet, demo=False):
    """kill -9 of the collector while a stream of events is arriving, then a restart: every event
    stored exactly once, in order."""
    data = fault_world(fleet)
    maker = FileMaker(data, "f", FAULT_EVENTS)
    wait_stored(fleet, FAULT_EVENTS // 10)
    port = kill_collector(fleet)
    at_kill = stored_created(fleet)
    names = maker.join()
    print(f"collector killed with {at_kill}/{len(names)} events stored")
    if at_kill >= len(names):
        raise Failure("the collector was killed after the stream ended; nothing was tested")
    fleet.start_collector(fleet.write_collector_config(port=port))
    wait_stored(fleet, len(names))
    check_delivery(fleet, "collector_kill9", names)


def scenario_agent_kill9(fleet, demo=False):
    """kill -9 of the agent with batches sent but not acked (the collector frozen mid-stream), then
    a restart of both: the spooled batches are resent, the ones the collector had are not stored
    twice."""
    data = fault_world(fleet)
    maker = FileMaker(data, "f", FAULT_EVENTS)
    wait_stored(fleet, FAULT_EVENTS // 10)
    fleet.collector.proc.send_signal(signal.SIGSTOP)
    try:
        names = maker.join()
        wait_for("every event in the agent's spool",
                 lambda: len(spooled_names(fleet, "f")) >= len(names), timeout=120, interval=0.2)
        agent = next(p for p in fleet.procs if p.name == "agent")
        fleet.procs.remove(agent)
        agent.stop(sig=signal.SIGKILL)
    finally:
        fleet.collector.proc.send_signal(signal.SIGCONT)
    at_kill = stored_created(fleet)
    print(f"agent killed with {at_kill}/{len(names)} events stored")
    if at_kill >= len(names):
        raise Failure("the agent was killed after the stream ended; nothing was tested")
    fleet.start_agent(watch_extra=data)
    wait_stored(fleet, len(names))
    check_delivery(fleet, "agent_kill9", names)


def scenario_collector_down(fleet, demo=False):
    """The collector is down while events keep coming: the spool grows, then drains after the
    restart, and deletes its acked segments."""
    # Room for every event, however many TRIPLINE_E2E_FAULT_EVENTS asks for: this scenario is
    # about growing and draining; reaching the cap is spool_cap's.
    cap = max(8 << 20, FAULT_EVENTS * 512)
    data = fault_world(fleet, extra=f"spool:\n  max_bytes: {cap}\n")
    port = kill_collector(fleet, signal.SIGTERM)
    names = create_files(data, "f", FAULT_EVENTS)
    wait_for("every event in the agent's spool",
             lambda: len(spooled_names(fleet, "f")) >= len(names), timeout=120, interval=0.2)
    grown = spool_segments(fleet)
    if len(grown) < 2:
        raise Failure(f"spool did not grow past one segment: {grown}")
    fleet.start_collector(fleet.write_collector_config(port=port))
    wait_stored(fleet, len(names))
    wait_for("the acked segments to be deleted", lambda: len(spool_segments(fleet)) <= 1,
             timeout=60)
    print(f"spool held {len(grown)} segments while the collector was down, "
          f"{len(spool_segments(fleet))} after it drained")
    check_delivery(fleet, "collector_down", names)


def scenario_spool_cap(fleet, demo=False):
    """The collector is down and the spool reaches its cap: sealing pauses (nothing dropped), FIM
    marks its root dirty instead of reporting each file, and after the restart every event
    arrives once, with a SPOOL_PRESSURE AgentEvent and FIM's RESCAN_DONE of the dirty root."""
    cap = 65536
    data = fault_world(fleet, extra=f"spool:\n  max_bytes: {cap}\n")
    port = kill_collector(fleet, signal.SIGTERM)
    count = min(FAULT_EVENTS, 3000)
    names = create_files(data, "f", count)
    agent = next(p for p in fleet.procs if p.name == "agent")
    wait_for("the agent to report back-pressure", lambda: "back-pressure" in agent.tail(200),
             timeout=60)
    used = sum(os.path.getsize(s) for s in spool_segments(fleet))
    if used > cap + (1 << 20):
        raise Failure(f"spool holds {used} bytes, cap {cap}")
    fleet.start_collector(fleet.write_collector_config(port=port))
    wait_stored(fleet, len(names))
    pressure = lambda: [r for r in db_query(
        fleet, "SELECT event FROM events WHERE agent_id=? AND kind='agent'", (INSTANCE_ID,))
        if b"spool back-pressure" in bytes(r[0])]
    wait_for("a SPOOL_PRESSURE AgentEvent", pressure, timeout=60)
    dirty = lambda: [e for e in agent_events(fleet, "RESCAN_DONE")
                     if "marked dirty" in e["event"]["agent"].get("message", "")]
    wait_for("FIM's RESCAN_DONE of the root it marked dirty", dirty, timeout=60)
    check_delivery(fleet, "spool_cap", names)


def scenario_spool_corrupt_tail(fleet, demo=False):
    """The last byte of the spool is flipped while the agent is down: the agent drops that record
    only, continues the chain from the collector's head, and the next events are stored once."""
    data = fault_world(fleet)
    count = min(FAULT_EVENTS, 2000)
    names = create_files(data, "a", count)
    wait_stored(fleet, count)
    agent = next(p for p in fleet.procs if p.name == "agent")
    fleet.procs.remove(agent)
    if agent.stop() != 0:
        raise Failure(f"agent did not stop cleanly:\n{agent.tail()}")
    last = spool_segments(fleet)[-1]
    with open(last, "r+b") as f:
        f.seek(-1, os.SEEK_END)
        byte = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([byte[0] ^ 0x01]))
    agent = fleet.start_agent(watch_extra=data)
    wait_for("the agent to cut the torn tail", lambda: "torn tail" in agent.tail(200), timeout=30)
    wait_watching(fleet, data, runs=2)
    names += create_files(data, "b", count)
    wait_stored(fleet, 2 * count)
    check_delivery(fleet, "spool_corrupt_tail", names)



def scenario_restart_orders(fleet, demo=False):
    """Agent and collector stopped and started again in every order (SIGTERM and SIGKILL), with
    files made between the steps: every event stored exactly once, in order."""
    data = fault_world(fleet)
    count = min(FAULT_EVENTS, 1000)
    names, runs = [], 1

    def agent_proc():
        return next(p for p in fleet.procs if p.name == "agent")

    def stop_agent(sig):
        a = agent_proc()
        fleet.procs.remove(a)
        a.stop(sig=sig)

    def start_agent():
        nonlocal runs
        fleet.start_agent(watch_extra=data)
        runs += 1

    orders = [
        ("collector first, both SIGTERM", signal.SIGTERM, signal.SIGTERM, "collector"),
        ("agent first, both SIGTERM", signal.SIGTERM, signal.SIGTERM, "agent"),
        ("collector first, both SIGKILL", signal.SIGKILL, signal.SIGKILL, "collector"),
        ("agent first, both SIGKILL", signal.SIGKILL, signal.SIGKILL, "agent"),
    ]
    for i, (label, agent_sig, collector_sig, first_down) in enumerate(orders):
        maker = FileMaker(data, f"r{i}", count)
        names += maker.join()
        # Everything produced must be spooled before the agent is killed (the in-memory queue is
        # not: docs/design.md); with SIGTERM the agent seals what is queued itself.
        wait_for("the files in the spool or stored",
                 lambda: len(spooled_names(fleet, f"r{i}")) >= count or
                 stored_created(fleet) >= len(names), timeout=120, interval=0.2)
        if first_down == "collector":
            port = kill_collector(fleet, collector_sig)
            stop_agent(agent_sig)
            # Start in the other order than they went down.
            start_agent()
            fleet.start_collector(fleet.write_collector_config(port=port))
        else:
            stop_agent(agent_sig)
            port = kill_collector(fleet, collector_sig)
            fleet.start_collector(fleet.write_collector_config(port=port))
            start_agent()
        wait_watching(fleet, data, runs=runs)
        wait_stored(fleet, len(names))
        print(f"{label}: {stored_created(fleet)}/{len(names)} stored")
    check_delivery(fleet, "restart_orders", names)


class ChangeWriter:
    """On a thread, until stop(): creates new files and appends to older ones (each file changed
    at most a few times), keeping what each file holds last, so every change can be checked at
    the collector."""

    def __init__(self, directory, prefix):
        import threading
        self.directory, self.prefix = directory, prefix
        self.contents = {}  # path bytes -> last bytes written
        self.changes = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self):
        i, modifiable = 0, []
        while not self._stop.is_set():
            if i % 3 == 2 and modifiable:
                path = modifiable.pop(0)
                data = f"modified by change {i}\n".encode()
                with open(path, "ab") as f:
                    f.write(data)
                self.contents[path] += data
                if len(self.contents[path]) < 200:
                    modifiable.append(path)
            else:
                path = os.path.join(os.fsencode(self.directory), f"{self.prefix}-{i:06d}".encode())
                data = f"created by change {i}\n".encode()
                with open(path, "wb") as f:
                    f.write(data)
                self.contents[path] = data
                modifiable.append(path)
            self.changes += 1
            i += 1
            time.sleep(0.002)

    def stop(self):
        self._stop.set()
        self.thread.join()


def check_file_chains(fleet, scenario, contents, changes):
    """Every file's events at the collector, in the order stored, are one unbroken chain: a
    CREATED first, each next event's `before` the last one's `after`, the last `after` what the
    file holds. A change reported twice (or not at all) breaks the chain."""
    import base64
    import hashlib
    by_path = {}
    events = [e for e in file_events(fleet.events()) if b64raw(e) in contents]
    for e in events:
        by_path.setdefault(b64raw(e), []).append(e["event"]["file"])
    digest = lambda state: base64.b64decode(state.get("sha256", "")) if state else None
    missing, duplicates, broken = [], 0, []
    for path, data in contents.items():
        chain = by_path.get(path, [])
        if not chain:
            missing.append(path)
            continue
        seen, last = set(), None
        for i, f in enumerate(chain):
            before, after = digest(f.get("before")), digest(f.get("after"))
            if (before, after) in seen:
                duplicates += 1
                continue
            seen.add((before, after))
            if (i == 0) != (f["change"] == "CREATED") or (i > 0 and before != last):
                broken.append((path, i, f["change"]))
            last = after
        if last != hashlib.sha256(data).digest():
            missing.append(path)
    print(f"fault-table: scenario={scenario} changes={changes} files={len(contents)} "
          f"stored={len(events)} duplicates={duplicates} missing={len(missing)}")
    if duplicates:
        raise Failure(f"{duplicates} changes reported more than once")
    if missing:
        raise Failure(f"{len(missing)} files without their last change, e.g. {missing[:3]}")
    if broken:
        raise Failure(f"{len(broken)} broken event chains, e.g. {broken[:3]}")


def scenario_fim_kill9(fleet, demo=False):
    """The agent is killed with SIGKILL at random moments while a writer creates and modifies
    files, and started again each time: every change reaches the collector exactly once."""
    import random
    data = fault_world(fleet)
    rng = random.Random(int(os.environ.get("TRIPLINE_E2E_SEED", "0")) or None)
    kills = int(os.environ.get("TRIPLINE_E2E_KILLS", "8"))
    writer = ChangeWriter(data, "w")
    try:
        for k in range(kills):
            time.sleep(rng.uniform(0.2, 1.5))
            agent = next(p for p in fleet.procs if p.name == "agent")
            fleet.procs.remove(agent)
            agent.stop(sig=signal.SIGKILL)
            time.sleep(rng.uniform(0.0, 0.5))  # changes made while it is down, too
            fleet.start_agent(watch_extra=data)
        time.sleep(rng.uniform(0.2, 1.0))
    finally:
        writer.stop()
    print(f"{writer.changes} changes to {len(writer.contents)} files, agent killed {kills} times")

    def all_there():
        import base64
        import hashlib
        last = {}
        for e in file_events(fleet.events()):
            f = e["event"]["file"]
            last[b64raw(e)] = base64.b64decode(f.get("after", {}).get("sha256", ""))
        waiting = [p for p, d in writer.contents.items() if last.get(p) != hashlib.sha256(d).digest()]
        if waiting:
            raise Failure(f"{len(waiting)} files without their last change at the collector")
        return True
    wait_for("every change at the collector", all_there, timeout=240, interval=1.0)
    check_file_chains(fleet, "fim_kill9", writer.contents, writer.changes)


def make_test_pki(directory):
    """A CA, a collector certificate for 127.0.0.1 and an agent client certificate, made with the
    openssl CLI; returns the paths by name."""
    def run(*argv):
        r = subprocess.run(argv, cwd=directory, capture_output=True, timeout=60)
        if r.returncode != 0:
            raise Failure(f"{' '.join(argv)}: {r.stderr.decode(errors='replace')}")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run("openssl", "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
        "-subj", "/CN=tripline-test-ca")
    for name, usage, san in (("collector", "serverAuth", "subjectAltName=IP:127.0.0.1\n"),
                             ("agent", "clientAuth", "")):
        with open(os.path.join(directory, name + ".ext"), "w") as f:
            f.write(f"basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n"
                    f"extendedKeyUsage={usage}\n{san}")
        run("openssl", "req", *ec, "-keyout", name + ".key", "-out", name + ".csr", "-subj",
            f"/CN={name}")
        run("openssl", "x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", name + ".pem", "-days", "1", "-extfile", name + ".ext")
    return {n: os.path.join(directory, n) for n in
            ("ca.pem", "collector.pem", "collector.key", "agent.pem", "agent.key")}


def scenario_tls(fleet, demo=False):
    """Agent and collector over mutual TLS: the agent pins the collector's CA, the collector
    requires the agent's client certificate, and a file event arrives signed and stored."""
    fleet.start_ec2()
    pki = make_test_pki(fleet.dir)
    cfg = fleet.write_collector_config()
    with open(cfg) as f:
        text = f.read()
    text = text.replace("tls:\n  plaintext: true\n",
                        f"tls:\n  cert_file: {pki['collector.pem']}\n"
                        f"  key_file: {pki['collector.key']}\n"
                        f"  client_ca_file: {pki['ca.pem']}\n")
    with open(cfg, "w") as f:
        f.write(text)
    collector = fleet.start_collector(cfg)
    if "NOT encrypted" in collector.tail(50):
        raise Failure("collector says it runs in plaintext")
    data = os.path.join(fleet.watched, "data")
    os.makedirs(data, exist_ok=True)
    acfg = fleet.write_agent_config("agent", watch_extra=data)
    with open(acfg) as f:
        text = f.read()
    text = text.replace("  plaintext: true\n", f"  ca_file: {pki['ca.pem']}\n"
                                               f"  cert_file: {pki['agent.pem']}\n"
                                               f"  key_file: {pki['agent.key']}\n", 1)
    with open(acfg, "w") as f:
        f.write(text)
    agent = fleet.start("agent", [fleet.agent_bin, "--config", acfg])
    wait_watching(fleet, data)
    names = create_files(data, "t", 50)
    wait_stored(fleet, len(names), timeout=60)
    check_delivery(fleet, "tls", names)
    if "plaintext" in agent.tail(200):
        raise Failure(f"agent log mentions plaintext:\n{agent.tail(20)}")
    # An agent without a client certificate is turned away at the handshake.
    bare = fleet.write_agent_config("bare", agent_id="i-0bare000000000001")
    with open(bare) as f:
        text = f.read()
    with open(bare, "w") as f:
        f.write(text.replace("  plaintext: true\n", f"  ca_file: {pki['ca.pem']}\n", 1))
    stranger = fleet.start("bare", [fleet.agent_bin, "--config", bare])
    wait_for("the agent without a certificate to fail its handshake",
             lambda: "enroll failed" in stranger.tail(50), timeout=30)
    if db_query(fleet, "SELECT COUNT(*) FROM agents WHERE agent_id='i-0bare000000000001'")[0][0]:
        raise Failure("an agent without a client certificate enrolled")


def scenario_operator_tokens(fleet, demo=False):
    """Tokens made with `tripline-collector token` (the collector running) work in triplinectl
    at once, show in the audit trail with who made them, and stop working when revoked."""
    fleet.start_ec2()
    cfg = fleet.write_collector_config()
    fleet.start_collector(cfg)

    def admin(*args):
        return subprocess.run([fleet.collector_bin, "--config", cfg, "token", *args],
                              capture_output=True, timeout=30)

    r = admin("create", "alice", "--role", "read")
    if r.returncode != 0:
        raise Failure(f"token create: exit {r.returncode}: {r.stderr.decode(errors='replace')}")
    token = r.stdout.decode().strip()
    if not token.startswith("tl1_") or token in r.stderr.decode(errors="replace"):
        raise Failure(f"token create printed {token!r} / {r.stderr!r}")
    alice = os.path.join(fleet.dir, "alice-token")
    write_secret(alice, token)

    def as_alice(*args):
        argv = [fleet.ctl_bin, "--collector", fleet.collector_addr, "--plaintext",
                "--token-file", alice, *args]
        return subprocess.run(argv, capture_output=True, timeout=30)

    r = as_alice("--json", "agents")
    if r.returncode != 0:
        raise Failure(f"alice's read token refused: {r.stderr.decode(errors='replace')}")
    if admin("create", "alice").returncode == 0:
        raise Failure("a second active token for alice was created")
    listing = admin("list").stdout.decode()
    if "alice" not in listing or "active" not in listing or token in listing:
        raise Failure(f"token list: {listing}")
    actions = fleet.ctl_json("actions").get("actions", [])
    created = [a for a in actions if a.get("kind") == "token:create" and a.get("target") == "alice"]
    if len(created) != 1 or not created[0].get("actor", "").startswith("local:"):
        raise Failure(f"token creation not audited with its actor: {actions}")
    # Roles: a read token cannot touch an incident; a respond token walks it to resolved.
    fleet.start_agent()
    wait_for("the agent to enroll", fleet.agent_enrolled)
    with open(os.path.join(fleet.watched, "etc", "hostname"), "a") as f:
        f.write("tampered\n")
    inc = wait_rule_incident(fleet)
    r = as_alice("incident", "ack", str(inc["id"]))
    err = r.stderr.decode(errors="replace")
    if r.returncode != 1 or "PERMISSION_DENIED" not in err or "needs respond" not in err:
        raise Failure(f"read token acknowledging: exit {r.returncode}, stderr: {err}")
    bob = os.path.join(fleet.dir, "bob-token")
    write_secret(bob, admin("create", "bob", "--role", "respond").stdout.decode().strip())
    r = subprocess.run([fleet.ctl_bin, "--collector", fleet.collector_addr, "--plaintext",
                        "--token-file", bob, "--json", "incident", "resolve", str(inc["id"]),
                        "--note", "planned change"], capture_output=True, timeout=30)
    if r.returncode != 0 or json.loads(r.stdout)["incident"]["status"] != "resolved":
        raise Failure(f"respond token resolving: exit {r.returncode}: {r.stdout!r} {r.stderr!r}")
    shown = fleet.ctl_json("incident", "show", str(inc["id"]))
    notes = [a for a in shown.get("actions", []) if a.get("kind") == "incident:note"]
    if len(notes) != 1 or notes[0].get("actor") != "token:bob" or \
            notes[0].get("detail") != "planned change":
        raise Failure(f"the note is not in the timeline with its author: {shown.get('actions')}")

    r = admin("revoke", "alice")
    if r.returncode != 0:
        raise Failure(f"token revoke: {r.stderr.decode(errors='replace')}")
    r = as_alice("agents")
    err = r.stderr.decode(errors="replace")
    if r.returncode != 1 or "UNAUTHENTICATED" not in err or "revoked" not in err:
        raise Failure(f"revoked token: exit {r.returncode}, stderr: {err}")
    r = admin("create", "bob", "--role", "superuser")
    if r.returncode != 2:
        raise Failure(f"a bad role was not a usage error: exit {r.returncode}")


def scenario_evidence(fleet, demo=False):
    """An incident's evidence exports to a directory that verifies offline, and a changed byte
    anywhere in it is caught and named."""
    fleet.start_ec2()
    fleet.start_collector()
    fleet.start_agent()
    wait_for("the agent to enroll", fleet.agent_enrolled)
    # Several batches: changes outside the rule's paths, then the one that opens the incident,
    # then more, so the exported range holds a chain to re-walk.
    for i in range(3):
        with open(os.path.join(fleet.watched, f"note-{i}.txt"), "w") as f:
            f.write(f"{i}\n")
        time.sleep(0.05)
    with open(os.path.join(fleet.watched, "etc", "hostname"), "a") as f:
        f.write("tampered\n")
    inc = wait_rule_incident(fleet)
    with open(os.path.join(fleet.watched, "etc", "ssh", "sshd_config"), "a") as f:
        f.write("PermitRootLogin yes\n")
    wait_for("the second matching event", lambda: len(fleet.ctl_json(
        "incident", "show", str(inc["id"])).get("events", [])) >= 2)

    out = os.path.join(fleet.dir, "evidence")
    r = fleet.ctl("evidence", "export", str(inc["id"]), "-o", out)
    ctl_verify = [fleet.ctl_bin, "evidence", "verify", out]  # offline: no collector, no token
    ok = subprocess.run(ctl_verify, capture_output=True, timeout=30)
    text = ok.stdout.decode(errors="replace")
    if ok.returncode != 0 or "evidence OK" not in text:
        raise Failure(f"fresh export does not verify: exit {ok.returncode}: {text}")
    batches = sorted(os.listdir(os.path.join(out, "batches", INSTANCE_ID)))
    # The two matching changes were written after each other was stored: two batches at least,
    # and the range between them.
    if len(batches) < 2 or f"{len(batches)} batches" not in text:
        raise Failure(f"expected the batch range of both events, got {batches}: {text}")
    actions = fleet.ctl_json("actions", "--incident", str(inc["id"])).get("actions", [])
    if not any(a.get("kind") == "evidence:export" for a in actions):
        raise Failure(f"the export is not in the incident's audit trail: {actions}")
    if fleet.ctl("evidence", "export", str(inc["id"]), "-o", out, expect_ok=False).returncode == 0:
        raise Failure("export overwrote a non-empty directory")

    def tampered(rel, mutate):
        copy = os.path.join(fleet.dir, "evidence-" + str(len(os.listdir(fleet.dir))))
        shutil.copytree(out, copy)
        path = os.path.join(copy, rel)
        with open(path, "rb") as f:
            data = bytearray(f.read())
        data = mutate(data)
        if data is None:
            os.unlink(path)
        else:
            with open(path, "wb") as f:
                f.write(data)
        r = subprocess.run([fleet.ctl_bin, "evidence", "verify", copy], capture_output=True,
                           timeout=30)
        return r.returncode, r.stdout.decode(errors="replace")

    def flip(data):
        data[len(data) // 2] ^= 0x01
        return data

    middle = os.path.join("batches", INSTANCE_ID, batches[len(batches) // 2])
    code, text = tampered(middle, flip)
    if code != 1 or middle not in text or "signature does not verify" not in text:
        raise Failure(f"flipped byte in {middle} not caught: exit {code}: {text}")
    code, text = tampered("incident.json", lambda d: d.replace(b"etc-changed", b"etc-chanGed"))
    if code != 1 or "incident.json: changed since export" not in text:
        raise Failure(f"edited incident.json not caught: exit {code}: {text}")
    if len(batches) >= 3:
        code, text = tampered(middle, lambda d: None)
        if code != 1 or "missing" not in text:
            raise Failure(f"a removed batch not caught: exit {code}: {text}")
    report = fleet.ctl("incident", "report", str(inc["id"])).stdout.decode(errors="replace")
    if "## Timings" not in report or INSTANCE_ID not in report or "evidence:export" not in report:
        raise Failure(f"incident report lacks timings, the instance or the export:\n{report}")
    data = fleet.ctl_json("incident", "report", str(inc["id"]))
    if not isinstance(data.get("timings", {}).get("contain_seconds"), (int, float)):
        raise Failure(f"JSON report has no containment time: {data.get('timings')}")
    if demo:
        print(ok.stdout.decode(errors="replace"))

# --- FIM: the scripted change set, one-shot and realtime ---------------------------------------

NON_UTF8 = b"caf\xe9\xff"


def b64raw(event):
    """The event's path as the exact bytes the agent saw."""
    import base64
    return base64.b64decode(event["event"]["file"]["path"])


def fim_prepare(d):
    """The files the change set works on, in directory d (bytes or str)."""
    d = os.fsencode(d)
    for name, text in [(b"content", "original"), (b"mode", "m"), (b"owner", "o"), (b"renamed", "r"),
                       (b"deleted", "d"), (b"linked", "l"), (b"becomes-dir", "f"),
                       (b"longer", "12345"), (b"sneaky", "aaaa")]:
        with open(os.path.join(d, name), "w") as f:
            f.write(text)
    os.symlink(b"/etc/passwd", os.path.join(d, b"symlink"))


def fim_apply(d, scratch):
    """Content, mode, owner, rename, delete, hard link, symlink retarget, file replaced by a
    directory, a non-UTF-8 name, a file one byte longer, and contents changed with the mtime put
    back by `touch -r`."""
    d = os.fsencode(d)
    j = lambda name: os.path.join(d, name)
    with open(j(b"content"), "w") as f:
        f.write("tampered")  # same length: only the hash shows it
    os.chmod(j(b"mode"), 0o4755)
    os.chown(j(b"owner"), 1234, 5678)
    os.rename(j(b"renamed"), j(b"renamed.new"))
    os.unlink(j(b"deleted"))
    os.link(j(b"linked"), j(b"hardlink"))
    os.unlink(j(b"symlink"))
    os.symlink(b"/etc/shadow", j(b"symlink"))
    os.unlink(j(b"becomes-dir"))
    os.mkdir(j(b"becomes-dir"))
    with open(j(NON_UTF8), "w") as f:
        f.write("bytes")
    with open(j(b"longer"), "w") as f:
        f.write("123456")
    ref = os.path.join(scratch, "sneaky.times")
    with open(ref, "w"):
        pass
    subprocess.run(["touch", "-r", j(b"sneaky"), ref], check=True)
    with open(j(b"sneaky"), "w") as f:
        f.write("bbbb")
    subprocess.run(["touch", "-r", ref, j(b"sneaky")], check=True)


# What `tripline-agent check` must say about each path after fim_apply.
FIM_CHECK_EXPECTED = {
    b"content": ("changed", ["sha256"]),
    b"mode": ("changed", ["mode"]),
    b"owner": ("changed", ["owner"]),
    b"renamed": ("removed", None),
    b"renamed.new": ("added", None),
    b"deleted": ("removed", None),
    b"linked": ("changed", ["links"]),
    b"hardlink": ("added", None),
    b"symlink": ("changed", ["target"]),
    b"becomes-dir": ("changed", ["type", "size", "mode", "links"]),
    NON_UTF8: ("added", None),
    b"longer": ("changed", ["size", "sha256"]),
    b"sneaky": ("changed", ["sha256"]),
}


def run_agent(fleet, *args):
    return subprocess.run([fleet.agent_bin, *args], capture_output=True, timeout=120)


def scenario_fim_check(fleet, demo=False):
    """`tripline-agent scan` then `check`, like AIDE's --init and --check, without a collector:
    every change of the scripted set is reported with the attributes that show it; exit 0 when
    nothing changed, 1 when something did."""
    import base64
    tree = os.path.join(fleet.dir, "tree")
    os.mkdir(tree)
    fim_prepare(tree)
    cfg = os.path.join(fleet.dir, "oneshot.yaml")
    with open(cfg, "w") as f:
        f.write(f"state_dir: {fleet.dir}/oneshot-state\nfim:\n  paths:\n    - {tree}\n")
    r = run_agent(fleet, "scan", "--config", cfg)
    if r.returncode != 0 or b"baseline: 11 entries" not in r.stdout:
        raise Failure(f"scan: exit {r.returncode}: {r.stdout!r} {r.stderr!r}")
    r = run_agent(fleet, "check", "--config", cfg)
    if r.returncode != 0 or b"no changes" not in r.stdout:
        raise Failure(f"check of an unchanged tree: exit {r.returncode}: {r.stdout!r} {r.stderr!r}")

    fim_apply(tree, fleet.dir)
    r = run_agent(fleet, "check", "--config", cfg, "--json")
    if r.returncode != 1:
        raise Failure(f"check after changes: exit {r.returncode}, want 1: {r.stderr!r}")
    report = json.loads(r.stdout)
    got = {}
    for kind in ("added", "removed", "changed"):
        for entry in report[kind]:
            path = base64.b64decode(entry["path_base64"])
            attrs = entry.get("attributes")
            if attrs and path.endswith((b"/symlink", b"/becomes-dir")):
                attrs = [a for a in attrs if a != "inode"]  # a freed inode may be reused at once
            got[os.path.basename(path)] = (kind, attrs)
    if got != FIM_CHECK_EXPECTED:
        raise Failure(f"check --json reported {got}, want {FIM_CHECK_EXPECTED}")
    text = run_agent(fleet, "check", "--config", cfg)
    if text.returncode != 1 or b"changed: " + os.fsencode(tree) + b"/mode (mode)" not in text.stdout:
        raise Failure(f"check text report: {text.stdout!r}")
    if demo or fleet.verbose:
        print(text.stdout.decode(errors="replace"))


def wait_file_events(fleet, want, timeout=60):
    """Waits until, for every (path bytes, change) in want, the collector holds such an event;
    returns the events."""
    def all_there():
        evs = file_events(fleet.events())
        have = {(b64raw(e), e["event"]["file"]["change"]) for e in evs}
        missing = [w for w in want if w not in have]
        if missing:
            raise Failure(f"missing {missing[:5]} ({len(missing)} in all)")
        return evs
    return wait_for(f"{len(want)} file events at the collector", all_there, timeout)


def agent_events(fleet, kind):
    return [e for e in fleet.events() if e.get("event", {}).get("agent", {}).get("kind") == kind]


def scenario_fim_realtime(fleet, demo=False):
    """The scripted change set made under a watched directory while the agent runs reaches the
    collector as realtime events: a rename as one RENAMED, a hard link as CREATED plus ATTRIB of
    the other name, and every new state (retargeted symlink, file replaced by a directory)."""
    import base64
    fleet.start_ec2()
    fleet.start_collector()
    d = os.path.join(fleet.watched, "etc", "app")
    os.mkdir(d)
    fim_prepare(d)
    fleet.start_agent()
    wait_for("the agent to enroll", fleet.agent_enrolled)
    wait_for("the baseline", lambda: agent_events(fleet, "BASELINE_COMPLETE"))
    fim_apply(d, fleet.dir)
    j = lambda name: os.path.join(os.fsencode(d), name)
    want = [(j(b"content"), "MODIFIED"), (j(b"mode"), "ATTRIB"), (j(b"owner"), "ATTRIB"),
            (j(b"renamed.new"), "RENAMED"), (j(b"deleted"), "DELETED"),
            (j(b"hardlink"), "CREATED"), (j(b"linked"), "ATTRIB"),
            (j(NON_UTF8), "CREATED"), (j(b"longer"), "MODIFIED"), (j(b"sneaky"), "MODIFIED")]
    evs = wait_file_events(fleet, want)

    # A name removed and made again (the symlink, the file that became a directory) is reported
    # by the state the agent finds: DELETED then CREATED when it looks in between, else one
    # MODIFIED. Either way the last event carries the new state.
    def last_state(name, check):
        def ok():
            mine = [e["event"]["file"] for e in file_events(fleet.events()) if b64raw(e) == j(name)]
            return mine and "after" in mine[-1] and check(mine[-1]["after"])
        wait_for(f"the new state of {name}", ok)
    last_state(b"symlink", lambda a: base64.b64decode(a.get("link_target", "")) == b"/etc/shadow")
    last_state(b"becomes-dir", lambda a: (int(a["mode"]) & 0o170000) == 0o040000)
    by = {}
    for e in evs:
        by.setdefault((b64raw(e), e["event"]["file"]["change"]), []).append(e["event"]["file"])
    renamed = by[(j(b"renamed.new"), "RENAMED")][0]
    if base64.b64decode(renamed["old_path"]) != j(b"renamed"):
        raise Failure(f"RENAMED without the old path: {renamed}")
    if (j(b"renamed"), "DELETED") in by or (j(b"renamed.new"), "CREATED") in by:
        raise Failure("a paired rename was also reported as DELETED/CREATED")
    owner = by[(j(b"owner"), "ATTRIB")][-1]["after"]
    if (int(owner["uid"]), int(owner["gid"])) != (1234, 5678):
        raise Failure(f"owner change: {owner}")


def scenario_fim_while_down(fleet, demo=False):
    """Changes made while the agent is stopped are reported when it starts again, from the
    baseline it stored; nothing unchanged is reported again."""
    fleet.start_ec2()
    fleet.start_collector()
    d = os.path.join(fleet.watched, "etc", "app")
    os.mkdir(d)
    fim_prepare(d)
    agent = fleet.start_agent()
    wait_for("the agent to enroll", fleet.agent_enrolled)
    wait_for("the baseline", lambda: agent_events(fleet, "BASELINE_COMPLETE"))
    fleet.procs.remove(agent)
    if agent.stop() != 0:
        raise Failure(f"agent did not stop cleanly:\n{agent.tail()}")
    fim_apply(d, fleet.dir)
    fleet.start_agent()  # the same name: the same state dir, key and baseline
    wait_for("the second baseline", lambda: len(agent_events(fleet, "BASELINE_COMPLETE")) >= 2)
    j = lambda name: os.path.join(os.fsencode(d), name)
    want = [(j(b"content"), "MODIFIED"), (j(b"mode"), "ATTRIB"), (j(b"owner"), "ATTRIB"),
            (j(b"renamed"), "DELETED"), (j(b"renamed.new"), "CREATED"), (j(b"deleted"), "DELETED"),
            (j(b"hardlink"), "CREATED"), (j(b"linked"), "ATTRIB"), (j(b"symlink"), "MODIFIED"),
            (j(b"becomes-dir"), "MODIFIED"), (j(NON_UTF8), "CREATED"),
            (j(b"longer"), "MODIFIED"), (j(b"sneaky"), "MODIFIED")]
    evs = wait_file_events(fleet, want)
    done = agent_events(fleet, "BASELINE_COMPLETE")[-1]["event"]["agent"]
    if done.get("message") != "13 changes since the stored baseline":
        raise Failure(f"second start: {done}")
    unchanged = [e for e in evs if b64raw(e) == os.fsencode(os.path.join(fleet.watched, "etc", "hostname"))]
    if unchanged:
        raise Failure(f"an unchanged file was reported: {unchanged}")


def scenario_fim_overflow(fleet, demo=False):
    """A real inotify queue overflow: the agent is stopped (SIGSTOP) while more files are created
    than fs.inotify.max_queued_events holds; when it runs again it reports INOTIFY_OVERFLOW,
    rescans, and every file reaches the collector."""
    fleet.start_ec2()
    fleet.start_collector()
    agent = fleet.start_agent()
    wait_for("the agent to enroll", fleet.agent_enrolled)
    wait_for("the baseline", lambda: agent_events(fleet, "BASELINE_COMPLETE"))
    with open("/proc/sys/fs/inotify/max_queued_events") as f:
        queue = int(f.read())
    n = queue + 4000
    d = os.path.join(fleet.watched, "etc", "flood")
    os.mkdir(d)
    wait_file_events(fleet, [(os.fsencode(d), "CREATED")])
    agent.proc.send_signal(signal.SIGSTOP)
    try:
        for i in range(n):
            with open(os.path.join(d, f"f{i}"), "w") as f:
                f.write("x")
    finally:
        agent.proc.send_signal(signal.SIGCONT)
    wait_for("INOTIFY_OVERFLOW", lambda: agent_events(fleet, "INOTIFY_OVERFLOW"), timeout=60)
    want = {os.fsencode(os.path.join(d, f"f{i}")) for i in range(n)}

    def all_there():
        have = {b64raw(e) for e in file_events(fleet.events())
                if e["event"]["file"]["change"] == "CREATED"}
        missing = want - have
        if missing:
            raise Failure(f"{len(missing)} of {n} files not at the collector yet")
        return True
    wait_for(f"all {n} files at the collector", all_there, timeout=240, interval=1.0)
    if demo or fleet.verbose:
        print(f"{n} files created while the agent was stopped (queue {queue}): all reported")


def tampered_world(fleet):
    """EC2 endpoint, collector and agent running, a watched file changed: returns the incident."""
    fleet.start_ec2()
    fleet.start_collector()
    fleet.start_agent()
    wait_for("the agent to enroll", fleet.agent_enrolled)
    with open(os.path.join(fleet.watched, "etc", "hostname"), "a") as f:
        f.write("tampered\n")
    return wait_rule_incident(fleet)


def scenario_python_client(fleet, demo=False):
    """A client written with nothing but Python's grpcio and modules generated from proto/ by
    protoc queries incidents, and is refused without a token: the API is not triplinectl's alone."""
    inc = tampered_world(fleet)
    gen = os.path.join(fleet.dir, "py")
    os.makedirs(gen)
    subprocess.run(["protoc", "-I", os.path.join(ROOT, "proto"), "--python_out", gen,
                    "tripline/v1/event.proto", "tripline/v1/operator.proto"], check=True)
    client = f"""
import sys, grpc
sys.path.insert(0, {gen!r})
from tripline.v1 import operator_pb2 as op
ch = grpc.insecure_channel({fleet.collector_addr!r})
call = ch.unary_unary("/tripline.v1.Operator/ListIncidents",
                      request_serializer=op.ListIncidentsRequest.SerializeToString,
                      response_deserializer=op.ListIncidentsResponse.FromString)
try:
    call(op.ListIncidentsRequest(), timeout=10)
    print("UNEXPECTED: no token accepted")
except grpc.RpcError as e:
    print("without token:", e.code().name)
token = open({fleet.operator_token!r}).read().strip()
resp = call(op.ListIncidentsRequest(status="contained"), timeout=10,
            metadata=[("authorization", "Bearer " + token)])
for i in resp.incidents:
    print("incident", i.id, i.rule_id, i.status, i.agent_id)
"""
    wait_for("the incident to be contained", lambda: wait_rule_incident(fleet, status="contained"))
    r = subprocess.run(["/usr/bin/python3", "-c", client], capture_output=True, timeout=60)
    text = r.stdout.decode(errors="replace")
    want = f"incident {inc['id']} etc-changed contained {INSTANCE_ID}"
    if r.returncode != 0 or "without token: UNAUTHENTICATED" not in text or want not in text:
        raise Failure(f"python client: exit {r.returncode}\n{text}\n{r.stderr.decode(errors='replace')}")


BUF = os.path.join(ROOT, ".ci", "tools", "node_modules", ".bin", "buf")


def scenario_reflection_client(fleet, demo=False):
    """`buf curl`, a generic gRPC client with no copy of our .proto files, learns the API through
    the collector's reflection service, lists incidents with a token and is refused without one."""
    if not os.access(BUF, os.X_OK):
        raise Failure(f"{BUF} is missing: run .ci/install-deps.sh (it installs buf from npm)")
    inc = tampered_world(fleet)
    url = f"http://{fleet.collector_addr}"

    def buf(*args, token=None):
        argv = [BUF, "curl", "--protocol", "grpc", "--http2-prior-knowledge", *args]
        if token:
            argv[2:2] = ["--header", f"Authorization: Bearer {token}"]
        # HOME: buf keeps a cache; keep it in the test's directory.
        return subprocess.run(argv, capture_output=True, timeout=60,
                              env={**os.environ, "HOME": fleet.dir})

    r = buf("--list-methods", url)
    methods = r.stdout.decode(errors="replace").split()
    if r.returncode != 0 or "tripline.v1.Operator/ListIncidents" not in methods:
        raise Failure(f"reflection: exit {r.returncode}: {methods} {r.stderr.decode(errors='replace')}")
    r = buf("--data", "{}", f"{url}/tripline.v1.Operator/ListIncidents")
    err = r.stderr.decode(errors="replace")
    if r.returncode == 0 or "unauthenticated" not in err.lower():
        raise Failure(f"without a token: exit {r.returncode}: {r.stdout!r} {err}")
    with open(fleet.operator_token) as f:
        token = f.read().strip()
    r = buf("--data", "{}", f"{url}/tripline.v1.Operator/ListIncidents", token=token)
    if r.returncode != 0:
        raise Failure(f"with a token: exit {r.returncode}: {r.stderr.decode(errors='replace')}")
    listed = json.loads(r.stdout).get("incidents", [])
    mine = [i for i in listed if str(i.get("id")) == str(inc["id"])]
    if len(mine) != 1 or mine[0].get("ruleId", mine[0].get("rule_id")) != "etc-changed":
        raise Failure(f"incident {inc['id']} not listed through reflection: {listed}")


def scenario_rules_reload(fleet, demo=False):
    """triplinectl rules reload: a broken rules file is refused with file:line and the old rules
    keep matching; a fixed one takes effect; both are in the audit trail."""
    fleet.start_ec2()
    cfg = fleet.write_collector_config()
    fleet.start_collector(cfg)
    fleet.start_agent()
    wait_for("the agent to enroll", fleet.agent_enrolled)
    rules = os.path.join(fleet.dir, "rules.yaml")
    with open(rules) as f:
        good = f.read()
    with open(rules, "w") as f:
        f.write(good + "  - id: broken\n    title: t\n    severity: apocalyptic\n"
                "    match: {kind: file}\n")
    r = fleet.ctl("rules", "reload", expect_ok=False)
    err = r.stderr.decode(errors="replace")
    if r.returncode != 1 or "FAILED_PRECONDITION" not in err or f"{rules}:" not in err:
        raise Failure(f"broken rules reload: exit {r.returncode}: {err}")
    # The old rules still work.
    with open(os.path.join(fleet.watched, "etc", "hostname"), "a") as f:
        f.write("tampered\n")
    wait_rule_incident(fleet)
    # Replaying the rules over what is stored finds what fired live, and acts on nothing.
    live = wait_rule_incident(fleet)
    # The rule isolates: let that recipe finish so the action count below is the replay's alone.
    wait_for("the isolation to finish", lambda: any(
        a.get("kind") == "isolate" and a.get("status") in ("done", "failed")
        for a in fleet.ctl_json("actions").get("actions", [])), timeout=60)
    actions_before = len(fleet.ctl_json("actions").get("actions", []))
    with open(rules, "w") as f:
        f.write(good)
    replay = fleet.ctl_json("rules", "test", rules, "--since", "1h")
    fired = [f for f in replay.get("firings", []) if f["rule_id"] == live["rule_id"]]
    if len(fired) != 1 or fired[0]["agent_id"] != INSTANCE_ID or \
            set(fired[0]["event_ids"]) != set(live.get("event_ids", [])):
        raise Failure(f"replay differs from the live incident {live}: {replay}")
    if len(fleet.ctl_json("actions").get("actions", [])) != actions_before:
        raise Failure("rules test acted")
    out = fleet.ctl("rules", "reload").stdout.decode()
    if "rule(s) in force" not in out:
        raise Failure(f"rules reload: {out}")
    kinds = [(a["kind"], a["status"]) for a in fleet.ctl_json("actions").get("actions", [])
             if a.get("kind") == "rules:reload"]
    if kinds != [("rules:reload", "failed"), ("rules:reload", "done")]:
        raise Failure(f"reloads not audited: {kinds}")


def scenario_absence(fleet, demo=False):
    """Heartbeats keep an idle agent alive in the collector's eyes and report its spool backlog;
    an agent killed outright opens the absence rule's incident once, and the incident says when
    it is heard again. Heartbeats are not stored as event rows."""
    fleet.start_ec2()
    cfg = fleet.write_collector_config()
    with open(os.path.join(fleet.dir, "rules.yaml"), "a") as f:
        f.write(f"""\
  - id: agent-silent
    title: Agent stopped reporting
    severity: high
    match: {{kind: agent, agents: ["{INSTANCE_ID}"]}}
    absence: {{silent_for: 4s}}
""")
    fleet.start_collector(cfg)
    agent = fleet.start_agent(heartbeat="1s")
    wait_for("the agent to enroll", fleet.agent_enrolled)

    def agent_row():
        return next(a for a in fleet.ctl_json("agents")["agents"] if a["agent_id"] == INSTANCE_ID)

    first = int(wait_for("a heartbeat", lambda: int(agent_row().get("heartbeat_unix_ns", 0))))
    # Idle but alive for longer than the rule allows: heartbeats keep the rule quiet.
    wait_for("6 s of heartbeats", lambda: int(agent_row().get("heartbeat_unix_ns", 0))
             >= first + 6_000_000_000, timeout=30)
    silent = [i for i in fleet.incidents() if i["rule_id"] == "agent-silent"]
    if silent:
        raise Failure(f"absence fired on an agent sending heartbeats: {silent}")
    table = fleet.ctl("agents").stdout.decode()
    if "SPOOL BACKLOG" not in table:
        raise Failure(f"agents table without the spool backlog:\n{table}")
    kinds = {e["event"].get("agent", {}).get("kind") for e in fleet.events()}
    if "HEARTBEAT" in kinds:
        raise Failure("heartbeats were stored as event rows")

    agent.stop(signal.SIGKILL)
    incident = wait_for("the absence incident", lambda: next(
        (i for i in fleet.incidents() if i["rule_id"] == "agent-silent"), None), timeout=30)
    if incident["agent_id"] != INSTANCE_ID or "sent nothing" not in incident.get("summary", ""):
        raise Failure(f"absence incident: {incident}")
    fleet.start_agent(heartbeat="1s")
    again = wait_for("the incident to say the agent is back", lambda: (lambda i: i if "reporting again" in i.get("summary", "") else None)(
        fleet.incident(incident["id"])["incident"]), timeout=30)
    if len([i for i in fleet.incidents() if i["rule_id"] == "agent-silent"]) != 1:
        raise Failure(f"one silence, several incidents: {fleet.incidents()}")
    if demo:
        print(again["summary"])


def integrity_reasons(fleet, agent_id):
    """The summaries of the integrity incidents recorded for `agent_id`."""
    return [r[0] for r in db_query(fleet, "SELECT summary FROM incidents WHERE agent_id=? AND "
                                   "rule_id LIKE '%integrity%'", (agent_id,))]


def scenario_identity_forged(fleet, demo=False):
    """An agent learns its id from IMDSv2 and enrolls with the signed identity document; a document
    signed by another key, or naming another instance, is refused and recorded as an incident."""
    fleet.start_ec2()
    fleet.start_collector()
    fleet.start_agent("honest")
    wait_for("the agent to enroll through IMDSv2", fleet.agent_enrolled)
    if "instance identity verified agent=" + INSTANCE_ID not in fleet.collector.tail(400):
        raise Failure("the collector did not say it verified the identity document")
    reqs = json.load(urllib.request.urlopen(
        f"http://{fleet.imds[INSTANCE_ID]}/_tripline/requests", timeout=10))
    if reqs[0] != "PUT /latest/api/token" or \
            "GET /latest/dynamic/instance-identity/rsa2048" not in reqs:
        raise Failure(f"the agent did not use IMDSv2 as it should: {reqs}")

    # Signed by a key that is not AWS's (the forger's own self-signed certificate).
    forger = os.path.join(fleet.dir, "forger")
    os.makedirs(forger)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=test-ec2-instance-identity-us-east-1", "-keyout",
                    f"{forger}/k.pem", "-out", f"{forger}/c.pem"], check=True, capture_output=True)
    forged_id = "i-0forged0000000001"
    addr = fleet.start("imds-forged", ["/usr/bin/python3", FAKE_IMDS, "--listen", "127.0.0.1:0",
                                       "--ready-file", f"{forger}/ready", "--instance-id", forged_id,
                                       "--region", "us-east-1", "--identity-cert", f"{forger}/c.pem",
                                       "--identity-key", f"{forger}/k.pem"])
    addr = fleet.read_ready(f"{forger}/ready", addr)
    cfg = fleet.write_agent_config("forged", agent_id=forged_id)
    with open(cfg) as f:
        text = f.read()
    with open(cfg, "w") as f:
        f.write(text.replace(fleet.imds[forged_id], addr, 1))
    forged = fleet.start("forged", [fleet.agent_bin, "--config", cfg])
    wait_for("the forged document to be refused",
             lambda: "does not verify" in forged.tail(200) or None, timeout=30)
    # A genuine signature over a document naming another instance than the one claimed.
    other_id = "i-0claims000000001"
    other_imds = fleet.start_imds(other_id, name="imds-other",
                                  extra_args=["--document-instance-id", INSTANCE_ID])
    cfg = fleet.write_agent_config("claimer", agent_id=other_id)
    with open(cfg) as f:
        text = f.read()
    with open(cfg, "w") as f:
        f.write(text.replace(fleet.imds[other_id], other_imds, 1))
    claimer = fleet.start("claimer", [fleet.agent_bin, "--config", cfg])
    wait_for("the document of another instance to be refused",
             lambda: "names instance" in claimer.tail(200) or None, timeout=30)
    for p in (forged, claimer):
        fleet.procs.remove(p)
        p.stop()
    ids = [a["agent_id"] for a in fleet.ctl_json("agents")["agents"]]
    if ids != [INSTANCE_ID]:
        raise Failure(f"a refused agent enrolled: {ids}")
    if not any("does not verify" in r for r in integrity_reasons(fleet, forged_id)):
        raise Failure(f"no integrity incident for the forged document: "
                      f"{integrity_reasons(fleet, forged_id)}")
    if not any("names instance" in r for r in integrity_reasons(fleet, other_id)):
        raise Failure("no integrity incident for the document of another instance")
    # The honest agent keeps working.
    with open(os.path.join(fleet.watched, "etc", "hostname"), "w") as f:
        f.write("web-2\n")
    wait_rule_incident(fleet)


def scenario_identity_reenroll(fleet, demo=False):
    """The same instance with a new key (a re-imaged host) is refused and recorded until an admin
    runs `triplinectl agents reenroll`; then exactly one enrollment with a new key is accepted,
    the chain goes on under that key, and the next new key is refused again. Evidence of an
    incident whose events span the re-key verifies with the key history."""
    fleet.start_ec2()
    fleet.start_collector()
    first = fleet.start_agent("first")
    wait_for("the agent to enroll", fleet.agent_enrolled)
    old_key = fleet.ctl_json("agents")["agents"][0]["public_key"]
    with open(os.path.join(fleet.watched, "etc", "hostname"), "w") as f:
        f.write("web-before-reimage\n")
    incident = wait_rule_incident(fleet)
    first.stop()
    fleet.procs.remove(first)

    second = fleet.start_agent("second")  # a fresh state dir: a new key, same instance
    wait_for("the new key to be refused", lambda: "another key" in second.tail(200) or None,
             timeout=30)
    if not any("new key refused" in r for r in integrity_reasons(fleet, INSTANCE_ID)):
        raise Failure("the refused key was not recorded as an integrity incident")
    # Only an admin may allow it; the refusal says which role is needed.
    r = fleet.ctl("agents", "reenroll", "i-0neverenrolled001", expect_ok=False)
    if r.returncode == 0 or "NOT_FOUND" not in r.stderr.decode(errors="replace"):
        raise Failure(f"reenroll of an unknown agent: {r.returncode} {r.stderr!r}")
    out = fleet.ctl("agents", "reenroll", INSTANCE_ID).stdout.decode()
    if "may enroll once" not in out:
        raise Failure(f"reenroll answered: {out}")

    def rekeyed():
        agents = fleet.ctl_json("agents")["agents"]
        return agents and agents[0]["public_key"] != old_key
    wait_for("the new key to be pinned", rekeyed, timeout=30)
    new_key = fleet.ctl_json("agents")["agents"][0]["public_key"]
    acts = [a for a in fleet.ctl_json("actions")["actions"] if a.get("kind") == "agent:reenroll"]
    if len(acts) != 1 or acts[0]["status"] != "done" or not acts[0].get("actor") or \
            acts[0]["target"] != INSTANCE_ID:
        raise Failure(f"the re-enrollment is not audited as done with its caller: {acts}")
    # The chain continues under the new key: the re-imaged agent's events are stored.
    with open(os.path.join(fleet.watched, "etc", "hostname"), "w") as f:
        f.write("web-reimaged\n")
    wait_for("the re-keyed agent's event on the incident", lambda: len(fleet.ctl_json(
        "incident", "show", str(incident["id"])).get("events", [])) >= 2)
    out = os.path.join(fleet.dir, "evidence")
    fleet.ctl("evidence", "export", str(incident["id"]), "-o", out)
    with open(os.path.join(out, "agents", INSTANCE_ID + ".keys")) as f:
        keys = f.read().split("\n")[:-1]
    if len(keys) != 2 or not keys[0].startswith("1 ") or keys[1].split(" ")[0] == "1":
        raise Failure(f"the exported key history is not the two keys with their ranges: {keys}")
    verified = subprocess.run([fleet.ctl_bin, "evidence", "verify", out], capture_output=True,
                              timeout=30)
    text = verified.stdout.decode(errors="replace")
    if verified.returncode != 0 or "evidence OK" not in text or "re-keyed" not in text:
        raise Failure(f"evidence across the re-key does not verify: {verified.returncode}: {text}")

    # The allowance was used up: a third key is refused again.
    third = fleet.start_agent("third")
    wait_for("the third key to be refused", lambda: "another key" in third.tail(200) or None,
             timeout=30)
    if fleet.ctl_json("agents")["agents"][0]["public_key"] != new_key:
        raise Failure("the pinned key changed without an operator")


SCENARIOS = {
    "reflection_client": scenario_reflection_client,
    "absence": scenario_absence,
    "identity_forged": scenario_identity_forged,
    "identity_reenroll": scenario_identity_reenroll,
    "rules_reload": scenario_rules_reload,
    "python_client": scenario_python_client,
    "evidence": scenario_evidence,
    "operator_tokens": scenario_operator_tokens,
    "isolate": scenario_isolate,
    "unenrolled_key": scenario_unenrolled_key,
    "ec2_error": scenario_ec2_error,
    "collector_restart": scenario_collector_restart,
    "bad_config": scenario_bad_config,
    "unreachable_collector": scenario_unreachable_collector,
    "fim_check": scenario_fim_check,
    "fim_realtime": scenario_fim_realtime,
    "fim_while_down": scenario_fim_while_down,
    "fim_overflow": scenario_fim_overflow,
    "collector_kill9": scenario_collector_kill9,
    "agent_kill9": scenario_agent_kill9,
    "collector_down": scenario_collector_down,
    "spool_cap": scenario_spool_cap,
    "spool_corrupt_tail": scenario_spool_corrupt_tail,
    "tls": scenario_tls,
    "restart_orders": scenario_restart_orders,
    "fim_kill9": scenario_fim_kill9,
}


def run_scenario(fleet, name, scenario):
    """Runs `scenario()` in `fleet`: prints ok or why it failed, closes the fleet (with its
    processes' logs on failure) and returns the exit code."""
    failed = True
    try:
        scenario()
        failed = False
        print(f"e2e {name}: ok")
        return 0
    except Failure as e:
        print(f"e2e {name}: FAILED: {e}", file=sys.stderr)
        return 1
    finally:
        fleet.close(failed=failed)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--scenario", choices=sorted(SCENARIOS))
    ap.add_argument("--demo", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory and print logs")
    args = ap.parse_args()
    if not args.demo and not args.scenario:
        ap.error("give --demo or --scenario")
    name = "isolate" if args.demo else args.scenario
    fleet = Fleet(os.path.abspath(args.bin_dir), keep=args.keep, verbose=args.demo)
    if args.demo:
        print(f">>> demo world in {fleet.dir}: local EC2 endpoint, collector and agent on loopback")
        print(">>> (plaintext gRPC on loopback, on purpose; production uses TLS)")
    return run_scenario(fleet, name, lambda: SCENARIOS[name](fleet, demo=args.demo))


if __name__ == "__main__":
    sys.exit(main())
