#!/usr/bin/env bash
# The package cache: builds of `default` and then `developer` with an empty package cache (and no
# layers, --force): seconds, and files and bytes each took from the mirror and from the cache;
# then `default` again (--force, so no layer is reused) with the cache warm, to show what the
# cache alone saves on a full build.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
bench_project "$repo/.bench/packages"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for run in 'default:empty cache' 'developer:after default' 'default:warm cache'; do
  profile=${run%%:*}
  timed pim build run "$profile" --arch "$arch" --force > /dev/null 2> "$log" || { cat "$log" >&2; exit 1; }
  line=$(grep -o 'package cache: .*' "$log" | tail -1)
  printf '%-10s %-15s %7.1f s  %s\n' "$profile" "${run#*:}" "$seconds" "$line"
done
