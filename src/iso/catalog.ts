import { basename } from 'node:path';
import { debianArch, normalizeArch, type Arch } from '../arch.js';
import type { KeyedConfig } from '../config/layers.js';
import { checkSafeName } from '../config/merge.js';
import { isoEntrySchema, type IsoEntry } from '../config/schema.js';
import type { Project } from '../config/project.js';
import { ConfigError } from '../errors.js';
import { compareVersions } from './version.js';

/** The ISO catalog: isos.d/*.yml across layers, each entry merged over `default`. */
export class IsoCatalog {
  private constructor(private readonly entries: Map<string, IsoEntry>) {}

  static load(project: Project): IsoCatalog {
    return IsoCatalog.fromConfig(project.layers.loadKeyedDir('isos.d'));
  }

  static fromConfig(config: KeyedConfig): IsoCatalog {
    const entries = new Map<string, IsoEntry>();
    for (const name of config.names()) {
      if (name === 'default') continue;
      checkSafeName(name, 'ISO');
      const parsed = config.resolve(isoEntrySchema, name, 'ISO');
      const filename = parsed.filename ?? basename(new URL(parsed.url).pathname);
      entries.set(name, { ...parsed, name, filename: checkSafeName(filename, 'ISO filename') });
    }
    return new IsoCatalog(entries);
  }

  list(): IsoEntry[] {
    return [...this.entries.values()].sort((a, b) => a.name.localeCompare(b.name));
  }

  get(name: string): IsoEntry {
    const entry = this.entries.get(name);
    if (!entry) {
      throw new ConfigError(`unknown ISO '${name}'; known ISOs: ${[...this.entries.keys()].sort().join(', ') || '(none)'}`);
    }
    return entry;
  }

  /** The most recent entry for `arch`, optionally restricted to names matching `pattern`. */
  findByArch(arch: string, pattern?: string): IsoEntry | undefined {
    if (pattern) return this.findByPattern(pattern, { arch });
    const want = normalizeArch(arch);
    return newest(this.list().filter((e) => e.arch === want));
  }

  /**
   * Entries whose catalog name matches the glob `pattern`, in which
   * `{arch}` stands for the arch under any of its names (arm64/aarch64, x86_64/amd64) and
   * `{distro}`/`{version}` for the given values or anything. Several matches: the most recent
   * version wins.
   */
  findByPattern(pattern: string, opts: { arch: string; distro?: string; version?: string }): IsoEntry | undefined {
    const arch = normalizeArch(opts.arch);
    const regex = patternToRegex(pattern, arch, opts);
    const matches = this.list().filter((e) => e.arch === arch && regex.test(e.name));
    return newest(matches);
  }

  /** Every arch for which the catalog has at least one entry. */
  arches(): Arch[] {
    return [...new Set(this.list().map((e) => e.arch))].sort();
  }
}

function newest(entries: IsoEntry[]): IsoEntry | undefined {
  return [...entries].sort((a, b) => compareVersions(b.version, a.version) || a.name.localeCompare(b.name))[0];
}

function escapeRegex(text: string): string {
  return text.replace(/[.+^$()|[\]\\]/g, '\\$&');
}

export function patternToRegex(
  pattern: string,
  arch: Arch,
  opts: { distro?: string; version?: string } = {},
): RegExp {
  const archNames = arch === 'arm64' ? ['arm64', 'aarch64'] : [debianArch(arch), 'x86_64'];
  let source = '';
  for (const token of pattern.split(/(\{arch\}|\{distro\}|\{version\}|\*|\?)/)) {
    if (token === '{arch}') source += `(?:${archNames.join('|')})`;
    else if (token === '{distro}') source += opts.distro ? escapeRegex(opts.distro) : '[^/]*';
    else if (token === '{version}') source += opts.version ? escapeRegex(opts.version) : '[^/]*';
    else if (token === '*') source += '.*';
    else if (token === '?') source += '.';
    else source += escapeRegex(token).replace(/[{}]/g, '\\$&');
  }
  return new RegExp(`^${source}$`, 'i');
}
