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
# Which release files (InRelease) the package lists came from, with their SHA-256: PIM keeps them
# with the upgrade layer, and reuses that layer only while the mirror still serves the same ones.
# (apt names each source's InRelease; a mirror without one gave apt its Release.)
record_release_files() {
  local uris
  if ! uris=$(apt-get update --print-uris 2>&1); then
    echo "warning: apt-get update --print-uris failed, no release file recorded: ${uris##*$'\n'}"
    return 0
  fi
  while read -r uri file _; do
    uri=${uri//\'/}
    case "$file" in *_InRelease) ;; *) continue ;; esac
    if [ ! -f "/var/lib/apt/lists/$file" ]; then
      file=${file%_InRelease}_Release uri=${uri%/InRelease}/Release
      [ -f "/var/lib/apt/lists/$file" ] || continue
    fi
    echo "pim-release $(sha256sum < "/var/lib/apt/lists/$file" | cut -d" " -f1) $uri"
  done <<< "$uris"
}

# When this build's installer has just fetched the package lists (PIM_LISTS_FRESH=1), another
# apt-get update would find the same lists and still cost 10-20 s under TCG (apt checks each
# InRelease signature again through apt-key, a shell script of some twenty processes). A cached
# install layer's lists are as old as the layer: updated.
if [ "${PIM_LISTS_FRESH:-0}" = 1 ] && compgen -G "/var/lib/apt/lists/*Release" >/dev/null; then
  echo "package lists fetched by this build's installer: not updated again"
else
  echo "package lists from a cached install layer: updating them"
  apt-get update
fi
pending=$(apt-get -s full-upgrade | grep -c '^Inst ' || true)
if [ "$pending" = 0 ]; then
  # Each apt-get run costs seconds under TCG: nothing to upgrade, nothing more to run.
  echo "upgrade done: 0 package(s) still upgradable (none was pending)"
  record_release_files
  exit 0
fi
echo "upgrading ${pending} package(s)"
apt-get -y -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold full-upgrade
apt-get -y autoremove --purge
left=$(apt-get -s full-upgrade | grep -c '^Inst ' || true)
echo "upgrade done: ${left} package(s) still upgradable"
record_release_files
