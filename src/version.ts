import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from './config/paths.js';

let version: string | undefined;

/** This PIM's version, from its package.json. */
export function pimVersion(): string {
  version ??= (JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version: string }).version;
  return version;
}
