#!/usr/bin/env bash
# pim build verify on the demo image: its seconds and its checks.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
project=$demo
timed pim build verify default --arch "$arch"
echo "pim build verify default/$arch: $seconds s"
