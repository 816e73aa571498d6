#!/usr/bin/python3
"""Tests of the local EC2 endpoint itself, with requests signed by botocore: it must accept a
correct signature and reject a tampered body, a missing signature, an unknown key, a stale date and
unsigned headers, so the C++ client's tests cannot pass against an endpoint that accepts anything.

Run: /usr/bin/python3 ec2_endpoint_test.py [unittest options]
"""

import datetime
import http.client
import json
import os
import signal
import subprocess
import tempfile
import time
import unittest
import urllib.parse

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

HERE = os.path.dirname(os.path.abspath(__file__))
FAKE = os.path.normpath(os.path.join(HERE, "..", "..", "..", "fakes", "ec2_endpoint.py"))
REGION = "us-east-1"
ACCESS_KEY = "AKIDENDPOINTTEST0001"
SECRET_KEY = "endpoint-test-secret"
INSTANCE = "i-0123456789abcdef0"

SEED = {
    "instances": [{
        "instance_id": INSTANCE, "vpc_id": "vpc-1", "state": "running",
        "iam_instance_profile_arn": "arn:aws:iam::111122223333:instance-profile/web",
        "tags": {"Name": "web-1"},
        "volumes": [{"device_name": "/dev/xvda", "volume_id": "vol-1"}],
        "interfaces": [{"interface_id": "eni-1", "subnet_id": "subnet-1",
                        "private_ip": "10.0.0.5", "device_index": 0,
                        "group_ids": ["sg-web", "sg-ssh"]}],
    }],
    "security_groups": [
        {"group_id": "sg-web", "vpc_id": "vpc-1", "group_name": "web"},
        {"group_id": "sg-ssh", "vpc_id": "vpc-1", "group_name": "ssh",
         "ingress": [{"protocol": "tcp", "from_port": 22, "to_port": 22, "cidr": "0.0.0.0/0"}]},
        {"group_id": "sg-iso", "vpc_id": "vpc-1", "group_name": "isolation", "egress": []},
        {"group_id": "sg-open", "vpc_id": "vpc-1", "group_name": "open"},
        {"group_id": "sg-other", "vpc_id": "vpc-2", "group_name": "elsewhere"},
    ],
    "instance_profiles": {"web": {"roles": ["web-role"]}},
    "flows": [
        {"id": "shell", "interface_id": "eni-1", "protocol": "tcp", "port": 22,
         "remote": "198.51.100.66"},
        {"id": "ping", "interface_id": "eni-1", "protocol": "icmp", "remote": "198.51.100.66"},
    ],
}


def wait_for(what, fn, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class Endpoint:
    """One running fake endpoint in a temporary directory."""

    def __init__(self, extra_args=()):
        self.dir = tempfile.TemporaryDirectory(prefix="ec2-endpoint-test-")
        seed = os.path.join(self.dir.name, "seed.json")
        with open(seed, "w") as f:
            json.dump(SEED, f)
        self.ready = os.path.join(self.dir.name, "ready")
        self.proc = subprocess.Popen(
            ["/usr/bin/python3", FAKE, "--listen", "127.0.0.1:0", "--ready-file", self.ready,
             "--region", REGION, "--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY,
             "--seed", seed, *extra_args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"endpoint exited: {self.proc.stderr.read().decode()}")
            if not os.path.exists(self.ready):
                return None
            with open(self.ready) as f:
                return f.read()
        host, port = wait_for("the endpoint", ready).strip().rsplit(":", 1)
        self.host, self.port = host, int(port)

    def close(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stderr.close()
        self.dir.cleanup()

    def raw(self, method, path, body=b"", headers=None):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read().decode()
        finally:
            conn.close()

    def signed(self, params, access_key=ACCESS_KEY, secret=SECRET_KEY, region=REGION,
               token=None, tamper=None, drop_header=None, service="ec2"):
        """POSTs params signed by botocore; tamper(body) changes the body after signing."""
        body = urllib.parse.urlencode(params).encode()
        req = AWSRequest(method="POST", url=f"http://{self.host}:{self.port}/", data=body,
                         headers={"Content-Type":
                                  "application/x-www-form-urlencoded; charset=utf-8"})
        SigV4Auth(Credentials(access_key, secret, token), service, region).add_auth(req)
        headers = dict(req.headers.items())
        if drop_header:
            del headers[drop_header]
        if tamper:
            body = tamper(body)
        return self.raw("POST", "/", body, headers)

    def post_admin(self, what, obj):
        status, text = self.raw("POST", f"/_tripline/{what}", json.dumps(obj).encode(),
                                {"Content-Type": "application/json"})
        assert status == 200, (status, text)
        return json.loads(text)

    def admin(self, what):
        status, text = self.raw("GET", f"/_tripline/{what}")
        assert status == 200, (status, text)
        return json.loads(text)


def error_code(text):
    start = text.find("<Code>")
    return text[start + 6:text.find("</Code>")] if start >= 0 else None


class EndpointTest(unittest.TestCase):
    def setUp(self):
        self.ep = Endpoint()
        self.addCleanup(self.ep.close)

    def test_correct_botocore_signature_is_accepted(self):
        status, text = self.ep.signed({"Action": "DescribeInstances", "Version": "2016-11-15",
                                       "InstanceId.1": INSTANCE})
        self.assertEqual(status, 200, text)
        self.assertIn(f"<instanceId>{INSTANCE}</instanceId>", text)
        self.assertIn('xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"', text)
        calls = self.ep.admin("calls")
        self.assertEqual(len(calls), 1)
        self.assertTrue(calls[0]["signature_ok"])
        self.assertEqual(calls[0]["action"], "DescribeInstances")

    def test_tampered_body_is_rejected(self):
        # Same length, different group: a signature over the old body must not pass.
        status, text = self.ep.signed(
            {"Action": "ModifyNetworkInterfaceAttribute", "Version": "2016-11-15",
             "NetworkInterfaceId": "eni-1", "SecurityGroupId.1": "sg-iso"},
            tamper=lambda b: b.replace(b"sg-iso", b"sg-web"))
        self.assertEqual(status, 401, text)
        self.assertEqual(error_code(text), "SignatureDoesNotMatch")
        state = self.ep.admin("state")
        self.assertEqual(state["instances"][0]["interfaces"][0]["group_ids"], ["sg-web", "sg-ssh"])
        self.assertFalse(self.ep.admin("calls")[0]["signature_ok"])

    def test_missing_signature_is_rejected(self):
        status, text = self.ep.raw(
            "POST", "/", b"Action=DescribeInstances&Version=2016-11-15",
            {"Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(status, 401, text)
        self.assertEqual(error_code(text), "MissingAuthenticationToken")
        self.assertIn("<RequestID>", text)

    def test_unknown_access_key_is_rejected(self):
        status, text = self.ep.signed({"Action": "DescribeInstances", "Version": "2016-11-15"},
                                      access_key="AKIDSOMEONEELSE00001")
        self.assertEqual(status, 401, text)
        self.assertEqual(error_code(text), "AuthFailure")

    def test_wrong_secret_is_rejected(self):
        status, text = self.ep.signed({"Action": "DescribeInstances", "Version": "2016-11-15"},
                                      secret="not-the-secret")
        self.assertEqual(status, 401, text)
        self.assertEqual(error_code(text), "SignatureDoesNotMatch")

    def test_header_added_after_signing_is_rejected(self):
        body = b"Action=DescribeInstances&Version=2016-11-15"
        req = AWSRequest(method="POST", url=f"http://{self.ep.host}:{self.ep.port}/", data=body)
        SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "ec2", REGION).add_auth(req)
        headers = dict(req.headers.items())
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        status, text = self.ep.raw("POST", "/", body, headers)
        self.assertEqual((status, error_code(text)), (401, "SignatureDoesNotMatch"), text)
        self.assertIn("not signed", self.ep.admin("calls")[0]["signature_error"])

    def test_other_region_scope_is_rejected(self):
        status, text = self.ep.signed({"Action": "DescribeInstances", "Version": "2016-11-15"},
                                      region="eu-west-1")
        self.assertEqual(status, 401, text)
        self.assertEqual(error_code(text), "SignatureDoesNotMatch")
        self.assertIn("eu-west-1", text)

    def test_stale_date_is_rejected(self):
        old = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=6)
        body = b"Action=DescribeInstances&Version=2016-11-15"
        req = AWSRequest(method="POST", url=f"http://{self.ep.host}:{self.ep.port}/", data=body,
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
        signer = SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "ec2", REGION)
        stamp = old.strftime("%Y%m%dT%H%M%SZ")
        req.context["timestamp"] = stamp
        req.headers["X-Amz-Date"] = stamp
        canonical = signer.canonical_request(req)
        sig = signer.signature(signer.string_to_sign(req, canonical), req)
        scope = f"{ACCESS_KEY}/{stamp[:8]}/{REGION}/ec2/aws4_request"
        headers = dict(req.headers.items())
        headers["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders="
                                    f"{signer.signed_headers(signer.headers_to_sign(req))}, "
                                    f"Signature={sig}")
        status, text = self.ep.raw("POST", "/", body, headers)
        self.assertEqual(error_code(text), "RequestExpired", text)
        self.assertEqual(status, 400)

    def test_session_token_must_match(self):
        ep = Endpoint(["--session-token", "TOKEN-1"])
        self.addCleanup(ep.close)
        params = {"Action": "DescribeInstances", "Version": "2016-11-15"}
        status, text = ep.signed(params, token="TOKEN-1")
        self.assertEqual(status, 200, text)
        call = ep.admin("calls")[0]
        self.assertTrue(call["security_token_signed"])
        status, text = ep.signed(params, token="TOKEN-2")
        self.assertEqual(error_code(text), "AuthFailure", text)
        status, text = ep.signed(params)
        self.assertEqual(error_code(text), "AuthFailure", text)

    def test_modify_then_describe_shows_new_groups(self):
        status, text = self.ep.signed(
            {"Action": "ModifyNetworkInterfaceAttribute", "Version": "2016-11-15",
             "NetworkInterfaceId": "eni-1", "SecurityGroupId.1": "sg-iso"})
        self.assertEqual(status, 200, text)
        self.assertIn("<return>true</return>", text)
        self.assertEqual(self.ep.admin("state")["instances"][0]["interfaces"][0]["group_ids"],
                         ["sg-iso"])

    def test_semantic_errors_use_ec2_codes(self):
        cases = [
            ({"Action": "DescribeInstances", "InstanceId.1": "i-0000000000000dead"},
             "InvalidInstanceID.NotFound"),
            ({"Action": "ModifyNetworkInterfaceAttribute", "NetworkInterfaceId": "eni-9",
              "SecurityGroupId.1": "sg-iso"}, "InvalidNetworkInterfaceID.NotFound"),
            ({"Action": "ModifyNetworkInterfaceAttribute", "NetworkInterfaceId": "eni-1",
              "SecurityGroupId.1": "sg-nope"}, "InvalidGroup.NotFound"),
            ({"Action": "ModifyNetworkInterfaceAttribute", "NetworkInterfaceId": "eni-1",
              "SecurityGroupId.1": "sg-other"}, "InvalidGroup.NotFound"),
            ({"Action": "TerminateInstances"}, "InvalidAction"),
            ({"Action": "DescribeInstances", "Filter.1.Name": "x"}, "UnknownParameter"),
            ({"Action": "DescribeInstances", "DryRun": "true"}, "DryRunOperation"),
        ]
        for params, code in cases:
            params = {"Version": "2016-11-15", **params}
            status, text = self.ep.signed(params)
            self.assertEqual(error_code(text), code, (params, text))
            self.assertGreaterEqual(status, 400)
        self.assertEqual(self.ep.admin("state")["instances"][0]["interfaces"][0]["group_ids"],
                         ["sg-web", "sg-ssh"])

    def test_injected_failure_applies_count_times(self):
        body = json.dumps({"action": "DescribeInstances", "code": "RequestLimitExceeded",
                           "http_status": 503, "count": 2}).encode()
        status, text = self.ep.raw("POST", "/_tripline/inject", body,
                                   {"Content-Type": "application/json"})
        self.assertEqual(status, 200, text)
        params = {"Action": "DescribeInstances", "Version": "2016-11-15"}
        for _ in range(2):
            status, text = self.ep.signed(params)
            self.assertEqual((status, error_code(text)), (503, "RequestLimitExceeded"))
        status, text = self.ep.signed(params)
        self.assertEqual(status, 200, text)

    def ec2(self, action, **params):
        return self.ep.signed({"Action": action, "Version": "2016-11-15", **params})

    def flows(self):
        return {f["id"]: f for f in self.ep.admin("state")["flows"]}

    def test_tracked_flow_survives_a_plain_swap_but_not_untrack_then_isolate(self):
        # A plain swap into a group with no rules: the tracked shell stays up.
        status, text = self.ec2("ModifyNetworkInterfaceAttribute", NetworkInterfaceId="eni-1",
                                **{"SecurityGroupId.1": "sg-iso"})
        self.assertEqual(status, 200, text)
        self.assertTrue(self.flows()["shell"]["alive"])
        self.assertTrue(self.flows()["shell"]["tracked"])
        # Through a group that allows everything both ways, it becomes untracked...
        status, text = self.ec2("AuthorizeSecurityGroupIngress", GroupId="sg-open",
                                **{"IpPermissions.1.IpProtocol": "-1",
                                   "IpPermissions.1.IpRanges.1.CidrIp": "0.0.0.0/0"})
        self.assertEqual(status, 200, text)
        self.ec2("ModifyNetworkInterfaceAttribute", NetworkInterfaceId="eni-1",
                 **{"SecurityGroupId.1": "sg-open"})
        self.assertFalse(self.flows()["shell"]["tracked"])
        self.assertTrue(self.flows()["shell"]["alive"])
        # ...and dies as soon as no rule allows it; ICMP stays tracked, and alive.
        self.ec2("ModifyNetworkInterfaceAttribute", NetworkInterfaceId="eni-1",
                 **{"SecurityGroupId.1": "sg-iso"})
        self.assertFalse(self.flows()["shell"]["alive"])
        self.assertTrue(self.flows()["ping"]["alive"])

    def test_untracked_flow_dies_when_its_allowing_rule_is_revoked(self):
        self.ec2("AuthorizeSecurityGroupIngress", GroupId="sg-open",
                 **{"IpPermissions.1.IpProtocol": "-1",
                    "IpPermissions.1.IpRanges.1.CidrIp": "0.0.0.0/0"})
        self.ec2("ModifyNetworkInterfaceAttribute", NetworkInterfaceId="eni-1",
                 **{"SecurityGroupId.1": "sg-open"})
        self.assertFalse(self.flows()["shell"]["tracked"])
        status, text = self.ec2("RevokeSecurityGroupEgress", GroupId="sg-open",
                                **{"IpPermissions.1.IpProtocol": "-1",
                                   "IpPermissions.1.IpRanges.1.CidrIp": "0.0.0.0/0"})
        self.assertEqual(status, 200, text)
        self.assertTrue(self.flows()["shell"]["alive"])  # ingress still allows it
        status, text = self.ec2("RevokeSecurityGroupEgress", GroupId="sg-open",
                                **{"IpPermissions.1.IpProtocol": "-1",
                                   "IpPermissions.1.IpRanges.1.CidrIp": "0.0.0.0/0"})
        self.assertEqual(error_code(text), "InvalidPermission.NotFound")

    def test_modify_instance_attribute_takes_one_attribute_per_call(self):
        status, text = self.ec2("ModifyInstanceAttribute", InstanceId=INSTANCE,
                                **{"DisableApiTermination.Value": "true",
                                   "InstanceInitiatedShutdownBehavior.Value": "stop"})
        self.assertEqual(error_code(text), "InvalidParameterCombination")
        status, text = self.ec2("ModifyInstanceAttribute", InstanceId=INSTANCE,
                                **{"BlockDeviceMapping.1.DeviceName": "/dev/xvda",
                                   "BlockDeviceMapping.1.Ebs.DeleteOnTermination": "false"})
        self.assertEqual(status, 200, text)
        self.assertFalse(self.ep.admin("state")["instances"][0]["volumes"][0]["delete_on_termination"])
        status, text = self.ec2("ModifyInstanceAttribute", InstanceId=INSTANCE, DryRun="true",
                                **{"DisableApiTermination.Value": "true"})
        self.assertEqual((status, error_code(text)), (412, "DryRunOperation"))
        self.assertFalse(self.ep.admin("state")["instances"][0]["disable_api_termination"])

    def test_iam_must_be_signed_for_iam_in_us_east_1_and_answers_in_iam_shapes(self):
        params = {"Action": "GetInstanceProfile", "Version": "2010-05-08",
                  "InstanceProfileName": "web"}
        status, text = self.ep.signed(params, service="iam", region="us-east-1")
        self.assertEqual(status, 200, text)
        self.assertIn("<RoleName>web-role</RoleName>", text)
        self.assertIn("<ResponseMetadata><RequestId>", text)
        status, text = self.ep.signed(params, service="iam", region="eu-west-1")
        self.assertEqual(error_code(text), "SignatureDoesNotMatch")
        status, text = self.ep.signed({**params, "InstanceProfileName": "nope"}, service="iam",
                                      region="us-east-1")
        self.assertEqual((status, error_code(text)), (404, "NoSuchEntity"))
        self.assertIn("<ErrorResponse", text)

    def test_held_call_is_carried_out_and_answered_after_release(self):
        import threading
        self.ep.post_admin("hold", {"call": 1})
        result = {}
        t = threading.Thread(target=lambda: result.update(
            answer=self.ec2("CreateTags", **{"ResourceId.1": INSTANCE, "Tag.1.Key": "k",
                                             "Tag.1.Value": "v"})))
        t.start()
        wait_for("the held call", lambda: [c for c in self.ep.admin("calls") if c.get("held")])
        self.assertEqual(self.ep.admin("state")["instances"][0]["tags"]["k"], "v")
        self.assertNotIn("answer", result)
        self.ep.post_admin("release", {})
        t.join(10)
        self.assertEqual(result["answer"][0], 200)

    def test_refuses_non_loopback_listen_address(self):
        with tempfile.TemporaryDirectory() as d:
            seed = os.path.join(d, "seed.json")
            with open(seed, "w") as f:
                json.dump(SEED, f)
            r = subprocess.run(
                ["/usr/bin/python3", FAKE, "--listen", "0.0.0.0:0", "--ready-file",
                 os.path.join(d, "ready"), "--region", REGION, "--access-key", ACCESS_KEY,
                 "--secret-key", SECRET_KEY, "--seed", seed],
                capture_output=True, timeout=60)
            self.assertEqual(r.returncode, 2)
            self.assertIn(b"non-loopback", r.stderr)
            self.assertFalse(os.path.exists(os.path.join(d, "ready")))

    def test_exits_cleanly_on_sigterm(self):
        self.ep.proc.send_signal(signal.SIGTERM)
        self.assertEqual(self.ep.proc.wait(timeout=10), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
