#!/bin/bash
# PIM's own preparation: runs first, as root, before the profile's scripts (it is PIM's, not
# the profile's, and cannot be overridden). It brings the installed packages up to date, so that
# an image ships with its suite's security updates applied (build.upgrade, default true).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

# Less work in the guest while it is being built (pim-seal undoes both): dpkg does not fsync every
# file it unpacks (the build disk is finished with a clean power-off, or thrown away), and man-db
# does not rebuild its index after every package.
mkdir -p /etc/dpkg/dpkg.cfg.d
echo force-unsafe-io > /etc/dpkg/dpkg.cfg.d/pim-build-unsafe-io
# (man-db's trigger runs only while /var/lib/man-db/auto-update exists; pim-seal puts it back.)
if [ -e /var/lib/man-db/auto-update ]; then rm -f /var/lib/man-db/auto-update && touch /var/lib/man-db/.pim-auto-update-off; fi

if [ "${PIM_UPGRADE:-1}" != 1 ]; then
  echo "build.upgrade is false: packages left as the installer put them"
  exit 0
fi
# The installer updated the package lists minutes ago in this build: another apt-get update would
# find the same lists and still cost 10-20 s under TCG (apt checks each InRelease signature again
# through apt-key, a shell script of some twenty processes). A list file's ctime is when apt last
# stored it (its mtime is the mirror's date), so the check errs towards updating. Lists older than
# an hour (a rebuild from a cached install layer) are updated.
fresh_for=3600
now=$(date +%s)
oldest=""
for list in /var/lib/apt/lists/*Release; do
  [ -e "$list" ] || continue
  stored=$(stat -c %Z "$list")
  if [ -z "$oldest" ] || [ "$stored" -lt "$oldest" ]; then oldest=$stored; fi
done
if [ -n "$oldest" ] && [ $((now - oldest)) -ge 0 ] && [ $((now - oldest)) -lt "$fresh_for" ]; then
  echo "package lists stored $((now - oldest)) s ago (by the installer): not updated again"
else
  apt-get update
fi
pending=$(apt-get -s full-upgrade | grep -c '^Inst ' || true)
if [ "$pending" = 0 ]; then
  # Each apt-get run costs seconds under TCG: nothing to upgrade, nothing more to run.
  echo "upgrade done: 0 package(s) still upgradable (none was pending)"
  exit 0
fi
echo "upgrading ${pending} package(s)"
apt-get -y -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold full-upgrade
apt-get -y autoremove --purge
left=$(apt-get -s full-upgrade | grep -c '^Inst ' || true)
echo "upgrade done: ${left} package(s) still upgradable"
