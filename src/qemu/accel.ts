import { accessSync, constants, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { hostname, release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { hostArch, type Arch } from '../arch.js';
import { writeFileAtomic } from '../files/atomic-write.js';
import { spawnManaged, which } from '../process.js';
import type { Accelerator } from './command.js';
import { qemuBinary } from './command.js';
import { findAarch64Firmware } from './firmware.js';

export interface AccelVerdict {
  usable: boolean;
  reason?: string;
  /** x86_64: milliseconds the probe's workload took (first touch of 96 MiB in long mode). */
  workloadMs?: number;
}

export type AccelReport = Record<Accelerator, AccelVerdict>;

export interface AccelProbeOptions {
  timeoutMs?: number;
  platform?: NodeJS.Platform;
  /** x86_64: TCG's time for the workload; a hardware accelerator slower than that is not used. */
  tcgWorkloadMs?: number;
}

/**
 * Whether `accel` really runs an `arch` guest here. Decided by trying, not by file existence.
 *
 * x86_64: the probe boots a tiny 64-bit program (X86_PROBE below) that enters long mode and
 * touches 96 MiB, as a booting kernel does, reporting on the debug port. On the test machines
 * /dev/kvm opens, `-accel kvm` starts and even runs the firmware, yet a Linux kernel never gets
 * past its decompressor: first touches of guest memory take ~40 ms per MiB there. So a hardware
 * accelerator counts as usable only if it finishes the workload, and faster than TCG does.
 *
 * arm64: UEFI firmware that writes to the serial console.
 */
export async function probeAccelerator(arch: Arch, accel: Accelerator, options: AccelProbeOptions = {}): Promise<AccelVerdict> {
  const platform = options.platform ?? process.platform;
  const binary = qemuBinary(arch);
  if (!which(binary)) return { usable: false, reason: `${binary} is not installed` };
  if (accel === 'hvf') {
    if (platform !== 'darwin') return { usable: false, reason: 'HVF exists only on macOS' };
    if (arch !== hostArch()) return { usable: false, reason: `HVF runs only ${hostArch()} guests on this host` };
  }
  if (accel === 'kvm') {
    if (platform !== 'linux') return { usable: false, reason: 'KVM exists only on Linux' };
    if (arch !== hostArch()) return { usable: false, reason: `KVM runs only ${hostArch()} guests on this host` };
    if (!existsSync('/dev/kvm')) return { usable: false, reason: '/dev/kvm does not exist (no KVM module or no virtualisation extensions)' };
    try {
      accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
    } catch {
      return { usable: false, reason: '/dev/kvm is not readable and writable by this user (add it to the kvm group)' };
    }
  }
  const timeoutMs = options.timeoutMs ?? (accel === 'tcg' ? 20_000 : 10_000);
  if (arch === 'arm64') return runFirmwareProbe(accel, timeoutMs);
  // A hardware accelerator has lost once it needs longer than TCG did: no need to wait longer.
  const limit = accel !== 'tcg' && options.tcgWorkloadMs !== undefined ? Math.max(500, options.tcgWorkloadMs) : undefined;
  const verdict = await runX86Probe(accel, timeoutMs, limit);
  if (verdict.usable && accel !== 'tcg' && options.tcgWorkloadMs !== undefined && (verdict.workloadMs ?? 0) > options.tcgWorkloadMs) {
    return {
      usable: false,
      workloadMs: verdict.workloadMs,
      reason: `QEMU runs with -accel ${accel}, but the guest is slower than under TCG (over ${verdict.workloadMs} ms against ${options.tcgWorkloadMs} ms for the probe's workload): no working hardware virtualisation`,
    };
  }
  return verdict;
}

/**
 * The x86_64 probe program, assembled from this source (GNU as --32; ld -m elf_i386
 * -Ttext=0x100000 --oformat binary): a multiboot image (a.out kludge) that QEMU's -kernel loads
 * at 1 MiB.
 *
 *   mb_header: .long 0x1BADB002, 0x00010000, -(0x1BADB002 + 0x00010000)
 *              .long mb_header, mb_header, 0, 0, _start
 *   _start:    cli; zero 0x1000-0x3fff; PML4[0] = 0x2003; PDPT[0] = 0x3003
 *              PD[0..63] = i * 2 MiB | 0x83                  (identity map of 128 MiB)
 *              cr3 = 0x1000; cr4 |= PAE; EFER |= LME; cr0 |= PG | PE
 *              lgdt gdt_ptr; ljmp $0x08, $long_mode          (gdt: null, 64-bit code)
 *   long_mode: print "PIM-PROBE: start\n" to port 0x402
 *              rep stosq 0x5a.. over 0x400000 .. 0x6400000   (96 MiB)
 *              print "PIM-PROBE: done\n"; hlt loop
 */
const X86_PROBE = Buffer.from(
  '02b0ad1b00000100fe4f51e40000100000001000000000000000000020001000fabf0010000031c0b9000c0000f3abc7050010000003200000c7050020000003300000bf00300000b883000000b9400000008907050000200083c708e2f4b8001000000f22d80f20e083c8200f22e0b9800000c00f320d000100000f300f20c00d010000800f22c00f0115f0001000ea960010000800488d3559000000b911000000e82f00000048c7c70000400048c7c10000c00048b85a5a5a5a5a5a5a5af348ab488d353e000000b910000000e803000000f4ebfd66ba0204aceee2fcc3900000000000000000ffff0000009aaf000f00e000100050494d2d50524f42453a2073746172740a50494d2d50524f42453a20646f6e650a',
  'hex',
);

async function runX86Probe(accel: Accelerator, timeoutMs: number, workloadLimitMs?: number): Promise<AccelVerdict> {
  const dir = mkdtempSync(join(tmpdir(), 'pim-probe-'));
  const out = join(dir, 'console.log');
  const kernel = join(dir, 'probe.bin');
  writeFileSync(kernel, X86_PROBE);
  const args = ['-nodefaults', '-no-user-config', '-display', 'none', '-m', '128', '-accel', accel, '-cpu', accel === 'tcg' ? 'max' : 'host', '-machine', 'q35'];
  args.push('-kernel', kernel, '-chardev', `file,id=dbg,path=${out}`, '-device', 'isa-debugcon,iobase=0x402,chardev=dbg');
  return watchProbe(accel, args, out, dir, timeoutMs, (text) => {
    const done = text.includes('PIM-PROBE: done');
    return done ? 'done' : text.includes('PIM-PROBE: start') ? 'started' : 'nothing';
  }, workloadLimitMs);
}

async function runFirmwareProbe(accel: Accelerator, timeoutMs: number): Promise<AccelVerdict> {
  const fw = findAarch64Firmware();
  if (!fw) return { usable: false, reason: 'no aarch64 UEFI firmware to probe with (install qemu-efi-aarch64)' };
  const dir = mkdtempSync(join(tmpdir(), 'pim-probe-'));
  const out = join(dir, 'console.log');
  const args = ['-nodefaults', '-no-user-config', '-display', 'none', '-m', '128', '-accel', accel, '-cpu', accel === 'tcg' ? 'max' : 'host', '-machine', 'virt'];
  args.push(...(fw.mode === 'pflash' ? ['-drive', `if=pflash,format=raw,readonly=on,file=${fw.code}`] : ['-bios', fw.code]));
  args.push('-chardev', `file,id=ser,path=${out}`, '-serial', 'chardev:ser');
  return watchProbe(accel, args, out, dir, timeoutMs, (text) => (text.length > 0 ? 'done' : 'nothing'));
}

/** Runs a probe VM and watches its console: usable when it reports done; the workload is timed from 'started'. */
async function watchProbe(
  accel: Accelerator,
  args: string[],
  out: string,
  dir: string,
  timeoutMs: number,
  progress: (text: string) => 'nothing' | 'started' | 'done',
  workloadLimitMs?: number,
): Promise<AccelVerdict> {
  const child = spawnManaged(qemuBinary(args.includes('virt') ? 'arm64' : 'x86_64'), args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (c: Buffer) => (stderr += c.toString()));
  let exited = false;
  child.on('exit', () => (exited = true));
  const started = Date.now();
  let workStart: number | undefined;
  let state: 'nothing' | 'started' | 'done' = 'nothing';
  try {
    while (Date.now() - started < timeoutMs) {
      await new Promise((r) => setTimeout(r, 10));
      state = existsSync(out) ? progress(readFileSync(out, 'utf8')) : 'nothing';
      if (state === 'started') workStart ??= Date.now();
      if (state === 'done') return { usable: true, ...(workStart !== undefined ? { workloadMs: Date.now() - workStart } : {}) };
      // Still working past the limit: stop here, reporting how long it had taken so far.
      if (state === 'started' && workloadLimitMs !== undefined && Date.now() - workStart! > workloadLimitMs) return { usable: true, workloadMs: Date.now() - workStart! };
      if (exited) break;
    }
    const detail = stderr.trim().split('\n').filter(Boolean).slice(0, 2).join(' / ');
    if (exited) return { usable: false, reason: `QEMU exited at start${detail ? `: ${detail}` : ''}` };
    const seen = state === 'started' ? 'the probe started but did not finish its workload' : 'the guest ran nothing';
    return {
      usable: false,
      reason: `QEMU started with -accel ${accel} but ${seen} within ${Math.round(timeoutMs / 1000)} s${detail ? `: ${detail}` : ''}`,
    };
  } finally {
    child.kill('SIGKILL');
    if (!exited) await new Promise((r) => child.once('exit', r));
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The accelerators worth asking about on this platform, best first. */
export function candidateAccelerators(platform: NodeJS.Platform = process.platform): Accelerator[] {
  return platform === 'darwin' ? ['hvf', 'tcg'] : platform === 'linux' ? ['kvm', 'tcg'] : ['tcg'];
}

const CACHE_TTL_MS = 24 * 60 * 60 * 1000;

interface CacheFile {
  [hostKey: string]: { at: number; arches: Partial<Record<Arch, AccelReport>> };
}

/** Bumped when the probe changes, so that verdicts of an older probe are not reused. */
const PROBE_VERSION = 2;

function hostKey(): string {
  return `${hostname()}|${process.platform}|${release()}|probe${PROBE_VERSION}`;
}

/**
 * Probes every accelerator for `arch` (or reads the verdict cached for this host within the
 * last day) and returns the report.
 */
export async function acceleratorReport(arch: Arch, cacheDir: string | undefined, options: { refresh?: boolean } = {}): Promise<AccelReport> {
  const cachePath = cacheDir ? join(cacheDir, 'accelerators.json') : undefined;
  let cache: CacheFile = {};
  if (cachePath && existsSync(cachePath)) {
    try {
      cache = JSON.parse(readFileSync(cachePath, 'utf8')) as CacheFile;
    } catch {
      cache = {};
    }
  }
  const entry = cache[hostKey()];
  if (!options.refresh && entry && Date.now() - entry.at < CACHE_TTL_MS && entry.arches[arch]) return entry.arches[arch]!;
  const report = {} as AccelReport;
  // TCG first: a hardware accelerator must beat its time on the same workload.
  report.tcg = await probeAccelerator(arch, 'tcg');
  for (const accel of ['kvm', 'hvf'] as const) {
    report[accel] = candidateAccelerators().includes(accel)
      ? await probeAccelerator(arch, accel, { tcgWorkloadMs: report.tcg.workloadMs })
      : { usable: false, reason: accel === 'hvf' ? 'HVF exists only on macOS' : 'KVM exists only on Linux' };
  }
  if (cachePath) {
    const fresh = entry && Date.now() - entry.at < CACHE_TTL_MS ? entry : { at: Date.now(), arches: {} };
    fresh.arches[arch] = report;
    cache[hostKey()] = fresh;
    mkdirSync(cacheDir!, { recursive: true });
    writeFileAtomic(cachePath, `${JSON.stringify(cache, null, 2)}\n`);
  }
  return report;
}

/** The accelerator a build uses: pim.yml's `build.accelerator` if set, else the best one that works. */
export function selectAccelerator(report: AccelReport, override?: Accelerator, platform: NodeJS.Platform = process.platform): Accelerator {
  if (override) return override;
  for (const accel of candidateAccelerators(platform)) if (report[accel]?.usable) return accel;
  return 'tcg';
}

export const TCG_WARNING = 'no hardware acceleration works here: using TCG (software emulation); the build will be slow';
