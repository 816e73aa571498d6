#!/usr/bin/python3
"""A local, strict EC2 Query API endpoint for tests.

Every API request must be a SigV4-signed POST to "/" with a form-encoded body. The signature is
recomputed with botocore (an implementation independent of the client under test) over exactly the
headers the request names in SignedHeaders; the credential scope, the access key, the clock skew and
the session token are checked too. State (instances, their network interfaces, security groups)
lives in memory, seeded from a JSON file. Answers use EC2's XML shapes.

Usage:
  ec2_endpoint.py --listen 127.0.0.1:0 --ready-file PATH --region us-east-1 \
      --access-key AKID --secret-key SECRET --seed SEED.json [--session-token TOKEN] [--log-file PATH]

Admin paths (no signature, loopback clients only):
  GET  /_tripline/calls   every API call so far, oldest first (JSON list)
  GET  /_tripline/state   the current state, in the seed's format (JSON)
  POST /_tripline/inject  {"action": "ModifyNetworkInterfaceAttribute", "code": "RequestLimitExceeded",
                           "http_status": 503, "count": 1, "message": optional}: the next `count`
                          correctly signed calls of that action ("*" for any) fail with that error.

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
API_VERSION = "2016-11-15"
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
    """Reads and checks the seed; returns (instances, groups) in the seed's own format."""
    with open(path, encoding="utf-8") as f:
        seed = json.load(f)
    if not isinstance(seed, dict):
        raise SeedError("seed: not a JSON object")
    unknown = set(seed) - {"instances", "security_groups"}
    if unknown:
        raise SeedError(f"seed: unknown keys {sorted(unknown)}")
    groups = []
    for n, g in enumerate(seed.get("security_groups", [])):
        where = f"security_groups[{n}]"
        gid = _require(g, "group_id", str, where)
        if not gid.startswith("sg-"):
            raise SeedError(f"{where}: group id '{gid}' does not start with sg-")
        groups.append({"group_id": gid, "vpc_id": _require(g, "vpc_id", str, where),
                       "group_name": g.get("group_name", gid)})
    known_groups = {g["group_id"] for g in groups}
    instances = []
    seen_enis = set()
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
        inst = {"instance_id": iid, "vpc_id": _require(i, "vpc_id", str, where), "state": state,
                "iam_instance_profile_arn": i.get("iam_instance_profile_arn", ""),
                "tags": dict(tags), "interfaces": []}
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
                "device_index": int(e.get("device_index", m)), "group_ids": list(gids)})
        instances.append(inst)
    return instances, groups


class World:
    """Instances, interfaces and groups; the call log; injected failures. One lock guards all."""

    def __init__(self, instances, groups):
        self.lock = threading.Lock()
        self.instances = instances
        self.groups = {g["group_id"]: g for g in groups}
        self.group_order = [g["group_id"] for g in groups]
        self.calls = []
        self.injections = []  # dicts: action, code, http_status, count, message

    def snapshot(self):
        with self.lock:
            return {"instances": copy.deepcopy(self.instances),
                    "security_groups": [dict(self.groups[g]) for g in self.group_order]}

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


# ---------------------------------------------------------------------------------------------
# SigV4 verification


class AuthError(Exception):
    def __init__(self, http_status, code, message, why):
        super().__init__(why)
        self.http_status = http_status
        self.code = code
        self.message = message
        self.why = why


def verify_sigv4(method, path, header_items, body, keys, region, session_token, now, info):
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
    if scope_region != region:
        raise AuthError(401, "SignatureDoesNotMatch",
                        f"Credential should be scoped to a valid region, not '{scope_region}'.",
                        f"credential scope region {scope_region!r}, expected {region!r}")
    if scope_service != "ec2":
        raise AuthError(401, "SignatureDoesNotMatch",
                        "Credential should be scoped to correct service: 'ec2'. ",
                        f"credential scope service {scope_service!r}, expected 'ec2'")

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
    signer = SigV4Auth(Credentials(access_key, keys[access_key]), "ec2", region)
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


def _interface_xml(world, inst, eni):
    groups = "".join(
        f"<item><groupId>{escape(g)}</groupId><groupName>"
        f"{escape(world.groups[g]['group_name'] if g in world.groups else g)}</groupName></item>"
        for g in eni["group_ids"])
    suffix = eni["interface_id"][4:]
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
        "<privateIpAddressesSet><item>"
        f"<privateIpAddress>{escape(eni['private_ip'])}</privateIpAddress>"
        "<primary>true</primary>"
        "</item></privateIpAddressesSet>"
        "<ipv6AddressesSet/>"
        "<interfaceType>interface</interfaceType>"
        "</item>")


def _instance_xml(world, inst):
    primary = next((e for e in inst["interfaces"] if e["device_index"] == 0), None)
    tags = "".join(f"<item><key>{escape(k)}</key><value>{escape(v)}</value></item>"
                   for k, v in sorted(inst["tags"].items()))
    groups = ""
    if primary:
        groups = "".join(
            f"<item><groupId>{escape(g)}</groupId><groupName>"
            f"{escape(world.groups[g]['group_name'] if g in world.groups else g)}</groupName></item>"
            for g in primary["group_ids"])
    profile = ""
    if inst["iam_instance_profile_arn"]:
        profile = (f"<iamInstanceProfile><arn>{escape(inst['iam_instance_profile_arn'])}</arn>"
                   "<id>AIPAEXAMPLEPROFILEID1</id></iamInstanceProfile>")
    enis = "".join(_interface_xml(world, inst, e) for e in inst["interfaces"])
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
        + "<sourceDestCheck>true</sourceDestCheck>"
        f"<groupSet>{groups}</groupSet>"
        "<architecture>x86_64</architecture>"
        "<rootDeviceType>ebs</rootDeviceType><rootDeviceName>/dev/xvda</rootDeviceName>"
        "<blockDeviceMapping/>"
        "<virtualizationType>hvm</virtualizationType>"
        f"<tagSet>{tags}</tagSet>"
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
    return (f'<DescribeInstancesResponse xmlns="{XMLNS}">'
            f"<requestId>{request_id}</requestId>"
            f"<reservationSet>{reservations}</reservationSet>"
            "</DescribeInstancesResponse>")


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
        _dry_run(params)
        eni["group_ids"] = group_ids
    return (f'<ModifyNetworkInterfaceAttributeResponse xmlns="{XMLNS}">'
            f"<requestId>{request_id}</requestId><return>true</return>"
            "</ModifyNetworkInterfaceAttributeResponse>")


ACTIONS = {
    "DescribeInstances": describe_instances,
    "ModifyNetworkInterfaceAttribute": modify_network_interface_attribute,
}


def error_xml(code, message, request_id):
    return ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            f"<Response><Errors><Error><Code>{escape(code)}</Code>"
            f"<Message>{escape(message)}</Message></Error></Errors>"
            f"<RequestID>{request_id}</RequestID></Response>")


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


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "AmazonEC2"
    sys_version = ""

    def log_message(self, fmt, *args):  # quiet: the call log says what happened
        pass

    def _send(self, status, content_type, body):
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_json(self, status, obj):
        self._send(status, "application/json", json.dumps(obj, indent=1, sort_keys=True) + "\n")

    def _loopback_client(self):
        try:
            return ipaddress.ip_address(self.client_address[0]).is_loopback
        except ValueError:
            return False

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
                             self.server.region, self.server.session_token,
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
            if action not in ACTIONS:
                raise ApiError(400, "InvalidAction",
                               f"The action {action} is not valid for this web service.")
            if params.get("Version") != API_VERSION:
                raise ApiError(400, "InvalidParameterValue" if "Version" in params
                               else "MissingParameter",
                               f"This endpoint serves Version={API_VERSION} only")
            inj = self.server.world.take_injection(action)
            if inj:
                raise ApiError(inj["http_status"], inj["code"], inj["message"])
            xml = ACTIONS[action](self.server.world, params, request_id)
            call.update({"http_status": 200, "error_code": None})
            self.server.log_call(call)
            self._send(200, "text/xml;charset=UTF-8",
                       "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n" + xml)
        except ApiError as e:
            call.update({"http_status": e.http_status, "error_code": e.code,
                         "error_message": e.message})
            self.server.log_call(call)
            self._send(e.http_status, "text/xml;charset=UTF-8",
                       error_xml(e.code, e.message, request_id))

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
            if not isinstance(action, str) or not (action == "*" or action in ACTIONS):
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
        instances, groups = load_seed(args.seed)
    except (ValueError, SeedError, OSError) as e:
        print(f"ec2_endpoint: {e}", file=sys.stderr)
        return 2

    log_file = open(args.log_file, "a", encoding="utf-8") if args.log_file else None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        server = Server((host, port), family, World(instances, groups),
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
    server.shutdown()
    thread.join()
    server.server_close()
    if log_file:
        log_file.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
