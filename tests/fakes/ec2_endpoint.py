#!/usr/bin/python3
"""A local, strict AWS Query API endpoint for tests: EC2, IAM and Auto Scaling on one port.

Every API request must be a SigV4-signed POST to "/" with a form-encoded body. The signature is
recomputed with botocore (an implementation independent of the client under test) over exactly the
headers the request names in SignedHeaders; the credential scope (its service picks EC2, IAM or
Auto Scaling; IAM must be signed for us-east-1), the access key, the clock skew and the session
token are checked too. State (instances with their network interfaces, volumes, profile and
Auto Scaling group; security groups with their rules; instance profiles and roles; snapshots;
network flows) lives in memory, seeded from a JSON file. Answers use each service's XML shapes.

Connection tracking is modelled on the interfaces' flows: a flow is tracked unless the interface's
groups allow all traffic in from anywhere and out to anywhere, in which case it becomes untracked.
A tracked flow survives any group change (ICMP flows are always tracked); an untracked flow dies as
soon as no rule of the interface's groups allows it.

Usage:
  ec2_endpoint.py --listen 127.0.0.1:0 --ready-file PATH --region us-east-1 \
      --access-key AKID --secret-key SECRET --seed SEED.json [--session-token TOKEN] [--log-file PATH]

Admin paths (no signature, loopback clients only):
  GET  /_tripline/calls   every API call so far, oldest first (JSON list)
  GET  /_tripline/state   the current state, in the seed's format (JSON)
  POST /_tripline/inject  {"action": "ModifyNetworkInterfaceAttribute", "code": "RequestLimitExceeded",
                           "http_status": 503, "count": 1, "message": optional}: the next `count`
                          correctly signed calls of that action ("*" for any) fail with that error.
  POST /_tripline/hold    {"call": N}: the N-th API call that reaches an action (counted from the
                          start, 1-based) is carried out and logged with "held": true, but its
                          answer is held back until /_tripline/release (or the endpoint stops),
                          so a test can kill the client while the call is in flight.
  POST /_tripline/release lets a held answer go.

Exits 0 on SIGTERM or SIGINT.
"""

import argparse
import copy
import datetime
import hashlib
import hmac
import ipaddress
import json
import os
import re
import signal
import socket
import sys
import threading
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from xml.sax.saxutils import escape

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

XMLNS = "http://ec2.amazonaws.com/doc/2016-11-15/"
IAM_XMLNS = "https://iam.amazonaws.com/doc/2010-05-08/"
AS_XMLNS = "http://autoscaling.amazonaws.com/doc/2011-01-01/"
SNS_XMLNS = "http://sns.amazonaws.com/doc/2010-03-31/"
API_VERSION = "2016-11-15"
API_VERSIONS = {"ec2": "2016-11-15", "iam": "2010-05-08", "autoscaling": "2011-01-01",
                "sns": "2010-03-31"}
MAX_BODY = 1 << 20
MAX_CALLS_KEPT = 10000
MAX_SKEW = datetime.timedelta(minutes=5)
MAX_GROUPS_PER_INTERFACE = 5
OWNER_ID = "111122223333"
STATE_CODES = {"pending": 0, "running": 16, "shutting-down": 32, "terminated": 48,
               "stopping": 64, "stopped": 80}
AUTH_RE = re.compile(
    r"^(?P<alg>\S+) Credential=(?P<cred>[^,\s]+),\s*SignedHeaders=(?P<signed>[^,\s]+),"
    r"\s*Signature=(?P<sig>[0-9a-f]{64})$")
SECRET_PARAM_RE = re.compile(r"(secret|password|token)", re.IGNORECASE)

SIGNATURE_MISMATCH = ("The request signature we calculated does not match the signature you "
                      "provided. Check your AWS Secret Access Key and signing method. Consult the "
                      "service documentation for details.")
AUTH_FAILURE = "AWS was not able to validate the provided access credentials"


class ApiError(Exception):
    """An EC2 error answer: HTTP status, AWS error code, message."""

    def __init__(self, http_status, code, message):
        super().__init__(f"{code}: {message}")
        self.http_status = http_status
        self.code = code
        self.message = message


class SeedError(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# State


def _require(obj, key, kind, where):
    if key not in obj or not isinstance(obj[key], kind):
        raise SeedError(f"{where}: '{key}' missing or not a {kind.__name__}")
    return obj[key]


def load_seed(path):
    """Reads and checks the seed; returns the world's state in the seed's own format."""
    with open(path, encoding="utf-8") as f:
        seed = json.load(f)
    if not isinstance(seed, dict):
        raise SeedError("seed: not a JSON object")
    unknown = set(seed) - {"instances", "security_groups", "instance_profiles",
                           "autoscaling_groups", "flows", "sns_topics"}
    if unknown:
        raise SeedError(f"seed: unknown keys {sorted(unknown)}")
    groups = []
    for n, g in enumerate(seed.get("security_groups", [])):
        where = f"security_groups[{n}]"
        gid = _require(g, "group_id", str, where)
        if not gid.startswith("sg-"):
            raise SeedError(f"{where}: group id '{gid}' does not start with sg-")
        groups.append({"group_id": gid, "vpc_id": _require(g, "vpc_id", str, where),
                       "group_name": g.get("group_name", gid),
                       "description": g.get("description", gid),
                       "tags": dict(g.get("tags", {})),
                       "ingress": [_rule(r, f"{where}.ingress") for r in g.get("ingress", [])],
                       "egress": [_rule(r, f"{where}.egress") for r in g.get(
                           "egress", [{"protocol": "-1", "cidr": "0.0.0.0/0"}])]})
    known_groups = {g["group_id"] for g in groups}
    profiles = {}
    for name, p in seed.get("instance_profiles", {}).items():
        profiles[name] = {"name": name,
                          "arn": p.get("arn", f"arn:aws:iam::{OWNER_ID}:instance-profile/{name}"),
                          "roles": {r: {"policies": {}} for r in p.get("roles", [])}}
    asgs = {}
    for n, a in enumerate(seed.get("autoscaling_groups", [])):
        name = _require(a, "name", str, f"autoscaling_groups[{n}]")
        asgs[name] = {"name": name, "desired": int(a.get("desired", 1)),
                      "instances": {i: "InService" for i in a.get("instances", [])}}
    instances = []
    seen_enis = set()
    assoc_n = 0
    for n, i in enumerate(seed.get("instances", [])):
        where = f"instances[{n}]"
        iid = _require(i, "instance_id", str, where)
        if not iid.startswith("i-"):
            raise SeedError(f"{where}: instance id '{iid}' does not start with i-")
        state = i.get("state", "running")
        if state not in STATE_CODES:
            raise SeedError(f"{where}: unknown state '{state}'")
        tags = i.get("tags", {})
        if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
            raise SeedError(f"{where}: tags must map strings to strings")
        arn = i.get("iam_instance_profile_arn", "")
        association = None
        if arn:
            assoc_n += 1
            association = {"association_id": f"iip-assoc-{assoc_n:017d}", "arn": arn}
        inst = {"instance_id": iid, "vpc_id": _require(i, "vpc_id", str, where), "state": state,
                "iam_instance_profile_arn": arn, "association": association,
                "disable_api_termination": bool(i.get("disable_api_termination", False)),
                "shutdown_behavior": i.get("shutdown_behavior", "stop"),
                "volumes": [{"device_name": v["device_name"], "volume_id": v["volume_id"],
                             "delete_on_termination": bool(v.get("delete_on_termination", True))}
                            for v in i.get("volumes", [])],
                "tags": dict(tags), "interfaces": []}
        if inst["shutdown_behavior"] not in ("stop", "terminate"):
            raise SeedError(f"{where}: shutdown_behavior must be stop or terminate")
        for m, e in enumerate(i.get("interfaces", [])):
            ewhere = f"{where}.interfaces[{m}]"
            eid = _require(e, "interface_id", str, ewhere)
            if not eid.startswith("eni-") or eid in seen_enis:
                raise SeedError(f"{ewhere}: interface id '{eid}' is not eni-... or repeats")
            seen_enis.add(eid)
            gids = _require(e, "group_ids", list, ewhere)
            for gid in gids:
                if gid not in known_groups:
                    raise SeedError(f"{ewhere}: group '{gid}' is not in security_groups")
            inst["interfaces"].append({
                "interface_id": eid, "subnet_id": e.get("subnet_id", "subnet-0"),
                "private_ip": e.get("private_ip", "10.0.0.1"),
                "device_index": int(e.get("device_index", m)), "group_ids": list(gids),
                "public_ip": e.get("public_ip", ""), "allocation_id": e.get("allocation_id", ""),
                "eip_association_id": (f"eipassoc-{eid[4:]}" if e.get("allocation_id") else "")})
        instances.append(inst)
    flows = []
    for n, fl in enumerate(seed.get("flows", [])):
        where = f"flows[{n}]"
        eni = _require(fl, "interface_id", str, where)
        if eni not in seen_enis:
            raise SeedError(f"{where}: unknown interface {eni}")
        proto = fl.get("protocol", "tcp")
        if proto not in ("tcp", "udp", "icmp"):
            raise SeedError(f"{where}: protocol must be tcp, udp or icmp")
        flows.append({"id": fl.get("id", f"flow-{n + 1}"), "interface_id": eni,
                      "protocol": proto, "port": int(fl.get("port", 0)),
                      "remote": _require(fl, "remote", str, where),
                      "tracked": True, "alive": True})
    return {"instances": instances, "security_groups": groups, "instance_profiles": profiles,
            "autoscaling_groups": asgs, "flows": flows,
            "sns_topics": list(seed.get("sns_topics", []))}


def _rule(r, where):
    proto = str(r.get("protocol", "-1"))
    if proto not in ("-1", "tcp", "udp", "icmp"):
        raise SeedError(f"{where}: protocol must be -1, tcp, udp or icmp")
    cidr = _require(r, "cidr", str, where)
    ipaddress.ip_network(cidr, strict=False)
    return {"protocol": proto, "from_port": int(r.get("from_port", -1)),
            "to_port": int(r.get("to_port", -1)), "cidr": cidr}


class World:
    """Everything the services hold; the call log; injected failures; held answers. One lock
    guards all."""

    def __init__(self, state):
        self.lock = threading.Lock()
        self.instances = state["instances"]
        self.groups = {g["group_id"]: g for g in state["security_groups"]}
        self.group_order = [g["group_id"] for g in state["security_groups"]]
        self.profiles = state["instance_profiles"]
        self.asgs = state["autoscaling_groups"]
        self.flows = state["flows"]
        self.snapshots = []
        self.sns_topics = state["sns_topics"]
        # Elastic IP allocation -> its public address, so a re-association gets it back.
        self.eips = {e["allocation_id"]: e["public_ip"] for i in self.instances
                     for e in i["interfaces"] if e["allocation_id"]}
        self.sns_messages = []
        self.calls = []
        self.injections = []  # dicts: action, code, http_status, count, message
        self.dispatched = 0   # API calls that reached an action
        self.hold_at = None
        self.release = threading.Event()
        self.next_id = 1

    def new_id(self, prefix):
        self.next_id += 1
        return f"{prefix}-{hashlib.sha256(f'{prefix}{self.next_id}'.encode()).hexdigest()[:17]}"

    def snapshot(self):
        with self.lock:
            return {"instances": copy.deepcopy(self.instances),
                    "security_groups": [copy.deepcopy(self.groups[g]) for g in self.group_order],
                    "instance_profiles": copy.deepcopy(self.profiles),
                    "autoscaling_groups": copy.deepcopy(self.asgs),
                    "flows": copy.deepcopy(self.flows),
                    "snapshots": copy.deepcopy(self.snapshots),
                    "sns_messages": copy.deepcopy(self.sns_messages)}

    def record(self, call):
        with self.lock:
            self.calls.append(call)
            if len(self.calls) > MAX_CALLS_KEPT:
                del self.calls[0]

    def calls_copy(self):
        with self.lock:
            return copy.deepcopy(self.calls)

    def add_injection(self, inj):
        with self.lock:
            self.injections.append(inj)

    def take_injection(self, action):
        with self.lock:
            for inj in self.injections:
                if inj["count"] > 0 and inj["action"] in (action, "*"):
                    inj["count"] -= 1
                    return dict(inj)
            self.injections = [i for i in self.injections if i["count"] > 0]
        return None

    def count_dispatch(self):
        """Counts one API call reaching its action; True when its answer is to be held."""
        with self.lock:
            self.dispatched += 1
            return self.hold_at is not None and self.dispatched == self.hold_at

    # --- connection tracking (call with the lock held) ---

    def eni_groups(self, eni_id):
        for inst in self.instances:
            for eni in inst["interfaces"]:
                if eni["interface_id"] == eni_id:
                    return [self.groups[g] for g in eni["group_ids"] if g in self.groups]
        return []

    @staticmethod
    def _rule_allows(rule, protocol, port, remote):
        if rule["protocol"] not in ("-1", protocol):
            return False
        if rule["protocol"] != "-1" and protocol != "icmp" and not (
                rule["from_port"] <= port <= rule["to_port"]):
            return False
        try:
            return ipaddress.ip_address(remote) in ipaddress.ip_network(rule["cidr"], strict=False)
        except ValueError:
            return False

    def _open_to_all(self, groups, direction):
        cidrs = {r["cidr"] for g in groups for r in g[direction] if r["protocol"] == "-1"}
        return "0.0.0.0/0" in cidrs

    def update_tracking(self):
        """Applies the current groups to every live flow."""
        for flow in self.flows:
            if not flow["alive"]:
                continue
            groups = self.eni_groups(flow["interface_id"])
            v6 = ":" in flow["remote"]
            open_in = self._open_to_all(groups, "ingress") and (
                not v6 or "::/0" in {r["cidr"] for g in groups for r in g["ingress"]})
            if flow["protocol"] != "icmp" and open_in and self._open_to_all(groups, "egress"):
                flow["tracked"] = False
            if flow["tracked"]:
                continue
            allowed = any(self._rule_allows(r, flow["protocol"], flow["port"], flow["remote"])
                          for g in groups for r in g["ingress"])
            if not allowed:
                flow["alive"] = False


# ---------------------------------------------------------------------------------------------
# SigV4 verification


class AuthError(Exception):
    def __init__(self, http_status, code, message, why):
        super().__init__(why)
        self.http_status = http_status
        self.code = code
        self.message = message
        self.why = why


def verify_sigv4(method, path, header_items, body, keys, regions, session_token, now, info):
    """Checks the request's SigV4 signature with botocore; raises AuthError saying why it is
    rejected. Fills `info` (access key, signed headers, token presence) as far as it got."""
    headers = {}
    for name, value in header_items:
        headers.setdefault(name.lower(), []).append(value)

    auth = headers.get("authorization")
    if not auth:
        raise AuthError(401, "MissingAuthenticationToken", "Request is missing Authentication Token",
                        "no Authorization header")
    if len(auth) != 1:
        raise AuthError(401, "AuthFailure", AUTH_FAILURE, "several Authorization headers")
    m = AUTH_RE.match(auth[0].strip())
    if not m:
        raise AuthError(401, "AuthFailure", AUTH_FAILURE, "malformed Authorization header")
    if m.group("alg") != "AWS4-HMAC-SHA256":
        raise AuthError(401, "AuthFailure", AUTH_FAILURE,
                        f"unsupported algorithm {m.group('alg')!r}")
    scope = m.group("cred").split("/")
    if len(scope) != 5 or scope[4] != "aws4_request":
        raise AuthError(401, "AuthFailure", AUTH_FAILURE, "malformed credential scope")
    access_key, scope_date, scope_region, scope_service, _ = scope
    info["access_key"] = access_key
    if access_key not in keys:
        raise AuthError(401, "AuthFailure", AUTH_FAILURE, f"unknown access key {access_key!r}")
    if scope_service not in regions:
        raise AuthError(401, "SignatureDoesNotMatch",
                        "Credential should be scoped to correct service: 'ec2'. ",
                        f"credential scope service {scope_service!r}, expected one of "
                        f"{sorted(regions)}")
    info["service"] = scope_service
    region = regions[scope_service]
    if scope_region != region:
        raise AuthError(401, "SignatureDoesNotMatch",
                        f"Credential should be scoped to a valid region, not '{scope_region}'.",
                        f"credential scope region {scope_region!r}, expected {region!r}")

    amz_dates = headers.get("x-amz-date", [])
    if len(amz_dates) != 1:
        raise AuthError(401, "AuthFailure", AUTH_FAILURE, "missing or repeated X-Amz-Date")
    amz_date = amz_dates[0].strip()
    try:
        when = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(
            tzinfo=datetime.timezone.utc)
    except ValueError:
        raise AuthError(401, "AuthFailure", AUTH_FAILURE, f"malformed X-Amz-Date {amz_date!r}")
    if scope_date != amz_date[:8]:
        raise AuthError(401, "SignatureDoesNotMatch", SIGNATURE_MISMATCH,
                        "credential scope date differs from X-Amz-Date")
    if abs(now - when) > MAX_SKEW:
        raise AuthError(400, "RequestExpired", "Request has expired.",
                        f"X-Amz-Date {amz_date} is more than 5 minutes from now")

    signed = m.group("signed").split(";")
    info["signed_headers"] = signed
    token = headers.get("x-amz-security-token")
    info["security_token_present"] = bool(token)
    info["security_token_signed"] = bool(token) and "x-amz-security-token" in signed
    if signed != sorted(set(signed)) or any(h != h.strip().lower() or not h for h in signed):
        raise AuthError(401, "SignatureDoesNotMatch", SIGNATURE_MISMATCH,
                        "SignedHeaders not sorted, lower-case and unique")
    for required in ("host", "x-amz-date"):
        if required not in signed:
            raise AuthError(401, "SignatureDoesNotMatch", SIGNATURE_MISMATCH,
                            f"{required} is not a signed header")
    # Headers that change the meaning of the request must be covered by the signature.
    for name in headers:
        if (name.startswith("x-amz-") or name == "content-type") and name not in signed:
            raise AuthError(401, "SignatureDoesNotMatch", SIGNATURE_MISMATCH,
                            f"header {name} is present but not signed")
    for name in signed:
        if name not in headers:
            raise AuthError(401, "SignatureDoesNotMatch", SIGNATURE_MISMATCH,
                            f"signed header {name} is not in the request")
    content_sha = headers.get("x-amz-content-sha256")
    if content_sha and content_sha[0].strip() != hashlib.sha256(body).hexdigest():
        raise AuthError(401, "SignatureDoesNotMatch", SIGNATURE_MISMATCH,
                        "X-Amz-Content-SHA256 does not match the body")


    # Rebuild the request with only the signed headers and let botocore sign it.
    request = AWSRequest(method=method, url=f"http://{headers['host'][0].strip()}{path}",
                         data=body)
    for name, value in header_items:
        if name.lower() in signed:
            request.headers[name] = value  # appends: repeated headers stay repeated
    request.context["timestamp"] = amz_date
    signer = SigV4Auth(Credentials(access_key, keys[access_key]), scope_service, region)
    canonical = signer.canonical_request(request)
    string_to_sign = signer.string_to_sign(request, canonical)
    expected = signer.signature(string_to_sign, request)
    if not hmac.compare_digest(expected, m.group("sig")):
        raise AuthError(401, "SignatureDoesNotMatch", SIGNATURE_MISMATCH,
                        "signature differs from the one botocore computes")

    # The signature is right; now the token must be the one these credentials need.
    if session_token is not None:
        if not token or len(token) != 1 or not hmac.compare_digest(token[0], session_token):
            raise AuthError(401, "AuthFailure", AUTH_FAILURE,
                            "missing or wrong X-Amz-Security-Token")
    elif token:
        raise AuthError(401, "AuthFailure", AUTH_FAILURE,
                        "X-Amz-Security-Token sent for long-term credentials")


# ---------------------------------------------------------------------------------------------
# Actions


def _indexed(params, prefix):
    """Values of prefix.1, prefix.2, ... in index order; ApiError on a bad index."""
    found = []
    for key, value in params.items():
        if key.startswith(prefix + "."):
            index = key[len(prefix) + 1:]
            if not index.isdigit() or int(index) < 1:
                raise ApiError(400, "InvalidParameterValue", f"Invalid parameter index: {key}")
            found.append((int(index), value))
    return [v for _, v in sorted(found)]


def _structs(params, prefix):
    """{n: {sub.key: value}} for prefix.n.sub.key parameters."""
    out = {}
    for key, value in params.items():
        if not key.startswith(prefix + "."):
            continue
        rest = key[len(prefix) + 1:]
        index, _, sub = rest.partition(".")
        if not index.isdigit() or int(index) < 1 or not sub:
            raise ApiError(400, "InvalidParameterValue", f"Invalid parameter: {key}")
        out.setdefault(int(index), {})[sub] = value
    return [out[k] for k in sorted(out)]


def _check_params(params, allowed_exact, allowed_prefixes):
    for key in params:
        if key in allowed_exact or any(key.startswith(p + ".") for p in allowed_prefixes):
            continue
        raise ApiError(400, "UnknownParameter", f"The parameter {key} is not recognized")


def _dry_run(params):
    value = params.get("DryRun", "false").lower()
    if value not in ("true", "false"):
        raise ApiError(400, "InvalidParameterValue", f"Invalid value '{value}' for DryRun")
    if value == "true":
        raise ApiError(412, "DryRunOperation",
                       "Request would have succeeded, but DryRun flag is set.")


def _required(params, name):
    value = params.get(name)
    if not value:
        raise ApiError(400, "MissingParameter",
                       f"The request must contain the parameter {name}")
    return value


def _filters(params):
    """{name: [values]} of Filter.N.Name / Filter.N.Value.M."""
    out = {}
    for f in _structs(params, "Filter"):
        name = f.get("Name")
        if not name:
            raise ApiError(400, "InvalidParameterValue", "Filter without a Name")
        out[name] = [v for k, v in sorted(f.items()) if k.startswith("Value.")]
    return out


def _tag_spec(params, resource_type):
    tags = {}
    for spec in _structs(params, "TagSpecification"):
        if spec.get("ResourceType") != resource_type:
            raise ApiError(400, "InvalidParameterValue",
                           f"'{spec.get('ResourceType')}' is not a valid taggable resource type "
                           "for this operation.")
        n = 1
        while f"Tag.{n}.Key" in spec:
            tags[spec[f"Tag.{n}.Key"]] = spec.get(f"Tag.{n}.Value", "")
            n += 1
    return tags


def _ok(action, request_id, body="<return>true</return>"):
    return (f'<{action}Response xmlns="{XMLNS}"><requestId>{request_id}</requestId>'
            f"{body}</{action}Response>")


def _find_instance(world, iid):
    for inst in world.instances:
        if inst["instance_id"] == iid:
            return inst
    raise ApiError(400, "InvalidInstanceID.NotFound", f"The instance ID '{iid}' does not exist")


def _tags_xml(tags):
    return "".join(f"<item><key>{escape(k)}</key><value>{escape(v)}</value></item>"
                   for k, v in sorted(tags.items()))


def _interface_xml(world, inst, eni):
    groups = "".join(
        f"<item><groupId>{escape(g)}</groupId><groupName>"
        f"{escape(world.groups[g]['group_name'] if g in world.groups else g)}</groupName></item>"
        for g in eni["group_ids"])
    suffix = eni["interface_id"][4:]
    association = ""
    if eni["public_ip"]:
        association = ("<association>"
                       f"<publicIp>{escape(eni['public_ip'])}</publicIp>"
                       "<publicDnsName/>"
                       f"<ipOwnerId>{OWNER_ID if eni['allocation_id'] else 'amazon'}</ipOwnerId>"
                       + (f"<allocationId>{escape(eni['allocation_id'])}</allocationId>"
                          f"<associationId>{escape(eni['eip_association_id'])}</associationId>"
                          if eni["allocation_id"] else "")
                       + "</association>")
    return (
        "<item>"
        f"<networkInterfaceId>{escape(eni['interface_id'])}</networkInterfaceId>"
        f"<subnetId>{escape(eni['subnet_id'])}</subnetId>"
        f"<vpcId>{escape(inst['vpc_id'])}</vpcId>"
        "<description/>"
        f"<ownerId>{OWNER_ID}</ownerId>"
        "<status>in-use</status>"
        "<macAddress>02:00:00:00:00:01</macAddress>"
        f"<privateIpAddress>{escape(eni['private_ip'])}</privateIpAddress>"
        "<sourceDestCheck>true</sourceDestCheck>"
        f"<groupSet>{groups}</groupSet>"
        "<attachment>"
        f"<attachmentId>eni-attach-{escape(suffix)}</attachmentId>"
        f"<deviceIndex>{eni['device_index']}</deviceIndex>"
        "<status>attached</status>"
        "<attachTime>2024-01-01T00:00:00.000Z</attachTime>"
        "<deleteOnTermination>true</deleteOnTermination>"
        "<networkCardIndex>0</networkCardIndex>"
        "</attachment>"
        f"{association}"
        "<privateIpAddressesSet><item>"
        f"<privateIpAddress>{escape(eni['private_ip'])}</privateIpAddress>"
        "<primary>true</primary>"
        f"{association}"
        "</item></privateIpAddressesSet>"
        "<ipv6AddressesSet/>"
        "<interfaceType>interface</interfaceType>"
        "</item>")


def _instance_xml(world, inst):
    primary = next((e for e in inst["interfaces"] if e["device_index"] == 0), None)
    groups = ""
    if primary:
        groups = "".join(
            f"<item><groupId>{escape(g)}</groupId><groupName>"
            f"{escape(world.groups[g]['group_name'] if g in world.groups else g)}</groupName></item>"
            for g in primary["group_ids"])
    profile = ""
    if inst["association"]:
        profile = (f"<iamInstanceProfile><arn>{escape(inst['association']['arn'])}</arn>"
                   "<id>AIPAEXAMPLEPROFILEID1</id></iamInstanceProfile>")
    volumes = "".join(
        "<item>"
        f"<deviceName>{escape(v['device_name'])}</deviceName>"
        "<ebs>"
        f"<volumeId>{escape(v['volume_id'])}</volumeId>"
        "<status>attached</status><attachTime>2024-01-01T00:00:00.000Z</attachTime>"
        f"<deleteOnTermination>{'true' if v['delete_on_termination'] else 'false'}"
        "</deleteOnTermination>"
        "</ebs></item>" for v in inst["volumes"])
    enis = "".join(_interface_xml(world, inst, e) for e in inst["interfaces"])
    public = primary["public_ip"] if primary else ""
    return (
        "<item>"
        f"<instanceId>{escape(inst['instance_id'])}</instanceId>"
        "<imageId>ami-0abcdef1234567890</imageId>"
        f"<instanceState><code>{STATE_CODES[inst['state']]}</code>"
        f"<name>{escape(inst['state'])}</name></instanceState>"
        "<privateDnsName/><dnsName/><reason/>"
        "<amiLaunchIndex>0</amiLaunchIndex><productCodes/>"
        "<instanceType>t3.micro</instanceType>"
        "<launchTime>2024-01-01T00:00:00.000Z</launchTime>"
        "<placement><availabilityZone>us-east-1a</availabilityZone><groupName/>"
        "<tenancy>default</tenancy></placement>"
        "<monitoring><state>disabled</state></monitoring>"
        + (f"<subnetId>{escape(primary['subnet_id'])}</subnetId>" if primary else "")
        + f"<vpcId>{escape(inst['vpc_id'])}</vpcId>"
        + (f"<privateIpAddress>{escape(primary['private_ip'])}</privateIpAddress>"
           if primary else "")
        + (f"<ipAddress>{escape(public)}</ipAddress>" if public else "")
        + "<sourceDestCheck>true</sourceDestCheck>"
        f"<groupSet>{groups}</groupSet>"
        "<architecture>x86_64</architecture>"
        "<rootDeviceType>ebs</rootDeviceType><rootDeviceName>/dev/xvda</rootDeviceName>"
        f"<blockDeviceMapping>{volumes}</blockDeviceMapping>"
        "<virtualizationType>hvm</virtualizationType>"
        f"<tagSet>{_tags_xml(inst['tags'])}</tagSet>"
        "<hypervisor>xen</hypervisor>"
        f"<networkInterfaceSet>{enis}</networkInterfaceSet>"
        f"{profile}"
        "<ebsOptimized>false</ebsOptimized>"
        "</item>")


def describe_instances(world, params, request_id):
    _check_params(params, {"Action", "Version", "DryRun"}, ["InstanceId"])
    ids = _indexed(params, "InstanceId")
    for iid in ids:
        if not iid.startswith("i-"):
            raise ApiError(400, "InvalidInstanceID.Malformed", f'Invalid id: "{iid}"')
    _dry_run(params)
    with world.lock:
        by_id = {i["instance_id"]: i for i in world.instances}
        missing = [i for i in dict.fromkeys(ids) if i not in by_id]
        if len(missing) == 1:
            raise ApiError(400, "InvalidInstanceID.NotFound",
                           f"The instance ID '{missing[0]}' does not exist")
        if missing:
            raise ApiError(400, "InvalidInstanceID.NotFound",
                           f"The instance IDs '{', '.join(missing)}' do not exist")
        chosen = [i for i in world.instances if not ids or i["instance_id"] in ids]
        reservations = "".join(
            "<item>"
            f"<reservationId>r-{hashlib.sha256(i['instance_id'].encode()).hexdigest()[:17]}"
            "</reservationId>"
            f"<ownerId>{OWNER_ID}</ownerId><groupSet/>"
            f"<instancesSet>{_instance_xml(world, i)}</instancesSet>"
            "</item>" for i in chosen)
    return _ok("DescribeInstances", request_id, f"<reservationSet>{reservations}</reservationSet>")


def describe_instance_attribute(world, params, request_id):
    _check_params(params, {"Action", "Version", "DryRun", "InstanceId", "Attribute"}, [])
    iid = _required(params, "InstanceId")
    attribute = _required(params, "Attribute")
    if attribute not in ("disableApiTermination", "instanceInitiatedShutdownBehavior"):
        raise ApiError(400, "InvalidParameterValue",
                       f"Value ({attribute}) for parameter attribute is invalid.")
    _dry_run(params)
    with world.lock:
        inst = _find_instance(world, iid)
        if attribute == "disableApiTermination":
            value = "true" if inst["disable_api_termination"] else "false"
        else:
            value = inst["shutdown_behavior"]
    return _ok("DescribeInstanceAttribute", request_id,
               f"<instanceId>{escape(iid)}</instanceId>"
               f"<{attribute}><value>{value}</value></{attribute}>")


def describe_iam_instance_profile_associations(world, params, request_id):
    _check_params(params, {"Action", "Version", "DryRun"}, ["Filter", "AssociationId"])
    filters = _filters(params)
    for name in filters:
        if name not in ("instance-id", "state"):
            raise ApiError(400, "InvalidParameterValue", f"The filter '{name}' is invalid")
    _dry_run(params)
    items = ""
    with world.lock:
        for inst in world.instances:
            a = inst["association"]
            if not a:
                continue
            if "instance-id" in filters and inst["instance_id"] not in filters["instance-id"]:
                continue
            if "state" in filters and "associated" not in filters["state"]:
                continue
            items += ("<item>"
                      f"<associationId>{a['association_id']}</associationId>"
                      f"<instanceId>{escape(inst['instance_id'])}</instanceId>"
                      f"<iamInstanceProfile><arn>{escape(a['arn'])}</arn>"
                      "<id>AIPAEXAMPLEPROFILEID1</id></iamInstanceProfile>"
                      "<state>associated</state></item>")
    return _ok("DescribeIamInstanceProfileAssociations", request_id,
               f"<iamInstanceProfileAssociationSet>{items}</iamInstanceProfileAssociationSet>")


def _rules_xml(rules):
    out = ""
    for r in rules:
        v6 = ":" in r["cidr"]
        ranges = (f"<ipRanges/><ipv6Ranges><item><cidrIpv6>{r['cidr']}</cidrIpv6></item>"
                  "</ipv6Ranges>" if v6 else
                  f"<ipRanges><item><cidrIp>{r['cidr']}</cidrIp></item></ipRanges><ipv6Ranges/>")
        ports = ("" if r["protocol"] == "-1" else
                 f"<fromPort>{r['from_port']}</fromPort><toPort>{r['to_port']}</toPort>")
        out += (f"<item><ipProtocol>{r['protocol']}</ipProtocol>{ports}<groups/>{ranges}"
                "<prefixListIds/></item>")
    return out


def describe_security_groups(world, params, request_id):
    _check_params(params, {"Action", "Version", "DryRun"}, ["Filter", "GroupId"])
    filters = _filters(params)
    for name in filters:
        if name not in ("vpc-id", "group-name", "group-id"):
            raise ApiError(400, "InvalidParameterValue", f"The filter '{name}' is invalid")
    ids = _indexed(params, "GroupId")
    _dry_run(params)
    items = ""
    with world.lock:
        for gid in world.group_order:
            g = world.groups[gid]
            if ids and gid not in ids:
                continue
            if "vpc-id" in filters and g["vpc_id"] not in filters["vpc-id"]:
                continue
            if "group-name" in filters and g["group_name"] not in filters["group-name"]:
                continue
            if "group-id" in filters and gid not in filters["group-id"]:
                continue
            items += ("<item>"
                      f"<ownerId>{OWNER_ID}</ownerId>"
                      f"<groupId>{escape(gid)}</groupId>"
                      f"<groupName>{escape(g['group_name'])}</groupName>"
                      f"<groupDescription>{escape(g['description'])}</groupDescription>"
                      f"<vpcId>{escape(g['vpc_id'])}</vpcId>"
                      f"<ipPermissions>{_rules_xml(g['ingress'])}</ipPermissions>"
                      f"<ipPermissionsEgress>{_rules_xml(g['egress'])}</ipPermissionsEgress>"
                      f"<tagSet>{_tags_xml(g['tags'])}</tagSet>"
                      "</item>")
    return _ok("DescribeSecurityGroups", request_id, f"<securityGroupInfo>{items}</securityGroupInfo>")


def create_security_group(world, params, request_id):
    _check_params(params, {"Action", "Version", "DryRun", "GroupName", "GroupDescription",
                           "VpcId"}, ["TagSpecification"])
    name = _required(params, "GroupName")
    description = _required(params, "GroupDescription")
    vpc = _required(params, "VpcId")
    if name.startswith("sg-") or len(name) > 255:
        raise ApiError(400, "InvalidParameterValue", "Invalid value for group name")
    tags = _tag_spec(params, "security-group")
    _dry_run(params)
    with world.lock:
        if not any(i["vpc_id"] == vpc for i in world.instances) and not any(
                g["vpc_id"] == vpc for g in world.groups.values()):
            raise ApiError(400, "InvalidVpcID.NotFound", f"The vpc ID '{vpc}' does not exist")
        for g in world.groups.values():
            if g["vpc_id"] == vpc and g["group_name"] == name:
                raise ApiError(400, "InvalidGroup.Duplicate",
                               f"The security group '{name}' already exists for VPC '{vpc}'")
        gid = world.new_id("sg")
        world.groups[gid] = {"group_id": gid, "vpc_id": vpc, "group_name": name,
                             "description": description, "tags": tags, "ingress": [],
                             "egress": [{"protocol": "-1", "from_port": -1, "to_port": -1,
                                         "cidr": "0.0.0.0/0"}]}
        world.group_order.append(gid)
    return _ok("CreateSecurityGroup", request_id,
               f"<return>true</return><groupId>{gid}</groupId>"
               f"<tagSet>{_tags_xml(tags)}</tagSet>")


def _permissions(params):
    rules = []
    for perm in _structs(params, "IpPermissions"):
        proto = perm.get("IpProtocol", "")
        if proto not in ("-1", "tcp", "udp", "icmp", "6", "17", "1"):
            raise ApiError(400, "InvalidParameterValue", f"Invalid IP protocol '{proto}'")
        proto = {"6": "tcp", "17": "udp", "1": "icmp"}.get(proto, proto)
        from_port = int(perm.get("FromPort", -1))
        to_port = int(perm.get("ToPort", -1))
        cidrs = [v for k, v in perm.items() if re.fullmatch(r"IpRanges\.\d+\.CidrIp", k)]
        cidrs += [v for k, v in perm.items() if re.fullmatch(r"Ipv6Ranges\.\d+\.CidrIpv6", k)]
        if not cidrs:
            raise ApiError(400, "MissingParameter", "No CIDR given in IpPermissions")
        for cidr in cidrs:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ApiError(400, "InvalidParameterValue", f"CIDR block {cidr} is malformed")
            rules.append({"protocol": proto, "from_port": from_port, "to_port": to_port,
                          "cidr": cidr})
    if not rules:
        raise ApiError(400, "MissingParameter", "The request must contain IpPermissions")
    return rules


def _change_rules(world, params, request_id, action, direction, add):
    _check_params(params, {"Action", "Version", "DryRun", "GroupId"}, ["IpPermissions"])
    gid = _required(params, "GroupId")
    rules = _permissions(params)
    _dry_run(params)
    with world.lock:
        g = world.groups.get(gid)
        if g is None:
            raise ApiError(400, "InvalidGroup.NotFound",
                           f"The security group '{gid}' does not exist")
        for rule in rules:
            present = rule in g[direction]
            if add and present:
                raise ApiError(400, "InvalidPermission.Duplicate",
                               "the specified rule already exists")
            if not add and not present:
                raise ApiError(400, "InvalidPermission.NotFound",
                               "The specified rule does not exist in this security group.")
        for rule in rules:
            if add:
                g[direction].append(rule)
            else:
                g[direction].remove(rule)
        world.update_tracking()
    return _ok(action, request_id)


def authorize_security_group_ingress(world, params, request_id):
    return _change_rules(world, params, request_id, "AuthorizeSecurityGroupIngress", "ingress",
                         True)


def revoke_security_group_egress(world, params, request_id):
    return _change_rules(world, params, request_id, "RevokeSecurityGroupEgress", "egress", False)


def modify_network_interface_attribute(world, params, request_id):
    _check_params(params, {"Action", "Version", "DryRun", "NetworkInterfaceId"},
                  ["SecurityGroupId"])
    eni_id = params.get("NetworkInterfaceId")
    if not eni_id:
        raise ApiError(400, "MissingParameter",
                       "The request must contain the parameter networkInterfaceId")
    if not eni_id.startswith("eni-"):
        raise ApiError(400, "InvalidNetworkInterfaceID.Malformed",
                       f"Invalid id: \"{eni_id}\" (expecting \"eni-...\")")
    group_ids = list(dict.fromkeys(_indexed(params, "SecurityGroupId")))
    if not group_ids:
        raise ApiError(400, "MissingParameter", "You must specify an attribute to modify")
    for gid in group_ids:
        if not gid.startswith("sg-"):
            raise ApiError(400, "InvalidGroupId.Malformed",
                           f"Invalid id: \"{gid}\" (expecting \"sg-...\")")
    if len(group_ids) > MAX_GROUPS_PER_INTERFACE:
        raise ApiError(400, "SecurityGroupsPerInterfaceLimitExceeded",
                       "You have exceeded the maximum number of security groups allowed per "
                       "network interface.")
    _dry_run(params)
    with world.lock:
        found = None
        for inst in world.instances:
            for eni in inst["interfaces"]:
                if eni["interface_id"] == eni_id:
                    found = (inst, eni)
        if found is None:
            raise ApiError(400, "InvalidNetworkInterfaceID.NotFound",
                           f"The networkInterface ID '{eni_id}' does not exist")
        inst, eni = found
        for gid in group_ids:
            if gid not in world.groups:
                raise ApiError(400, "InvalidGroup.NotFound",
                               f"The security group '{gid}' does not exist")
        for gid in group_ids:
            if world.groups[gid]["vpc_id"] != inst["vpc_id"]:
                raise ApiError(400, "InvalidGroup.NotFound",
                               "You have specified two resources that belong to different "
                               "networks.")
        eni["group_ids"] = group_ids
        world.update_tracking()
    return _ok("ModifyNetworkInterfaceAttribute", request_id)


def modify_instance_attribute(world, params, request_id):
    _check_params(params, {"Action", "Version", "DryRun", "InstanceId",
                           "DisableApiTermination.Value",
                           "InstanceInitiatedShutdownBehavior.Value"}, ["BlockDeviceMapping"])
    iid = _required(params, "InstanceId")
    mappings = _structs(params, "BlockDeviceMapping")
    given = [k for k in ("DisableApiTermination.Value", "InstanceInitiatedShutdownBehavior.Value")
             if k in params] + (["BlockDeviceMapping"] if mappings else [])
    if len(given) != 1:
        raise ApiError(400, "InvalidParameterCombination",
                       "Exactly one attribute must be specified per request")
    if "DisableApiTermination.Value" in params and params[
            "DisableApiTermination.Value"] not in ("true", "false"):
        raise ApiError(400, "InvalidParameterValue", "DisableApiTermination must be true|false")
    if params.get("InstanceInitiatedShutdownBehavior.Value", "stop") not in ("stop", "terminate"):
        raise ApiError(400, "InvalidParameterValue",
                       "InstanceInitiatedShutdownBehavior must be stop|terminate")
    for m in mappings:
        if "DeviceName" not in m or m.get("Ebs.DeleteOnTermination") not in ("true", "false"):
            raise ApiError(400, "InvalidParameterValue",
                           "BlockDeviceMapping needs DeviceName and Ebs.DeleteOnTermination")
    _dry_run(params)
    with world.lock:
        inst = _find_instance(world, iid)
        for m in mappings:
            vol = next((v for v in inst["volumes"] if v["device_name"] == m["DeviceName"]), None)
            if vol is None:
                raise ApiError(400, "InvalidInstanceAttributeValue",
                               f"No device is currently mapped at {m['DeviceName']}")
        if "DisableApiTermination.Value" in params:
            inst["disable_api_termination"] = params["DisableApiTermination.Value"] == "true"
        if "InstanceInitiatedShutdownBehavior.Value" in params:
            inst["shutdown_behavior"] = params["InstanceInitiatedShutdownBehavior.Value"]
        for m in mappings:
            for v in inst["volumes"]:
                if v["device_name"] == m["DeviceName"]:
                    v["delete_on_termination"] = m["Ebs.DeleteOnTermination"] == "true"
    return _ok("ModifyInstanceAttribute", request_id)


def create_tags(world, params, request_id):
    _check_params(params, {"Action", "Version", "DryRun"}, ["ResourceId", "Tag"])
    resources = _indexed(params, "ResourceId")
    tags = {}
    for t in _structs(params, "Tag"):
        if "Key" not in t:
            raise ApiError(400, "InvalidParameterValue", "Tag without a Key")
        tags[t["Key"]] = t.get("Value", "")
    if not resources or not tags:
        raise ApiError(400, "MissingParameter", "ResourceId and Tag are required")
    _dry_run(params)
    with world.lock:
        for rid in resources:
            if rid.startswith("i-"):
                _find_instance(world, rid)["tags"].update(tags)
            elif rid in world.groups:
                world.groups[rid]["tags"].update(tags)
            else:
                raise ApiError(400, "InvalidID", f"The ID '{rid}' is not valid")
    return _ok("CreateTags", request_id)


def disassociate_iam_instance_profile(world, params, request_id):
    _check_params(params, {"Action", "Version", "DryRun", "AssociationId"}, [])
    assoc = _required(params, "AssociationId")
    _dry_run(params)
    with world.lock:
        for inst in world.instances:
            a = inst["association"]
            if a and a["association_id"] == assoc:
                inst["association"] = None
                inst["iam_instance_profile_arn"] = ""
                return _ok("DisassociateIamInstanceProfile", request_id,
                           "<iamInstanceProfileAssociation>"
                           f"<associationId>{assoc}</associationId>"
                           f"<instanceId>{inst['instance_id']}</instanceId>"
                           f"<iamInstanceProfile><arn>{escape(a['arn'])}</arn>"
                           "<id>AIPAEXAMPLEPROFILEID1</id></iamInstanceProfile>"
                           "<state>disassociating</state></iamInstanceProfileAssociation>")
    raise ApiError(400, "InvalidAssociationID.NotFound",
                   f"An association with ID {assoc} could not be found.")


def associate_iam_instance_profile(world, params, request_id):
    _check_params(params, {"Action", "Version", "DryRun", "InstanceId", "IamInstanceProfile.Arn",
                           "IamInstanceProfile.Name"}, [])
    iid = _required(params, "InstanceId")
    arn = _required(params, "IamInstanceProfile.Arn")
    _dry_run(params)
    with world.lock:
        inst = _find_instance(world, iid)
        if inst["association"]:
            raise ApiError(400, "IncorrectState",
                           f"There is an existing association for instance {iid}")
        if not any(p["arn"] == arn for p in world.profiles.values()):
            raise ApiError(400, "InvalidParameterValue",
                           f"Value ({arn}) for parameter iamInstanceProfile.arn is invalid.")
        assoc = world.new_id("iip-assoc")
        inst["association"] = {"association_id": assoc, "arn": arn}
        inst["iam_instance_profile_arn"] = arn
    return _ok("AssociateIamInstanceProfile", request_id,
               "<iamInstanceProfileAssociation>"
               f"<associationId>{assoc}</associationId><instanceId>{iid}</instanceId>"
               f"<iamInstanceProfile><arn>{escape(arn)}</arn><id>AIPAEXAMPLEPROFILEID1</id>"
               "</iamInstanceProfile><state>associating</state></iamInstanceProfileAssociation>")


def create_snapshots(world, params, request_id):
    _check_params(params, {"Action", "Version", "DryRun", "InstanceSpecification.InstanceId",
                           "InstanceSpecification.ExcludeBootVolume", "Description",
                           "CopyTagsFromSource"}, ["TagSpecification"])
    iid = _required(params, "InstanceSpecification.InstanceId")
    tags = _tag_spec(params, "snapshot")
    _dry_run(params)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    items = ""
    with world.lock:
        inst = _find_instance(world, iid)
        for v in inst["volumes"]:
            sid = world.new_id("snap")
            world.snapshots.append({"snapshot_id": sid, "volume_id": v["volume_id"],
                                    "instance_id": iid, "tags": dict(tags),
                                    "description": params.get("Description", "")})
            items += ("<item>"
                      f"<snapshotId>{sid}</snapshotId><volumeId>{v['volume_id']}</volumeId>"
                      "<state>pending</state><volumeSize>8</volumeSize>"
                      f"<startTime>{now}</startTime><progress/><ownerId>{OWNER_ID}</ownerId>"
                      f"<description>{escape(params.get('Description', ''))}</description>"
                      f"<tagSet>{_tags_xml(tags)}</tagSet></item>")
    return _ok("CreateSnapshots", request_id, f"<snapshotSet>{items}</snapshotSet>")


def stop_instances(world, params, request_id):
    _check_params(params, {"Action", "Version", "DryRun", "Force", "Hibernate"}, ["InstanceId"])
    ids = _indexed(params, "InstanceId")
    if not ids:
        raise ApiError(400, "MissingParameter", "The request must contain InstanceId")
    _dry_run(params)
    items = ""
    with world.lock:
        for iid in ids:
            inst = _find_instance(world, iid)
            before = inst["state"]
            inst["state"] = "stopped"
            items += (f"<item><instanceId>{iid}</instanceId>"
                      f"<currentState><code>64</code><name>stopping</name></currentState>"
                      f"<previousState><code>{STATE_CODES[before]}</code><name>{before}</name>"
                      "</previousState></item>")
    return _ok("StopInstances", request_id, f"<instancesSet>{items}</instancesSet>")


def _find_eni(world, eni_id):
    for inst in world.instances:
        for eni in inst["interfaces"]:
            if eni["interface_id"] == eni_id:
                return eni
    raise ApiError(400, "InvalidNetworkInterfaceID.NotFound",
                   f"The networkInterface ID '{eni_id}' does not exist")


def disassociate_address(world, params, request_id):
    _check_params(params, {"Action", "Version", "DryRun", "AssociationId", "PublicIp"}, [])
    assoc = _required(params, "AssociationId")
    _dry_run(params)
    with world.lock:
        for inst in world.instances:
            for eni in inst["interfaces"]:
                if eni["eip_association_id"] and eni["eip_association_id"] == assoc:
                    eni["eip_association_id"] = ""
                    eni["public_ip"] = ""
                    return _ok("DisassociateAddress", request_id)
    raise ApiError(400, "InvalidAssociationID.NotFound",
                   f"The association ID '{assoc}' does not exist")


def associate_address(world, params, request_id):
    _check_params(params, {"Action", "Version", "DryRun", "AllocationId", "NetworkInterfaceId",
                           "PrivateIpAddress", "AllowReassociation"}, [])
    alloc = _required(params, "AllocationId")
    eni_id = _required(params, "NetworkInterfaceId")
    _dry_run(params)
    with world.lock:
        eni = _find_eni(world, eni_id)
        for inst in world.instances:
            for other in inst["interfaces"]:
                if other["allocation_id"] == alloc and other["eip_association_id"] and \
                        other is not eni:
                    raise ApiError(400, "Resource.AlreadyAssociated",
                                   f"resource {alloc} is already associated")
        eni["allocation_id"] = alloc
        eni["eip_association_id"] = world.new_id("eipassoc")
        eni["public_ip"] = world.eips.get(alloc, "203.0.113.99")
        assoc = eni["eip_association_id"]
    return _ok("AssociateAddress", request_id,
               f"<return>true</return><associationId>{assoc}</associationId>")


def describe_snapshots(world, params, request_id):
    _check_params(params, {"Action", "Version", "DryRun", "MaxResults", "NextToken"},
                  ["Filter", "Owner", "SnapshotId"])
    filters = _filters(params)
    for name in filters:
        if not name.startswith("tag:"):
            raise ApiError(400, "InvalidParameterValue", f"The filter '{name}' is invalid")
    _dry_run(params)
    items = ""
    with world.lock:
        for snap in world.snapshots:
            if any(snap["tags"].get(name[4:]) not in values for name, values in filters.items()):
                continue
            items += ("<item>"
                      f"<snapshotId>{snap['snapshot_id']}</snapshotId>"
                      f"<volumeId>{snap['volume_id']}</volumeId><state>completed</state>"
                      f"<ownerId>{OWNER_ID}</ownerId>"
                      f"<tagSet>{_tags_xml(snap['tags'])}</tagSet></item>")
    return _ok("DescribeSnapshots", request_id, f"<snapshotSet>{items}</snapshotSet>")


# --- IAM --------------------------------------------------------------------------------------


def _iam_ok(action, request_id, result=""):
    inner = f"<{action}Result>{result}</{action}Result>" if result else ""
    return (f'<{action}Response xmlns="{IAM_XMLNS}">{inner}'
            f"<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata>"
            f"</{action}Response>")


def get_instance_profile(world, params, request_id):
    _check_params(params, {"Action", "Version", "InstanceProfileName"}, [])
    name = _required(params, "InstanceProfileName")
    with world.lock:
        p = world.profiles.get(name)
        if p is None:
            raise ApiError(404, "NoSuchEntity",
                           f"Instance Profile {name} cannot be found.")
        roles = "".join(f"<member><RoleName>{escape(r)}</RoleName>"
                        f"<Arn>arn:aws:iam::{OWNER_ID}:role/{escape(r)}</Arn><Path>/</Path></member>"
                        for r in p["roles"])
    return _iam_ok("GetInstanceProfile", request_id,
                   f"<InstanceProfile><InstanceProfileName>{escape(name)}</InstanceProfileName>"
                   f"<Arn>{escape(p['arn'])}</Arn><Path>/</Path><Roles>{roles}</Roles>"
                   "</InstanceProfile>")


def put_role_policy(world, params, request_id):
    _check_params(params, {"Action", "Version", "RoleName", "PolicyName", "PolicyDocument"}, [])
    role = _required(params, "RoleName")
    name = _required(params, "PolicyName")
    document = _required(params, "PolicyDocument")
    try:
        doc = json.loads(document)
        assert isinstance(doc.get("Statement"), list)
    except (ValueError, AssertionError, AttributeError):
        raise ApiError(400, "MalformedPolicyDocument", "Syntax errors in policy.")
    with world.lock:
        for p in world.profiles.values():
            if role in p["roles"]:
                p["roles"][role]["policies"][name] = doc
                return _iam_ok("PutRolePolicy", request_id)
    raise ApiError(404, "NoSuchEntity", f"The role with name {role} cannot be found.")


# --- Auto Scaling -------------------------------------------------------------------------------


def _as_ok(action, request_id, result=""):
    return (f'<{action}Response xmlns="{AS_XMLNS}"><{action}Result>{result}</{action}Result>'
            f"<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata>"
            f"</{action}Response>")


def describe_auto_scaling_instances(world, params, request_id):
    _check_params(params, {"Action", "Version", "MaxRecords", "NextToken"}, ["InstanceIds"])
    ids = _indexed(params, "InstanceIds.member")
    items = ""
    with world.lock:
        for g in world.asgs.values():
            for iid, state in g["instances"].items():
                if ids and iid not in ids:
                    continue
                items += (f"<member><InstanceId>{escape(iid)}</InstanceId>"
                          f"<AutoScalingGroupName>{escape(g['name'])}</AutoScalingGroupName>"
                          f"<LifecycleState>{state}</LifecycleState>"
                          "<HealthStatus>HEALTHY</HealthStatus>"
                          "<ProtectedFromScaleIn>false</ProtectedFromScaleIn></member>")
    return _as_ok("DescribeAutoScalingInstances", request_id,
                  f"<AutoScalingInstances>{items}</AutoScalingInstances>")


def _standby(world, params, request_id, action, enter):
    allowed = {"Action", "Version", "AutoScalingGroupName"}
    if enter:
        allowed.add("ShouldDecrementDesiredCapacity")
    _check_params(params, allowed, ["InstanceIds"])
    name = _required(params, "AutoScalingGroupName")
    ids = _indexed(params, "InstanceIds.member")
    if enter and params.get("ShouldDecrementDesiredCapacity") not in ("true", "false"):
        raise ApiError(400, "ValidationError", "ShouldDecrementDesiredCapacity is required")
    with world.lock:
        g = world.asgs.get(name)
        if g is None:
            raise ApiError(400, "ValidationError", f"AutoScalingGroup name not found - {name}")
        want = "InService" if enter else "Standby"
        for iid in ids:
            if g["instances"].get(iid) != want:
                raise ApiError(400, "ValidationError",
                               f"The instance {iid} is not in {want}.")
        for iid in ids:
            g["instances"][iid] = "Standby" if enter else "InService"
            if enter and params["ShouldDecrementDesiredCapacity"] == "true":
                g["desired"] -= 1
            elif not enter:
                g["desired"] += 1
    activities = "".join(f"<member><ActivityId>{uuid.uuid4()}</ActivityId>"
                         f"<AutoScalingGroupName>{escape(name)}</AutoScalingGroupName>"
                         f"<Description>Moving EC2 instance {escape(i)}</Description>"
                         "<StatusCode>InProgress</StatusCode></member>" for i in ids)
    return _as_ok(action, request_id, f"<Activities>{activities}</Activities>")


def enter_standby(world, params, request_id):
    return _standby(world, params, request_id, "EnterStandby", True)


def exit_standby(world, params, request_id):
    return _standby(world, params, request_id, "ExitStandby", False)


def sns_publish(world, params, request_id):
    _check_params(params, {"Action", "Version", "TopicArn", "Subject", "Message"}, [])
    arn = _required(params, "TopicArn")
    message = _required(params, "Message")
    subject = params.get("Subject", "")
    if len(subject) > 100 or any(ord(c) < 0x20 for c in subject):
        raise ApiError(400, "InvalidParameter", "Invalid parameter: Subject")
    if len(message.encode()) > 256 * 1024:
        raise ApiError(400, "InvalidParameter", "Invalid parameter: Message too long")
    message_id = str(uuid.uuid4())
    with world.lock:
        if arn not in world.sns_topics:
            raise ApiError(404, "NotFound", "Topic does not exist")
        world.sns_messages.append({"topic": arn, "subject": subject, "message": message,
                                   "message_id": message_id})
    return (f'<PublishResponse xmlns="{SNS_XMLNS}"><PublishResult>'
            f"<MessageId>{message_id}</MessageId></PublishResult>"
            f"<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata>"
            "</PublishResponse>")


ACTIONS = {
    "sns": {"Publish": sns_publish},
    "ec2": {
        "DescribeInstances": describe_instances,
        "DescribeInstanceAttribute": describe_instance_attribute,
        "DescribeIamInstanceProfileAssociations": describe_iam_instance_profile_associations,
        "DescribeSecurityGroups": describe_security_groups,
        "CreateSecurityGroup": create_security_group,
        "AuthorizeSecurityGroupIngress": authorize_security_group_ingress,
        "RevokeSecurityGroupEgress": revoke_security_group_egress,
        "ModifyNetworkInterfaceAttribute": modify_network_interface_attribute,
        "ModifyInstanceAttribute": modify_instance_attribute,
        "CreateTags": create_tags,
        "DisassociateIamInstanceProfile": disassociate_iam_instance_profile,
        "AssociateIamInstanceProfile": associate_iam_instance_profile,
        "CreateSnapshots": create_snapshots,
        "DescribeSnapshots": describe_snapshots,
        "StopInstances": stop_instances,
        "DisassociateAddress": disassociate_address,
        "AssociateAddress": associate_address,
    },
    "iam": {
        "GetInstanceProfile": get_instance_profile,
        "PutRolePolicy": put_role_policy,
    },
    "autoscaling": {
        "DescribeAutoScalingInstances": describe_auto_scaling_instances,
        "EnterStandby": enter_standby,
        "ExitStandby": exit_standby,
    },
}
ALL_ACTIONS = {name for actions in ACTIONS.values() for name in actions}


def error_xml(code, message, request_id, service="ec2"):
    if service == "ec2":
        return ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                f"<Response><Errors><Error><Code>{escape(code)}</Code>"
                f"<Message>{escape(message)}</Message></Error></Errors>"
                f"<RequestID>{request_id}</RequestID></Response>")
    xmlns = {"iam": IAM_XMLNS, "sns": SNS_XMLNS}.get(service, AS_XMLNS)
    return ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            f'<ErrorResponse xmlns="{xmlns}"><Error><Type>Sender</Type>'
            f"<Code>{escape(code)}</Code><Message>{escape(message)}</Message></Error>"
            f"<RequestId>{request_id}</RequestId></ErrorResponse>")


def parse_form(body):
    """The form body as {name: value}; ApiError when it is not a clean form encoding."""
    try:
        text = body.decode("utf-8")
        pairs = urllib.parse.parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text),
                                       errors="strict")
    except (UnicodeDecodeError, ValueError) as e:
        raise ApiError(400, "MalformedQueryString", f"The request body is not a form: {e}")
    params = {}
    for key, value in pairs:
        if key in params:
            raise ApiError(400, "InvalidParameterCombination", f"The parameter {key} repeats")
        params[key] = value
    return params


# ---------------------------------------------------------------------------------------------
# HTTP


class LocalAwsHandler(BaseHTTPRequestHandler):
    """What every local AWS endpoint's handler does alike: quiet, HTTP/1.1 without Nagle, whole
    responses, JSON for the test-control paths, which answer loopback clients only."""
    protocol_version = "HTTP/1.1"
    sys_version = ""

    def log_message(self, fmt, *args):  # quiet: the call log says what happened
        pass

    def setup(self):
        super().setup()
        # Headers and body go out in two writes: without this, Nagle's algorithm holds the body
        # until the client's delayed ACK, adding 40 ms to every call.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def response_headers(self):
        """Headers of every response beyond the content's type and length."""
        return []

    def _send(self, status, content_type, body):
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in self.response_headers():
            self.send_header(name, value)
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client is gone (a test killed it): nothing to say

    def _send_json(self, status, obj):
        self._send(status, "application/json", json.dumps(obj, indent=1, sort_keys=True) + "\n")

    def _loopback_client(self):
        try:
            return ipaddress.ip_address(self.client_address[0]).is_loopback
        except ValueError:
            return False


class Handler(LocalAwsHandler):
    server_version = "AmazonEC2"

    def _read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise ApiError(400, "InvalidRequest", "chunked bodies are not accepted")
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            raise ApiError(400, "InvalidRequest", "bad Content-Length")
        if length < 0 or length > MAX_BODY:
            raise ApiError(413, "RequestEntityTooLarge", f"body over {MAX_BODY} bytes")
        return self.rfile.read(length) if length else b""

    def do_GET(self):
        if not self._loopback_client():
            self._send_json(403, {"error": "loopback clients only"})
            return
        if self.path == "/_tripline/calls":
            self._send_json(200, self.server.world.calls_copy())
        elif self.path == "/_tripline/state":
            self._send_json(200, self.server.world.snapshot())
        else:
            self._api_error_only("GET")

    def _api_error_only(self, method):
        # EC2 API calls must be POSTs here; say so in EC2's shape and record the attempt.
        request_id = str(uuid.uuid4())
        self.server.log_call({"action": "", "method": method, "path": self.path,
                              "signature_ok": False,
                              "signature_error": "only POST / is served",
                              "http_status": 400, "error_code": "InvalidRequest",
                              "request_id": request_id})
        self.close_connection = True
        self._send(400, "text/xml;charset=UTF-8",
                   error_xml("InvalidRequest", "This endpoint serves POST / only.", request_id))

    def do_PUT(self):
        self._api_error_only("PUT")

    def do_DELETE(self):
        self._api_error_only("DELETE")

    def do_POST(self):
        if not self._loopback_client():
            self._send_json(403, {"error": "loopback clients only"})
            return
        if self.path == "/_tripline/inject":
            self._inject()
            return
        if self.path in ("/_tripline/hold", "/_tripline/release"):
            self._hold(self.path.endswith("release"))
            return
        request_id = str(uuid.uuid4())
        call = {"time": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                "method": "POST", "path": self.path, "action": "", "params": {},
                "signature_ok": False, "signature_error": None, "access_key": None,
                "signed_headers": [], "security_token_present": False,
                "security_token_signed": False, "request_id": request_id}
        try:
            try:
                body = self._read_body()
            except ApiError:
                self.close_connection = True
                raise
            try:
                verify_sigv4("POST", self.path, self.headers.items(), body, self.server.keys,
                             self.server.regions, self.server.session_token,
                             datetime.datetime.now(datetime.timezone.utc), call)
                call["signature_ok"] = True
            except AuthError as e:
                call["signature_error"] = e.why
                raise ApiError(e.http_status, e.code, e.message)
            if self.path != "/":
                raise ApiError(400, "InvalidRequest",
                               "Parameters go in a form-encoded POST body to /, with no query.")
            ctype = self.headers.get("Content-Type", "")
            if not ctype.lower().startswith("application/x-www-form-urlencoded"):
                raise ApiError(400, "InvalidRequest",
                               "Content-Type must be application/x-www-form-urlencoded")
            params = parse_form(body)
            call["params"] = {k: ("<redacted>" if SECRET_PARAM_RE.search(k) else v)
                              for k, v in params.items()}
            action = params.get("Action", "")
            call["action"] = action
            if not action:
                raise ApiError(400, "MissingAction", "The request must contain the parameter Action")
            service = call["service"]
            if action not in ACTIONS[service]:
                raise ApiError(400, "InvalidAction",
                               f"The action {action} is not valid for this web service.")
            version = API_VERSIONS[service]
            if params.get("Version") != version:
                raise ApiError(400, "InvalidParameterValue" if "Version" in params
                               else "MissingParameter",
                               f"This endpoint serves Version={version} only")
            inj = self.server.world.take_injection(action)
            if inj:
                raise ApiError(inj["http_status"], inj["code"], inj["message"])
            held = self.server.world.count_dispatch()
            try:
                xml = ACTIONS[service][action](self.server.world, params, request_id)
            except ApiError:
                if held:
                    call["held"] = True
                    self.server.world.release.wait()
                raise
            call.update({"http_status": 200, "error_code": None})
            if held:
                call["held"] = True
            self.server.log_call(call)
            if held:
                self.server.world.release.wait()
            self._send(200, "text/xml;charset=UTF-8",
                       "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n" + xml)
        except ApiError as e:
            call.update({"http_status": e.http_status, "error_code": e.code,
                         "error_message": e.message})
            self.server.log_call(call)
            self._send(e.http_status, "text/xml;charset=UTF-8",
                       error_xml(e.code, e.message, request_id, call.get("service", "ec2")))

    def _hold(self, release):
        try:
            length = int(self.headers.get("Content-Length", "0"))
            if not 0 <= length <= 65536:
                raise ValueError("body too large")
            spec = json.loads(self.rfile.read(length) or b"{}")
            if not release:
                n = spec["call"]
                if not isinstance(n, int) or n < 1:
                    raise ValueError("call must be a positive integer")
        except (ValueError, KeyError, TypeError) as e:
            self.close_connection = True
            self._send_json(400, {"error": f"bad hold: {e}"})
            return
        world = self.server.world
        with world.lock:
            if release:
                world.hold_at = None
                world.release.set()
            else:
                world.hold_at = n
                world.release.clear()
        self._send_json(200, {"ok": True})

    def _inject(self):
        try:
            length = int(self.headers.get("Content-Length", "0"))
            if not 0 < length <= 65536:
                raise ValueError("body missing or too large")
            spec = json.loads(self.rfile.read(length))
            action = spec["action"]
            code = spec["code"]
            status = spec.get("http_status", 400)
            count = spec.get("count", 1)
            if not isinstance(action, str) or not (action == "*" or action in ALL_ACTIONS):
                raise ValueError(f"unknown action {action!r}")
            if not isinstance(code, str) or not re.fullmatch(r"[A-Za-z0-9.]{1,100}", code):
                raise ValueError("code must be letters, digits and dots")
            if not isinstance(status, int) or not 400 <= status <= 599:
                raise ValueError("http_status must be 400..599")
            if not isinstance(count, int) or not 1 <= count <= 100000:
                raise ValueError("count must be 1..100000")
            message = spec.get("message")
            if message is None:
                message = ("Request limit exceeded." if code == "RequestLimitExceeded"
                           else f"Injected failure {code}")
            if not isinstance(message, str):
                raise ValueError("message must be a string")
        except (ValueError, KeyError, TypeError) as e:
            self.close_connection = True
            self._send_json(400, {"error": f"bad injection: {e}"})
            return
        self.server.world.add_injection({"action": action, "code": code, "http_status": status,
                                         "count": count, "message": message})
        self._send_json(200, {"ok": True})


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = False

    def __init__(self, address, family, world, keys, region, session_token, log_file):
        self.address_family = family
        self.world = world
        self.keys = keys
        self.region = region
        self.regions = {"ec2": region, "autoscaling": region, "sns": region, "iam": "us-east-1"}
        self.session_token = session_token
        self.log_lock = threading.Lock()
        self.log_file = log_file
        super().__init__(address, Handler)

    def log_call(self, call):
        call.setdefault("time", datetime.datetime.now(datetime.timezone.utc).isoformat())
        self.world.record(call)
        if self.log_file:
            with self.log_lock:
                self.log_file.write(json.dumps(call, sort_keys=True) + "\n")
                self.log_file.flush()


def parse_listen(text):
    """host:port or [v6]:port -> (host, port, family); refuses anything but loopback."""
    m = re.fullmatch(r"\[(?P<h6>[^\]]+)\]:(?P<p6>\d+)|(?P<h>[^:]+):(?P<p>\d+)", text)
    if not m:
        raise ValueError(f"--listen {text!r}: expected HOST:PORT")
    host = m.group("h6") or m.group("h")
    port = int(m.group("p6") or m.group("p"))
    if host == "localhost":
        host = "127.0.0.1"
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"--listen {text!r}: host must be a loopback IP address")
    if not addr.is_loopback:
        raise ValueError(f"--listen {text!r}: refusing to listen on a non-loopback address")
    if port > 65535:
        raise ValueError(f"--listen {text!r}: bad port")
    return host, port, socket.AF_INET6 if addr.version == 6 else socket.AF_INET


def write_ready(path, text):
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


def main(argv):
    ap = argparse.ArgumentParser(description="Local EC2 endpoint for tests (loopback only).")
    ap.add_argument("--listen", required=True, help="loopback HOST:PORT; port 0 picks one")
    ap.add_argument("--ready-file", required=True, help="gets HOST:PORT once listening")
    ap.add_argument("--region", required=True)
    ap.add_argument("--access-key", required=True)
    ap.add_argument("--secret-key", required=True)
    ap.add_argument("--session-token", default=None,
                    help="when given, every call must carry this X-Amz-Security-Token, signed")
    ap.add_argument("--seed", required=True, help="JSON file with instances and security groups")
    ap.add_argument("--log-file", default=None, help="one JSON line per API call")
    args = ap.parse_args(argv)

    try:
        host, port, family = parse_listen(args.listen)
        state = load_seed(args.seed)
    except (ValueError, SeedError, OSError) as e:
        print(f"ec2_endpoint: {e}", file=sys.stderr)
        return 2

    log_file = open(args.log_file, "a", encoding="utf-8") if args.log_file else None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        server = Server((host, port), family, World(state),
                        {args.access_key: args.secret_key}, args.region, args.session_token,
                        log_file)
    except OSError as e:
        print(f"ec2_endpoint: listen {args.listen}: {e}", file=sys.stderr)
        return 2
    bound = server.server_address
    shown = f"[{bound[0]}]" if family == socket.AF_INET6 else bound[0]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                              name="serve")
    thread.start()
    write_ready(args.ready_file, f"{shown}:{bound[1]}\n")
    while not stop.wait(timeout=1.0):
        if not thread.is_alive():
            break
    server.world.release.set()  # let held answers go, so their threads end
    server.shutdown()
    thread.join()
    server.server_close()
    if log_file:
        log_file.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
