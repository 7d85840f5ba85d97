#!/bin/bash
# Docker engine from Debian's own archive (docker.io), enabled at boot.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
echo "=== PIM docker provisioning ==="
apt-get update
apt-get install -y --no-install-recommends docker.io containerd
systemctl enable docker.service containerd.service
echo "=== docker provisioning complete ==="
