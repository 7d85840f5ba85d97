#!/bin/bash
# PIM install script for profile <%= profile_name %>: runs once inside the installed system
# (preseed/late_command, via in-target), as root, before the first boot.
set -euo pipefail

user=<%- shq(username) %>

# Passwordless sudo for the build user: provisioning runs as root through sudo.
install -d -m 0755 /etc/sudoers.d
printf '%s ALL=(ALL) NOPASSWD:ALL\n' "$user" > /etc/sudoers.d/90-pim-user
chmod 0440 /etc/sudoers.d/90-pim-user

<% if (ssh_public_key) { -%>
# The build's throw-away public key (finalize.sh removes it again).
home=$(getent passwd "$user" | cut -d: -f6)
install -d -m 0700 -o "$user" -g "$user" "$home/.ssh"
printf '%s\n' <%- shq(ssh_public_key) %> >> "$home/.ssh/authorized_keys"
chown "$user:$user" "$home/.ssh/authorized_keys"
chmod 0600 "$home/.ssh/authorized_keys"
<% } -%>

echo "pim install script done for $user"
