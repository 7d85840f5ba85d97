#!/bin/bash
# PIM's own preparation: runs first, as root, before the profile's scripts (it is PIM's, not
# the profile's, and cannot be overridden). It brings the installed packages up to date, so that
# an image ships with its suite's security updates applied (build.upgrade, default true).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

if [ "${PIM_UPGRADE:-1}" != 1 ]; then
  echo "build.upgrade is false: packages left as the installer put them"
  exit 0
fi
apt-get update
pending=$(apt-get -s full-upgrade | grep -c '^Inst ' || true)
echo "upgrading ${pending} package(s)"
apt-get -y -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold full-upgrade
apt-get -y autoremove --purge
left=$(apt-get -s full-upgrade | grep -c '^Inst ' || true)
echo "upgrade done: ${left} package(s) still upgradable"
