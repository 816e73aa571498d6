#!/usr/bin/env bash
# Installs every package Tripline needs to build, test and run its demo, from Debian 12's archive.
# Idempotent and quiet when everything is already there. Run as root.
set -euo pipefail

packages=(
  # toolchain
  g++ cmake ninja-build make pkg-config
  # libraries
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev
  libsodium-dev libssl-dev libspdlog-dev libyaml-cpp-dev libre2-dev libcurl4-openssl-dev
  libpugixml-dev libsqlite3-dev libcli11-dev libsystemd-dev nlohmann-json3-dev
  # tests: GoogleTest, and Debian's python with botocore (SigV4 checked independently) and grpcio
  libgtest-dev libgmock-dev python3 python3-botocore python3-grpcio python3-protobuf
  # tests: a local SMTP server for the e-mail notifications
  python3-aiosmtpd
  # tools the test scripts and the demo call
  procps sqlite3 openssl ca-certificates
  # packaging: dpkg-shlibdeps and dpkg-buildflags, lintian, systemd-analyze for the units' exposure;
  # the packaging tests read the SSM documents (python3-yaml) and drop privileges like the units
  # do (setpriv, util-linux)
  dpkg-dev lintian systemd python3-yaml util-linux
  # the peer the log tailing benchmark compares with (tests/bench/log_tail)
  rsyslog
)

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [ "$status" = "installed" ] || missing+=("$p")
done
# tests: npm, for the one test tool that comes from the npm registry (below)
command -v npm >/dev/null || missing+=(nodejs npm)

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing packages: ${missing[*]}; run as root (or install them) first" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# tests: buf curl, a generic gRPC client that learns the collector's API through reflection. The
# version and its integrity hash are pinned in .ci/tools/package-lock.json; install scripts are
# not run.
tools="$(cd "$(dirname "$0")" && pwd)/tools"
if [ ! -x "$tools/node_modules/.bin/buf" ]; then
  echo "install-deps: installing buf into $tools/node_modules"
  npm install --prefix "$tools" --no-audit --no-fund --ignore-scripts --loglevel=error >/dev/null
fi
