#!/usr/bin/python3
"""Builds the SSM Distributor package of tripline-agent from built .deb files.

  make_distributor.py --deb-dir DIR --out DIR

For every tripline-agent_<version>_<arch>.deb in --deb-dir (one version; any of amd64, arm64) it
writes <out>/tripline-agent_<version>_debian12_<arch>.zip holding the .deb and the install,
uninstall and update scripts, and <out>/manifest.json listing each file per platform and
architecture with its SHA-256. Upload the zips and the manifest to one S3 prefix and register
them with `aws ssm create-document --document-type Package` (docs/operations.md).

The zips are reproducible: fixed member order, times and modes.
"""

import argparse
import hashlib
import json
import os
import re
import sys
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = ("install.sh", "uninstall.sh", "update.sh")
# Debian architecture -> Distributor architecture.
ARCHES = {"amd64": "x86_64", "arm64": "arm64"}
# The packages link against Debian 12's libraries (dpkg-shlibdeps): no other release.
PLATFORM, PLATFORM_VERSION = "debian", "12"
DEB_NAME = re.compile(r"^tripline-agent_([A-Za-z0-9.+~]+)_([a-z0-9]+)\.deb$")
ZIP_TIME = (2020, 1, 1, 0, 0, 0)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def add(zf, name, path, mode):
    info = zipfile.ZipInfo(name, ZIP_TIME)
    info.external_attr = (0o100000 | mode) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    with open(path, "rb") as f:
        zf.writestr(info, f.read())


def build(deb_dir, out_dir):
    debs = {}
    for name in sorted(os.listdir(deb_dir)):
        m = DEB_NAME.match(name)
        if not m:
            continue
        version, arch = m.groups()
        if arch not in ARCHES:
            raise SystemExit(f"{name}: architecture {arch} has no Distributor name ({', '.join(ARCHES)})")
        debs[arch] = (version, os.path.join(deb_dir, name))
    if not debs:
        raise SystemExit(f"no tripline-agent_<version>_<arch>.deb in {deb_dir}: run cpack first")
    versions = {v for v, _ in debs.values()}
    if len(versions) != 1:
        raise SystemExit(f"{deb_dir} holds several versions {sorted(versions)}: keep one")
    version = versions.pop()

    os.makedirs(out_dir, exist_ok=True)
    manifest = {
        "schemaVersion": "2.0",
        "version": version,
        "publisher": "Tripline",
        "packages": {PLATFORM: {PLATFORM_VERSION: {}}},
        "files": {},
    }
    for arch, (_, deb) in sorted(debs.items()):
        zip_name = f"tripline-agent_{version}_{PLATFORM}{PLATFORM_VERSION}_{ARCHES[arch]}.zip"
        zip_path = os.path.join(out_dir, zip_name)
        tmp = zip_path + ".tmp"
        with zipfile.ZipFile(tmp, "w") as zf:
            for script in SCRIPTS:
                add(zf, script, os.path.join(HERE, "distributor", script), 0o755)
            add(zf, os.path.basename(deb), deb, 0o644)
        os.replace(tmp, zip_path)
        manifest["packages"][PLATFORM][PLATFORM_VERSION][ARCHES[arch]] = {"file": zip_name}
        manifest["files"][zip_name] = {"checksums": {"sha256": sha256(zip_path)}}

    path = os.path.join(out_dir, "manifest.json")
    with open(path + ".tmp", "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(path + ".tmp", path)
    return path, manifest


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--deb-dir", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    path, manifest = build(args.deb_dir, args.out)
    for name, entry in sorted(manifest["files"].items()):
        print(f"{entry['checksums']['sha256']}  {name}")
    print(f"wrote {path} (version {manifest['version']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
