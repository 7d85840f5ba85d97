import { ConfigError } from '../errors.js';

export type PlainObject = Record<string, unknown>;

export function isPlainObject(value: unknown): value is PlainObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * SPEC convention 1: maps merge recursively; scalars and arrays from `over` replace those of
 * `base`. Neither input is modified.
 */
export function deepMerge<T extends PlainObject>(base: T | undefined, over: PlainObject | undefined): T {
  const out: PlainObject = { ...(base ?? {}) };
  for (const [key, value] of Object.entries(over ?? {})) {
    const prior = out[key];
    out[key] = isPlainObject(prior) && isPlainObject(value) ? deepMerge(prior, value) : value;
  }
  return out as T;
}

/**
 * Asking for NAME returns deepMerge(default, NAME); asking for `default` or '' returns default
 * alone; an unknown name is an error that lists the known names.
 */
export function resolveNamed<T extends PlainObject>(
  entries: Record<string, T>,
  name: string,
  kind: string,
): T {
  const base = entries['default'];
  if (name === '' || name === 'default') {
    if (base) return base;
    if (name === 'default') throw unknownName(entries, name, kind);
    return {} as T;
  }
  const entry = Object.prototype.hasOwnProperty.call(entries, name) ? entries[name] : undefined;
  if (!entry) throw unknownName(entries, name, kind);
  return deepMerge<T>(base, entry);
}

function unknownName(entries: Record<string, unknown>, name: string, kind: string): ConfigError {
  const known = Object.keys(entries).sort();
  return new ConfigError(
    `unknown ${kind} '${name}'; known ${kind}s: ${known.length ? known.join(', ') : '(none)'}`,
  );
}

/** Names that become paths (profiles, targets, ISOs, scripts): not empty, not '.', no '/', no '..'. */
export function isSafeName(name: string): boolean {
  return !!name && name !== '.' && !name.includes('/') && !name.includes('\\') && !name.includes('..') && !name.includes('\0');
}

export function checkSafeName(name: string, kind: string): string {
  if (!isSafeName(name)) {
    throw new ConfigError(`invalid ${kind} name '${name}': names may not be empty or '.', or contain '/' or '..'`);
  }
  return name;
}
