import { readFileSync } from 'node:fs';
import type { Profile } from '../config/schema.js';
import type { Profiles } from '../profile/profiles.js';
import { ConfigError } from '../errors.js';
import { run } from '../process.js';

export interface ProvisionScript {
  name: string;
  path: string;
  content: string;
}

/**
 * The provisioning scripts of a build, in run order: `base`; the profile's own script
 * (scripts.d/NAME.sh, falling back to scripts.d/default.sh when that exists); the profile's
 * `scripts` list in order; `finalize` last. Each runs once. Every script is looked up in the
 * project, then the global config dir, then the built-in defaults.
 */
export function loadScripts(profiles: Profiles, profileName: string, profile: Profile): ProvisionScript[] {
  const names: string[] = [];
  const add = (name: string) => {
    if (!names.includes(name)) names.push(name);
  };
  add('base');
  const own = profiles.findTemplate('script', profileName, true);
  const ownName = own ? (own.endsWith(`/${profileName}.sh`) ? profileName : 'default') : undefined;
  if (ownName) add(ownName);
  for (const name of profile.scripts ?? []) if (name !== 'finalize') add(name);
  add('finalize');
  return names.map((name) => {
    const path = profiles.findTemplate('script', name, false);
    if (!path) throw new ConfigError(`${profiles.locate(profileName, 'scripts')}: profile '${profileName}' uses script '${name}', but there is no scripts.d/${name}.sh (project, global or built-in)`);
    return { name, path, content: readFileSync(path, 'utf8') };
  });
}

/** `bash -n` on every script (the bytes the plan hashed): a syntax error costs seconds, not an install. */
export async function checkScriptSyntax(scripts: ProvisionScript[]): Promise<void> {
  for (const script of scripts) {
    const result = await run('bash', ['-n'], { input: script.content });
    if (result.code !== 0) {
      const detail = result.stderr.trim().split('\n')[0] ?? '';
      throw new ConfigError(`script '${script.name}' (${script.path}) has a syntax error: ${detail}`);
    }
  }
}
