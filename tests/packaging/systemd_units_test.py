#!/usr/bin/python3
"""Checks the hardening of the packaged systemd units.

Each unit must carry the settings the packages promise (below), and its exposure as
`systemd-analyze security --offline=true` scores it must stay at or under 2.0 (the score is
printed, so a run shows the figures). Exit status 0 only when every check held.
"""

import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
UNITS = os.path.join(os.path.dirname(os.path.dirname(HERE)), "packaging", "systemd")

REQUIRED = {
    "tripline-agent.service": {
        "User": "root",
        "CapabilityBoundingSet": "CAP_DAC_READ_SEARCH",
        "AmbientCapabilities": "",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ReadWritePaths": "/var/lib/tripline",
        "StateDirectoryMode": "0700",
        "ProtectHome": "read-only",
        "MemoryMax": None,
        "Restart": "on-failure",
        "RestartPreventExitStatus": "2",
        "ExecStart": "/usr/sbin/tripline-agent --config /etc/tripline/agent.yaml",
    },
    "tripline-collector.service": {
        "User": "tripline-collector",
        "Group": "tripline-collector",
        "CapabilityBoundingSet": "",
        "AmbientCapabilities": "",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "StateDirectory": "tripline-collector",
        "PrivateUsers": "yes",
        "MemoryMax": None,
        "Restart": "on-failure",
        "RestartPreventExitStatus": "2",
        "ExecStart": "/usr/sbin/tripline-collector --config /etc/tripline/collector.yaml",
    },
}
MAX_EXPOSURE = 2.0


def settings(path):
    out = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith(("#", ";", "[")):
                continue
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def main():
    failures = []
    for unit, required in REQUIRED.items():
        path = os.path.join(UNITS, unit)
        have = settings(path)
        for key, want in required.items():
            values = have.get(key)
            if values is None:
                failures.append(f"{unit}: no {key}=")
            elif want is not None and values[-1] != want:
                failures.append(f"{unit}: {key}={values[-1]}, want {key}={want}")
        r = subprocess.run(["systemd-analyze", "security", "--offline=true", path],
                           capture_output=True, text=True)
        m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", r.stdout)
        if not m:
            failures.append(f"{unit}: no exposure score from systemd-analyze: {r.stdout}{r.stderr}")
            continue
        score = float(m.group(1))
        print(f"{unit}: exposure {score} (at most {MAX_EXPOSURE})")
        if score > MAX_EXPOSURE:
            failures.append(f"{unit}: exposure {score} over {MAX_EXPOSURE}")
    for f in failures:
        print("FAIL:", f, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
