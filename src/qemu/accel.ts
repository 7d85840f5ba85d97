import { accessSync, constants, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { hostname, release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { hostArch, type Arch } from '../arch.js';
import { spawnManaged, which } from '../process.js';
import type { Accelerator } from './command.js';
import { qemuBinary } from './command.js';
import { findAarch64Firmware } from './firmware.js';

export interface AccelVerdict {
  usable: boolean;
  reason?: string;
}

export type AccelReport = Record<Accelerator, AccelVerdict>;

export interface AccelProbeOptions {
  timeoutMs?: number;
  platform?: NodeJS.Platform;
}

/**
 * Whether `accel` really runs an `arch` guest here. Decided by trying, not by file existence:
 * a probe VM boots firmware that writes to a console (SeaBIOS to the debug port on x86_64,
 * UEFI to the serial port on arm64), and the accelerator counts as usable only if that output
 * appears. On the test machines /dev/kvm opens and `-accel kvm` starts, yet the guest never
 * runs a single instruction; this is how PIM notices.
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
  return runProbeVm(arch, accel, options.timeoutMs ?? (accel === 'tcg' ? 20_000 : 8_000));
}

async function runProbeVm(arch: Arch, accel: Accelerator, timeoutMs: number): Promise<AccelVerdict> {
  const dir = mkdtempSync(join(tmpdir(), 'pim-probe-'));
  const out = join(dir, 'console.log');
  const args = ['-nodefaults', '-no-user-config', '-display', 'none', '-m', '128', '-accel', accel, '-cpu', accel === 'tcg' ? 'max' : 'host'];
  if (arch === 'x86_64') {
    args.push('-machine', 'q35', '-chardev', `file,id=dbg,path=${out}`, '-device', 'isa-debugcon,iobase=0x402,chardev=dbg');
  } else {
    const fw = findAarch64Firmware();
    if (!fw) {
      rmSync(dir, { recursive: true, force: true });
      return { usable: false, reason: 'no aarch64 UEFI firmware to probe with (install qemu-efi-aarch64)' };
    }
    args.push('-machine', 'virt', ...(fw.mode === 'pflash' ? ['-drive', `if=pflash,format=raw,readonly=on,file=${fw.code}`] : ['-bios', fw.code]));
    args.push('-chardev', `file,id=ser,path=${out}`, '-serial', 'chardev:ser');
  }
  const child = spawnManaged(qemuBinary(arch), args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (c: Buffer) => (stderr += c.toString()));
  let exited = false;
  child.on('exit', () => (exited = true));
  const started = Date.now();
  try {
    while (Date.now() - started < timeoutMs) {
      await new Promise((r) => setTimeout(r, 100));
      if (existsSync(out) && statSync(out).size > 0) return { usable: true };
      if (exited) break;
    }
    const detail = stderr.trim().split('\n').filter(Boolean).slice(0, 2).join(' / ');
    if (exited) return { usable: false, reason: `QEMU exited at start${detail ? `: ${detail}` : ''}` };
    return {
      usable: false,
      reason: `QEMU started with -accel ${accel} but the guest ran nothing (no firmware output within ${Math.round(timeoutMs / 1000)} s)${detail ? `: ${detail}` : ''}`,
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

function hostKey(): string {
  return `${hostname()}|${process.platform}|${release()}`;
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
  for (const accel of ['kvm', 'hvf', 'tcg'] as const) {
    report[accel] = candidateAccelerators().includes(accel)
      ? await probeAccelerator(arch, accel)
      : { usable: false, reason: accel === 'hvf' ? 'HVF exists only on macOS' : accel === 'kvm' ? 'KVM exists only on Linux' : 'unsupported' };
  }
  if (cachePath) {
    const fresh = entry && Date.now() - entry.at < CACHE_TTL_MS ? entry : { at: Date.now(), arches: {} };
    fresh.arches[arch] = report;
    cache[hostKey()] = fresh;
    mkdirSync(cacheDir!, { recursive: true });
    writeFileSync(cachePath, `${JSON.stringify(cache, null, 2)}\n`);
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
