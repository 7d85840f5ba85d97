import { existsSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Arch } from '../arch.js';
import type { Project } from '../config/project.js';
import { lockHolder, tryLock } from '../files/lock.js';
import { Registry, imageState, referencedPaths, type ImageRecord } from '../registry/registry.js';
import { workRoot } from './manager.js';

export interface CleanRequest {
  profile?: string;
  arch?: Arch;
  /** Every image, leftover work dirs, and image files no record refers to. */
  all?: boolean;
}

export interface CleanReport {
  removed: (ImageRecord & { existed: boolean })[];
  /** Registered images kept although not asked about: their file exists with another size. */
  modified: ImageRecord[];
  unregistered: string[];
  workDirs: string[];
  busyWorkDirs: { dir: string; holder: string }[];
}

/** The names PIM gives image files (and their logs): `PROFILE-ARCH-KEY12-BUILDID.qcow2`. */
const IMAGE_FILE = /^.+-(arm64|x86_64)-[0-9a-f]{12}-[0-9a-z]+-[0-9a-f]{6}\.qcow2(\.log)?$/;

/**
 * `pim build clean`. Without options it removes only the records whose file is gone, and
 * reports the images whose file changed (a booted qcow2 grows): a changed size is never a
 * reason to delete. With --profile/--arch it removes what they select; with --all, every image,
 * the work dirs no running build holds, and image files no record refers to.
 */
export async function cleanImages(project: Project, request: CleanRequest): Promise<CleanReport> {
  const registry = new Registry(project.registryPath());
  const filtered = request.all || request.profile !== undefined || request.arch !== undefined;
  const selected = (r: ImageRecord) =>
    request.all || (filtered && (!request.profile || r.profile === request.profile) && (!request.arch || r.arch === request.arch));
  const removedRecords = await registry.removeImages((r) => imageState(r) === 'missing' || selected(r));
  const stillReferenced = referencedPaths(registry.read());
  const removed = removedRecords.map((r) => {
    const existed = existsSync(r.path);
    if (!stillReferenced.has(r.path)) {
      rmSync(r.path, { force: true });
      rmSync(`${r.path}.log`, { force: true });
    }
    return { ...r, existed };
  });
  const modified = [...registry.listImages(), ...registry.listPrevious()].filter((r) => imageState(r) === 'modified');
  const report: CleanReport = { removed, modified, unregistered: [], workDirs: [], busyWorkDirs: [] };
  if (!request.all) return report;

  const imagesDir = project.imagesDir();
  if (existsSync(imagesDir)) {
    const referenced = referencedPaths(registry.read());
    for (const name of readdirSync(imagesDir)) {
      const path = join(imagesDir, name);
      if (!IMAGE_FILE.test(name) || referenced.has(path) || referenced.has(path.replace(/\.log$/, ''))) continue;
      rmSync(path, { force: true });
      report.unregistered.push(path);
    }
  }
  const work = workRoot(project);
  if (existsSync(work)) {
    const bases = new Set(readdirSync(work).map((name) => name.replace(/\.(lock|qcow2|qcow2\.part)$/, '')));
    for (const base of bases) {
      if (base.includes('.lock.') || base.endsWith('.tmp')) continue;
      const dir = join(work, base);
      const lock = tryLock(dir);
      if (!lock) {
        report.busyWorkDirs.push({ dir, holder: lockHolder(dir) ?? 'a running process' });
        continue;
      }
      try {
        rmSync(dir, { recursive: true, force: true });
        for (const suffix of ['.qcow2', '.qcow2.part']) rmSync(`${dir}${suffix}`, { force: true });
        report.workDirs.push(dir);
      } finally {
        lock.release();
      }
    }
  }
  return report;
}
