#!/usr/bin/python3
"""Builds the Debian packages and the SSM Distributor package from a configured, built tree (used
by `make package` and by the packaging tests' ctest fixture `packaging_debs`):

  build_packages.py --build-dir BUILD --out DIR

DIR/debs/tripline-{agent,collector}_<version>_<arch>.deb (cpack -G DEB), DIR/ssm/manifest.json and
its zips (packaging/ssm/make_distributor.py). DIR is emptied first.
"""

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    debs = os.path.join(args.out, "debs")
    os.makedirs(debs)
    # cpack stages installed trees (executables included) in its directory: keep that outside the
    # build tree, where tests look for the programs they run.
    staging = tempfile.mkdtemp(prefix="tripline-cpack-")
    try:
        subprocess.run(["cpack", "-G", "DEB", "--config",
                        os.path.join(args.build_dir, "CPackConfig.cmake"), "-B", staging],
                       check=True)
        built = glob.glob(os.path.join(staging, "*.deb"))
        names = sorted(os.path.basename(p).split("_")[0] for p in built)
        if names != ["tripline-agent", "tripline-collector"]:
            print(f"expected tripline-agent and tripline-collector, cpack made {built}",
                  file=sys.stderr)
            return 1
        for p in built:
            shutil.move(p, debs)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "packaging", "ssm", "make_distributor.py"),
                    "--deb-dir", debs, "--out", os.path.join(args.out, "ssm")], check=True)
    for p in sorted(os.listdir(debs)):
        print(os.path.join(debs, p))
    return 0


if __name__ == "__main__":
    sys.exit(main())
