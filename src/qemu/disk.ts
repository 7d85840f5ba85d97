import { runChecked, type LogFn } from '../process.js';

export interface DiskInfo {
  format: string;
  virtualSize: number;
  actualSize: number;
  backingFile?: string;
}

/**
 * How PIM creates the qcow2 files a build VM writes to (the install disk and every layer's
 * overlay): 128 KiB clusters in 32 subclusters of 4 KiB (QEMU 5.2 and later). A guest's 4 KiB
 * write to a cluster the overlay does not have yet then copies nothing from the layer below,
 * where 64 KiB clusters without subclusters copy the other 60 KiB first: dpkg's thousands of
 * small writes during provisioning pay that on every new cluster. The final image is written
 * by `convert` with QEMU's defaults, so nothing reading it needs these options.
 */
export const WORK_DISK_OPTIONS = 'cluster_size=128k,extended_l2=on';

/** qemu-img, wrapped: create, info, convert, resize. Failures carry qemu-img's own message. */
export class DiskImages {
  constructor(
    private readonly qemuImg = 'qemu-img',
    private readonly log?: LogFn,
  ) {}

  async create(path: string, size: string, format: 'qcow2' | 'raw' = 'qcow2'): Promise<void> {
    const options = format === 'qcow2' ? ['-o', WORK_DISK_OPTIONS] : [];
    await runChecked(this.qemuImg, ['create', '-q', '-f', format, ...options, path, size], { log: this.log });
  }

  /** A new qcow2 overlay on top of `backing` (a qcow2), with the work-disk options. */
  async overlay(backing: string, path: string): Promise<void> {
    await runChecked(this.qemuImg, ['create', '-q', '-f', 'qcow2', '-o', WORK_DISK_OPTIONS, '-b', backing, '-F', 'qcow2', path], { log: this.log });
  }

  async info(path: string): Promise<DiskInfo> {
    const { stdout } = await runChecked(this.qemuImg, ['info', '--output=json', path], { log: this.log });
    const raw = JSON.parse(stdout) as Record<string, unknown>;
    return {
      format: String(raw['format']),
      virtualSize: Number(raw['virtual-size']),
      actualSize: Number(raw['actual-size']),
      backingFile: typeof raw['backing-filename'] === 'string' ? raw['backing-filename'] : undefined,
    };
  }

  /**
   * Converts (and so compacts: unallocated and zero clusters are not copied) into `dest`;
   * `compress` writes zstd-compressed qcow2 clusters (QEMU 5.1 and later read them).
   */
  async convert(source: string, dest: string, options: { format: 'qcow2' | 'raw'; compress?: boolean }): Promise<void> {
    const args = ['convert', '-O', options.format];
    if (options.compress && options.format === 'qcow2') args.push('-c', '-o', 'compression_type=zstd');
    await runChecked(this.qemuImg, [...args, source, dest], { log: this.log });
  }

  async resize(path: string, size: string): Promise<void> {
    await runChecked(this.qemuImg, ['resize', '-q', path, size], { log: this.log });
  }

  async check(path: string): Promise<void> {
    await runChecked(this.qemuImg, ['check', '-q', path], { log: this.log });
  }
}
