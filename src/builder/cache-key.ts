import { createHash } from 'node:crypto';

/** Bumped whenever PIM changes how it builds, so that old images stop matching. */
export const BUILD_FORMAT_VERSION = 2;

/** JSON with map keys sorted at every depth: the same data always serialises the same way. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value ?? null);
}

export function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

export interface CacheInputs {
  profile: Record<string, unknown>;
  preseedTemplate: string;
  installTemplate: string;
  /** Script contents in run order. */
  scripts: { name: string; content: string }[];
  /** PIM's own guest commands (prepare, seal): they shape the image as much as a script does. */
  guestScripts?: string[];
  /** The build settings that change the output file (disk size, compression, upgrade, build user). */
  settings?: Record<string, unknown>;
  isoChecksum: string;
  arch: string;
  formatVersion?: number;
}

/**
 * The cache key: SHA-256 over everything that decides the image. `inputs` holds one hash per
 * input, so that a miss can say which input changed since the last build.
 */
export function computeCacheKey(inputs: CacheInputs): { key: string; inputs: Record<string, string> } {
  const parts: Record<string, string> = {
    profile: sha256(canonicalJson(inputs.profile)),
    preseed_template: sha256(inputs.preseedTemplate),
    install_template: sha256(inputs.installTemplate),
    scripts_order: sha256(inputs.scripts.map((s) => s.name).join('\n')),
    guest_scripts: sha256(canonicalJson(inputs.guestScripts ?? [])),
    settings: sha256(canonicalJson(inputs.settings ?? {})),
    iso_checksum: inputs.isoChecksum,
    arch: inputs.arch,
    format_version: String(inputs.formatVersion ?? BUILD_FORMAT_VERSION),
  };
  for (const script of inputs.scripts) parts[`script:${script.name}`] = sha256(script.content);
  return { key: sha256(canonicalJson(parts)), inputs: parts };
}

/** Which inputs differ between two builds, for `--verbose` on a cache miss. */
export function changedInputs(before: Record<string, string>, after: Record<string, string>): string[] {
  const names = new Set([...Object.keys(before), ...Object.keys(after)]);
  return [...names].filter((n) => before[n] !== after[n]).sort();
}
