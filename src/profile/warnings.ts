import { join } from 'node:path';
import { builtinAssetsDir } from '../config/paths.js';
import type { Profile } from '../config/schema.js';
import { loadYamlFile } from '../config/yaml.js';

let shipped: string | null | undefined;

/** The password of the shipped default profile (assets/profiles.d/default.yml): known to everyone. */
export function shippedDefaultPassword(): string | undefined {
  if (shipped === undefined) {
    try {
      const data = loadYamlFile(join(builtinAssetsDir(), 'profiles.d', 'default.yml')).data;
      const value = (data['default'] as Record<string, unknown> | undefined)?.['password'];
      shipped = typeof value === 'string' ? value : null;
    } catch {
      shipped = null;
    }
  }
  return shipped ?? undefined;
}

/** A warning when `profile` logs its build user in with the password everybody can read in PIM's sources. */
export function defaultPasswordWarning(profile: Profile, name: string): string | undefined {
  const known = shippedDefaultPassword();
  if (!known || profile.password_crypted || profile.password !== known) return undefined;
  return (
    `profile '${name}' uses the shipped default password; it only lets PIM's build log in (the image locks it, build.build_user), ` +
    `but anything served or built with it is guessable: set 'password_crypted' (mkpasswd -m sha-512) or a password of your own`
  );
}
