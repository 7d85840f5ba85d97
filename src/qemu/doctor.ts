import { ARCHES, hostArch, type Arch } from '../arch.js';
import { run, which } from '../process.js';
import { acceleratorReport, selectAccelerator, type AccelReport } from './accel.js';
import type { Accelerator } from './command.js';
import { findAarch64Firmware } from './firmware.js';

export interface ToolCheck {
  found: boolean;
  path?: string;
  version?: string;
  install?: string;
  /** Not needed to build: what it is for, and what PIM does without it. */
  optional?: string;
}

export interface DoctorReport {
  host: { platform: NodeJS.Platform; arch: Arch };
  tools: Record<string, ToolCheck>;
  /** Accelerators for guests of the host's own arch. */
  accelerators: AccelReport;
  acceleratorsByArch: Record<Arch, AccelReport>;
  selected: Record<Arch, Accelerator>;
  override?: Accelerator;
  missing: { what: string; install: string }[];
}

const INSTALL: Record<string, { apt: string; brew: string }> = {
  'qemu-system-x86_64': { apt: 'apt-get install qemu-system-x86', brew: 'brew install qemu' },
  'qemu-system-aarch64': { apt: 'apt-get install qemu-system-arm', brew: 'brew install qemu' },
  'qemu-img': { apt: 'apt-get install qemu-utils', brew: 'brew install qemu' },
  'aarch64-uefi-firmware': { apt: 'apt-get install qemu-efi-aarch64', brew: 'brew install qemu' },
  'iso-reader': { apt: 'apt-get install xorriso', brew: 'brew install xorriso' },
  zstd: { apt: 'apt-get install zstd', brew: 'brew install zstd' },
  'seed-iso-writer': { apt: 'apt-get install xorriso', brew: 'brew install xorriso (or use macOS hdiutil)' },
};

function installHint(what: string, platform: NodeJS.Platform): string {
  const hint = INSTALL[what]!;
  return platform === 'darwin' ? hint.brew : hint.apt;
}

async function versionOf(path: string): Promise<string | undefined> {
  const result = await run(path, ['--version']).catch(() => undefined);
  return result?.stdout.split('\n')[0]?.replace(/^.*version\s+/i, '').trim() || undefined;
}

/** PIM's work disks use qcow2 subclusters (extended_l2), which QEMU has since 5.2. */
export const MIN_QEMU = [5, 2] as const;

/** Whether a `--version` string of a QEMU tool ("7.2.22 (Debian 1:7.2+dfsg-7+deb12u18)") is older than PIM needs. */
export function qemuTooOld(version: string | undefined): boolean {
  const m = /^(\d+)\.(\d+)/.exec(version ?? '');
  if (!m) return false;
  const [major, minor] = [Number(m[1]), Number(m[2])];
  return major < MIN_QEMU[0] || (major === MIN_QEMU[0] && minor < MIN_QEMU[1]);
}

async function checkBinary(name: string, platform: NodeJS.Platform): Promise<ToolCheck> {
  const path = which(name);
  if (!path) return { found: false, install: installHint(name, platform) };
  const version = await versionOf(path);
  if (name.startsWith('qemu') && qemuTooOld(version)) {
    return { found: false, path, version, install: `${installHint(name, platform)} (found ${version}; PIM needs QEMU ${MIN_QEMU.join('.')} or later)` };
  }
  return { found: true, path, version };
}

/** What this host has and lacks for building, and which accelerators really work. */
export async function doctor(options: { cacheDir?: string; refresh?: boolean; override?: Accelerator } = {}): Promise<DoctorReport> {
  const platform = process.platform;
  const tools: Record<string, ToolCheck> = {};
  for (const name of ['qemu-system-x86_64', 'qemu-system-aarch64', 'qemu-img']) tools[name] = await checkBinary(name, platform);
  const firmware = findAarch64Firmware();
  tools['aarch64-uefi-firmware'] = firmware
    ? { found: true, path: firmware.code }
    : { found: false, install: installHint('aarch64-uefi-firmware', platform) };
  const reader = ['xorriso', 'bsdtar'].map((n) => ({ n, path: which(n) })).find((r) => r.path);
  tools['iso-reader'] = reader
    ? { found: true, path: reader.path, version: await versionOf(reader.path!) }
    : { found: false, install: installHint('iso-reader', platform) };

  // `pim deploy` writes NoCloud seed ISOs (UTM bundles, build verification).
  const seedWriter = ['xorriso', 'genisoimage', 'mkisofs', 'hdiutil'].map((n) => ({ n, path: which(n) })).find((r) => r.path);
  tools['seed-iso-writer'] = seedWriter
    ? { found: true, path: seedWriter.path }
    : { found: false, install: installHint('seed-iso-writer', platform) };

  // The AWS upload decompresses PIM's zstd-compressed images through it; without it, qemu-nbd.
  const zstd = which('zstd');
  tools['zstd'] = zstd
    ? { found: true, path: zstd, version: /v(\d+\.\d+\.\d+)/.exec((await versionOf(zstd)) ?? '')?.[1] }
    : { found: false, install: installHint('zstd', platform), optional: 'AWS uploads read compressed images through it (about 1.3 CPU-seconds less per GiB of data than qemu-nbd); without it, through qemu-nbd' };

  const acceleratorsByArch = {} as Record<Arch, AccelReport>;
  const selected = {} as Record<Arch, Accelerator>;
  for (const arch of ARCHES) {
    acceleratorsByArch[arch] = await acceleratorReport(arch, options.cacheDir, { refresh: options.refresh });
    selected[arch] = selectAccelerator(acceleratorsByArch[arch], options.override, platform);
  }
  const missing = Object.entries(tools)
    .filter(([, check]) => !check.found && !check.optional)
    .map(([what, check]) => ({ what, install: check.install! }));
  return {
    host: { platform, arch: hostArch() },
    tools,
    accelerators: acceleratorsByArch[hostArch()],
    acceleratorsByArch,
    selected,
    ...(options.override ? { override: options.override } : {}),
    missing,
  };
}
