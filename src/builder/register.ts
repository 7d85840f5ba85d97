import { existsSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Project } from '../config/project.js';
import { WorkError, errorMessage } from '../errors.js';
import { Registry, imageState, referencedPaths, type ImageRecord } from '../registry/registry.js';
import type { BuiltImage } from './builder.js';
import type { BuildPlan } from './plan.js';

export interface Registered {
  record: ImageRecord;
  /** Files of superseded images removed from disk. */
  removed: string[];
  /** Superseded images left on disk because they were modified since they were built. */
  keptModified: string[];
}

/** Where a build's image lives once registered: unique per build, so no build ever overwrites another's file. */
export function imagePathFor(project: Project, plan: BuildPlan, buildId: string): string {
  return join(project.imagesDir(), `${plan.profileName}-${plan.arch}-${plan.cacheKey.slice(0, 12)}-${buildId}.qcow2`);
}

/**
 * Makes a built image the image of its profile and arch. Every builder's output is registered
 * here, the same way: the file moves to its own final path, the record is written under the
 * registry's lock, and only then is a superseded image's file removed (unless build.keep keeps
 * it, another record points at it, or it was modified since). A failure leaves the registry as
 * it was and removes only the new file, which nothing refers to.
 */
export async function registerBuilt(
  project: Project,
  plan: BuildPlan,
  built: BuiltImage,
  buildId: string,
  options: { startedAt: number; lockTimeoutMs?: number } = { startedAt: Date.now() },
): Promise<Registered> {
  const finalPath = imagePathFor(project, plan, buildId);
  renameSync(built.path, finalPath);
  const record: ImageRecord = {
    profile: plan.profileName,
    arch: plan.arch,
    cache_key: plan.cacheKey,
    inputs: plan.inputs,
    path: finalPath,
    iso: plan.iso.name,
    built_at: new Date().toISOString(),
    build_seconds: Math.round((Date.now() - options.startedAt) / 1000),
    builder: built.builder,
    virtual_size: built.virtualSize,
    file_size: built.fileSize,
    sha256: built.sha256,
    compressed: plan.settings.compress,
    compression: plan.settings.compress ? 'zstd' : 'none',
    build_user: plan.settings.buildUser,
    ...(built.patchedAt ? { patched_at: built.patchedAt } : {}),
    ...(built.warnings.length ? { warnings: built.warnings } : {}),
  };
  const registry = new Registry(project.registryPath());
  let dropped: ImageRecord[];
  try {
    ({ dropped } = await registry.registerImage(record, { keep: plan.settings.keep, lockTimeoutMs: options.lockTimeoutMs }));
  } catch (err) {
    rmSync(finalPath, { force: true });
    throw new WorkError(`registering ${plan.profileName}/${plan.arch} failed, so the new image was removed and the registry is unchanged: ${errorMessage(err)}`);
  }
  const removed: string[] = [];
  const keptModified: string[] = [];
  if (dropped.length) {
    const stillReferenced = referencedPaths(registry.read());
    for (const old of dropped) {
      if (stillReferenced.has(old.path) || !existsSync(old.path)) continue;
      if (imageState(old) === 'modified') {
        keptModified.push(old.path);
        continue;
      }
      rmSync(old.path, { force: true });
      rmSync(`${old.path}.log`, { force: true });
      removed.push(old.path);
    }
  }
  return { record, removed, keptModified };
}
