import { Profiles } from '../profile/profiles.js';
import { projectFrom } from './context.js';
import type { GlobalOptions } from './main.js';
import { defaultPasswordWarning } from '../profile/warnings.js';
import { maskSecrets, printJson, printYaml, println, warn } from './output.js';

export function list(opts: GlobalOptions & { json?: boolean }): void {
  const names = new Profiles(projectFrom(opts)).names();
  if (opts.json) printJson(names);
  else for (const name of names) println(name);
}

export function show(opts: GlobalOptions & { json?: boolean; reveal?: boolean }, name: string): void {
  const profile = new Profiles(projectFrom(opts)).get(name);
  const shown = opts.reveal ? profile : maskSecrets(profile);
  if (opts.json) printJson(shown);
  else printYaml({ [name]: shown });
  const warning = defaultPasswordWarning(profile, name);
  if (warning) warn(warning);
}
