#!/bin/bash
# PIM finalize (runs last, as root): make the image a clean template for cloud-init.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
echo "=== PIM finalize ==="

# cloud-init runs again, from scratch, on the first boot of every clone.
if command -v cloud-init >/dev/null; then cloud-init clean --logs --seed; fi

# A new machine-id per clone (an empty file makes systemd generate one at boot).
truncate -s 0 /etc/machine-id
rm -f /var/lib/dbus/machine-id

# New SSH host keys per clone (cloud-init or pim-ssh-host-keys.service make them at boot).
rm -f /etc/ssh/ssh_host_*

# Package caches and lists.
apt-get clean
rm -rf /var/lib/apt/lists/*

# Logs, shell histories, temp files.
journalctl --rotate >/dev/null 2>&1 || true
journalctl --vacuum-time=1s >/dev/null 2>&1 || true
find /var/log -type f -exec truncate -s 0 {} +
rm -f /root/.bash_history /home/*/.bash_history /root/.lesshst /home/*/.lesshst
rm -rf /tmp/* /tmp/.[!.]* /var/tmp/* 2>/dev/null || true

# The build's throw-away SSH key: remove it from every authorized_keys.
comment=${PIM_BUILD_KEY_COMMENT:-pim-build-}
for keys in /root/.ssh/authorized_keys /home/*/.ssh/authorized_keys; do
  [ -f "$keys" ] || continue
  grep -v -F -- "$comment" "$keys" > "$keys.pim" || true
  cat "$keys.pim" > "$keys"
  rm -f "$keys.pim"
  [ -s "$keys" ] || rm -f "$keys"
done

# Hand unused blocks back to the host so the final qcow2 stays small.
sync
fstrim -av || true
echo "=== finalize complete ==="
