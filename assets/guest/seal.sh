#!/bin/bash
# PIM's seal: runs last, after finalize, as root. It is PIM's, not the profile's, and cannot be
# overridden: it makes what every finished image promises true whatever the scripts did --
# no login anyone knows, no SSH password logins, networking and /etc/hosts left to cloud-init,
# no build journal, logs or proxy setting.
#   PIM_BUILD_USER          the user the build logged in as
#   PIM_BUILD_USER_POLICY   lock (default): sudo rule removed, password locked;
#                           remove: the account deleted; keep: left as it is (PIM warns)
set -euo pipefail
user=${PIM_BUILD_USER:?}
policy=${PIM_BUILD_USER_POLICY:-lock}
echo "=== PIM seal (build user ${user}: ${policy}) ==="

# --- The build user, and root: nobody keeps a password PIM's profile knows.
drop_sudo_rules() {
  rm -f /etc/sudoers.d/90-pim-user
  # Any other sudoers.d line that names the user (a profile's own install template may add one).
  for f in /etc/sudoers.d/*; do
    [ -f "$f" ] || continue
    awk -v u="$user" '$1 != u' "$f" > "$f.pim" && cat "$f.pim" > "$f" && rm -f "$f.pim"
  done
  for group in sudo admin wheel; do
    if id -nG "$user" 2>/dev/null | tr ' ' '\n' | grep -qx "$group"; then gpasswd -d "$user" "$group" >/dev/null; fi
  done
}
case "$policy" in
  lock)
    drop_sudo_rules
    usermod -L "$user"
    passwd -l root >/dev/null 2>&1 || true
    echo "build user ${user}: password locked, sudo rights removed"
    ;;
  remove)
    drop_sudo_rules
    passwd -l root >/dev/null 2>&1 || true
    # -f: the build is still logged in as this user (this very command runs under its sudo).
    userdel -f -r "$user" 2>/dev/null || userdel -f "$user"
    echo "build user ${user}: removed"
    ;;
  keep)
    echo "build user ${user}: kept with its password and sudo rule (build.build_user: keep)"
    ;;
  *) echo "unknown build user policy '${policy}'" >&2; exit 2 ;;
esac

# --- SSH: no password logins. Set in sshd_config itself, right after its Include line, not in a
# drop-in of our own: cloud-init (22.x) rewrites this line for a deploy's `ssh_pwauth: true`,
# and newer cloud-init writes a drop-in that the Include reads first -- either way user-data can
# turn password logins on again, which a drop-in of ours would prevent.
cfg=/etc/ssh/sshd_config
if [ -f "$cfg" ]; then
  sed -i -E '/^[[:space:]]*(PasswordAuthentication|KbdInteractiveAuthentication|ChallengeResponseAuthentication)[[:space:]]/d' "$cfg"
  if grep -q '^Include[[:space:]]' "$cfg"; then
    sed -i '0,/^Include[[:space:]].*/s//&\nPasswordAuthentication no\nKbdInteractiveAuthentication no/' "$cfg"
  else
    sed -i '1i PasswordAuthentication no\nKbdInteractiveAuthentication no' "$cfg"
  fi
fi
rm -f /etc/ssh/ssh_host_*

# --- cloud-init owns first boot: hosts file, password SSH default, host key types (no DSA).
if [ -d /etc/cloud/cloud.cfg.d ]; then
  cat > /etc/cloud/cloud.cfg.d/95_pim_image.cfg <<'CFG'
# Written by PIM's seal. A deploy's user-data may override any of these.
ssh_pwauth: false
manage_etc_hosts: true
ssh_genkeytypes: [rsa, ecdsa, ed25519]
CFG
fi
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n' > /etc/hosts

# --- The installer's network stanza goes: cloud-init renders the network of each clone, and two
# stanzas for one NIC mean two DHCP clients.
if [ -f /etc/network/interfaces ]; then
  awk '
    /^(auto|allow-hotplug|allow-auto)[ \t]/ { kept = ""; for (i = 2; i <= NF; i++) if ($i == "lo") kept = kept " lo"; if (kept != "") print $1 kept; skip = 0; next }
    /^iface[ \t]/ { skip = ($2 != "lo"); if (!skip) print; next }
    /^[ \t]+[^ \t]/ { if (!skip) print; next }
    { skip = 0; print }
  ' /etc/network/interfaces > /etc/network/interfaces.pim
  cat /etc/network/interfaces.pim > /etc/network/interfaces
  rm -f /etc/network/interfaces.pim
fi

# --- What pim-prepare switched off for the build's speed comes back.
rm -f /etc/dpkg/dpkg.cfg.d/pim-build-unsafe-io /etc/apt/apt.conf.d/99pim-build-apt-key
if [ -e /var/lib/man-db/.pim-auto-update-off ]; then
  rm -f /var/lib/man-db/.pim-auto-update-off
  touch /var/lib/man-db/auto-update
fi
# Debian's py3compile, py3clean and update-rc.d are back in place (PIM waited for the queued
# compiles after finalize; waiting again costs nothing).
if [ -d /usr/lib/pim-build ]; then
  /usr/lib/pim-build/wait-python-compile
  for cmd in /usr/bin/py3compile /usr/bin/py3clean /usr/sbin/update-rc.d; do
    if [ -L "$cmd" ] && [ "$(readlink "$cmd")" = "/usr/lib/pim-build/${cmd##*/}" ]; then rm -f "$cmd"; fi
    if dpkg-divert --list "$cmd" | grep -q "$cmd.pim-real"; then
      dpkg-divert --local --rename --divert "$cmd.pim-real" --remove "$cmd" > /dev/null
    fi
  done
  rm -rf /usr/lib/pim-build /run/pim-python-compile
fi

# --- No proxy setting from the build (the installer's mirror/http/proxy, PIM's package cache).
rm -f /etc/apt/apt.conf.d/01proxy /etc/apt/apt.conf.d/01pim-build-proxy
if [ -f /etc/apt/apt.conf ]; then sed -i -E '/Acquire::(http|https|ftp)::Proxy/d' /etc/apt/apt.conf; fi

# --- The build's journal and logs, emptied after their last write: for the rest of this boot
# journald writes to /run only (a runtime setting, gone at the next boot).
if [ -d /run/systemd/system ]; then
  mkdir -p /run/systemd/journald.conf.d
  printf '[Journal]\nStorage=volatile\n' > /run/systemd/journald.conf.d/90-pim-seal.conf
  systemctl restart systemd-journald || true
fi
if [ -d /var/log/journal ]; then find /var/log/journal -mindepth 1 -delete; fi
rm -rf /var/log/installer
find /var/log -type f -exec truncate -s 0 {} +
rm -f /root/.bash_history /home/*/.bash_history

# Blocks freed since finalize's fstrim (the journal) go back to the host too.
sync
fstrim -a >/dev/null 2>&1 || true
echo "=== seal complete ==="
