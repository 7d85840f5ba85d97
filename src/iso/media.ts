import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Arch } from '../arch.js';
import { WorkError } from '../errors.js';
import { run, which, type LogFn } from '../process.js';

/** Where Debian's netinst ISOs keep the installer's kernel and initrd, per arch. */
export const INSTALLER_DIRS: Record<Arch, string> = { x86_64: '/install.amd', arm64: '/install.a64' };

const BOOT_CONFIGS = ['/isolinux/txt.cfg', '/isolinux/isolinux.cfg', '/isolinux/gtk.cfg', '/boot/grub/grub.cfg', '/EFI/boot/grub.cfg'];

export interface BootFiles {
  kernel: string;
  initrd: string;
  /** The paths inside the ISO they came from. */
  source: { kernel: string; initrd: string };
}

/** Reads files out of an ISO image with xorriso (or bsdtar), without mounting anything. */
export class IsoReader {
  constructor(
    readonly iso: string,
    private readonly log?: LogFn,
  ) {}

  private tool(): 'xorriso' | 'bsdtar' {
    if (which('xorriso')) return 'xorriso';
    if (which('bsdtar')) return 'bsdtar';
    throw new WorkError(`cannot read ${this.iso}: neither xorriso nor bsdtar is installed (apt-get install xorriso / brew install xorriso)`);
  }

  /** Extracts `path` (absolute, inside the ISO) to `dest`; false when the ISO has no such file. */
  async extract(path: string, dest: string): Promise<boolean> {
    if (this.tool() === 'xorriso') {
      const r = await run('xorriso', ['-osirrox', 'on', '-indev', this.iso, '-extract', path, dest], { log: this.log });
      return r.code === 0;
    }
    const dir = `${dest}.d`;
    mkdirSync(dir, { recursive: true });
    const r = await run('bsdtar', ['-x', '-f', this.iso, '-C', dir, path.replace(/^\//, '')], { log: this.log });
    if (r.code !== 0) return false;
    await run('mv', [join(dir, path), dest]);
    await run('rm', ['-rf', dir]);
    return true;
  }

  async readText(path: string, scratch: string): Promise<string | undefined> {
    const dest = join(scratch, `cfg-${path.replace(/[^A-Za-z0-9]/g, '_')}`);
    if (!(await this.extract(path, dest))) return undefined;
    return readFileSync(dest, 'utf8');
  }
}

/**
 * The installer's kernel and initrd: from `/install.amd/` (x86_64) or `/install.a64/` (arm64),
 * else from what the ISO's boot configuration (isolinux, GRUB) names.
 */
export async function extractInstallerBootFiles(iso: string, arch: Arch, destDir: string, log?: LogFn): Promise<BootFiles> {
  mkdirSync(destDir, { recursive: true });
  const reader = new IsoReader(iso, log);
  const kernel = join(destDir, 'vmlinuz');
  const initrd = join(destDir, 'initrd.gz');
  const dir = INSTALLER_DIRS[arch];
  if ((await reader.extract(`${dir}/vmlinuz`, kernel)) && (await reader.extract(`${dir}/initrd.gz`, initrd))) {
    return { kernel, initrd, source: { kernel: `${dir}/vmlinuz`, initrd: `${dir}/initrd.gz` } };
  }
  for (const config of BOOT_CONFIGS) {
    const text = await reader.readText(config, destDir);
    if (!text) continue;
    const named = bootFilesFromConfig(text);
    if (named && (await reader.extract(named.kernel, kernel)) && (await reader.extract(named.initrd, initrd))) {
      return { kernel, initrd, source: named };
    }
  }
  throw new WorkError(`${iso}: no installer kernel and initrd found (looked in ${dir}/ and in ${BOOT_CONFIGS.join(', ')})`);
}

/** The first kernel/initrd pair an isolinux or GRUB configuration names. Pure, for tests. */
export function bootFilesFromConfig(text: string): { kernel: string; initrd: string } | undefined {
  let kernel: string | undefined;
  let initrd: string | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    const k = /^(?:kernel|linux|linuxefi)\s+(\S+)/i.exec(line);
    if (k && !kernel) kernel = k[1];
    const appendInitrd = /(?:^|\s)initrd=(\S+)/.exec(line);
    if (appendInitrd && !initrd) initrd = appendInitrd[1]!.split(',')[0];
    const grubInitrd = /^(?:initrd|initrdefi)\s+(\S+)/i.exec(line);
    if (grubInitrd && !initrd) initrd = grubInitrd[1];
    if (kernel && initrd) break;
  }
  if (!kernel || !initrd) return undefined;
  const abs = (p: string) => (p.startsWith('/') ? p : `/${p}`);
  return { kernel: abs(kernel), initrd: abs(initrd) };
}
