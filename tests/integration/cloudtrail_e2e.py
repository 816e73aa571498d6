#!/usr/bin/python3
"""End-to-end scenarios for the CloudTrail source, with the real collector on loopback.

Starts the local EC2 endpoint and the local CloudTrail endpoint (tests/fakes/cloudtrail_endpoint.py,
which checks every SigV4 signature with botocore), and a tripline-collector that polls it with the
shipped rules (packaging/config/rules/cloudtrail.yaml). Records are fed in CloudTrail's own shape;
outcomes are read from the collector's database (read-only) and the endpoints' call logs.

  cloudtrail_e2e.py --bin-dir BUILD --scenario NAME [--keep] [--print-calls]

  cloudtrail_paging_restart   500 events over 10 pages; the collector is killed with SIGKILL in
                              the middle of the paging and started again; then more events, and
                              late ones inside the overlap: each is stored exactly once, and the
                              restarted poller starts from the persisted cursor
  cloudtrail_run_instances    an unexpected RunInstances -> StopInstances of exactly the launched
                              ids (the EC2 endpoint's call log), incident, audit trail, and a
                              webhook notification per stop
  cloudtrail_allow_listed     a RunInstances by an allow-listed deployer stops nothing
  cloudtrail_dry_run          response.mode dry-run: StopInstances only with DryRun=true
  cloudtrail_throttling       ThrottlingException answers are retried until the events arrive
  cloudtrail_malformed        malformed records are reported (stored with the reason) and
                              skipped; the good ones around them arrive

Exit status 0 only when every check held.
"""

import argparse
import datetime
import json
import os
import signal
import sys
import time
import urllib.request
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tripline_e2e as e2e  # noqa: E402
from tripline_e2e import Failure, wait_for  # noqa: E402

FAKE_CLOUDTRAIL = os.path.join(e2e.ROOT, "tests", "fakes", "cloudtrail_endpoint.py")
SHIPPED_RULES = os.path.join(e2e.ROOT, "packaging", "config", "rules", "cloudtrail.yaml")
ACCOUNT = "111122223333"
REGION = "us-east-1"
ATTACKER = f"arn:aws:sts::{ACCOUNT}:assumed-role/ci-runner/stolen-session"
DEPLOYER = f"arn:aws:sts::{ACCOUNT}:assumed-role/deploy-prod/pipeline-42"


def iso(t):
    return datetime.datetime.fromtimestamp(int(t), datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def record(name, t=None, principal=ATTACKER, source="ec2.amazonaws.com", ip="203.0.113.50",
           request=None, response=None, extra=None):
    """A CloudTrail record as CloudTrail writes it (management event)."""
    r = {
        "eventVersion": "1.08",
        "userIdentity": {"type": "AssumedRole", "principalId": "AROAEXAMPLE:session",
                         "arn": principal, "accountId": ACCOUNT,
                         "accessKeyId": "ASIAEXAMPLEKEY000001",
                         "sessionContext": {"sessionIssuer": {"type": "Role",
                                                              "userName": principal.split("/")[1]}}},
        "eventTime": iso(time.time() if t is None else t),
        "eventSource": source,
        "eventName": name,
        "awsRegion": REGION,
        "sourceIPAddress": ip,
        "userAgent": "aws-cli/2.15.0 Python/3.11",
        "requestParameters": request,
        "responseElements": response,
        "requestID": str(uuid.uuid4()),
        "eventID": str(uuid.uuid4()),
        "readOnly": False,
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": ACCOUNT,
        "eventCategory": "Management",
    }
    r.update(extra or {})
    return r


def run_instances(ids, principal=ATTACKER, t=None):
    return record("RunInstances", t=t, principal=principal,
                  request={"instancesSet": {"items": [{"imageId": "ami-0abcdef1234567890",
                                                       "minCount": len(ids),
                                                       "maxCount": len(ids)}]},
                           "instanceType": "c5.24xlarge"},
                  response={"requestId": str(uuid.uuid4()), "reservationId": "r-0abc",
                            "ownerId": ACCOUNT,
                            "instancesSet": {"items": [
                                {"instanceId": i, "imageId": "ami-0abcdef1234567890",
                                 "instanceState": {"code": 0, "name": "pending"}}
                                for i in ids]}})


class CloudTrail:
    def __init__(self, fleet):
        self.fleet = fleet
        ready = os.path.join(fleet.dir, "cloudtrail.ready")
        self.proc = fleet.start("cloudtrail-endpoint", [
            "/usr/bin/python3", FAKE_CLOUDTRAIL, "--listen", "127.0.0.1:0", "--ready-file", ready,
            "--region", REGION, "--access-key", e2e.ACCESS_KEY, "--secret-key", e2e.SECRET_KEY,
            "--log-file", os.path.join(fleet.dir, "cloudtrail-calls.jsonl")])
        self.addr = fleet.read_ready(ready, self.proc)

    def post(self, what, obj):
        req = urllib.request.Request(f"http://{self.addr}/_tripline/{what}",
                                     data=json.dumps(obj).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.load(r)

    def feed(self, records):
        self.post("records", {"region": REGION, "records": records})

    def feed_items(self, items):
        self.post("items", {"region": REGION, "items": items})

    def calls(self):
        with urllib.request.urlopen(f"http://{self.addr}/_tripline/calls", timeout=10) as r:
            return json.load(r)


def start_world(fleet, seed=None, poll="300ms", extra="", mode="auto"):
    if seed is not None:
        fleet.start_ec2(seed)
    else:
        fleet.start_ec2()
    ct = CloudTrail(fleet)
    cfg = fleet.write_collector_config(mode=mode)
    with open(SHIPPED_RULES) as src, open(os.path.join(fleet.dir, "rules.yaml"), "w") as dst:
        dst.write(src.read())
    with open(cfg, "a") as f:
        f.write(f"""\
cloudtrail:
  regions: [{REGION}]
  poll_interval: {poll}
  lookback: 1h
  overlap: 30s
  endpoint: http://{ct.addr}
""" + extra)
    return ct, cfg


def stored_ids(fleet):
    return [r[0] for r in e2e.db_query(fleet, "SELECT event_id FROM cloud_events ORDER BY id")]


def check_calls_signed(calls):
    for c in calls:
        if not c["signature_ok"]:
            raise Failure(f"a LookupEvents call was not correctly signed: {c}")


def stop_calls(fleet):
    return [c for c in fleet.ec2_get("calls") if c.get("action") == "StopInstances"]


# --- scenarios -------------------------------------------------------------------------------

def scenario_cloudtrail_paging_restart(fleet, args):
    ct, cfg = start_world(fleet, poll="200ms")
    base = time.time() - 600
    first = [record("DescribeInstances", t=base + i * 0.5) for i in range(500)]
    # One of them matches a shipped rule: the incident must open once, whatever is re-read.
    first[123] = record("StopLogging", t=base + 61, source="cloudtrail.amazonaws.com",
                        request={"name": "management-trail"})
    ct.feed(first)
    fleet.start_collector(cfg)
    # Kill it in the middle of the first window's paging (10 pages of 50).
    wait_for("the third page to be asked for",
             lambda: sum(1 for c in ct.calls() if c["request"].get("NextToken")) >= 2,
             timeout=60, interval=0.01)
    e2e.kill_collector(fleet, signal.SIGKILL)
    partial = len(stored_ids(fleet))
    if partial >= 500:
        raise Failure("the collector read the whole window before it was killed; no restart test")
    calls_before = len(ct.calls())
    cursor_before = e2e.db_query(fleet, "SELECT start_ns FROM cloud_cursors")
    if cursor_before:
        raise Failure(f"the cursor moved before the window was read whole: {cursor_before}")

    fleet.start_collector(cfg)
    wait_for("all 500 events stored", lambda: len(stored_ids(fleet)) >= 500, timeout=120)
    cursor = wait_for("the cursor", lambda: e2e.db_query(fleet, "SELECT start_ns FROM cloud_cursors"))
    # Then new events, and late ones (older than the cursor but inside the overlap).
    now = time.time()
    later = [record("DescribeVolumes", t=now + i * 0.1) for i in range(60)]
    late = [record("DescribeSnapshots", t=cursor[0][0] / 1e9 - 5 - i * 0.1) for i in range(20)]
    ct.feed(later + late)
    wanted = {r["eventID"] for r in first + later + late}
    wait_for("every event stored", lambda: wanted <= set(stored_ids(fleet)), timeout=120)
    # Let a few more windows run over the same ground: nothing may come twice.
    n = len(ct.calls())
    wait_for("more windows", lambda: len(ct.calls()) >= n + 4, timeout=60)
    ids = stored_ids(fleet)
    if len(ids) != len(set(ids)) or set(ids) != wanted:
        raise Failure(f"stored {len(ids)} events ({len(set(ids))} distinct), fed {len(wanted)}")
    calls = ct.calls()
    check_calls_signed(calls)
    after = calls[calls_before:]
    if not after or after[0]["request"]["NextToken"]:
        raise Failure(f"the restarted poller did not start a fresh window: {after[:1]}")
    if not any(c["next_token_returned"] for c in calls):
        raise Failure("no page came with a NextToken: paging was not exercised")
    later_windows = [c for c in after if not c["request"]["NextToken"]][1:]
    if any(c["request"]["StartTime"] < now - 120 for c in later_windows):
        raise Failure("a window after the first restarted one reached back before the cursor "
                      "and overlap")
    incidents = e2e.db_query(fleet, "SELECT id FROM incidents WHERE rule_id = ?",
                             ("cloudtrail-logging-tampered",))
    if len(incidents) != 1:
        raise Failure(f"StopLogging opened {len(incidents)} incidents, expected 1")
    print(f"paging_restart: killed after {partial} of 500 stored; {len(ids)} events stored once; "
          f"{len(calls)} LookupEvents calls")


def launch_seed(ids):
    seed = json.loads(json.dumps(e2e.SEED))
    template = seed["instances"][0]
    for n, iid in enumerate(ids):
        inst = json.loads(json.dumps(template))
        inst["instance_id"] = iid
        inst["tags"] = {"Name": f"launched-{n}"}
        for k, eni in enumerate(inst["interfaces"]):
            eni["interface_id"] = f"eni-0l{n:02d}{k:02d}00000000000"[:21]
        inst["volumes"] = [{"device_name": "/dev/xvda", "volume_id": f"vol-0l{n:02d}000000000000"[:21],
                            "delete_on_termination": True}]
        seed["instances"].append(inst)
    return seed


LAUNCHED = ["i-0aaaa000000000001", "i-0aaaa000000000002", "i-0aaaa000000000003"]
ALLOWED = ["i-0bbbb000000000001"]


def start_webhook(fleet):
    receiver = os.path.join(e2e.ROOT, "tests", "fakes", "http_receiver.py")
    ready = os.path.join(fleet.dir, "hook.ready")
    p = fleet.start("receiver", ["/usr/bin/python3", receiver, "--listen", "127.0.0.1:0",
                                 "--ready-file", ready])
    return fleet.read_ready(ready, p)


def webhook_bodies(hook):
    with urllib.request.urlopen(f"http://{hook}/_tripline/received", timeout=10) as r:
        return [json.loads(x["body"]) for x in json.load(r) if x["status"] == 200]


def scenario_cloudtrail_run_instances(fleet, args):
    hook = start_webhook(fleet)
    ct, cfg = start_world(fleet, seed=launch_seed(LAUNCHED + ALLOWED),
                          extra=f"notify:\n  webhooks:\n    - url: http://{hook}/hooks/soc\n")
    fleet.start_collector(cfg)
    ct.feed([record("DescribeInstances"), run_instances(LAUNCHED)])
    wait_for("StopInstances of the launched instances",
             lambda: {c["params"].get("InstanceId.1") for c in stop_calls(fleet)
                      if c.get("http_status") == 200} >= set(LAUNCHED), timeout=60)
    actions = wait_for("the stop actions done", lambda: (lambda rows: rows if rows and all(
        r[1] == "done" for r in rows) else None)(e2e.db_query(
            fleet, "SELECT target, status, mode, actor FROM actions WHERE kind = 'stop' AND "
                   "parent_id IS NULL ORDER BY id")), timeout=60)
    stops = stop_calls(fleet)
    stopped = sorted(c["params"]["InstanceId.1"] for c in stops)
    if stopped != sorted(LAUNCHED) or any(len([k for k in c["params"] if k.startswith("InstanceId")])
                                          != 1 for c in stops):
        raise Failure(f"StopInstances calls {stopped}, expected exactly {sorted(LAUNCHED)}")
    if sorted(a[0] for a in actions) != sorted(LAUNCHED) or \
            any(a[2] != "auto" and a[2] != "" or a[3] != "collector" for a in actions):
        raise Failure(f"stop actions {actions}")
    state = {i["instance_id"]: i["state"] for i in fleet.ec2_get("state")["instances"]}
    for iid in LAUNCHED:
        if state[iid] != "stopped":
            raise Failure(f"{iid} is {state[iid]}, expected stopped")
    if state[e2e.INSTANCE_ID] != "running" or state[ALLOWED[0]] != "running":
        raise Failure(f"an instance not launched by the event changed: {state}")
    inc = e2e.db_query(fleet, "SELECT id, summary, severity FROM incidents WHERE rule_id = ?",
                       ("cloudtrail-run-instances-unexpected-principal",))
    if len(inc) != 1 or ATTACKER not in inc[0][1] or inc[0][2] != "critical":
        raise Failure(f"incident {inc}")
    linked = e2e.db_query(fleet, "SELECT e.event_name FROM incident_cloud_events l JOIN "
                                 "cloud_events e ON e.id = l.cloud_event_id WHERE l.incident_id = ?",
                          (inc[0][0],))
    if linked != [("RunInstances",)]:
        raise Failure(f"incident's cloud events {linked}")
    steps = e2e.db_query(fleet, "SELECT kind, status, aws_request_id FROM actions WHERE "
                                "parent_id IS NOT NULL AND kind = 'ec2:StopInstances'")
    if len(steps) != len(LAUNCHED) or any(s[1] != "done" or not s[2] for s in steps):
        raise Failure(f"audit steps {steps}")
    notes = wait_for("a notification per stop", lambda: (lambda b: b if len(b) >= len(LAUNCHED)
                                                            else None)(webhook_bodies(hook)))
    if sorted((n["instance"], n["outcome"], n["incident_id"]) for n in notes) != \
            sorted((i, "stopped", inc[0][0]) for i in LAUNCHED):
        raise Failure(f"notifications {notes}")
    # What triplinectl shows of the stored CloudTrail events (--json and the table).
    shown = fleet.ctl_json("cloud-events")["events"]
    launch = [e for e in shown if e["event_name"] == "RunInstances"]
    if len(launch) != 1 or launch[0]["principal_arn"] != ATTACKER or \
            launch[0]["source_ip"] != "203.0.113.50" or \
            sorted(launch[0]["resources"]) != sorted(f"AWS::EC2::Instance {i}" for i in LAUNCHED):
        raise Failure(f"triplinectl cloud-events: {shown}")
    table = fleet.ctl("cloud-events").stdout.decode()
    if "RunInstances" not in table or ATTACKER not in table:
        raise Failure(f"triplinectl cloud-events table:\n{table}")
    calls = ct.calls()
    check_calls_signed(calls)
    if args.print_calls:
        print("--- CloudTrail endpoint call log (LookupEvents) ---")
        for c in calls:
            print(json.dumps({k: c[k] for k in ("time", "region", "target", "request",
                                                "http_status", "error_code", "event_ids",
                                                "next_token_returned", "signature_ok") if k in c},
                             sort_keys=True))
        print("--- EC2 endpoint call log (StopInstances) ---")
        for c in stops:
            print(json.dumps({k: c.get(k) for k in ("time", "action", "params", "http_status",
                                                    "request_id", "signature_ok")},
                             sort_keys=True))
    print(f"run_instances: stopped exactly {stopped}; incident {inc[0][0]}")


def scenario_cloudtrail_allow_listed(fleet, args):
    ct, cfg = start_world(fleet, seed=launch_seed(LAUNCHED + ALLOWED))
    fleet.start_collector(cfg)
    allowed = run_instances(ALLOWED, principal=DEPLOYER)
    ct.feed([allowed])
    wait_for("the allow-listed launch stored", lambda: allowed["eventID"] in stored_ids(fleet),
             timeout=60)
    # A later unexpected launch is stopped: once its stop is done, the worker has looked at
    # everything queued before it.
    ct.feed([run_instances(LAUNCHED[:1])])
    wait_for("the unexpected launch stopped", lambda: e2e.db_query(
        fleet, "SELECT 1 FROM actions WHERE kind = 'stop' AND target = ? AND status = 'done'",
        (LAUNCHED[0],)), timeout=60)
    stopped = [c["params"].get("InstanceId.1") for c in stop_calls(fleet)]
    if stopped != [LAUNCHED[0]]:
        raise Failure(f"StopInstances calls {stopped}, expected only {LAUNCHED[0]}")
    if e2e.db_query(fleet, "SELECT 1 FROM actions WHERE target = ?", (ALLOWED[0],)):
        raise Failure("an action was queued for the allow-listed launch")
    state = {i["instance_id"]: i["state"] for i in fleet.ec2_get("state")["instances"]}
    if state[ALLOWED[0]] != "running":
        raise Failure(f"the allow-listed instance is {state[ALLOWED[0]]}")
    print("allow_listed: the deployer's launch kept running, the other was stopped")


def scenario_cloudtrail_dry_run(fleet, args):
    ct, cfg = start_world(fleet, seed=launch_seed(LAUNCHED), mode="dry-run")
    fleet.start_collector(cfg)
    ct.feed([run_instances(LAUNCHED[:2])])
    rows = wait_for("the dry-run stops done", lambda: (lambda r: r if len(r) == 2 and all(
        x[1] == "done" for x in r) else None)(e2e.db_query(
            fleet, "SELECT target, status, mode, incident_id FROM actions WHERE kind = 'stop' AND "
                   "parent_id IS NULL ORDER BY id")), timeout=60)
    stops = stop_calls(fleet)
    if sorted(c["params"]["InstanceId.1"] for c in stops) != sorted(LAUNCHED[:2]) or \
            any(c["params"].get("DryRun") != "true" or c["error_code"] != "DryRunOperation"
                for c in stops):
        raise Failure(f"StopInstances calls {stops}")
    if any(r[2] != "dry-run" for r in rows):
        raise Failure(f"actions {rows}")
    summary = e2e.db_query(fleet, "SELECT summary FROM incidents WHERE id = ?", (rows[0][3],))[0][0]
    for iid in LAUNCHED[:2]:
        if f"dry-run: stopping {iid} would succeed" not in summary:
            raise Failure(f"incident summary lacks the dry run of {iid}: {summary}")
    state = {i["instance_id"]: i["state"] for i in fleet.ec2_get("state")["instances"]}
    if any(state[i] != "running" for i in LAUNCHED):
        raise Failure(f"a dry run changed an instance: {state}")
    print("dry_run: StopInstances asked with DryRun=true only; the instances keep running")


def scenario_cloudtrail_throttling(fleet, args):
    ct, cfg = start_world(fleet)
    # More throttles than one call's attempts (aws.max_attempts 4): the poller backs off too.
    ct.post("inject", {"code": "ThrottlingException", "count": 6})
    records = [record("GetCallerIdentity", source="sts.amazonaws.com") for _ in range(5)]
    ct.feed(records)
    fleet.start_collector(cfg)
    wanted = {r["eventID"] for r in records}
    wait_for("the events after throttling", lambda: wanted <= set(stored_ids(fleet)), timeout=90)
    calls = ct.calls()
    check_calls_signed(calls)
    throttled = [c for c in calls if c["error_code"] == "ThrottlingException"]
    if len(throttled) != 6 or calls[0]["error_code"] != "ThrottlingException":
        raise Failure(f"{len(throttled)} throttled calls, expected 6 first")
    if not any(c["http_status"] == 200 and c["events_returned"] == 5 for c in calls[6:]):
        raise Failure("no successful call after the throttling")
    log = open(fleet.collector.log_path, errors="replace").read()
    if "window failed" not in log or "ThrottlingException" not in log:
        raise Failure("the collector did not say it backed off after throttling")
    print(f"throttling: {len(throttled)} throttled answers retried; events stored")


def scenario_cloudtrail_malformed(fleet, args):
    ct, cfg = start_world(fleet)
    good = [record("CreateBucket", source="s3.amazonaws.com") for _ in range(3)]
    now = time.time()
    bad_json = {"EventId": "bad-json-0001", "EventName": "RunInstances", "EventTime": now,
                "CloudTrailEvent": "{\"eventVersion\": \"1.08\", \"eventName\": "}
    bad_type = {"EventId": "bad-type-0002", "EventName": "RunInstances", "EventTime": now,
                "CloudTrailEvent": json.dumps({"eventID": "bad-type-0002",
                                               "eventName": "RunInstances",
                                               "userIdentity": {"arn": 12345}})}
    deep = {"EventId": "bad-deep-0003", "EventName": "PutObject", "EventTime": now,
            "CloudTrailEvent": "{\"a\":" * 200 + "1" + "}" * 200}
    bad_ids = {"EventId": "bad-ids-0004", "EventName": "RunInstances", "EventTime": now,
               "CloudTrailEvent": json.dumps(run_instances(["i-0x'; DROP TABLE actions"])
                                             | {"eventID": "bad-ids-0004"})}
    ct.feed(good[:2])
    ct.feed_items([bad_json, bad_type, deep, bad_ids, "not an object"])
    fleet.start_collector(cfg)
    wait_for("the good events", lambda: {r["eventID"] for r in good[:2]} <= set(stored_ids(fleet)),
             timeout=60)
    errors = wait_for("the malformed records reported", lambda: (lambda rows: rows if len(rows) >= 5
                      else None)(e2e.db_query(fleet, "SELECT event_id, reason FROM "
                                                     "cloud_event_errors ORDER BY id")), timeout=60)
    reasons = dict(errors)
    expect = {"bad-json-0001": "not JSON", "bad-type-0002": "userIdentity.arn: not a string",
              "bad-deep-0003": "nested deeper", "bad-ids-0004": "not an instance id",
              "": "not an object"}
    for event_id, words in expect.items():
        if words not in reasons.get(event_id, ""):
            raise Failure(f"record {event_id!r}: reason {reasons.get(event_id)!r}, expected "
                          f"'{words}'")
    # Still polling: a record fed now arrives; malformed ones are reported once, not per window.
    ct.feed(good[2:])
    wait_for("a later good event", lambda: good[2]["eventID"] in stored_ids(fleet), timeout=60)
    again = e2e.db_query(fleet, "SELECT COUNT(*) FROM cloud_event_errors")[0][0]
    if again != len(errors):
        raise Failure(f"{again} error rows after more windows, expected {len(errors)}")
    if e2e.db_query(fleet, "SELECT event_id FROM cloud_events WHERE event_id LIKE 'bad-%'"):
        raise Failure("a malformed record was stored as an event")
    if e2e.db_query(fleet, "SELECT 1 FROM actions"):
        raise Failure("a malformed RunInstances queued an action")
    log = open(fleet.collector.log_path, errors="replace").read()
    if "malformed record" not in log:
        raise Failure("the collector did not log the malformed records")
    print(f"malformed: {len(errors)} records reported and skipped; good ones stored")


SCENARIOS = {
    "cloudtrail_paging_restart": scenario_cloudtrail_paging_restart,
    "cloudtrail_run_instances": scenario_cloudtrail_run_instances,
    "cloudtrail_allow_listed": scenario_cloudtrail_allow_listed,
    "cloudtrail_dry_run": scenario_cloudtrail_dry_run,
    "cloudtrail_throttling": scenario_cloudtrail_throttling,
    "cloudtrail_malformed": scenario_cloudtrail_malformed,
}


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--scenario", choices=sorted(SCENARIOS), required=True)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--print-calls", action="store_true",
                    help="print the endpoints' call logs (cloudtrail_run_instances)")
    args = ap.parse_args()
    fleet = e2e.Fleet(os.path.abspath(args.bin_dir), keep=args.keep)
    return e2e.run_scenario(fleet, args.scenario,
                            lambda: SCENARIOS[args.scenario](fleet, args))


if __name__ == "__main__":
    sys.exit(main())
