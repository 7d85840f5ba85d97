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

# apt's signature check with less around it (pim-seal undoes this too). apt checks each release
# file through apt-key, a shell script that reads apt's configuration eight times (apt-config) and
# dearmors each trusted .asc keyring with a pair of processes of its own: some forty processes,
# 3 to 5 s under TCG, for each of the three release files of every `apt-get update`, even when
# nothing changed. For the build, apt calls PIM's apt-key instead (Dir::Bin::apt-key). For the call
# apt makes to check a release file without Signed-By, it takes the same keyrings by the same rules
# with one apt-config, one cat and one awk, and runs the same gpgv with the same arguments on them;
# any other use, and anything unexpected on the way, goes to Debian's apt-key.
cat > /usr/lib/pim-build/apt-key <<'SH'
#!/bin/bash
# PIM build: apt-key's verify, with the trusted keyrings gathered in a few processes (see pim-prepare).
set -uo pipefail
real=/usr/bin/apt-key
[ "$#" -gt 3 ] && [ "$1" = --quiet ] && [ "$2" = --readonly ] && [ "$3" = verify ] || exec "$real" "$@"
shift 3
TRUSTEDFILE=/etc/apt/trusted.gpg TRUSTEDPARTS=/etc/apt/trusted.gpg.d GPGV=''
settings=$(apt-config shell TRUSTEDFILE Apt::GPGV::TrustedKeyring TRUSTEDFILE Dir::Etc::Trusted/f \
  TRUSTEDPARTS Dir::Etc::TrustedParts/d GPGV Apt::Key::gpgvcommand) || exec "$real" --quiet --readonly verify "$@"
eval "$settings"
if [ -z "$GPGV" ] || ! command -v "$GPGV" > /dev/null; then
  GPGV=$(command -v gpgv || command -v gpgv2 || command -v gpgv1) || exec "$real" --quiet --readonly verify "$@"
fi
# apt-key's warnings, as it gives them (before gpgv's lines): on apt's status fd, which apt shows,
# and on stderr.
statusfd='' args=("$@") warnings=()
for ((i = 0; i + 1 < ${#args[@]}; i++)); do [ "${args[i]}" = --status-fd ] && statusfd=${args[i + 1]} && break; done
case "$statusfd" in *[!0-9]*) exec "$real" --quiet --readonly verify "$@" ;; esac
warn() { warnings+=("$1"); }
# apt-key's rules: a keyring counts when it is not empty and readable; a .gpg one when it starts
# with an OpenPGP public key packet (0x98, 0x99 or 0xc6); an .asc one is dearmored.
binary=() armored=()
keyring() {
  local tag=''
  [ -s "$1" ] || return 0
  if [ ! -r "$1" ]; then warn "The key(s) in the keyring $1 are ignored as the file is not readable by user '${USER-}' executing apt-key."; return 0; fi
  case "$1" in
    *.gpg) LC_ALL=C IFS= read -r -d '' -n 1 tag < "$1" 2> /dev/null
           case "$tag" in
             $'\x98'|$'\x99'|$'\xc6') binary+=("$1") ;;
             *) warn "The key(s) in the keyring $1 are ignored as the file has an unsupported filetype." ;;
           esac ;;
    *.asc) armored+=("$1") ;;
    *) warn "The key(s) in the keyring $1 are ignored as the file has an unsupported filename extension." ;;
  esac
}
keyring "$TRUSTEDFILE"
shopt -s nullglob dotglob
for part in "${TRUSTEDPARTS%/}"/*; do case "$part" in *.gpg | *.asc) keyring "$part" ;; esac; done
home=$(mktemp --directory --tmpdir 'apt-key-gpghome.XXXXXXXXXX') || exec "$real" --quiet --readonly verify "$@"
trap 'rm -rf "$home"' EXIT
# The binary keyrings as they are, then apt-key's dearmoring of the .asc ones (the base64 lines of
# each block, its checksum line left out), all of them in one awk.
gather() {
  if [ "${#binary[@]}" -gt 0 ]; then cat -- "${binary[@]}" || return 1; fi
  if [ "${#armored[@]}" -gt 0 ]; then
    awk 'FNR == 1 { x = 0 } /^-----BEGIN/ { x = 1 } /^$/ { if (x == 1) x = 2 } /^[^=-]/ { if (x == 2) print } /^-----END/ { x = 0 }' "${armored[@]}" | base64 -d || return 1
  fi
}
if ! gather > "$home/pubring.gpg"; then
  rm -rf "$home"
  exec "$real" --quiet --readonly verify "$@"
fi
for w in "${warnings[@]}"; do
  echo "W: $w" >&2
  if [ -n "$statusfd" ]; then echo "[APTKEY:] WARNING $w" >&"$statusfd"; fi
done
"$GPGV" --homedir "$home" --keyring "$home/pubring.gpg" --ignore-time-conflict "$@"
SH
chmod 755 /usr/lib/pim-build/apt-key
echo 'Dir::Bin::apt-key "/usr/lib/pim-build/apt-key";' > /etc/apt/apt.conf.d/99pim-build-apt-key

# update-rc.d without its `systemctl daemon-reload` where that reload changes nothing (pim-seal
# undoes this too). Debian's update-rc.d ends every call with a daemon-reload (about 1.5 s under
# TCG), and a package with init scripts calls it for each of them in its postinst, and twice more
# for each `systemctl enable` of such a unit (systemd-sysv-install): about fifteen times while
# `base` installs cloud-init. The reload lets systemd see a unit that systemd-sysv-generator makes
# from an init script; a script that has a native unit gets none, so for such a script PIM's
# wrapper runs Debian's update-rc.d with DPKG_ROOT=/ (the same root, which update-rc.d takes as
# "do not reload"). The links it makes are the same; a script without a native unit, or a call
# that already sets DPKG_ROOT, goes to Debian's update-rc.d as it is.
cat > /usr/lib/pim-build/update-rc.d <<'SH'
#!/bin/sh
# PIM build: Debian's update-rc.d, without its daemon-reload for a script with a native unit (see pim-prepare).
real=/usr/sbin/update-rc.d.pim-real
units="/etc/systemd/system /run/systemd/system /lib/systemd/system /usr/lib/systemd/system"
if [ -z "${DPKG_ROOT:-}" ]; then
  name=''
  for arg in "$@"; do case "$arg" in -*) ;; *) name=$arg; break ;; esac; done
  case "$name" in ''|*/*) exec "$real" "$@" ;; esac
  for dir in $units; do
    if [ -e "$dir/$name.service" ]; then DPKG_ROOT=/ exec "$real" "$@"; fi
  done
fi
exec "$real" "$@"
SH
chmod 755 /usr/lib/pim-build/update-rc.d

# The wrapped commands are dpkg diversions: a package upgraded meanwhile puts its new command under
# the diverted name, and pim-seal puts Debian's back.
# There is no moment without the command (update-rc.d's package is Essential): Debian's file is
# copied to the diverted name, then the link replaces it.
for cmd in /usr/bin/py3compile /usr/bin/py3clean /usr/sbin/update-rc.d; do
  if ! dpkg-divert --list "$cmd" | grep -q "$cmd.pim-real"; then
    dpkg-divert --local --no-rename --divert "$cmd.pim-real" --add "$cmd" > /dev/null
    if [ -e "$cmd" ]; then cp -a "$cmd" "$cmd.pim-real"; fi
  fi
  ln -sfn "/usr/lib/pim-build/${cmd##*/}" "$cmd"
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
