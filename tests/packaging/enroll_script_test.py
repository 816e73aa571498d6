#!/usr/bin/python3
"""Tests packaging/scripts/tripline-agent-enroll against a copy of the shipped agent.yaml whose
files point into a temporary directory (no package, no service: --no-start).

Checks: agent_id and the collector address are set and the result still parses as YAML (an IPv6
address included), every other line is kept, the CA and the token land where agent.yaml says with
their modes, a second run changes nothing, an existing token file with the same value keeps its
owner and mode, bad arguments exit 2 without touching anything, and the token is never printed.
Runs as root (the script refuses otherwise). Exit status 0 only when every check held.
"""

import os
import shutil
import stat
import subprocess
import sys
import tempfile

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SCRIPT = os.path.join(ROOT, "packaging", "scripts", "tripline-agent-enroll")
SHIPPED = os.path.join(ROOT, "packaging", "config", "agent.yaml")
TOKEN = "0123456789abcdef" * 4
CA = "-----BEGIN CERTIFICATE-----\nMIIBdummy+/=\n-----END CERTIFICATE-----\n"

failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)


def main():
    tmp = tempfile.mkdtemp(prefix="tripline-enroll-test-")
    try:
        config = os.path.join(tmp, "agent.yaml")
        with open(SHIPPED) as f:
            shipped = f.read()
        text = (shipped.replace("/etc/tripline/collector-ca.pem", f"{tmp}/etc/collector-ca.pem")
                       .replace("/etc/tripline/enrollment-token", f"{tmp}/etc/enrollment-token")
                       .replace("/var/lib/tripline", f"{tmp}/state"))
        with open(config, "w") as f:
            f.write(text)
        ca = os.path.join(tmp, "ca.pem")
        with open(ca, "w") as f:
            f.write(CA)

        def enroll(*args, token=TOKEN, env_extra=None):
            env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TRIPLINE_"))}
            if token is not None:
                env["TRIPLINE_ENROLLMENT_TOKEN"] = token
            env.update(env_extra or {})
            r = subprocess.run(["sh", SCRIPT, "--config", config, "--no-start", *args],
                               capture_output=True, text=True, env=env, timeout=60)
            check(TOKEN not in r.stdout + r.stderr, f"{args}: the token was printed")
            return r

        r = enroll("--collector", "[fd00::1]:7443", "--ca-file", ca,
                   env_extra={"AWS_SSM_INSTANCE_ID": "i-0abc123"})
        check(r.returncode == 0, f"first run: exit {r.returncode}: {r.stderr}")
        with open(config) as f:
            after = f.read()
        doc = yaml.safe_load(after)
        check(doc.get("agent_id") == "i-0abc123", f"agent_id: {doc.get('agent_id')!r}")
        check(doc["collector"]["address"] == "[fd00::1]:7443",
              f"collector.address: {doc['collector']['address']!r}")
        changed = [(a, b) for a, b in zip(text.splitlines(), after.splitlines()) if a != b]
        check(len(text.splitlines()) == len(after.splitlines()) and len(changed) == 2,
              f"expected exactly two lines changed, got {changed}")
        token_path = f"{tmp}/etc/enrollment-token"
        st = os.stat(token_path)
        check(stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0, f"token mode {oct(st.st_mode)}")
        with open(token_path) as f:
            check(f.read() == TOKEN + "\n", "token content")
        check(stat.S_IMODE(os.stat(f"{tmp}/etc/collector-ca.pem").st_mode) == 0o644, "CA mode")
        check(stat.S_IMODE(os.stat(config).st_mode) == 0o644, "agent.yaml mode")

        # Again, --agent-id wins over the SSM variable; the same token file is left alone.
        os.chown(token_path, 0, 4242)
        os.chmod(token_path, 0o640)
        r = enroll("--collector", "[fd00::1]:7443", "--ca-file", ca, "--agent-id", "i-0abc123",
                   env_extra={"AWS_SSM_INSTANCE_ID": "i-0other"})
        check(r.returncode == 0, f"second run: exit {r.returncode}: {r.stderr}")
        with open(config) as f:
            check(f.read() == after, "a second run with the same values changed agent.yaml")
        st = os.stat(token_path)
        check((stat.S_IMODE(st.st_mode), st.st_gid) == (0o640, 4242),
              "an unchanged token file lost its owner or mode")
        # A new token keeps the file's owner and mode.
        r = enroll("--collector", "[fd00::1]:7443", "--ca-file", ca, "--agent-id", "i-0abc123",
                   token="f" * 64)
        st = os.stat(token_path)
        check(r.returncode == 0 and (stat.S_IMODE(st.st_mode), st.st_gid) == (0o640, 4242),
              f"a new token did not keep the file's owner and mode: {r.stderr}")

        # An EC2 instance id from SSM or IMDS is not written: the agent reads it from IMDSv2 and
        # proves it with the identity document. Twice gives the same file; --agent-id writes it.
        for _ in range(2):
            r = enroll("--collector", "[fd00::1]:7443", "--ca-file", ca,
                       env_extra={"AWS_SSM_INSTANCE_ID": "i-0123456789abcdef0"})
            check(r.returncode == 0 and "from IMDSv2, not written" in r.stdout,
                  f"EC2 id run: exit {r.returncode}: {r.stdout} {r.stderr}")
            with open(config) as f:
                ec2 = f.read()
            check("agent_id" not in (yaml.safe_load(ec2) or {}),
                  f"an EC2 instance id was written to agent.yaml: {ec2}")
        r = enroll("--collector", "[fd00::1]:7443", "--ca-file", ca, "--agent-id", "i-0abc123")
        with open(config) as f:
            check(f.read() == after, "--agent-id after an EC2 run did not restore the file")

        # Refusals: exit 2, agent.yaml untouched.
        with open(config) as f:
            before = f.read()
        bad = [
            (["--collector", "collector:7443';reboot;'", "--ca-file", ca, "--agent-id", "i-1"], TOKEN),
            (["--collector", "collector.internal", "--ca-file", ca, "--agent-id", "i-1"], TOKEN),
            (["--collector", "c:1", "--ca-file", ca, "--agent-id", "i-1"], None),
            (["--collector", "c:1", "--ca-file", ca, "--agent-id", "i-1"], "short"),
            (["--collector", "c:1", "--ca-file", ca, "--agent-id", "i-1"], TOKEN + "'"),
            (["--collector", "c:1", "--ca-file", ca, "--agent-id", "i 1"], TOKEN),
            (["--collector", "c:1", "--ca-file", config, "--agent-id", "i-1"], TOKEN),
            (["--collector", "c:1", "--ca-file", ca, "--wait", "soon"], TOKEN),
            (["--bogus"], TOKEN),
        ]
        for args, token in bad:
            r = enroll(*args, token=token)
            check(r.returncode == 2 and r.stderr.startswith("tripline-agent-enroll: "),
                  f"{args} token={token!r}: exit {r.returncode}, stderr {r.stderr!r}")
        with open(config) as f:
            check(f.read() == before, "a refused run changed agent.yaml")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for f in failures:
        print("FAIL:", f, file=sys.stderr)
    print("PASS" if not failures else "FAILED")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
