#!/usr/bin/env bash
# `npm test`: installs what is missing, compiles, and runs every test with node's test runner.
# PIM_TEST_SKIP_SLOW=1 leaves out the tests that boot VMs (the pipeline's end-to-end builds).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-deps.sh
# One id for every test process of this run (the shared image is checked once per run).
export PIM_TEST_RUN="${PIM_TEST_RUN:-$(date +%s)-$$}"
if [ "${PIM_TEST_SKIP_SLOW:-}" = 1 ]; then
  mapfile -t files < <(find dist/test -name '*.test.js' -not -path 'dist/test/e2e/*' | sort)
else
  mapfile -t files < <(find dist/test -name '*.test.js' | sort)
fi
exec node --test --test-concurrency=2 "${files[@]}"
