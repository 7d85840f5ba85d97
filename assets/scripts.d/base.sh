#!/bin/bash
# PIM base provisioning (runs first, as root): cloud-init, growpart, the QEMU guest agent.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
echo "=== PIM base provisioning ==="

apt-get update
apt-get install -y --no-install-recommends cloud-init cloud-guest-utils qemu-guest-agent

# Datasources: NoCloud (Proxmox, UTM, a cidata ISO) and ConfigDrive, and Ec2 so that the image
# gets its SSH keys and user-data on AWS. strict_id keeps Ec2 from being probed (and first boot
# from waiting on a metadata service) anywhere the DMI data does not say EC2.
cat > /etc/cloud/cloud.cfg.d/90_pim_datasources.cfg <<'CFG'
datasource_list: [ NoCloud, ConfigDrive, Ec2, None ]
datasource:
  Ec2:
    strict_id: true
CFG

systemctl enable cloud-init-local.service cloud-init.service cloud-config.service cloud-final.service
# The guest agent is started by udev when the VM has its virtio-serial channel at boot; a build VM
# has one now, so start it (PIM freezes the file systems through it while it takes a layer). Only
# where the channel exists: without it, systemctl waits 90 s for the device before giving up.
systemctl enable qemu-guest-agent.service 2>/dev/null || true
if [ -e /dev/virtio-ports/org.qemu.guest_agent.0 ]; then
  systemctl start qemu-guest-agent.service 2>/dev/null || true
fi

# SSH host keys are removed by finalize; make sure sshd has keys at first boot even before (or
# without) cloud-init generating them.
cat > /etc/systemd/system/pim-ssh-host-keys.service <<'UNIT'
[Unit]
Description=Generate missing SSH host keys (PIM image first boot)
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
UNIT
systemctl enable pim-ssh-host-keys.service

# GRUB on the serial console too, so that a VM without a display (Proxmox --vga serial0, UTM's
# serial terminal) shows it: the first UART of a PC, or the one UEFI offers on an arm64 machine
# (ttyAMA0, which the preseed puts on the kernel's command line there).
if command -v update-grub >/dev/null; then
  mkdir -p /etc/default/grub.d
  if [ "$(dpkg --print-architecture)" = arm64 ]; then serial_command='serial --speed=115200'; else serial_command='serial --unit=0 --speed=115200'; fi
  cat > /etc/default/grub.d/50-pim-serial.cfg <<GRUB
GRUB_TERMINAL="console serial"
GRUB_SERIAL_COMMAND="${serial_command}"
GRUB
  update-grub
fi

echo "=== base provisioning complete ==="
