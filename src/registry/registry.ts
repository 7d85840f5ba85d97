import { existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { parse, stringify } from 'yaml';
import type { Arch } from '../arch.js';
import { WorkError, errorMessage } from '../errors.js';
import { withFileLock } from './lock.js';

export interface ImageRecord {
  profile: string;
  arch: Arch;
  cache_key: string;
  /** Per-input hashes behind the cache key, to say what changed on the next build. */
  inputs: Record<string, string>;
  path: string;
  iso: string;
  built_at: string;
  build_seconds: number;
  builder: string;
  virtual_size: number;
  file_size: number;
  sha256: string;
}

export interface DeploymentRecord {
  profile: string;
  arch: Arch;
  target: string;
  type: string;
  ids: Record<string, string>;
  cache_key: string;
  deployed_at: string;
}

interface RegistryData {
  version: 1;
  images: Record<string, ImageRecord>;
  deployments: Record<string, DeploymentRecord>;
}

export function imageKey(profile: string, arch: Arch): string {
  return `${profile}/${arch}`;
}

/**
 * What PIM built and deployed: one YAML file, read freely, written only under a cross-process
 * lock and atomically (a temp file renamed over it). A file that cannot be parsed is reported
 * with its path and never overwritten.
 */
export class Registry {
  constructor(readonly path: string) {}

  read(): RegistryData {
    if (!existsSync(this.path)) return { version: 1, images: {}, deployments: {} };
    let data: unknown;
    try {
      data = parse(readFileSync(this.path, 'utf8'));
    } catch (err) {
      throw new WorkError(`the registry ${this.path} cannot be parsed (${errorMessage(err).split('\n')[0]}); fix or move it away -- PIM will not overwrite it`);
    }
    if (data === null || data === undefined) return { version: 1, images: {}, deployments: {} };
    if (typeof data !== 'object' || Array.isArray(data)) {
      throw new WorkError(`the registry ${this.path} is not a map; fix or move it away -- PIM will not overwrite it`);
    }
    const record = data as Partial<RegistryData>;
    return { version: 1, images: record.images ?? {}, deployments: record.deployments ?? {} };
  }

  /** Reads, changes and writes the registry under the lock. */
  async update<T>(change: (data: RegistryData) => T): Promise<T> {
    mkdirSync(dirname(this.path), { recursive: true });
    return withFileLock(this.path, () => {
      const data = this.read();
      const result = change(data);
      const temp = `${this.path}.${process.pid}.${Date.now()}.tmp`;
      writeFileSync(temp, stringify(data, { sortMapEntries: true }));
      renameSync(temp, this.path);
      return result;
    });
  }

  getImage(profile: string, arch: Arch): ImageRecord | undefined {
    return this.read().images[imageKey(profile, arch)];
  }

  listImages(): ImageRecord[] {
    return Object.values(this.read().images).sort((a, b) => imageKey(a.profile, a.arch).localeCompare(imageKey(b.profile, b.arch)));
  }

  async registerImage(record: ImageRecord): Promise<void> {
    await this.update((data) => {
      data.images[imageKey(record.profile, record.arch)] = record;
    });
  }

  async removeImages(filter: (record: ImageRecord) => boolean): Promise<ImageRecord[]> {
    return this.update((data) => {
      const removed: ImageRecord[] = [];
      for (const [key, record] of Object.entries(data.images)) {
        if (filter(record)) {
          removed.push(record);
          delete data.images[key];
        }
      }
      return removed;
    });
  }

  listDeployments(): DeploymentRecord[] {
    return Object.values(this.read().deployments);
  }
}

/** An image whose file still exists with the size it was registered with. */
export function imageIntact(record: ImageRecord): boolean {
  try {
    return statSync(record.path).size === record.file_size;
  } catch {
    return false;
  }
}
