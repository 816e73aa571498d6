#!/bin/sh
# Distributor install for tripline-agent: the .deb beside this script, its dependencies from the
# instance's apt sources. A configuration edited on the instance is kept (--force-confold); the
# agent's key is never touched. Enrollment is the Command document's second step.
set -eu
cd "$(dirname "$0")"
set -- tripline-agent_*.deb
if [ $# -ne 1 ] || [ ! -f "$1" ]; then
  echo "install.sh: expected exactly one tripline-agent_*.deb beside this script" >&2
  exit 1
fi
deb=$1
export DEBIAN_FRONTEND=noninteractive
apt_install() {
  apt-get install -y -q -o DPkg::Lock::Timeout=300 \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "./$deb"
}
if ! apt_install; then
  # A fresh instance may have no package lists yet: fetch them once and try again.
  echo "install.sh: retrying after apt-get update" >&2
  apt-get update -q -o DPkg::Lock::Timeout=300
  apt_install
fi
dpkg-query -W -f='install.sh: ${Package} ${Version} ${db:Status-Status}\n' tripline-agent
