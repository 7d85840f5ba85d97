#!/usr/bin/env bash
# The package cache: builds of `default` and then `developer` with an empty package cache (and no
# layers, --force): bytes each fetched from the mirror, and how many of the second's packages came
# from the cache.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
bench_project "$repo/.bench/packages"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for profile in default developer; do
  pim build run "$profile" --arch "$arch" --force > /dev/null 2> "$log" || { cat "$log" >&2; exit 1; }
  line=$(grep -o 'package cache: .*' "$log" | tail -1)
  echo "$profile: $line"
done
