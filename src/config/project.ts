import { resolve, join } from 'node:path';
import { homedir } from 'node:os';
import { ConfigLayers, type KeyedConfig } from './layers.js';
import { builtinAssetsDir, pimPaths, type PimPaths } from './paths.js';
import { pimConfigSchema, type PimConfig } from './schema.js';

export interface ProjectOptions {
  projectDir?: string;
  env?: NodeJS.ProcessEnv;
  /** Overrides the shipped defaults (tests). */
  builtinDir?: string;
}

/**
 * Where PIM's configuration comes from for one invocation: the project directory over the
 * global config directory over the defaults shipped in the package.
 */
export class Project {
  readonly dir: string;
  readonly paths: PimPaths;
  readonly layers: ConfigLayers;
  private config?: { merged: KeyedConfig; value: PimConfig };

  constructor(options: ProjectOptions = {}) {
    this.dir = resolve(options.projectDir ?? process.cwd());
    this.paths = pimPaths(options.env ?? process.env);
    const dirs = [options.builtinDir ?? builtinAssetsDir(), this.paths.configDir];
    // The project dir may be the global config dir itself (`pim init` without --project).
    if (resolve(this.dir) !== resolve(this.paths.configDir)) dirs.push(this.dir);
    this.layers = new ConfigLayers(dirs);
  }

  /** pim.yml, merged across layers and validated. */
  pimConfig(): PimConfig {
    if (!this.config) {
      const merged = this.layers.loadMergedFile('pim.yml');
      const value = merged.validate(pimConfigSchema, merged.data, [], 'pim.yml');
      this.config = { merged, value };
    }
    return this.config.value;
  }

  /** The raw merged pim.yml with its sources (for locating errors in sub-sections). */
  pimConfigSources(): KeyedConfig {
    this.pimConfig();
    return this.config!.merged;
  }

  isoDir(): string {
    const configured = this.pimConfig().iso_dir;
    return configured ? expandHome(configured) : join(this.paths.cacheDir, 'isos');
  }

  imagesDir(): string {
    const configured = this.pimConfig().images_dir;
    return configured ? expandHome(configured) : join(this.paths.dataDir, 'images');
  }

  registryPath(): string {
    return join(this.paths.dataDir, 'registry.yml');
  }

  logsDir(): string {
    return join(this.paths.stateDir, 'logs');
  }
}

export function expandHome(path: string): string {
  return path === '~' ? homedir() : path.startsWith('~/') ? join(homedir(), path.slice(2)) : path;
}
