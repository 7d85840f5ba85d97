#!/usr/bin/env bash
# PIM against Packer 1.6.6 (Debian's `packer`, its builtin qemu builder), side by side on the
# same media, preseed and scripts and the same VM shape, N rounds (default 2), alternating
# (Packer first in each round):
#
#   bench/vs-packer.sh [N]
#
# - Media: the demo project's installer ISO (npm run demo first).
# - Preseed: rendered by PIM (bench/render-preseed.ts); Packer's copy reboots instead of powering
#   off (debian-installer/exit/poweroff=false on its boot line) and its late_command fetches
#   install.sh from Packer's HTTP server (a fixed port, so the file can name it).
# - Scripts, in PIM's order and as root through sudo: the upgrade, base, finalize, pim-seal (with
#   the build user kept, or Packer could not shut the VM down through sudo). PIM's upgrade is its
#   own pim-prepare; Packer's is what a Packer user writes (bench/packer/upgrade.sh: update,
#   full-upgrade, autoremove), since pim-prepare's build-time levers are PIM's own (set
#   VS_PACKER_PREPARE=pim to give Packer PIM's script, as the runs before 2026-11-29 did).
# - VM shape (bench/packer/pim-default.json, line by line): q35, -cpu max, TCG thread=multi, 2
#   vCPUs, 2048 MiB, a 20G virtio disk with discard and detect-zeroes, virtio-net, virtio-rng, the
#   guest agent's virtio-serial port (without it, `systemctl start qemu-guest-agent` in base.sh
#   waited 90 s for a device that never comes), an uncompressed qcow2. PIM builds with
#   build.compress: false, --force (no layers) and an empty package cache: a cold build each round.
#
# Packer's SSH port forward listens on all interfaces (its qemu builder has no option for
# 127.0.0.1 in 1.6.6): run this only on a machine where that is acceptable. Every QEMU this
# starts is killed, and its temp dirs removed, on exit and on Ctrl+C.
set -euo pipefail
rounds=${1:-2}
# VS_PACKER_TOOLS="pim" (or "packer") runs one tool only: how the one-at-a-time measurements of
# bench/README.md were taken, each against a PIM changed in one place.
tools=" ${VS_PACKER_TOOLS:-packer pim} "
# VS_PACKER_LOGS=DIR keeps each round's logs there (Packer's PACKER_LOG, PIM's build log).
logs=${VS_PACKER_LOGS:-}
source "$(dirname "$0")/lib.sh"
[ "$arch" = x86_64 ] || { echo "bench: vs-packer runs on x86_64" >&2; exit 2; }
if ! command -v packer >/dev/null; then
  echo "bench: installing Debian's packer" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq packer >&2
fi
echo "bench: Packer's SSH port forward listens on all interfaces during its builds" >&2

work=$(mktemp -d /var/tmp/pim-vs-packer.XXXXXX)
mkdir -p "$work/tmp"
packer_pid=""
pim_pid=""
cleanup() {
  if [ -n "$packer_pid" ]; then
    kill -TERM -- -"$packer_pid" 2>/dev/null || true
    for _ in $(seq 1 20); do kill -0 -- -"$packer_pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- -"$packer_pid" 2>/dev/null || true
  fi
  if [ -n "$pim_pid" ]; then kill -TERM "$pim_pid" 2>/dev/null || true; wait "$pim_pid" 2>/dev/null || true; fi
  pkill -f "qemu-system.*$work" 2>/dev/null || true
  rm -rf "$work" "$repo/.bench/vs-packer"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bench_project "$repo/.bench/vs-packer"
printf 'build:\n  compress: false\n' > "$project/pim.yml"
read -r _ iso_name _ iso_entry _ < <(pim build run default --arch x86_64 --dry-run | grep -E '^  ISO:')
pim iso download "$iso_name" > /dev/null
iso_sum=$(sha256sum "$iso_entry" | cut -d' ' -f1)
user=$(pim profile show default --json --reveal | node -e 'const p=JSON.parse(require("fs").readFileSync(0,"utf8"));console.log(p.username)')
password=$(pim profile show default --json --reveal | node -e 'const p=JSON.parse(require("fs").readFileSync(0,"utf8"));console.log(p.password)')
http_port=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
node "$repo/dist/bench/render-preseed.js" "$project" default "$http_port" "$work/http"
mkdir -p "$work/scripts"
# Packer's first script: a Packer user's upgrade (bench/packer/upgrade.sh), or with
# VS_PACKER_PREPARE=pim PIM's own pim-prepare, build-time levers included.
if [ "${VS_PACKER_PREPARE:-user}" = pim ]; then
  cp "$repo/assets/guest/prepare.sh" "$work/scripts/pim-prepare.sh"
else
  cp "$repo/bench/packer/upgrade.sh" "$work/scripts/pim-prepare.sh"
fi
cp "$repo/assets/scripts.d/base.sh" "$repo/assets/scripts.d/finalize.sh" "$work/scripts/"
cp "$repo/assets/guest/seal.sh" "$work/scripts/pim-seal.sh"
sed "s/PIM_BUILD_USER_POLICY=lock/PIM_BUILD_USER_POLICY=keep/; s/\"http_directory\"/\"http_port_min\": $http_port, \"http_port_max\": $http_port, \"http_directory\"/" \
  "$repo/bench/packer/pim-default.json" > "$work/packer.json"

stamp() { date +%s.%N; }
pim_total=(); packer_total=()
results="$work/results.txt"
: > "$results"
for round in $(seq 1 "$rounds"); do
  if [[ $tools == *" packer "* ]]; then
  # Packer.
  out="$work/packer-out-$round"
  plog="$work/packer-$round.log"
  t0=$(stamp)
  # Its own process group (setsid), so that cleanup stops Packer and everything it started;
  # its temp files (TMPDIR) inside the work dir.
  setsid env -C "$work" TMPDIR="$work/tmp" PACKER_LOG=1 PACKER_LOG_PATH="$plog" packer build \
      -var "iso=$iso_entry" -var "iso_checksum=$iso_sum" -var "http_dir=$work/http" -var "output_dir=$out" \
      -var "scripts_dir=$work/scripts" -var "user=$user" -var "password=$password" -var "qga_socket=$work/qga.sock" packer.json > "$work/packer-$round.out" 2>&1 &
  packer_pid=$!
  wait "$packer_pid" || { tail -20 "$work/packer-$round.out" >&2; grep -iE 'qemu stderr|error' "$plog" | tail -5 >&2; exit 1; }
  packer_pid=""
  t1=$(stamp)
  total=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}')
  phases=$(node -e '
    const lines = require("fs").readFileSync(process.argv[1], "utf8").split("\n");
    const at = (re) => { const l = lines.find((x) => re.test(x)); if (!l) return NaN; const m = /^(\d{4})\/(\d\d)\/(\d\d) (\d\d):(\d\d):(\d\d)/.exec(l); return Date.UTC(+m[1], m[2]-1, +m[3], +m[4], +m[5], +m[6]) / 1000; };
    const typing = at(/Typing the boot command/), ssh = at(/Connected to SSH!/), halt = at(/Gracefully halting/), convert = at(/Converting hard drive/), done = at(/Builds finished|Build .* finished/);
    const script = (n) => at(new RegExp("Provisioning with shell script: .*" + n));
    const s = ["pim-prepare", "base", "finalize", "pim-seal"].map(script);
    const r = { tool: "Packer", total: +process.argv[2], size: +process.argv[3], phases: {
      "to SSH": ssh - typing, "pim-prepare": s[1] - s[0], base: s[2] - s[1], finalize: s[3] - s[2], "pim-seal": halt - s[3], shutdown: convert - halt, compaction: done - convert } };
    require("fs").appendFileSync(process.argv[4], JSON.stringify(r) + "\n");
    console.log(Object.entries(r.phases).map(([k, v]) => `${k} ${v}`).join(", "));
  ' "$plog" "$total" "$(stat -c %s "$out/packer-default.qcow2")" "$work/rounds.jsonl")
  size=$(stat -c %s "$out/packer-default.qcow2")
  echo "round $round Packer ${total} s: ${phases}; image $(awk -v b="$size" 'BEGIN{printf "%.1f", b/1048576}') MiB" | tee -a "$results"
  packer_total+=("$total")
  [ -z "$logs" ] || { mkdir -p "$logs" && cp "$plog" "$logs/packer-$round.log"; }
  rm -rf "$out"
  fi
  if [[ $tools == *" pim "* ]]; then
  # PIM, cold.
  pim build clean --packages > /dev/null
  log="$work/pim-$round.log"
  t0=$(stamp)
  # In the background (node itself, not a subshell running the pim function), so that cleanup
  # can stop it: it then stops its VM and removes its work dir.
  node "$repo/bin/pim.js" --project "$project" build run default --arch x86_64 --force > /dev/null 2> "$log" &
  pim_pid=$!
  wait "$pim_pid" || { tail -5 "$log" >&2; exit 1; }
  pim_pid=""
  t1=$(stamp)
  total=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}')
  steps=$(grep -E '^<== [a-z]+ done in' "$log" | awk '{printf "%s %s, ", $2, $5}')
  size=$(pim build show default --arch x86_64 --json | node -e 'console.log(JSON.parse(require("fs").readFileSync(0,"utf8")).file_size)')
  build_log="$(pim build show default --arch x86_64 --json | node -e 'console.log(JSON.parse(require("fs").readFileSync(0,"utf8")).path)').log"
  # Each script's time from the build log: from its "script NAME" line to the next script's
  # (a layer taken between them counts with the script before) or the end of the provision step.
  scripts=$(node -e '
    const lines = require("fs").readFileSync(process.argv[1], "utf8").split("\n");
    const t = (l) => Date.parse(l.slice(0, 24)) / 1000;
    const marks = lines.filter((l) => /Z script [a-z0-9-]+$/.test(l) || /Z == step provision: done/.test(l));
    const step = (name) => { const l = lines.find((x) => x.includes(`== step ${name}: done in `)); return l ? +/done in ([\d.]+) s/.exec(l)[1] : NaN; };
    const phases = { "to SSH": step("install") + step("boot") };
    for (let i = 0; i + 1 < marks.length; i++) phases[/script ([a-z0-9-]+)$/.exec(marks[i])[1]] = +(t(marks[i + 1]) - t(marks[i])).toFixed(1);
    phases["to SSH"] = +phases["to SSH"].toFixed(1);
    phases.shutdown = step("shutdown");
    phases.compaction = step("compact");
    const r = { tool: "PIM", total: +process.argv[2], size: +process.argv[3], phases };
    require("fs").appendFileSync(process.argv[4], JSON.stringify(r) + "\n");
    console.log(Object.entries(phases).map(([k, v]) => `${k} ${v}`).join(", "));
  ' "$build_log" "$total" "$size" "$work/rounds.jsonl")
  echo "round $round PIM    ${total} s: ${steps%, }; image $(awk -v b="$size" 'BEGIN{printf "%.1f", b/1048576}') MiB" | tee -a "$results"
  echo "              per phase: ${scripts}" | tee -a "$results"
  pim_total+=("$total")
  [ -z "$logs" ] || { mkdir -p "$logs" && cp "$build_log" "$logs/pim-$round.log"; }
  fi
done
# Means unrounded (%.6f): the ratio is taken from these, as the table's is, and only printed rounded.
mean() { local s=0; for x in "$@"; do s=$(awk -v a="$s" -v b="$x" 'BEGIN{print a+b}'); done; awk -v s="$s" -v n="$#" 'BEGIN{printf "%.6f", s/n}'; }
pm=$(mean "${pim_total[@]:-0}"); km=$(mean "${packer_total[@]:-0}")
echo
# Means per phase over the rounds, side by side; "to SSH" is PIM's install + boot against
# Packer's install + reboot, "provisioning" the four scripts together.
node -e '
  const rounds = require("fs").readFileSync(process.argv[1], "utf8").trim().split("\n").map((l) => JSON.parse(l));
  const mean = (tool, f) => { const xs = rounds.filter((r) => r.tool === tool).map(f); return xs.reduce((a, b) => a + b, 0) / xs.length; };
  const scripts = ["pim-prepare", "base", "finalize", "pim-seal"];
  const rows = [["to SSH", (r) => r.phases["to SSH"]], ...scripts.map((n) => [n, (r) => r.phases[n]]),
    ["provisioning", (r) => scripts.reduce((a, n) => a + r.phases[n], 0)], ["shutdown", (r) => r.phases.shutdown], ["compaction", (r) => r.phases.compaction],
    ["total", (r) => r.total], ["image MiB", (r) => r.size / 1048576]];
  console.log(`means of ${Math.max(...["PIM", "Packer"].map((t) => rounds.filter((r) => r.tool === t).length))} round(s)     PIM     Packer   PIM/Packer`);
  for (const [name, f] of rows) { const a = mean("PIM", f), b = mean("Packer", f); const f1 = (x, d) => (Number.isFinite(x) ? x.toFixed(d) : "-"); console.log(`  ${name.padEnd(16)} ${f1(a, 1).padStart(8)} ${f1(b, 1).padStart(9)} ${f1(a / b, 2).padStart(9)}`); }
' "$work/rounds.jsonl"
if [ "${#pim_total[@]}" -gt 0 ] && [ "${#packer_total[@]}" -gt 0 ]; then
  awk -v a="$pm" -v b="$km" -v n="$rounds" 'BEGIN{printf "PIM mean %.1f s, Packer mean %.1f s: PIM takes %.2fx Packer'"'"'s time (%s rounds)\n", a, b, a / b, n}'
fi
