#!/usr/bin/env bash
# Installs what PIM's tests and demo need, when it is missing: npm packages always; Debian
# packages (QEMU, qemu-img, UEFI firmware, xorriso, debootstrap, sshd) when running as root
# on Debian/Ubuntu. Idempotent and quiet when everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d node_modules ] || [ package.json -nt node_modules/.package-lock.json ]; then
  echo "ensure-deps: installing npm packages" >&2
  if [ -f package-lock.json ]; then npm ci --no-audit --no-fund >&2; else npm install --no-audit --no-fund >&2; fi
fi

debs=(qemu-system-x86 qemu-system-arm qemu-utils qemu-efi-aarch64 xorriso debootstrap openssh-server openssh-client
      isolinux syslinux-common busybox-static cpio e2fsprogs dosfstools mtools curl debconf zstd gpg gpg-agent)
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && command -v dpkg-query >/dev/null; then
  missing=()
  for p in "${debs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "ensure-deps: installing Debian packages: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  fi
fi

if [ ! -f dist/src/cli/main.js ] || [ -n "$(find src test bench -newer dist/src/cli/main.js -name '*.ts' 2>/dev/null | head -1)" ]; then
  echo "ensure-deps: compiling" >&2
  npx tsc -p tsconfig.json
fi
