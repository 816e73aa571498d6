#!/usr/bin/python3
"""A local instance metadata service (IMDSv2) and container credentials endpoint for tests.

IMDSv2: PUT /latest/api/token (X-aws-ec2-metadata-token-ttl-seconds) gives a token every GET must
carry as X-aws-ec2-metadata-token (401 without it, as IMDSv2 requires). Serves instance-id,
placement/region, iam/security-credentials/ and the role's credentials, and the instance identity
document (dynamic/instance-identity/document) with its signatures (.../rsa2048 and .../pkcs7:
base64 of a DER PKCS#7 signedData carrying the document, without the signer's certificate, as AWS
serves them) made with --identity-key/--identity-cert (the test's CA; openssl CLI). Without them
the identity paths are 404. Container: GET
/v2/credentials/ID with "Authorization: TOKEN" (when --container-token is given).

Each credentials answer is fresh: AccessKeyId AKIDIMDS000N / Token token-N with N counting up,
expiring --lifetime seconds from now, so a test sees when a client fetched again. With
--fixed-key/--fixed-secret/--fixed-token every answer carries those instead (to sign real calls).

Admin: GET /_tripline/requests (JSON list of "METHOD path"). Loopback only; exits 0 on SIGTERM.

Usage: imds_endpoint.py --listen 127.0.0.1:0 --ready-file PATH [--instance-id I] [--region R]
       [--role ROLE] [--lifetime S] [--container-token T] [--fixed-key K --fixed-secret S
       --fixed-token T] [--identity-cert PEM --identity-key PEM] [--account-id A]
       [--document-instance-id I] (a document naming another instance than instance-id)
"""

import argparse
import datetime
import ipaddress
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def _send(self, status, body, ctype="text/plain"):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _credentials(self):
        s = self.server
        with s.lock:
            s.issued += 1
            n = s.issued
        expires = (datetime.datetime.now(datetime.timezone.utc) +
                   datetime.timedelta(seconds=s.args.lifetime)).strftime("%Y-%m-%dT%H:%M:%SZ")
        a = s.args
        return json.dumps({
            "Code": "Success", "Type": "AWS-HMAC",
            "LastUpdated": datetime.datetime.now(datetime.timezone.utc).strftime(
                "%Y-%m-%dT%H:%M:%SZ"),
            "AccessKeyId": a.fixed_key or f"AKIDIMDS{n:04d}",
            "SecretAccessKey": a.fixed_secret or f"imds-secret-{n}",
            "Token": a.fixed_token or f"token-{n}",
            "Expiration": expires})

    def _record(self):
        with self.server.lock:
            self.server.requests.append(f"{self.command} {self.path}")

    def do_PUT(self):
        self._record()
        if self.path != "/latest/api/token":
            self._send(404, "not found")
            return
        if self.server.args.token_status != 200:  # e.g. 403: IMDS turned off for the instance
            self._send(self.server.args.token_status, "token refused")
            return
        ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
        if not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
            self._send(400, "bad ttl")
            return
        token = secrets.token_urlsafe(24)
        with self.server.lock:
            self.server.tokens.add(token)
        self._send(200, token)

    def do_GET(self):
        if not ipaddress.ip_address(self.client_address[0]).is_loopback:
            self._send(403, "loopback only")
            return
        a = self.server.args
        if self.path == "/_tripline/requests":
            with self.server.lock:
                self._send(200, json.dumps(self.server.requests), "application/json")
            return
        self._record()
        if self.path.startswith("/v2/credentials/"):
            if a.container_token and self.headers.get("Authorization") != a.container_token:
                self._send(403, json.dumps({"message": "bad authorization"}), "application/json")
                return
            self._send(200, self._credentials(), "application/json")
            return
        with self.server.lock:
            ok = self.headers.get("X-aws-ec2-metadata-token") in self.server.tokens
        if not ok:
            self._send(401, "")
            return
        paths = {
            "/latest/meta-data/instance-id": a.instance_id,
            "/latest/meta-data/placement/region": a.region,
            "/latest/meta-data/iam/security-credentials/": a.role if a.role else None,
            "/latest/dynamic/instance-identity/document": self.server.document,
            "/latest/dynamic/instance-identity/rsa2048": self.server.signature,
            "/latest/dynamic/instance-identity/pkcs7": self.server.signature,
        }
        if a.role and self.path == f"/latest/meta-data/iam/security-credentials/{a.role}":
            self._send(200, self._credentials(), "text/plain")
        elif paths.get(self.path):
            self._send(200, paths[self.path])
        else:
            self._send(404, "not found")


def identity_document(args):
    """The document as IMDS formats it (pretty-printed JSON, nulls included)."""
    return json.dumps({
        "accountId": args.account_id,
        "architecture": "x86_64",
        "availabilityZone": args.region + "a",
        "billingProducts": None,
        "devpayProductCodes": None,
        "marketplaceProductCodes": None,
        "imageId": "ami-0test00000000001",
        "instanceId": args.document_instance_id or args.instance_id,
        "instanceType": "t3.micro",
        "kernelId": None,
        "pendingTime": "2026-11-23T18:00:00Z",
        "privateIp": "10.0.1.5",
        "ramdiskId": None,
        "region": args.region,
        "version": "2017-09-30",
    }, indent=2)


def sign_document(document, cert, key):
    """Base64 (64-column lines, no PEM armour) of a DER PKCS#7 signedData holding `document`."""
    with tempfile.TemporaryDirectory() as d:
        doc = os.path.join(d, "document")
        with open(doc, "w") as f:
            f.write(document)
        r = subprocess.run(["openssl", "smime", "-sign", "-binary", "-nodetach", "-nocerts",
                            "-md", "sha256", "-in", doc, "-signer", cert, "-inkey", key,
                            "-outform", "PEM"], capture_output=True, check=True)
    lines = r.stdout.decode().strip().splitlines()
    return "\n".join(l for l in lines if not l.startswith("-----"))


def main(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True)
    ap.add_argument("--ready-file", required=True)
    ap.add_argument("--instance-id", default="i-0collector0000001")
    ap.add_argument("--region", default="eu-west-1")
    ap.add_argument("--role", default="collector-role")
    ap.add_argument("--lifetime", type=int, default=3600)
    ap.add_argument("--container-token", default=None)
    ap.add_argument("--fixed-key", default=None)
    ap.add_argument("--fixed-secret", default=None)
    ap.add_argument("--fixed-token", default=None)
    ap.add_argument("--identity-cert", default=None)
    ap.add_argument("--identity-key", default=None)
    ap.add_argument("--account-id", default="111122223333")
    ap.add_argument("--document-instance-id", default=None)
    ap.add_argument("--token-status", type=int, default=200)
    args = ap.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    if not ipaddress.ip_address(host).is_loopback:
        print("imds_endpoint: refusing a non-loopback address", file=sys.stderr)
        return 2
    server = ThreadingHTTPServer((host, int(port)), Handler)
    server.daemon_threads = True
    server.args = args
    server.document = server.signature = None
    if args.identity_cert and args.identity_key:
        server.document = identity_document(args)
        server.signature = sign_document(server.document, args.identity_cert, args.identity_key)
    server.lock = threading.Lock()
    server.tokens = set()
    server.requests = []
    server.issued = 0
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2})
    thread.start()
    tmp = args.ready_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{server.server_address[0]}:{server.server_address[1]}\n")
    os.rename(tmp, args.ready_file)
    stop.wait()
    server.shutdown()
    thread.join()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
