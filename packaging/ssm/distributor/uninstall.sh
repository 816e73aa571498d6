#!/bin/sh
# Distributor uninstall for tripline-agent: removes the package but keeps its configuration and
# /var/lib/tripline (the agent's key), so a reinstall keeps the instance's enrolled identity.
# `apt-get purge tripline-agent` removes those too.
set -eu
export DEBIAN_FRONTEND=noninteractive
if dpkg-query -W -f='${db:Status-Status}' tripline-agent 2>/dev/null | grep -q '^installed$'; then
  apt-get remove -y -q -o DPkg::Lock::Timeout=300 tripline-agent
fi
echo "uninstall.sh: tripline-agent removed (configuration and key kept)"
