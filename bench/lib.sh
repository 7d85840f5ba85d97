# Shared by the benchmarks: a bench project derived from the demo project (its installer media),
# with its own XDG dirs, so that a benchmark never touches the demo's images or caches.
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
demo=${PIM_DEMO_PROJECT:-$repo/.demo}
arch=$(node -e 'console.log(process.arch === "arm64" ? "arm64" : "x86_64")')
[ -d "$demo" ] || { echo "bench: no demo project at $demo; run 'npm run demo' first" >&2; exit 2; }
# The demo's media entry names a file under the test installer's cache, which a new version of
# the test installer replaces: say so, rather than fail later reading a file that is gone.
for url in $(sed -n 's|^ *url: file://||p' "$demo"/isos.d/*.yml 2>/dev/null); do
  [ -f "$url" ] || { echo "bench: the demo's installer media $url is gone (a newer test installer?); run 'npm run demo' again" >&2; exit 2; }
done

# bench_project DIR: a fresh project in DIR with the demo's media and XDG dirs under DIR.
bench_project() {
  local dir=$1
  rm -rf "$dir"
  mkdir -p "$dir/project"
  cp -r "$demo/isos.d" "$demo/profiles.d" "$dir/project/" 2>/dev/null || true
  export XDG_CONFIG_HOME="$dir/config" XDG_DATA_HOME="$dir/data" XDG_STATE_HOME="$dir/state"
  export XDG_CACHE_HOME=${BENCH_CACHE:-$dir/cache}
  project="$dir/project"
}

pim() { node "$repo/bin/pim.js" --project "$project" "$@"; }

# timed LABEL CMD...: runs CMD, prints nothing, sets $seconds.
timed() {
  local start end
  start=$(date +%s%N)
  "$@"
  end=$(date +%s%N)
  seconds=$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.1f", (e - s) / 1e9 }')
}
