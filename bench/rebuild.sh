#!/usr/bin/env bash
# Layered rebuilds: a full build, a rebuild after appending a line to the last script, a rebuild
# after editing base; the seconds of each and their ratios to the full build.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
bench_project "$repo/.bench/rebuild"
mkdir -p "$project/scripts.d"
cp "$repo/assets/scripts.d/base.sh" "$project/scripts.d/base.sh"
printf '#!/bin/bash\nset -euo pipefail\napt-get install -y --no-install-recommends jq\necho tools v1 > /etc/bench-tools\n' > "$project/scripts.d/tools.sh"
printf 'bench:\n  scripts: [base, tools, finalize]\n' > "$project/profiles.d/bench.yml"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
run() { pim build run bench --arch "$arch" > /dev/null 2> "$log" || { cat "$log" >&2; exit 1; }; }
timed run; full=$seconds
echo 'echo tools v2 > /etc/bench-tools' >> "$project/scripts.d/tools.sh"
timed run; last=$seconds; reused_last=$(grep -o 'reusing [0-9]* of [0-9]* cached layers' "$log" || echo 'no layer reused')
echo 'echo "base, edited"' >> "$project/scripts.d/base.sh"
timed run; base=$seconds; reused_base=$(grep -o 'reusing [0-9]* of [0-9]* cached layers' "$log" || echo 'no layer reused')
echo "layered rebuilds of profile bench (base, tools, finalize) on $arch"
printf '  %-34s %8.1f s\n' 'full build (no layer cached)' "$full"
printf '  %-34s %8.1f s  %.2fx the full build (%s)\n' 'rebuild after editing tools (last)' "$last" "$(awk -v a="$last" -v b="$full" 'BEGIN{print a/b}')" "$reused_last"
printf '  %-34s %8.1f s  %.2fx the full build (%s)\n' 'rebuild after editing base' "$base" "$(awk -v a="$base" -v b="$full" 'BEGIN{print a/b}')" "$reused_base"
