#!/usr/bin/env bash
# The AWS upload (EBS direct) of the demo image to the local test endpoint: bytes of data read,
# blocks sent and skipped, seconds, and the ratio to one sha256sum pass over the same bytes.
# Uses the demo project's image (npm run demo first); an image path as $1 overrides.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
project=${PIM_DEMO_PROJECT:-$repo/.demo}
arch=$(node -e 'console.log(process.arch === "arm64" ? "arm64" : "x86_64")')
image=${1:-}
if [ -z "$image" ]; then
  [ -d "$project" ] || { echo "bench: no demo project at $project; run 'npm run demo' first" >&2; exit 2; }
  image=$(node "$repo/bin/pim.js" --project "$project" build show default --arch "$arch" --json | node -e 'console.log(JSON.parse(require("fs").readFileSync(0, "utf8")).path)')
fi
exec node "$repo/dist/bench/aws-upload.js" "$image" "${PIM_BENCH_RUNS:-5}"
