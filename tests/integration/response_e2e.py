#!/usr/bin/python3
"""End-to-end scenarios of the response: the real collector, triplinectl and agent against the
local AWS endpoint (tests/fakes/ec2_endpoint.py: EC2, IAM and Auto Scaling, SigV4 checked by
botocore, connection tracking modelled). Reuses tripline_e2e's Fleet.

  response_e2e.py --bin-dir BUILD --scenario NAME [--keep]

Exit status 0 only when every check held.
"""

import argparse
import os
import signal
import sqlite3
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tripline_e2e import (Failure, Fleet, run_scenario, wait_for,  # noqa: E402
                          wait_rule_incident)

INSTANCE = "i-0a1b2c3d4e5f60001"
VPC = "vpc-0resp000000001"
PROFILE_ARN = "arn:aws:iam::111122223333:instance-profile/web-profile"

FULL_SEED = {
    "instances": [{
        "instance_id": INSTANCE, "vpc_id": VPC, "state": "running",
        "iam_instance_profile_arn": PROFILE_ARN,
        "shutdown_behavior": "terminate",
        "tags": {"Name": "web-1", "team": "payments"},
        "volumes": [
            {"device_name": "/dev/xvda", "volume_id": "vol-0root000000001", "delete_on_termination": True},
            {"device_name": "/dev/xvdf", "volume_id": "vol-0data000000001", "delete_on_termination": True},
        ],
        "interfaces": [
            {"interface_id": "eni-0front00000001", "subnet_id": "subnet-0pub", "private_ip": "10.0.0.10",
             "device_index": 0, "group_ids": ["sg-0web000000000001", "sg-0ssh000000000001"],
             "public_ip": "203.0.113.10", "allocation_id": "eipalloc-0front0000001"},
            {"interface_id": "eni-0back000000001", "subnet_id": "subnet-0priv", "private_ip": "10.0.1.10",
             "device_index": 1, "group_ids": ["sg-0db0000000000001"]},
        ],
    }],
    "security_groups": [
        {"group_id": "sg-0web000000000001", "vpc_id": VPC, "group_name": "web",
         "ingress": [{"protocol": "tcp", "from_port": 443, "to_port": 443, "cidr": "0.0.0.0/0"}]},
        {"group_id": "sg-0ssh000000000001", "vpc_id": VPC, "group_name": "ssh",
         "ingress": [{"protocol": "tcp", "from_port": 22, "to_port": 22, "cidr": "0.0.0.0/0"},
                     {"protocol": "icmp", "cidr": "0.0.0.0/0"}]},
        {"group_id": "sg-0db0000000000001", "vpc_id": VPC, "group_name": "db",
         "ingress": [{"protocol": "tcp", "from_port": 5432, "to_port": 5432, "cidr": "10.0.0.0/16"}]},
    ],
    "instance_profiles": {"web-profile": {"arn": PROFILE_ARN, "roles": ["web-role"]}},
    "autoscaling_groups": [{"name": "web-asg", "desired": 2, "instances": [INSTANCE]}],
    "flows": [
        {"id": "attacker-shell", "interface_id": "eni-0front00000001", "protocol": "tcp", "port": 22,
         "remote": "198.51.100.66"},
        {"id": "attacker-ping", "interface_id": "eni-0front00000001", "protocol": "icmp",
         "remote": "198.51.100.66"},
        {"id": "app-db", "interface_id": "eni-0back000000001", "protocol": "tcp", "port": 5432,
         "remote": "10.0.2.20"},
    ],
}

# The recipe as the endpoint must see it: service, action.
RECIPE = [
    ("ec2", "DescribeInstances"),
    ("ec2", "DescribeSecurityGroups"),
    ("ec2", "CreateSecurityGroup"),
    ("ec2", "AuthorizeSecurityGroupIngress"),
    ("ec2", "DescribeSecurityGroups"),
    ("ec2", "CreateSecurityGroup"),
    ("ec2", "RevokeSecurityGroupEgress"),
    ("ec2", "ModifyNetworkInterfaceAttribute"),
    ("ec2", "ModifyNetworkInterfaceAttribute"),
    ("ec2", "ModifyNetworkInterfaceAttribute"),
    ("ec2", "ModifyNetworkInterfaceAttribute"),
    ("ec2", "DescribeInstanceAttribute"),
    ("ec2", "DescribeInstanceAttribute"),
    ("ec2", "DescribeIamInstanceProfileAssociations"),
    ("autoscaling", "DescribeAutoScalingInstances"),
    ("ec2", "ModifyInstanceAttribute"),
    ("ec2", "ModifyInstanceAttribute"),
    ("ec2", "ModifyInstanceAttribute"),
    ("ec2", "ModifyInstanceAttribute"),
    ("autoscaling", "EnterStandby"),
    ("ec2", "CreateTags"),
    ("iam", "GetInstanceProfile"),
    ("ec2", "DisassociateIamInstanceProfile"),
    ("iam", "PutRolePolicy"),
    ("ec2", "CreateSnapshots"),
]
WRITES = {"CreateSecurityGroup", "AuthorizeSecurityGroupIngress", "RevokeSecurityGroupEgress",
          "ModifyNetworkInterfaceAttribute", "ModifyInstanceAttribute", "CreateTags",
          "DisassociateIamInstanceProfile", "AssociateIamInstanceProfile", "CreateSnapshots",
          "PutRolePolicy", "EnterStandby", "ExitStandby"}


def api_calls(fleet):
    return [c for c in fleet.ec2_get("calls") if c.get("action")]


def instance_state(state):
    return next(i for i in state["instances"] if i["instance_id"] == INSTANCE)


def group_named(state, name):
    found = [g for g in state["security_groups"] if g["group_name"] == name]
    if len(found) != 1:
        raise Failure(f"{len(found)} groups named {name}: {state['security_groups']}")
    return found[0]


def top_action(fleet, action_id=None, kind="isolate"):
    for a in fleet.ctl_json("actions", "--limit", "1000").get("actions", []):
        if a["kind"] == kind and (action_id is None or a["id"] == str(action_id)):
            return a
    return None


def wait_action(fleet, kind="isolate", action_id=None, timeout=60):
    def finished():
        a = top_action(fleet, action_id, kind)
        return a if a and a["status"] in ("done", "failed") else None
    return wait_for(f"the {kind} action to finish", finished, timeout)


def describe_call(c):
    """One line of the endpoint's call log."""
    p = c.get("params", {})
    interesting = {k: v for k, v in p.items() if k not in ("Action", "Version")}
    shown = " ".join(f"{k}={v}" for k, v in sorted(interesting.items()))
    if len(shown) > 150:
        shown = shown[:147] + "..."
    status = c.get("http_status")
    return f"{c.get('service', '?'):11} {c['action']:40} {status} {shown}"


def start_world(fleet, seed=FULL_SEED, mode="auto", response="", secret_key=None):
    fleet.start_ec2(seed)
    cfg = fleet.write_collector_config(isolation_group=None, mode=mode, response=response)
    if secret_key:
        fleet.start_collector(cfg, secret_key=secret_key)
    else:
        fleet.start_collector(cfg)
    return cfg


def trigger_by_agent(fleet):
    fleet.start_agent(agent_id=INSTANCE)
    wait_for("the agent to enroll", lambda: fleet.agent_enrolled(INSTANCE))
    with open(os.path.join(fleet.watched, "etc", "ssh", "sshd_config"), "a") as f:
        f.write("PermitRootLogin yes\n")
    return wait_rule_incident(fleet)


def check_recipe(fleet, before, inc, quiet=False):
    action = wait_action(fleet)
    if action["status"] != "done":
        raise Failure(f"isolation did not finish done: {action}")
    calls = api_calls(fleet)
    seen = [(c.get("service"), c["action"]) for c in calls]
    if seen != RECIPE:
        raise Failure("the endpoint saw another sequence:\n" +
                      "\n".join(f"  {s} {a}" for s, a in seen))
    if not all(c["signature_ok"] and c["http_status"] == 200 for c in calls):
        raise Failure(f"not every call signed and answered 200: {calls}")
    detail = fleet.incident(inc["id"])
    steps = [a for a in detail["actions"] if a["kind"] != "isolate"]
    ids = {c["request_id"] for c in calls}
    for s in steps:
        if s["status"] != "done" or s["aws_request_id"] not in ids:
            raise Failure(f"step not done with a request id the endpoint issued: {s}")
    if len(steps) != len(RECIPE):
        raise Failure(f"{len(steps)} steps recorded for {len(RECIPE)} calls")

    after = fleet.ec2_get("state")
    inst = instance_state(after)
    untrack = group_named(after, "tripline-untrack")
    iso = group_named(after, "tripline-isolation")
    if any(e["group_ids"] != [iso["group_id"]] for e in inst["interfaces"]):
        raise Failure(f"interfaces not in the isolation group alone: {inst['interfaces']}")
    if iso["egress"] or iso["ingress"]:
        raise Failure(f"isolation group has rules: {iso}")
    if {r["cidr"] for r in untrack["ingress"] if r["protocol"] == "-1"} != {"0.0.0.0/0", "::/0"}:
        raise Failure(f"untrack group does not allow all in: {untrack}")
    for g in (untrack, iso):
        if g["tags"].get("tripline:managed") != "true":
            raise Failure(f"group not tagged: {g}")
    flows = {f["id"]: f for f in after["flows"]}
    if flows["attacker-shell"]["alive"] or flows["app-db"]["alive"]:
        raise Failure(f"TCP flows survived isolation: {flows}")
    if not flows["attacker-ping"]["alive"]:
        raise Failure("the ICMP flow died, but security groups cannot cut tracked ICMP")
    if not inst["disable_api_termination"] or inst["shutdown_behavior"] != "stop":
        raise Failure(f"evidence not protected: {inst}")
    if any(v["delete_on_termination"] for v in inst["volumes"]):
        raise Failure(f"a volume would still be deleted on termination: {inst['volumes']}")
    if inst["association"] is not None:
        raise Failure(f"profile still associated: {inst['association']}")
    policies = after["instance_profiles"]["web-profile"]["roles"]["web-role"]["policies"]
    deny = [p for p in policies.values()
            if p["Statement"][0]["Effect"] == "Deny"
            and "aws:TokenIssueTime" in p["Statement"][0]["Condition"]["DateLessThan"]]
    if len(deny) != 1:
        raise Failure(f"no session-revoking deny on the role: {policies}")
    snaps = after["snapshots"]
    if sorted(s["volume_id"] for s in snaps) != ["vol-0data000000001", "vol-0root000000001"] or \
            any(s["tags"].get("tripline:incident") != inc["id"] for s in snaps):
        raise Failure(f"snapshots not one per volume tagged with the incident: {snaps}")
    if after["autoscaling_groups"]["web-asg"]["instances"][INSTANCE] != "Standby":
        raise Failure("instance not in Standby")
    if inst["tags"].get("tripline:incident") != inc["id"]:
        raise Failure(f"instance not tagged with the incident: {inst['tags']}")
    summary = fleet.incident(inc["id"])["incident"]["summary"]
    for needle in ("contained", "ICMP", "NAT gateway", "203.0.113.10"):
        if needle not in summary:
            raise Failure(f"incident summary lacks {needle!r}: {summary}")
    if not quiet:
        print(f"recipe as the endpoint saw it ({len(calls)} calls, all SigV4-verified):")
        for c in calls:
            print("  " + describe_call(c))
    return before, after


def scenario_response_recipe(fleet, demo=False):
    """The full recipe on a two-interface instance, in order, every step recorded; the attacker's
    tracked shell dies, ICMP (which groups cannot cut) stays, and the incident says so."""
    start_world(fleet)
    before = fleet.ec2_get("state")
    inc = trigger_by_agent(fleet)
    check_recipe(fleet, before, inc)


def scenario_response_release(fleet, demo=False):
    """Release restores exactly what isolation recorded: every interface's groups, the profile,
    the shutdown behaviour, Auto Scaling InService; and tags the release."""
    start_world(fleet)
    before = fleet.ec2_get("state")
    inc = trigger_by_agent(fleet)
    check_recipe(fleet, before, inc, quiet=True)
    fleet.ctl("release", inc["id"])
    rel = wait_action(fleet, kind="release")
    if rel["status"] != "done":
        raise Failure(f"release failed: {rel}")
    after = fleet.ec2_get("state")
    b, a = instance_state(before), instance_state(after)
    if [e["group_ids"] for e in a["interfaces"]] != [e["group_ids"] for e in b["interfaces"]]:
        raise Failure(f"groups not restored: {a['interfaces']} vs {b['interfaces']}")
    if not a["association"] or a["association"]["arn"] != PROFILE_ARN:
        raise Failure(f"profile not associated again: {a['association']}")
    if a["shutdown_behavior"] != b["shutdown_behavior"]:
        raise Failure(f"shutdown behaviour {a['shutdown_behavior']}, recorded {b['shutdown_behavior']}")
    if after["autoscaling_groups"]["web-asg"]["instances"][INSTANCE] != "InService":
        raise Failure("instance not back InService")
    if "tripline:released-at" not in a["tags"]:
        raise Failure(f"release not tagged: {a['tags']}")
    restore = [c["action"] for c in api_calls(fleet)[len(RECIPE):]]
    want = ["ModifyNetworkInterfaceAttribute", "ModifyNetworkInterfaceAttribute",
            "AssociateIamInstanceProfile", "ModifyInstanceAttribute", "ExitStandby", "CreateTags"]
    if restore != want:
        raise Failure(f"release calls {restore}, want {want}")
    agents = fleet.ctl_json("agents")["agents"]
    if agents[0]["isolation_state"] != "":
        raise Failure(f"agent still marked {agents[0]['isolation_state']}")


def scenario_response_separate_actions(fleet, demo=False):
    """Elastic IP disassociation and StopInstances as separate operator actions: dry-run changes
    nothing, the real ones do, and a release associates the Elastic IP again."""
    start_world(fleet)
    fleet.ctl("isolate", INSTANCE)
    wait_action(fleet)
    before = fleet.ec2_get("state")
    fleet.ctl("stop", INSTANCE, "--dry-run")
    wait_action(fleet, kind="stop")
    fleet.ctl("disassociate-eips", INSTANCE, "--dry-run")
    wait_action(fleet, kind="disassociate-eips")
    if fleet.ec2_get("state")["instances"] != before["instances"]:
        raise Failure("a dry-run changed the instance")
    out = fleet.ctl("disassociate-eips", INSTANCE).stdout.decode()
    action_id = out.split("action ")[1].split()[0]
    a = wait_action(fleet, kind="disassociate-eips", action_id=action_id)
    if a["status"] != "done":
        raise Failure(f"disassociation: {a}")
    front = instance_state(fleet.ec2_get("state"))["interfaces"][0]
    if front["public_ip"] or front["eip_association_id"]:
        raise Failure(f"Elastic IP still associated: {front}")
    out = fleet.ctl("stop", INSTANCE).stdout.decode()
    a = wait_action(fleet, kind="stop", action_id=out.split("action ")[1].split()[0])
    if a["status"] != "done" or instance_state(fleet.ec2_get("state"))["state"] != "stopped":
        raise Failure(f"stop: {a}")
    fleet.ctl("release", INSTANCE)
    rel = wait_action(fleet, kind="release")
    if rel["status"] != "done":
        raise Failure(f"release: {rel}")
    front = instance_state(fleet.ec2_get("state"))["interfaces"][0]
    if front["public_ip"] != "203.0.113.10" or front["allocation_id"] != "eipalloc-0front0000001":
        raise Failure(f"Elastic IP not associated again: {front}")


def normalized(state):
    """The state with created group ids replaced by their names, for comparing two worlds."""
    names = {g["group_id"]: g["group_name"] for g in state["security_groups"]}
    inst = instance_state(state)
    return {
        "groups": [[names[g] for g in e["group_ids"]] for e in inst["interfaces"]],
        "security_groups": sorted((g["group_name"], len(g["ingress"]), len(g["egress"]))
                                  for g in state["security_groups"]),
        "termination": inst["disable_api_termination"],
        "shutdown": inst["shutdown_behavior"],
        "volumes": [v["delete_on_termination"] for v in inst["volumes"]],
        "association": inst["association"],
        "asg": state["autoscaling_groups"]["web-asg"],
        "flows": {f["id"]: f["alive"] for f in state["flows"]},
        "snapshots": sorted(s["volume_id"] for s in state["snapshots"]),
        "policies": sorted(state["instance_profiles"]["web-profile"]["roles"]["web-role"]["policies"]),
        "tags": sorted(k for k in inst["tags"]),
    }


def recorded_steps(fleet, status):
    """{step_key: (row id, request id)} of the steps in `status`, read from the database."""
    db = sqlite3.connect(f"file:{os.path.join(fleet.dir, 'collector.db')}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT step_key, id, aws_request_id FROM actions "
                          "WHERE parent_id IS NOT NULL AND status = ?", (status,)).fetchall()
    finally:
        db.close()
    return {k: (i, r) for k, i, r in rows}


def call_key(c):
    return (c.get("service"), c["action"], tuple(sorted(c.get("params", {}).items())))


def scenario_response_kill_resume(fleet, demo=False):
    """For every call N of the recipe: the collector is killed with SIGKILL while call N is in
    flight (the endpoint has carried it out, the answer is held back), restarted on the same
    database, and finishes the isolation. No call that completed before the kill is made again,
    and the end state is the same as an uninterrupted run's."""
    # The reference run.
    start_world(fleet)
    fleet.ctl("isolate", INSTANCE)
    ref_action = wait_action(fleet)
    if ref_action["status"] != "done":
        raise Failure(f"reference isolation failed: {ref_action}")
    reference = normalized(fleet.ec2_get("state"))
    total = len(api_calls(fleet))
    if total != len(RECIPE):
        raise Failure(f"reference run made {total} calls")

    for n in range(1, total + 1):
        world = Fleet(fleet.bin_dir, keep=fleet.keep)
        ok = False
        try:
            world.start_ec2(FULL_SEED)
            world.ec2_post("hold", {"call": n})
            cfg = world.write_collector_config(isolation_group=None)
            world.start_collector(cfg)
            world.ctl("isolate", INSTANCE)
            held = wait_for(f"call {n} to be held",
                            lambda: [c for c in api_calls(world) if c.get("held")] or None)[0]
            world.collector.proc.send_signal(signal.SIGKILL)
            world.collector.proc.wait(10)
            world.procs.remove(world.collector)
            world.collector.stop()
            world.ec2_post("release", {})
            before_kill = api_calls(world)
            done_steps = recorded_steps(world, "done")
            world.start_collector(cfg)
            action = wait_action(world)
            if action["status"] != "done":
                raise Failure(f"kill during call {n} ({held['action']}): resumed isolation ended "
                              f"{action['status']}: {action['error_code']} {action['error_message']}")
            calls = api_calls(world)
            # A write that completed before the kill is never made again. Reads may be: the
            # in-flight step, run again, looks up what its lost answer would have said.
            done_before = {call_key(c) for c in before_kill if not c.get("held")}
            repeated = [c["action"] for c in calls[len(before_kill):]
                        if call_key(c) in done_before and c["action"] in WRITES]
            if repeated:
                raise Failure(f"kill during call {n} ({held['action']}): writes done before the "
                              f"kill were made again: {repeated}")
            # Every step recorded done before the kill is untouched: same row, same request id.
            after_steps = recorded_steps(world, "done")
            changed = {k: v for k, v in done_steps.items() if after_steps.get(k) != v}
            if changed:
                raise Failure(f"kill during call {n}: steps done before the kill were run again: "
                              f"{changed}")
            state = normalized(world.ec2_get("state"))
            if state != reference:
                raise Failure(f"kill during call {n} ({held['action']}): end state differs:\n"
                              f"  {state}\n  vs {reference}")
            steps = world.ctl_json("actions", "--limit", "1000")["actions"]
            keys = [a["step_key"] for a in steps if a["kind"] != "isolate"]
            if len(keys) != len(set(keys)):
                raise Failure(f"kill during call {n}: a step has two rows: {sorted(keys)}")
            print(f"kill -9 during call {n:2} ({held['service']}:{held['action']}): resumed, "
                  f"{len(calls) - len(before_kill)} call(s) after restart, no completed step or write repeated")
            ok = True
        finally:
            world.close(failed=not ok)


def scenario_response_dry_run(fleet, demo=False):
    """response.mode dry-run: every EC2 write goes with DryRun=true and nothing changes; IAM and
    Auto Scaling writes (no DryRun there) are not sent."""
    start_world(fleet, mode="dry-run")
    before = fleet.ec2_get("state")
    inc = trigger_by_agent(fleet)
    action = wait_action(fleet)
    if action["status"] != "done" or action["mode"] != "dry-run":
        raise Failure(f"dry-run did not finish done: {action}")
    after = fleet.ec2_get("state")
    if after != before:
        raise Failure("dry-run changed the world")
    for c in api_calls(fleet):
        if c["action"] in WRITES:
            if c["service"] != "ec2":
                raise Failure(f"{c['action']} sent in dry-run")
            if c["params"].get("DryRun") != "true" or c["error_code"] != "DryRunOperation":
                raise Failure(f"write without DryRun: {c}")
    detail = fleet.incident(inc["id"])
    if detail["incident"]["status"] == "contained":
        raise Failure("incident contained by a dry run")
    if "dry-run" not in detail["incident"]["summary"]:
        raise Failure(f"summary does not say dry-run: {detail['incident']['summary']}")


def scenario_response_aws_errors(fleet, demo=False):
    """Throttling is retried with backoff until it passes; UnauthorizedOperation is not retried
    and is recorded with AWS's code on its step."""
    start_world(fleet)
    fleet.ec2_inject("ModifyNetworkInterfaceAttribute", "RequestLimitExceeded", 503, 2)
    fleet.ec2_inject("CreateSnapshots", "UnauthorizedOperation", 403, 1)
    fleet.ctl("isolate", INSTANCE)
    action = wait_action(fleet)
    calls = api_calls(fleet)
    modify = [c for c in calls if c["action"] == "ModifyNetworkInterfaceAttribute"]
    if [c["http_status"] for c in modify[:3]] != [503, 503, 200] or len(modify) != 6:
        raise Failure(f"throttling not retried: {[c['http_status'] for c in modify]}")
    snaps = [c for c in calls if c["action"] == "CreateSnapshots"]
    if len(snaps) != 1:
        raise Failure(f"UnauthorizedOperation retried: {len(snaps)} CreateSnapshots calls")
    steps = fleet.ctl_json("actions", "--limit", "1000")["actions"]
    snap = next(a for a in steps if a["kind"] == "ec2:CreateSnapshots")
    if snap["status"] != "failed" or snap["error_code"] != "UnauthorizedOperation" or \
            snap["aws_request_id"] != snaps[0]["request_id"]:
        raise Failure(f"snapshot step: {snap}")
    first = next(a for a in steps if a["kind"] == "ec2:ModifyNetworkInterfaceAttribute")
    if first["status"] != "done" or "3 attempts" not in first["detail"]:
        raise Failure(f"retried step: {first}")
    if action["status"] != "failed" or action["error_code"] != "UnauthorizedOperation":
        raise Failure(f"action should end failed with the snapshot's error: {action}")
    if any(g != [group_named(fleet.ec2_get("state"), "tripline-isolation")["group_id"]]
           for g in [e["group_ids"] for e in instance_state(fleet.ec2_get("state"))["interfaces"]]):
        raise Failure("not contained although only the snapshot failed")


def scenario_response_bad_credentials(fleet, demo=False):
    """A wrong secret key: AWS's SignatureDoesNotMatch lands on the incident, said plainly, and is
    not retried."""
    start_world(fleet, secret_key="not-the-right-secret")
    inc = trigger_by_agent(fleet)
    wait_action(fleet)
    summary = fleet.incident(inc["id"])["incident"]["summary"]
    if "SignatureDoesNotMatch" not in summary or "Secret Access Key" not in summary:
        raise Failure(f"incident does not name the credential problem: {summary}")
    calls = fleet.ec2_get("calls")  # a refused signature: the endpoint never read the action
    if len(calls) != 1 or calls[0]["signature_ok"]:
        raise Failure(f"expected one rejected call: {calls}")
    if "not-the-right-secret" in summary:
        raise Failure("the secret leaked into the incident")


def scenario_response_imds_credentials(fleet, demo=False):
    """No credentials in the environment: the collector takes its role's credentials from IMDSv2
    (signing with the session token), learns its own instance id there, and refuses to isolate
    itself while it isolates another instance."""
    from tripline_e2e import ACCESS_KEY, FAKE_EC2, SECRET_KEY
    import json
    here = os.path.dirname(os.path.abspath(__file__))
    fake_imds = os.path.join(os.path.dirname(here), "fakes", "imds_endpoint.py")
    seed = json.loads(json.dumps(FULL_SEED))
    own = dict(seed["instances"][0], instance_id="i-0collector0000001", interfaces=[],
               iam_instance_profile_arn="", volumes=[])
    seed["instances"].append(own)
    seed_path = os.path.join(fleet.dir, "seed.json")
    with open(seed_path, "w") as f:
        json.dump(seed, f)
    ready = os.path.join(fleet.dir, "imds.ready")
    imds = fleet.start("imds", ["/usr/bin/python3", fake_imds, "--listen", "127.0.0.1:0",
                                "--ready-file", ready, "--instance-id", "i-0collector0000001",
                                "--fixed-key", ACCESS_KEY, "--fixed-secret", SECRET_KEY,
                                "--fixed-token", "role-session-token-1"])
    imds_addr = fleet.read_ready(ready, imds)
    ready = os.path.join(fleet.dir, "ec2.ready")
    p = fleet.start("ec2-endpoint", ["/usr/bin/python3", FAKE_EC2, "--listen", "127.0.0.1:0",
                                     "--ready-file", ready, "--region", "us-east-1",
                                     "--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY,
                                     "--session-token", "role-session-token-1",
                                     "--seed", seed_path])
    fleet.ec2_addr = fleet.read_ready(ready, p)
    cfg = fleet.write_collector_config(isolation_group=None)
    cready = os.path.join(fleet.dir, "collector.ready")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = f"http://{imds_addr}"
    env["HOME"] = fleet.dir  # no ~/.aws of this machine
    fleet.collector = fleet.start("collector", [fleet.collector_bin, "--config", cfg,
                                                "--ready-file", cready], env)
    fleet.collector_addr = fleet.read_ready(cready, fleet.collector)

    fleet.ctl("isolate", "i-0collector0000001")
    refused = wait_action(fleet)
    if refused["status"] != "failed" or refused["error_code"] != "NeverIsolate":
        raise Failure(f"the collector's own instance was not refused: {refused}")
    fleet.ctl("isolate", INSTANCE)
    done = wait_for("the other isolation", lambda: next(
        (a for a in fleet.ctl_json("actions", "--limit", "1000")["actions"]
         if a["kind"] == "isolate" and a["target"] == INSTANCE and a["status"] in ("done", "failed")),
        None))
    if done["status"] != "done":
        raise Failure(f"isolation with IMDS credentials failed: {done}")
    calls = fleet.ec2_get("calls")
    if not calls or not all(c["signature_ok"] and c["security_token_signed"] for c in calls):
        raise Failure("calls not signed with the role's session token")
    if any(c.get("params", {}).get("InstanceId.1") == "i-0collector0000001" for c in calls):
        raise Failure("the collector's own instance was touched")


def scenario_response_notify(fleet, demo=False):
    """The isolation's outcome goes to a webhook (JSON), Slack, SNS and e-mail (SMTP); each
    delivery (and the first webhook's retry after a 500) is on the incident."""
    import json
    import urllib.request
    here = os.path.dirname(os.path.abspath(__file__))
    receiver = os.path.join(os.path.dirname(here), "fakes", "http_receiver.py")
    ready = os.path.join(fleet.dir, "hook.ready")
    p = fleet.start("receiver", ["/usr/bin/python3", receiver, "--listen", "127.0.0.1:0",
                                 "--ready-file", ready, "--fail-first", "1"])
    hook = fleet.read_ready(ready, p)
    smtp_script = os.path.join(os.path.dirname(here), "fakes", "smtp_receiver.py")
    mailbox = os.path.join(fleet.dir, "mail.jsonl")
    ready = os.path.join(fleet.dir, "smtp.ready")
    p = fleet.start("smtp", ["/usr/bin/python3", smtp_script, "--listen", "127.0.0.1:0",
                             "--ready-file", ready, "--out", mailbox])
    smtp = fleet.read_ready(ready, p)
    topic = "arn:aws:sns:us-east-1:111122223333:security-alerts"
    seed = dict(FULL_SEED, sns_topics=[topic])
    fleet.start_ec2(seed)
    cfg = fleet.write_collector_config(isolation_group=None)
    with open(cfg, "a") as f:
        f.write(f"""notify:
  attempts: 3
  sns_topic_arn: {topic}
  webhooks:
    - url: http://{hook}/hooks/T000/B000/secret
    - url: http://{hook}/slack
      format: slack
  smtp:
    url: smtp://{smtp}
    starttls: false
    from: tripline@example.org
    to: [soc@example.org]
""")
    fleet.start_collector(cfg)
    inc = trigger_by_agent(fleet)
    wait_action(fleet)
    summary = wait_for("four deliveries on the incident", lambda: (
        lambda s: s if s.count("notify ") >= 4 else None)(
            fleet.incident(inc["id"])["incident"]["summary"]))
    for needle in (f"notify webhook http://{hook}: delivered (2 attempt(s))",
                   f"notify slack http://{hook}: delivered (1 attempt(s))",
                   f"notify sns {topic}: delivered",
                   f"notify smtp smtp://{smtp}: delivered"):
        if needle not in summary:
            raise Failure(f"incident lacks {needle!r}: {summary}")
    with urllib.request.urlopen(f"http://{hook}/_tripline/received", timeout=10) as r:
        received = json.load(r)
    bodies = [json.loads(x["body"]) for x in received if x["status"] == 200]
    plain = next(b for b in bodies if "outcome" in b)
    if plain["outcome"] != "isolated" or plain["incident_id"] != int(inc["id"]) or \
            INSTANCE not in plain["title"] or "contained" not in plain["text"]:
        raise Failure(f"webhook body: {plain}")
    slack = next(b for b in bodies if "text" in b and "outcome" not in b)
    if "isolated" not in slack["text"]:
        raise Failure(f"slack body: {slack}")
    with open(mailbox) as f:
        mails = [json.loads(line) for line in f]
    if len(mails) != 1 or mails[0]["rcpt_tos"] != ["soc@example.org"] or \
            f"Subject: Tripline: {INSTANCE} isolated" not in mails[0]["data"]:
        raise Failure(f"e-mail: {mails}")
    messages = fleet.ec2_get("state")["sns_messages"]
    if len(messages) != 1 or INSTANCE not in messages[0]["subject"]:
        raise Failure(f"SNS messages: {messages}")


SCENARIOS = {
    "response_separate_actions": scenario_response_separate_actions,
    "response_notify": scenario_response_notify,
    "response_imds_credentials": scenario_response_imds_credentials,
    "response_recipe": scenario_response_recipe,
    "response_release": scenario_response_release,
    "response_kill_resume": scenario_response_kill_resume,
    "response_dry_run": scenario_response_dry_run,
    "response_aws_errors": scenario_response_aws_errors,
    "response_bad_credentials": scenario_response_bad_credentials,
}


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--scenario", choices=sorted(SCENARIOS), required=True)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    fleet = Fleet(os.path.abspath(args.bin_dir), keep=args.keep)
    return run_scenario(fleet, args.scenario, lambda: SCENARIOS[args.scenario](fleet))


if __name__ == "__main__":
    sys.exit(main())
