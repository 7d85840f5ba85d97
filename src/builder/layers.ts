import { constants, copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import { renderString } from '../profile/render.js';
import { runChecked } from '../process.js';
import { shq } from '../shell.js';
import type { ReleaseRecord } from './archive-record.js';
import { canonicalJson, sha256 } from './cache-key.js';
import type { BuildPlan } from './plan.js';

/** Bumped when how layers are made changes, so that older layers stop matching. */
export const LAYER_FORMAT = 1;

/**
 * One cached disk state of a build: the disk after the install, or after a provisioning script
 * (a qcow2 overlay on the layer before it). Keyed by everything that decided it so far.
 */
export interface Layer {
  key: string;
  /** `install`, or the scripts whose work the layer holds. */
  name: string;
  /** The scripts (by index in plan.scripts) run to make it; -1 stands for pim-prepare. */
  scripts: number[];
}

/**
 * The profile values a template reads: rendered with a recording stand-in for the values, so
 * the install layer's key changes when a value the preseed or install script uses changes, and
 * only then.
 */
export function valuesUsedBy(sources: string[], profile: Record<string, unknown>): Record<string, unknown> {
  const used: Record<string, unknown> = {};
  const base: Record<string, unknown> = {
    ...profile,
    packages: Array.isArray(profile['packages']) ? (profile['packages'] as string[]).join(' ') : profile['packages'],
    profile_name: '', preseed_url: '', install_url: '', installed_url: '', authorized_keys_url: '', ssh_public_key: 'key', arch: '', shq,
  };
  const recorder = new Proxy(base, {
    has(target, name) {
      if (typeof name === 'string' && name in profile) used[name] = profile[name];
      else if (typeof name === 'string' && !(name in target) && /^[a-z_][a-z0-9_]*$/.test(name)) used[name] ??= '(absent)';
      return name in target;
    },
    get(target, name) {
      if (typeof name === 'string' && name in profile) used[name] = profile[name];
      return target[name as string];
    },
  });
  for (const source of sources) {
    try {
      renderString(source, recorder);
    } catch {
      /* a template that fails here fails the build later, with its own message */
    }
  }
  return used;
}

/** The layers a build goes through, in order: the install, then one per script before `finalize`. */
export function layerChain(plan: BuildPlan, archOverride?: string): Layer[] {
  const s = plan.settings;
  const install = sha256(
    canonicalJson({
      format: LAYER_FORMAT,
      iso: plan.iso.checksum,
      preseed: plan.templates.preseed.content,
      install: plan.templates.install.content,
      values: valuesUsedBy([plan.templates.preseed.content, plan.templates.install.content], plan.profile as Record<string, unknown>),
      disk: s.diskSize,
      arch: archOverride ?? plan.arch,
      user: s.sshUser,
    }),
  );
  const chain: Layer[] = [{ key: install, name: 'install', scripts: [] }];
  const env = { profile: plan.profileName, arch: plan.arch, user: s.sshUser };
  plan.scripts.forEach((script, index) => {
    if (script.name === 'finalize') return;
    const parent = chain.at(-1)!;
    // The first layer after the install also holds PIM's own preparation (the upgrade).
    const prepare = index === 0 ? { prepare: plan.guest.prepare.content, upgrade: s.upgrade } : {};
    const key = sha256(canonicalJson({ format: LAYER_FORMAT, parent: parent.key, name: script.name, script: script.content, env, ...prepare }));
    chain.push({ key, name: index === 0 ? `pim-prepare+${script.name}` : script.name, scripts: index === 0 ? [-1, index] : [index] });
  });
  return chain;
}

/** Sizes as pim.yml takes them (20G, 512M) in bytes. */
export function parseSize(text: string): number {
  const m = /^(\d+(?:\.\d+)?)([KMGT]?)$/i.exec(text.trim());
  if (!m) return Number.NaN;
  const unit = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 }[m[2]!.toUpperCase() as '' | 'K' | 'M' | 'G' | 'T'];
  return Math.round(Number(m[1]) * unit);
}

/**
 * The layer cache: `KEY.qcow2` files (each backed by its parent layer) under the cache dir, with
 * the install layer's throw-away SSH key beside it. Layers are committed complete with a rename,
 * marked while a build uses them, and evicted least recently used first (leaves only, never one
 * in use) when the cache passes its size cap.
 */
export class LayerCache {
  constructor(
    readonly dir: string,
    readonly capBytes: number,
  ) {}

  path(key: string): string {
    return join(this.dir, `${key}.qcow2`);
  }

  keyPath(key: string): string {
    return join(this.dir, `${key}.id_ed25519`);
  }

  has(key: string): boolean {
    return existsSync(this.path(key));
  }

  /** How many layers of `chain`, from its start, are cached (the install layer needs its key too). */
  cachedPrefix(chain: Layer[]): number {
    let n = 0;
    for (const layer of chain) {
      if (!this.has(layer.key)) break;
      if (n === 0 && !existsSync(this.keyPath(layer.key))) break;
      n++;
    }
    return n;
  }

  /** Marks layers as in use by this process (eviction skips them); returns the release. */
  use(keys: string[]): () => void {
    mkdirSync(this.dir, { recursive: true });
    const markers = keys.map((key) => join(this.dir, `${key}.inuse.${process.pid}`));
    for (const marker of markers) writeFileSync(marker, '');
    const now = new Date();
    for (const key of keys) {
      try {
        utimesSync(this.path(key), now, now);
      } catch {
        /* evicted meanwhile: the build then fails to open it, and says so */
      }
    }
    return () => markers.forEach((m) => rmSync(m, { force: true }));
  }

  /**
   * Puts a finished layer file into the cache (a clone or copy, then a rename), re-pointed at its
   * parent's cached file. With `move` (the work dir is about to go), the file itself is moved there
   * instead of copied, when both are on one file system: a copy of the install layer is most of a
   * gigabyte read and written again at the end of every build that makes it. An existing layer of
   * the same key (another build's, committed meanwhile) is kept: 'kept', and then the layers this
   * build made on its own copy must not be committed on top of that one (same key, same files, but
   * never the same bytes).
   */
  async commit(
    key: string,
    file: string,
    parentKey: string | undefined,
    privateKey?: string,
    releaseFiles?: ReleaseRecord,
    options: { move?: boolean } = {},
  ): Promise<'stored' | 'kept'> {
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    if (privateKey && !existsSync(this.keyPath(key))) {
      const temp = `${this.keyPath(key)}.${process.pid}.tmp`;
      copyFileSync(privateKey, temp);
      renameSync(temp, this.keyPath(key));
    }
    if (this.has(key)) return 'kept';
    const temp = `${this.path(key)}.${process.pid}.tmp`;
    try {
      if (!options.move || !moved(file, temp)) await copyFile(file, temp, constants.COPYFILE_FICLONE);
      if (parentKey) await runChecked('qemu-img', ['rebase', '-u', '-f', 'qcow2', '-b', this.path(parentKey), '-F', 'qcow2', temp]);
      writeFileSync(join(this.dir, `${key}.json`), `${JSON.stringify({ created_at: new Date().toISOString(), ...(releaseFiles ? { release_files: releaseFiles } : {}) })}\n`);
      renameSync(temp, this.path(key));
      return 'stored';
    } finally {
      rmSync(temp, { force: true });
    }
  }

  /** When the layer was made (a reused upgrade layer says when the image was patched). */
  createdAt(key: string): string | undefined {
    return this.meta(key).created_at;
  }

  /** The release files an upgrade layer's package lists came from (archive-record.ts). */
  releaseFiles(key: string): ReleaseRecord | undefined {
    return this.meta(key).release_files;
  }

  private meta(key: string): { created_at?: string; release_files?: ReleaseRecord } {
    try {
      return JSON.parse(readFileSync(join(this.dir, `${key}.json`), 'utf8')) as { created_at?: string; release_files?: ReleaseRecord };
    } catch {
      return {};
    }
  }

  private layers(): { key: string; size: number; mtime: number }[] {
    if (!existsSync(this.dir)) return [];
    return readdirSync(this.dir)
      .filter((f) => /^[0-9a-f]{64}\.qcow2$/.test(f))
      .map((f) => {
        const st = statSync(join(this.dir, f));
        return { key: f.slice(0, 64), size: st.size, mtime: st.mtimeMs };
      });
  }

  private inUse(key: string): boolean {
    return readdirSync(this.dir).some((f) => {
      if (!f.startsWith(`${key}.inuse.`)) return false;
      const pid = Number(f.split('.').at(-1));
      try {
        process.kill(pid, 0);
        return true;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EPERM') return true;
        rmSync(join(this.dir, f), { force: true });
        return false;
      }
    });
  }

  private async parents(): Promise<Map<string, string>> {
    const parents = new Map<string, string>();
    for (const layer of this.layers()) {
      const { stdout } = await runChecked('qemu-img', ['info', '--output=json', this.path(layer.key)]);
      const backing = (JSON.parse(stdout) as { 'backing-filename'?: string })['backing-filename'];
      const m = backing ? /([0-9a-f]{64})\.qcow2$/.exec(backing) : null;
      if (m) parents.set(layer.key, m[1]!);
    }
    return parents;
  }

  /** Evicts least recently used leaves (never a layer in use) until the cache fits its cap. */
  async evict(log?: (line: string) => void): Promise<string[]> {
    let layers = this.layers();
    let total = layers.reduce((sum, l) => sum + l.size, 0);
    if (total <= this.capBytes) return [];
    const parents = await this.parents();
    const evicted: string[] = [];
    for (;;) {
      if (total <= this.capBytes) break;
      const children = new Set(parents.values());
      const leaves = layers.filter((l) => !children.has(l.key) && !this.inUse(l.key)).sort((a, b) => a.mtime - b.mtime);
      const victim = leaves[0];
      if (!victim) break;
      this.remove(victim.key);
      parents.delete(victim.key);
      evicted.push(victim.key);
      total -= victim.size;
      layers = layers.filter((l) => l.key !== victim.key);
      log?.(`evicted layer ${victim.key.slice(0, 12)} (${Math.round(victim.size / 1048576)} MiB) from the layer cache`);
    }
    return evicted;
  }

  /**
   * Removes a layer and every cached layer made on top of it (a child is a delta over its
   * parent's exact bytes, so it cannot outlive a parent made again), except those a running build
   * uses and their parents. Returns what was removed and what was kept because in use.
   */
  async removeWithDescendants(key: string): Promise<{ removed: string[]; inUse: string[] }> {
    const parents = await this.parents();
    const doomed = new Set([key]);
    for (let grew = true; grew; ) {
      grew = false;
      for (const [child, parent] of parents) {
        if (doomed.has(parent) && !doomed.has(child)) {
          doomed.add(child);
          grew = true;
        }
      }
    }
    const inUse = [...doomed].filter((k) => this.has(k) && this.inUse(k));
    for (let k of inUse) {
      // An in-use layer keeps the layers below it (its backing files).
      while (doomed.delete(k) && parents.has(k)) k = parents.get(k)!;
    }
    const removed = [...doomed].filter((k) => this.has(k));
    removed.forEach((k) => this.remove(k));
    return { removed, inUse };
  }

  private remove(key: string): void {
    rmSync(this.path(key), { force: true });
    rmSync(this.keyPath(key), { force: true });
    rmSync(join(this.dir, `${key}.json`), { force: true });
  }

  /** `pim build clean --layers`: every layer no running build uses. */
  clean(): { removed: number; bytes: number; inUse: number } {
    let removed = 0;
    let bytes = 0;
    let inUse = 0;
    for (const layer of this.layers()) {
      if (this.inUse(layer.key)) {
        inUse++;
        continue;
      }
      this.remove(layer.key);
      removed++;
      bytes += layer.size;
    }
    return { removed, bytes, inUse };
  }
}

/** Renames `from` to `to`; false when they are on different file systems (then it must be copied). */
function moved(from: string, to: string): boolean {
  try {
    renameSync(from, to);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EXDEV') return false;
    throw err;
  }
}
