import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import { ConfigError, WorkError } from '../errors.js';
import { runChecked, which, type LogFn } from '../process.js';

/** The tools that can write a NoCloud seed ISO, in the order PIM tries them. */
export const SEED_TOOLS = ['xorriso', 'genisoimage', 'mkisofs', 'hdiutil'] as const;

export function seedTool(): (typeof SEED_TOOLS)[number] | undefined {
  return SEED_TOOLS.find((t) => which(t));
}

/**
 * cloud-init user-data: the target's own cloud-config file (if any) with its
 * `ssh_authorized_keys` added to the default user's.
 */
export function userData(options: { file?: string; sshAuthorizedKeys?: string[] }): string {
  let config: Record<string, unknown> = {};
  if (options.file) {
    const text = readFileSync(options.file, 'utf8');
    if (!text.startsWith('#cloud-config')) throw new ConfigError(`${options.file}: user_data must be a cloud-config file (its first line '#cloud-config')`);
    const parsed: unknown = parse(text);
    if (parsed !== null && (typeof parsed !== 'object' || Array.isArray(parsed))) throw new ConfigError(`${options.file}: user_data must be a YAML map`);
    config = (parsed as Record<string, unknown>) ?? {};
  }
  if (options.sshAuthorizedKeys?.length) {
    const existing = Array.isArray(config['ssh_authorized_keys']) ? (config['ssh_authorized_keys'] as string[]) : [];
    config['ssh_authorized_keys'] = [...existing, ...options.sshAuthorizedKeys.filter((k) => !existing.includes(k))];
  }
  return `#cloud-config\n${stringify(config)}`;
}

/** Writes a NoCloud seed (volume label `cidata`, files user-data and meta-data) to `out`. */
export async function makeSeedIso(out: string, files: { userData: string; metaData: string }, scratch: string, log?: LogFn): Promise<void> {
  const dir = join(scratch, 'cidata');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'user-data'), files.userData);
  writeFileSync(join(dir, 'meta-data'), files.metaData);
  const tool = seedTool();
  const inputs = [join(dir, 'user-data'), join(dir, 'meta-data')];
  switch (tool) {
    case 'xorriso':
      await runChecked('xorriso', ['-as', 'mkisofs', '-quiet', '-V', 'cidata', '-J', '-r', '-o', out, ...inputs], { log });
      return;
    case 'genisoimage':
    case 'mkisofs':
      await runChecked(tool, ['-quiet', '-output', out, '-volid', 'cidata', '-joliet', '-rock', ...inputs], { log });
      return;
    case 'hdiutil':
      await runChecked('hdiutil', ['makehybrid', '-o', out, '-iso', '-joliet', '-default-volume-name', 'cidata', dir], { log });
      return;
    default:
      throw new WorkError(`no tool to write a NoCloud seed ISO: install xorriso (apt-get install xorriso / brew install xorriso), genisoimage or mkisofs`);
  }
}
