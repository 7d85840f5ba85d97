#!/usr/bin/env bash
# Prints the figures of one local build: seconds per step and in total, the wall time of a
# cache hit (a second `pim build run` with nothing changed), and the image's virtual and file
# sizes. Uses the demo project (.demo/, set up by `npm run demo`; PIM_DEMO_PROJECT overrides)
# and rebuilds its `default` profile with --force.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
project=${PIM_DEMO_PROJECT:-$repo/.demo}
profile=${1:-default}
arch=$(node -e 'console.log(process.arch === "arm64" ? "arm64" : "x86_64")')
[ -d "$project" ] || { echo "bench: no demo project at $project; run 'npm run demo' first" >&2; exit 2; }
pim() { node "$repo/bin/pim.js" --project "$project" "$@"; }

log=$(mktemp)
trap 'rm -f "$log"' EXIT
start=$(date +%s%N)
pim build run "$profile" --arch "$arch" --force 2> >(tee "$log" >&2) > /dev/null
end=$(date +%s%N)
echo
echo "build of $profile/$arch"
grep -E '^<== [a-z]+ done in' "$log" | awk '{printf "  %-10s %8.1f s\n", $2, $5; total += $5} END {printf "  %-10s %8.1f s (sum of steps)\n", "total", total}'
printf '  %-10s %8.1f s (wall, including ISO checks and start-up)\n' wall "$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.1f", (e - s) / 1e9 }')"

start=$(date +%s%N)
pim build run "$profile" --arch "$arch" > /dev/null 2>&1
end=$(date +%s%N)
printf '  %-10s %8d ms (second run, nothing changed)\n' cache-hit "$(( (end - start) / 1000000 ))"

pim build show "$profile" --arch "$arch" --json | node -e '
  const r = JSON.parse(require("fs").readFileSync(0, "utf8"));
  const mib = (b) => (b / 1048576).toFixed(1) + " MiB";
  console.log(`  virtual    ${mib(r.virtual_size)}`);
  console.log(`  file       ${mib(r.file_size)} (${(100 * r.file_size / r.virtual_size).toFixed(1)}% of virtual)`);
  console.log(`  image      ${r.path}`);'
