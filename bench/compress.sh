#!/usr/bin/env bash
# Compression: the demo image's file size written zstd-compressed (the default) and uncompressed,
# and the seconds of each conversion (the compact step's work).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
project=$demo
image=$(pim build show default --arch "$arch" --json | node -e 'console.log(JSON.parse(require("fs").readFileSync(0, "utf8")).path)')
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
timed qemu-img convert -O qcow2 "$image" "$out/plain.qcow2"; plain_s=$seconds
timed qemu-img convert -O qcow2 -c -o compression_type=zstd "$image" "$out/zstd.qcow2"; zstd_s=$seconds
plain=$(stat -c %s "$out/plain.qcow2"); zstd=$(stat -c %s "$out/zstd.qcow2")
echo "image $image"
printf '  uncompressed  %8.1f MiB  convert %5.1f s\n' "$(awk -v b="$plain" 'BEGIN{print b/1048576}')" "$plain_s"
printf '  zstd          %8.1f MiB  convert %5.1f s  (%.2fx the uncompressed size)\n' "$(awk -v b="$zstd" 'BEGIN{print b/1048576}')" "$zstd_s" "$(awk -v a="$zstd" -v b="$plain" 'BEGIN{print a/b}')"
