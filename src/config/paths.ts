import { homedir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The XDG base directories PIM uses, each honouring its environment variable when set. */
export interface PimPaths {
  configDir: string; // $XDG_CONFIG_HOME/pim
  dataDir: string; // $XDG_DATA_HOME/pim
  cacheDir: string; // $XDG_CACHE_HOME/pim
  stateDir: string; // $XDG_STATE_HOME/pim
}

function xdg(variable: string, fallback: string, env: NodeJS.ProcessEnv): string {
  const value = env[variable];
  // The XDG spec says relative paths are invalid and must be ignored.
  return value && value.startsWith('/') ? value : join(homedir(), fallback);
}

export function pimPaths(env: NodeJS.ProcessEnv = process.env): PimPaths {
  return {
    configDir: join(xdg('XDG_CONFIG_HOME', '.config', env), 'pim'),
    dataDir: join(xdg('XDG_DATA_HOME', '.local/share', env), 'pim'),
    cacheDir: join(xdg('XDG_CACHE_HOME', '.cache', env), 'pim'),
    stateDir: join(xdg('XDG_STATE_HOME', '.local/state', env), 'pim'),
  };
}

/** The package root (where `assets/` lives), found from this compiled file's location. */
export function packageRoot(): string {
  // dist/src/config/paths.js -> three levels up; src/config/paths.ts (tsx) -> two levels up.
  const here = dirname(fileURLToPath(import.meta.url));
  return here.includes(`${join('dist', 'src')}`) ? resolve(here, '../../..') : resolve(here, '../..');
}

export function builtinAssetsDir(): string {
  return join(packageRoot(), 'assets');
}
