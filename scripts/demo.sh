#!/usr/bin/env bash
# `npm run demo`: PIM's main job on this machine -- build the `default` profile into a
# cloud-init ready qcow2, then ask again and get the answer from the cache.
#
# With the official Debian netinst ISO when its host answers; otherwise (as on machines without
# a route to the CD image hosts) with the test installer media of test/fixtures/test-installer,
# which honour the same netinst contract and install real Debian 12 from Debian's archive.
# The demo project lives in .demo/ (PIM_DEMO_PROJECT overrides); images and the registry go
# where PIM always puts them ($XDG_DATA_HOME/pim).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
bash scripts/ensure-deps.sh
project=${PIM_DEMO_PROJECT:-$repo/.demo}
mkdir -p "$project"
pim() { node "$repo/bin/pim.js" --project "$project" "$@"; }

# The host's arch, or PIM_DEMO_ARCH (arm64 builds under emulation on an x86_64 host: slow).
arch=${PIM_DEMO_ARCH:-$(node -e 'console.log(process.arch === "arm64" ? "arm64" : "x86_64")')}
case "$arch" in amd64) arch=x86_64 ;; aarch64) arch=arm64 ;; esac
debarch=$([ "$arch" = arm64 ] && echo arm64 || echo amd64)
official=$(node "$repo/bin/pim.js" iso list --json | node -e '
  const list = JSON.parse(require("fs").readFileSync(0, "utf8"));
  const want = process.argv[1];
  const e = list.filter((i) => i.arch === want && i.distro === "debian").sort((a, b) => b.version.localeCompare(a.version, undefined, { numeric: true }))[0];
  console.log(e ? `${e.name} ${e.url}` : "");' "$arch")
read -r official_name official_url <<< "$official"

if [ -n "$official_url" ] && curl -sfI --max-time 10 "$official_url" >/dev/null 2>&1; then
  echo "demo: using the official ISO $official_name ($official_url answers)"
  rm -f "$project/profiles.d/demo-media.yml" "$project"/isos.d/demo-media*.yml
else
  echo "demo: the official ISO ${official_name:-for $arch} cannot be downloaded here (${official_url:-no catalog entry} does not answer);"
  echo "demo: using the test installer media instead (test/fixtures/test-installer: same netinst contract, real Debian 12)"
  iso=$(bash test/fixtures/test-installer/build.sh --arch "$debarch" | tail -1)
  sum=$(sha256sum "$iso" | cut -d' ' -f1)
  mkdir -p "$project/isos.d" "$project/profiles.d"
  cat > "$project/isos.d/demo-media-$debarch.yml" <<YML
# Written by scripts/demo.sh: the locally built test installer media.
pim-test-installer-$debarch:
  url: file://$iso
  checksum: sha256:$sum
  arch: $arch
  distro: debian
  version: "12.0-pimtest"
  filename: pim-test-installer-$debarch-${sum:0:12}.iso
YML
  rm -f "$project/isos.d/demo-media.yml"
  cat > "$project/profiles.d/demo-media.yml" <<YML
# Written by scripts/demo.sh: build the default profile from the test installer media.
default:
  iso_pattern: "pim-test-installer-{arch}"
YML
fi

echo
echo "== pim build run default --arch $arch"
pim build run default --arch "$arch"
image=$(pim build show default --arch "$arch" --json | node -e 'console.log(JSON.parse(require("fs").readFileSync(0, "utf8")).path)')
echo
echo "== qemu-img check $image"
qemu-img check "$image"
echo
echo "== pim build run default --arch $arch (again: nothing changed, so the cache answers)"
start=$(date +%s%N)
pim build run default --arch "$arch"
end=$(date +%s%N)
echo "cache hit answered in $(( (end - start) / 1000000 )) ms"
echo
pim build list
