#!/usr/bin/env bash
# `npm run demo`: PIM's main job on this machine. Until local builds land it shows what a build
# starts from: the ISO catalog, the merged default profile and the preseed PIM serves for it,
# fetched over HTTP from the real server on a loopback port.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-deps.sh
pim() { node bin/pim.js "$@"; }

echo "== pim doctor"
pim doctor || true
echo
echo "== pim iso list"
pim iso list
echo
echo "== pim profile show default"
pim profile show default
echo
port=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
pim serve default --bind 127.0.0.1 --port "$port" > /tmp/pim-demo-serve.log 2>&1 &
server=$!
trap 'kill -INT $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -fsS "http://127.0.0.1:$port/preseed.cfg" >/dev/null 2>&1 && break; sleep 0.1; done
echo "== GET http://127.0.0.1:$port/preseed.cfg (pim serve default)"
curl -fsS "http://127.0.0.1:$port/preseed.cfg"
