#!/bin/bash
# Developer tools.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
echo "=== PIM developer provisioning ==="
apt-get update
apt-get install -y --no-install-recommends \
  build-essential git vim neovim tmux zsh htop curl wget jq unzip tree ripgrep fd-find
echo "=== developer provisioning complete ==="
