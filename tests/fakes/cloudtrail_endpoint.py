#!/usr/bin/python3
"""A local, strict CloudTrail LookupEvents endpoint for tests (JSON 1.1 protocol).

Every API request must be a SigV4-signed POST to "/" with Content-Type application/x-amz-json-1.1
and X-Amz-Target com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.LookupEvents. The
signature is recomputed with botocore (see ec2_endpoint.verify_sigv4; the credential scope must
name the service "cloudtrail" and one of the served regions). Answers use CloudTrail's shapes:
{"Events": [{"EventId", "EventName", "ReadOnly", "AccessKeyId", "EventTime" (epoch seconds),
"EventSource", "Username", "Resources", "CloudTrailEvent" (the record as a JSON string)}],
"NextToken"}, newest first, at most MaxResults (1-50, default 50) per page; errors are
{"__type": CODE, "message": ...} with HTTP 400.

Events are fed by tests as CloudTrail records (the documents CloudTrailEvent holds); the fake
derives the item's fields from them as CloudTrail does. A record appears at the endpoint when it
is fed, with the eventTime it carries.

Usage:
  cloudtrail_endpoint.py --listen 127.0.0.1:0 --ready-file PATH --region us-east-1 [--region ...]
      --access-key AKID --secret-key SECRET [--session-token T] [--log-file PATH]

Admin paths (no signature, loopback clients only):
  POST /_tripline/records {"region": R, "records": [RECORD, ...]}: adds records (objects).
  POST /_tripline/items   {"region": R, "items": [ITEM, ...]}: adds LookupEvents items verbatim,
                          for malformed shapes (one without a numeric "EventTime" is found at
                          the time it was fed).
  POST /_tripline/inject  {"code": "ThrottlingException", "count": N, "http_status": 400,
                           "message": optional}: the next N signed calls fail so.
  GET  /_tripline/calls   every API call so far, oldest first (JSON list): region, StartTime,
                          EndTime, MaxResults, whether a NextToken was sent, events returned,
                          whether one came back, http status, error code, signature check.

Exits 0 on SIGTERM or SIGINT.
"""

import argparse
import base64
import datetime
import json
import os
import re
import signal
import socket
import sys
import threading
import time
import uuid
from http.server import ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ec2_endpoint import (AuthError, LocalAwsHandler, parse_listen, verify_sigv4,  # noqa: E402
                          write_ready)

TARGET = "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.LookupEvents"
MAX_BODY = 1 << 20
MAX_ADMIN_BODY = 64 << 20
MAX_CALLS_KEPT = 100000
AUTH_RE = re.compile(r"Credential=[^/\s]+/\d{8}/(?P<region>[^/\s]+)/")


class ApiError(Exception):
    def __init__(self, http_status, code, message):
        super().__init__(f"{code}: {message}")
        self.http_status = http_status
        self.code = code
        self.message = message


def parse_time(text):
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def item_from_record(record):
    """The LookupEvents item CloudTrail shows for `record`."""
    ident = record.get("userIdentity") or {}
    username = ident.get("userName") or (ident.get("sessionContext", {}).get(
        "sessionIssuer", {}).get("userName")) or ident.get("principalId", "")
    resources = []
    for inst in (((record.get("responseElements") or {}).get("instancesSet") or {})
                 .get("items") or []):
        if isinstance(inst, dict) and "instanceId" in inst:
            resources.append({"ResourceType": "AWS::EC2::Instance",
                              "ResourceName": inst["instanceId"]})
    item = {"EventId": record["eventID"], "EventName": record["eventName"],
            "ReadOnly": "true" if record.get("readOnly") else "false",
            "EventTime": parse_time(record["eventTime"]),
            "EventSource": record.get("eventSource", ""), "Username": username,
            "Resources": resources,
            "CloudTrailEvent": json.dumps(record, separators=(",", ":"))}
    if ident.get("accessKeyId"):
        item["AccessKeyId"] = ident["accessKeyId"]
    return item


class World:
    def __init__(self, regions):
        self.lock = threading.Lock()
        self.items = {r: [] for r in regions}  # region -> [item], any order
        self.calls = []
        self.injections = []  # [{"code", "http_status", "message", "count"}]
        self.tokens = {}      # token -> (query key, offset)

    def add(self, region, items, fed_at):
        """Keeps (event time, sort id, item); an item without a numeric EventTime (a malformed
        one a test feeds) is found at the time it was fed."""
        with self.lock:
            if region not in self.items:
                raise ValueError(f"region {region!r} is not served")
            for item in items:
                t = item.get("EventTime") if isinstance(item, dict) else None
                if isinstance(t, bool) or not isinstance(t, (int, float)):
                    t = fed_at
                key = str(item.get("EventId")) if isinstance(item, dict) else ""
                self.items[region].append((float(t), key, item))

    def take_injection(self):
        with self.lock:
            if not self.injections:
                return None
            inj = self.injections[0]
            inj["count"] -= 1
            if inj["count"] <= 0:
                self.injections.pop(0)
            return inj

    def record(self, call):
        with self.lock:
            self.calls.append(call)
            if len(self.calls) > MAX_CALLS_KEPT:
                del self.calls[0]

    def lookup(self, region, start, end, max_results, token):
        with self.lock:
            key = (region, start, end, max_results)
            offset = 0
            if token is not None:
                if token not in self.tokens or self.tokens[token][0] != key:
                    raise ApiError(400, "InvalidNextTokenException",
                                   "The NextToken is not valid for this query.")
                offset = self.tokens[token][1]
            # CloudTrail answers newest first; ties by id so pages are stable.
            found = [e for e in self.items[region]
                     if (start is None or e[0] >= start) and (end is None or e[0] <= end)]
            found.sort(key=lambda e: (-e[0], e[1]))
            page = [e[2] for e in found[offset:offset + max_results]]
            next_token = None
            if offset + max_results < len(found):
                next_token = base64.b64encode(os.urandom(24)).decode()
                self.tokens[next_token] = (key, offset + max_results)
            return page, next_token


def _epoch(body, name):
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ApiError(400, "SerializationException",
                       f"{name}: expected a timestamp in epoch seconds")
    return float(v)


class Handler(LocalAwsHandler):
    server_version = "AmazonCloudTrail"

    def response_headers(self):
        return [("x-amzn-RequestId", str(uuid.uuid4()))]

    def _read(self, limit):
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            raise ApiError(400, "SerializationException", "bad Content-Length")
        if length < 0 or length > limit:
            raise ApiError(413, "RequestEntityTooLarge", f"body over {limit} bytes")
        return self.rfile.read(length) if length else b""

    def do_GET(self):
        if not self._loopback_client():
            self._send_json(403, {"error": "loopback clients only"})
            return
        if self.path == "/_tripline/calls":
            with self.server.world.lock:
                calls = list(self.server.world.calls)
            self._send_json(200, calls)
        else:
            self.close_connection = True
            self._send_json(404, {"error": "not found"})

    def _admin(self):
        world = self.server.world
        try:
            spec = json.loads(self._read(MAX_ADMIN_BODY) or b"{}")
            if not isinstance(spec, dict):
                raise ValueError("expected an object")
            if self.path == "/_tripline/records":
                items = [item_from_record(r) for r in spec["records"]]
                world.add(spec["region"], items, time.time())
            elif self.path == "/_tripline/items":
                if not isinstance(spec["items"], list):
                    raise ValueError("items must be a list")
                world.add(spec["region"], spec["items"], time.time())
            elif self.path == "/_tripline/inject":
                code = spec.get("code", "ThrottlingException")
                count = spec.get("count", 1)
                status = spec.get("http_status", 400)
                if not isinstance(code, str) or not re.fullmatch(r"[A-Za-z0-9.#]{1,100}", code):
                    raise ValueError("code must be letters, digits, dots")
                if not isinstance(count, int) or not 1 <= count <= 100000:
                    raise ValueError("count must be 1..100000")
                if not isinstance(status, int) or not 400 <= status <= 599:
                    raise ValueError("http_status must be 400..599")
                message = spec.get("message", "Rate exceeded" if "Throttling" in code
                                   else f"Injected failure {code}")
                with world.lock:
                    world.injections.append({"code": code, "count": count,
                                             "http_status": status, "message": str(message)})
            else:
                raise ValueError(f"unknown admin path {self.path}")
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            self.close_connection = True
            self._send_json(400, {"error": f"bad request: {e}"})
            return
        self._send_json(200, {"ok": True})

    def do_POST(self):
        if not self._loopback_client():
            self._send_json(403, {"error": "loopback clients only"})
            return
        if self.path.startswith("/_tripline/"):
            self._admin()
            return
        world = self.server.world
        call = {"time": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                "target": self.headers.get("X-Amz-Target", ""), "region": None,
                "signature_ok": False, "signature_error": None, "request": {},
                "events_returned": 0, "next_token_returned": False}
        try:
            body = self._read(MAX_BODY)
            auth = self.headers.get("Authorization", "")
            m = AUTH_RE.search(auth)
            region = m.group("region") if m else ""
            call["region"] = region
            if region not in world.items:
                raise ApiError(400, "InvalidSignatureException",
                               f"Credential should be scoped to a served region, not '{region}'.")
            try:
                verify_sigv4("POST", self.path, self.headers.items(), body, self.server.keys,
                             {"cloudtrail": region}, self.server.session_token,
                             datetime.datetime.now(datetime.timezone.utc), call)
                call["signature_ok"] = True
            except AuthError as e:
                call["signature_error"] = e.why
                raise ApiError(400 if e.http_status < 500 else e.http_status,
                               "InvalidSignatureException" if "Signature" in e.code
                               else "UnrecognizedClientException", e.message)
            if self.path != "/":
                raise ApiError(400, "UnknownOperationException", "POST / only")
            if self.headers.get("Content-Type", "") != "application/x-amz-json-1.1":
                raise ApiError(400, "SerializationException",
                               "Content-Type must be application/x-amz-json-1.1")
            if call["target"] != TARGET:
                raise ApiError(400, "UnknownOperationException",
                               f"Unknown operation {call['target']!r}")
            try:
                req = json.loads(body.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                raise ApiError(400, "SerializationException", "body is not JSON")
            if not isinstance(req, dict):
                raise ApiError(400, "SerializationException", "body is not a JSON object")
            unknown = set(req) - {"StartTime", "EndTime", "MaxResults", "NextToken",
                                  "LookupAttributes", "EventCategory"}
            if unknown:
                raise ApiError(400, "SerializationException", f"unknown members {sorted(unknown)}")
            start = _epoch(req, "StartTime")
            end = _epoch(req, "EndTime")
            if start is not None and end is not None and start > end:
                raise ApiError(400, "InvalidTimeRangeException",
                               "Start time should not be later than end time.")
            max_results = req.get("MaxResults", 50)
            if isinstance(max_results, bool) or not isinstance(max_results, int) or \
                    not 1 <= max_results <= 50:
                raise ApiError(400, "InvalidMaxResultsException",
                               "MaxResults must be between 1 and 50.")
            token = req.get("NextToken")
            if token is not None and not isinstance(token, str):
                raise ApiError(400, "SerializationException", "NextToken: expected a string")
            call["request"] = {"StartTime": start, "EndTime": end, "MaxResults": max_results,
                               "NextToken": token is not None}
            inj = world.take_injection()
            if inj:
                raise ApiError(inj["http_status"], inj["code"], inj["message"])
            page, next_token = world.lookup(region, start, end, max_results, token)
            out = {"Events": page}
            if next_token:
                out["NextToken"] = next_token
            call.update({"http_status": 200, "error_code": None, "events_returned": len(page),
                         "event_ids": [str(i.get("EventId")) if isinstance(i, dict) else None
                                       for i in page],
                         "next_token_returned": bool(next_token)})
            self.server.log_call(call)
            self._send(200, "application/x-amz-json-1.1", json.dumps(out))
        except ApiError as e:
            call.update({"http_status": e.http_status, "error_code": e.code,
                         "error_message": e.message})
            self.server.log_call(call)
            self._send(e.http_status, "application/x-amz-json-1.1",
                       json.dumps({"__type": e.code, "message": e.message}))


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = False

    def __init__(self, address, family, world, keys, session_token, log_file):
        self.address_family = family
        self.world = world
        self.keys = keys
        self.session_token = session_token
        self.log_lock = threading.Lock()
        self.log_file = log_file
        super().__init__(address, Handler)

    def log_call(self, call):
        self.world.record(call)
        if self.log_file:
            with self.log_lock:
                self.log_file.write(json.dumps(call, sort_keys=True) + "\n")
                self.log_file.flush()


def main(argv):
    ap = argparse.ArgumentParser(description="Local CloudTrail endpoint for tests (loopback only).")
    ap.add_argument("--listen", required=True)
    ap.add_argument("--ready-file", required=True)
    ap.add_argument("--region", action="append", required=True)
    ap.add_argument("--access-key", required=True)
    ap.add_argument("--secret-key", required=True)
    ap.add_argument("--session-token", default=None)
    ap.add_argument("--log-file", default=None)
    args = ap.parse_args(argv)
    try:
        host, port, family = parse_listen(args.listen)
    except ValueError as e:
        print(f"cloudtrail_endpoint: {e}", file=sys.stderr)
        return 2
    log_file = open(args.log_file, "a", encoding="utf-8") if args.log_file else None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        server = Server((host, port), family, World(args.region),
                        {args.access_key: args.secret_key}, args.session_token, log_file)
    except OSError as e:
        print(f"cloudtrail_endpoint: listen {args.listen}: {e}", file=sys.stderr)
        return 2
    bound = server.server_address
    shown = f"[{bound[0]}]" if family == socket.AF_INET6 else bound[0]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2})
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
