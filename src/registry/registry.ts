import { mkdirSync, readFileSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import { parse, stringify } from 'yaml';
import { z } from 'zod';
import type { Arch } from '../arch.js';
import { WorkError, errorMessage } from '../errors.js';
import { writeFileAtomic } from '../files/atomic-write.js';
import { withFileLock } from '../files/lock.js';

const archField = z.enum(['arm64', 'x86_64']);

const imageRecordSchema = z
  .object({
    profile: z.string(),
    arch: archField,
    cache_key: z.string(),
    /** Per-input hashes behind the cache key, to say what changed on the next build. */
    inputs: z.record(z.string()).default({}),
    path: z.string(),
    iso: z.string(),
    built_at: z.string(),
    build_seconds: z.number(),
    builder: z.string(),
    virtual_size: z.number(),
    file_size: z.number(),
    sha256: z.string(),
    compressed: z.boolean().optional(),
    /** The qcow2 compression of the image file: zstd, or none. */
    compression: z.enum(['zstd', 'none']).optional(),
    /** When the image's packages were brought up to date (build.upgrade), else absent. */
    patched_at: z.string().optional(),
    build_user: z.enum(['lock', 'remove', 'keep']).optional(),
    warnings: z.array(z.string()).optional(),
  })
  .passthrough();
export type ImageRecord = z.infer<typeof imageRecordSchema>;

const deploymentRecordSchema = z
  .object({
    profile: z.string(),
    arch: archField,
    target: z.string(),
    type: z.string(),
    ids: z.record(z.string()),
    cache_key: z.string(),
    sha256: z.string().optional(),
    deployed_at: z.string(),
    /** Earlier deployments of this profile and arch to this target, still on it (newest first). */
    previous: z.array(z.object({ ids: z.record(z.string()), cache_key: z.string(), deployed_at: z.string() }).passthrough()).optional(),
  })
  .passthrough();
export type DeploymentRecord = z.infer<typeof deploymentRecordSchema>;

const registrySchema = z
  .object({
    // Written last (keys are sorted): a file cut short anywhere lacks it.
    version: z.literal(1),
    images: z.record(imageRecordSchema).default({}),
    /** Superseded images kept on disk (build.keep), newest first, per `profile/arch`. */
    previous: z.record(z.array(imageRecordSchema)).default({}),
    deployments: z.record(deploymentRecordSchema).default({}),
  })
  .passthrough();
export type RegistryData = z.infer<typeof registrySchema>;

function emptyRegistry(): RegistryData {
  return { version: 1, images: {}, previous: {}, deployments: {} };
}

export function imageKey(profile: string, arch: Arch): string {
  return `${profile}/${arch}`;
}

export function deploymentKey(profile: string, arch: Arch, target: string): string {
  return `${profile}/${arch}@${target}`;
}

/** What happened to the records a registration replaced. */
export interface Registration {
  /** The image the new one replaced, if any (now in `previous` or dropped). */
  replaced?: ImageRecord;
  /** Records no longer in the registry at all: their files may be removed. */
  dropped: ImageRecord[];
}

/**
 * What PIM built and deployed: one YAML file, read freely, written only under a cross-process
 * lock and atomically. A file that cannot be read, parsed or understood is reported with its
 * path and never overwritten.
 */
export class Registry {
  constructor(readonly path: string) {}

  read(): RegistryData {
    let text: string;
    try {
      text = readFileSync(this.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return emptyRegistry();
      throw this.unusable(`cannot be read (${errorMessage(err)})`);
    }
    let data: unknown;
    try {
      data = parse(text);
    } catch (err) {
      throw this.unusable(`cannot be parsed (${errorMessage(err).split('\n')[0]})`);
    }
    // PIM never writes an empty registry (a missing file is the empty one): an empty file was
    // cut short by something else, and what it held is unknown.
    if (data === null || data === undefined) throw this.unusable('is empty (truncated?)');
    const result = registrySchema.safeParse(data);
    if (!result.success) {
      const issue = result.error.issues[0]!;
      const where = issue.path.length ? issue.path.join('.') : '(top level)';
      throw this.unusable(`is not a PIM registry (${where}: ${issue.message})`);
    }
    return result.data;
  }

  private unusable(why: string): WorkError {
    return new WorkError(`the registry ${this.path} ${why}; fix it or move it away -- PIM will not overwrite it`);
  }

  /** Reads, changes and writes the registry under the lock. */
  async update<T>(change: (data: RegistryData) => T, options: { lockTimeoutMs?: number } = {}): Promise<T> {
    mkdirSync(dirname(this.path), { recursive: true });
    return withFileLock(
      this.path,
      () => {
        const data = this.read();
        const result = change(data);
        writeFileAtomic(this.path, stringify(data, { sortMapEntries: true }));
        return result;
      },
      { timeoutMs: options.lockTimeoutMs },
    );
  }

  getImage(profile: string, arch: Arch): ImageRecord | undefined {
    return this.read().images[imageKey(profile, arch)];
  }

  listImages(): ImageRecord[] {
    return Object.values(this.read().images).sort(byImageKey);
  }

  /** Superseded images still on disk (build.keep), newest first. */
  listPrevious(): ImageRecord[] {
    return Object.values(this.read().previous).flat();
  }

  /**
   * Makes `record` the image of its profile and arch. The image it replaces is kept in
   * `previous` (newest first) up to `keep` entries; what falls off is returned as dropped.
   */
  async registerImage(record: ImageRecord, options: { keep?: number; lockTimeoutMs?: number } = {}): Promise<Registration> {
    const keep = options.keep ?? 0;
    return this.update((data) => {
      const key = imageKey(record.profile, record.arch);
      const replaced = data.images[key];
      data.images[key] = record;
      const history = [...(replaced && replaced.path !== record.path ? [replaced] : []), ...(data.previous[key] ?? [])];
      const dropped = history.slice(keep);
      if (history.length > keep) {
        if (keep === 0) delete data.previous[key];
        else data.previous[key] = history.slice(0, keep);
      } else if (history.length) {
        data.previous[key] = history;
      }
      return { replaced, dropped };
    }, options);
  }

  /** Removes the images (current and previous) that `filter` selects; returns them. */
  async removeImages(filter: (record: ImageRecord) => boolean): Promise<ImageRecord[]> {
    return this.update((data) => {
      const removed: ImageRecord[] = [];
      for (const [key, record] of Object.entries(data.images)) {
        if (filter(record)) {
          removed.push(record);
          delete data.images[key];
        }
      }
      for (const [key, list] of Object.entries(data.previous)) {
        const keepList = list.filter((r) => !filter(r));
        removed.push(...list.filter((r) => filter(r)));
        if (keepList.length) data.previous[key] = keepList;
        else delete data.previous[key];
      }
      return removed;
    });
  }

  listDeployments(): DeploymentRecord[] {
    return Object.values(this.read().deployments).sort((a, b) =>
      deploymentKey(a.profile, a.arch, a.target).localeCompare(deploymentKey(b.profile, b.arch, b.target)),
    );
  }

  getDeployment(profile: string, arch: Arch, target: string): DeploymentRecord | undefined {
    return this.read().deployments[deploymentKey(profile, arch, target)];
  }

  async recordDeployment(record: DeploymentRecord): Promise<void> {
    await this.update((data) => {
      data.deployments[deploymentKey(record.profile, record.arch, record.target)] = record;
    });
  }

  async removeDeployment(profile: string, arch: Arch, target: string): Promise<DeploymentRecord | undefined> {
    return this.update((data) => {
      const key = deploymentKey(profile, arch, target);
      const record = data.deployments[key];
      delete data.deployments[key];
      return record;
    });
  }
}

function byImageKey(a: ImageRecord, b: ImageRecord): number {
  return imageKey(a.profile, a.arch).localeCompare(imageKey(b.profile, b.arch));
}

export type ImageState = 'ok' | 'modified' | 'missing';

/**
 * Whether a registered image is still what was built: `ok` when its file has the registered
 * size, `modified` when it exists with another size (someone booted it: a qcow2 grows),
 * `missing` when it is gone. PIM does not rehash gigabytes to decide.
 */
export function imageState(record: ImageRecord): ImageState {
  try {
    return statSync(record.path).size === record.file_size ? 'ok' : 'modified';
  } catch {
    return 'missing';
  }
}

export function imageIntact(record: ImageRecord): boolean {
  return imageState(record) === 'ok';
}

/** Every path the registry still refers to (current and previous images). */
export function referencedPaths(data: RegistryData): Set<string> {
  const paths = new Set<string>();
  for (const record of Object.values(data.images)) paths.add(record.path);
  for (const list of Object.values(data.previous)) for (const record of list) paths.add(record.path);
  return paths;
}
