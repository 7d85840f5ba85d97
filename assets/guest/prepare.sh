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

# Python byte-code is compiled in the background while dpkg goes on (pim-seal undoes this too).
# Each Python package's postinst runs py3compile, serially, on one vCPU: under TCG that is about a
# third of installing cloud-init. For the build, py3compile queues its work (one job at a time, on
# the vCPU dpkg leaves idle) and returns; py3clean, which runs before a package's files go, waits
# for the queue first, so a package is never compiled after its files are gone. PIM waits for the
# queue after every script and fails the script if a queued compile failed (wait-python-compile
# --report), so a layer never holds half of it. The commands are dpkg diversions, so a package
# upgraded meanwhile puts its new py3compile under the diverted name.
mkdir -p /usr/lib/pim-build
cat > /usr/lib/pim-build/py3compile <<'SH'
#!/bin/bash
# PIM build: Debian's py3compile, queued to run in the background (see pim-prepare).
real=/usr/bin/py3compile.pim-real
queue=/run/pim-python-compile
# No real py3compile (python3-minimal not installed): as if there were none.
[ -x "$real" ] || exit 0
mkdir -p "$queue" && job=$(mktemp "$queue/job.XXXXXX") || exec "$real" "$@"
printf 'py3compile %s\n' "$*" > "$job"
(
  # None of the postinst's open files: debconf and dpkg wait until every copy of their pipes
  # is closed, so a job holding one would make the postinst wait for the whole queue.
  for fd in $(ls /proc/$BASHPID/fd); do if [ "$fd" -gt 2 ]; then eval "exec $fd>&-"; fi; done 2> /dev/null
  exec < /dev/null > /dev/null 2>&1 9> "$queue/lock"
  flock 9
  "$real" "$@" > "$job.log" 2>&1
  echo $? > "$job.rc.new" && mv "$job.rc.new" "$job.rc"
) &
exit 0
SH
cat > /usr/lib/pim-build/py3clean <<'SH'
#!/bin/sh
# PIM build: Debian's py3clean, after the queued compiles (see pim-prepare).
/usr/lib/pim-build/wait-python-compile
exec /usr/bin/py3clean.pim-real "$@"
SH
cat > /usr/lib/pim-build/wait-python-compile <<'SH'
#!/bin/sh
# PIM build: waits until no queued py3compile is left. With --report: prints each one that
# failed, forgets the finished ones, and exits 1 if one failed.
queue=/run/pim-python-compile
[ -d "$queue" ] || exit 0
while :; do
  pending=""
  for job in "$queue"/job.??????; do
    if [ -e "$job" ] && [ ! -e "$job.rc" ]; then pending=1; fi
  done
  [ -z "$pending" ] && break
  sleep 0.2
done
[ "$1" = --report ] || exit 0
status=0
for job in "$queue"/job.??????; do
  [ -e "$job" ] || continue
  rc=$(cat "$job.rc")
  if [ "$rc" != 0 ]; then
    echo "pim: $(cat "$job"), run in the background, failed (exit $rc); its last lines:"
    tail -n 20 "$job.log"
    status=1
  fi
  rm -f "$job" "$job.rc" "$job.log"
done
exit $status
SH
chmod 755 /usr/lib/pim-build/py3compile /usr/lib/pim-build/py3clean /usr/lib/pim-build/wait-python-compile
for cmd in py3compile py3clean; do
  if ! dpkg-divert --list "/usr/bin/$cmd" | grep -q "/usr/bin/$cmd.pim-real"; then
    dpkg-divert --local --rename --divert "/usr/bin/$cmd.pim-real" --add "/usr/bin/$cmd" > /dev/null
  fi
  ln -sfn "/usr/lib/pim-build/$cmd" "/usr/bin/$cmd"
done

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
