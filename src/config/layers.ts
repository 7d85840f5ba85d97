import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { ZodType, ZodTypeDef } from 'zod';
import { ConfigError } from '../errors.js';
import { deepMerge, isPlainObject, resolveNamed, type PlainObject } from './merge.js';
import { loadYamlFile, type SourcedYaml } from './yaml.js';

/**
 * SPEC convention 3: project before global before built-in. `dirs` is ordered from the lowest
 * priority (built-in) to the highest (project).
 */
export class ConfigLayers {
  constructor(readonly dirs: readonly string[]) {}

  /** The first file (highest priority) among `candidates` (relative paths), tried in order. */
  findFirst(candidates: readonly string[]): string | undefined {
    for (const candidate of candidates) {
      for (const dir of [...this.dirs].reverse()) {
        const path = join(dir, candidate);
        if (existsSync(path)) return path;
      }
    }
    return undefined;
  }

  /** Every file name in `subdir` ending in `ext`, across layers, deduplicated and sorted. */
  listNames(subdir: string, ext: string): string[] {
    const names = new Set<string>();
    for (const dir of this.dirs) {
      const path = join(dir, subdir);
      if (!existsSync(path)) continue;
      for (const file of readdirSync(path)) if (file.endsWith(ext)) names.add(file.slice(0, -ext.length));
    }
    return [...names].sort();
  }

  /** A single YAML file (such as pim.yml) deep-merged across layers. */
  loadMergedFile(relative: string): KeyedConfig {
    const sources = this.dirs.map((dir) => join(dir, relative)).filter((p) => existsSync(p)).map(loadYamlFile);
    return new KeyedConfig(mergeAll(sources), sources);
  }

  /**
   * A directory of YAML files of keyed entries (profiles.d, isos.d, targets.d). Every file of
   * every layer is deep-merged, layer by layer from built-in to project and, within a layer, in
   * file-name order: an entry in the project always wins over the same entry in a global or
   * built-in file, whatever the files are called.
   */
  loadKeyedDir(subdir: string): KeyedConfig {
    const sources: SourcedYaml[] = [];
    for (const dir of this.dirs) {
      const path = join(dir, subdir);
      if (!existsSync(path)) continue;
      for (const file of readdirSync(path).filter((f) => f.endsWith('.yml')).sort()) {
        sources.push(loadYamlFile(join(path, file)));
      }
    }
    return new KeyedConfig(mergeAll(sources), sources);
  }
}

function mergeAll(sources: readonly SourcedYaml[]): PlainObject {
  return sources.reduce<PlainObject>((acc, src) => deepMerge(acc, src.data), {});
}

/** Merged entries plus the sources they came from, so errors can name a file and a line. */
export class KeyedConfig {
  constructor(
    readonly data: PlainObject,
    readonly sources: readonly SourcedYaml[],
  ) {}

  names(): string[] {
    return Object.keys(this.data).sort();
  }

  /** `file:line` of the highest-priority source that defines `path` (or the most of it). */
  locate(path: readonly (string | number)[]): string {
    let best: { src: SourcedYaml; depth: number } | undefined;
    for (const src of [...this.sources].reverse()) {
      for (let depth = path.length; depth > 0; depth--) {
        if (src.has(path.slice(0, depth))) {
          if (!best || depth > best.depth) best = { src, depth };
          break;
        }
      }
    }
    if (!best) return this.sources.at(-1)?.file ?? '(built-in defaults)';
    const line = best.src.lineOf(path);
    return line ? `${best.src.file}:${line}` : best.src.file;
  }

  /** Validates `value` (found at `path` in this config) and names file, line and field on error. */
  validate<T>(schema: ZodType<T, ZodTypeDef, unknown>, value: unknown, path: readonly string[], what: string): T {
    const result = schema.safeParse(value);
    if (result.success) return result.data;
    const issue = result.error.issues[0]!;
    const full = [...path, ...issue.path];
    const field = issue.path.length ? issue.path.join('.') : '(entry)';
    throw new ConfigError(`${this.locate(full)}: ${what}: field '${field}': ${issue.message}`);
  }

  /** SPEC convention 1 plus validation: the `default`-merged entry NAME, checked by `schema`. */
  resolve<T>(schema: ZodType<T, ZodTypeDef, unknown>, name: string, kind: string): T {
    const entries: Record<string, PlainObject> = {};
    for (const [key, value] of Object.entries(this.data)) {
      if (value === null) entries[key] = {};
      else if (isPlainObject(value)) entries[key] = value;
      else throw new ConfigError(`${this.locate([key])}: ${kind} '${key}' must be a map`);
    }
    const merged = resolveNamed(entries, name, kind);
    return this.validate(schema, merged, [name || 'default'], `${kind} '${name || 'default'}'`);
  }
}
