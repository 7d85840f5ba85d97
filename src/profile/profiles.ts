import type { Project } from '../config/project.js';
import type { KeyedConfig } from '../config/layers.js';
import { checkSafeName } from '../config/merge.js';
import { profileSchema, type Profile } from '../config/schema.js';
import { ConfigError } from '../errors.js';

export type TemplateKind = 'preseed' | 'install' | 'script' | 'verify';

const TEMPLATE_LOCATIONS: Record<TemplateKind, { dir: string; ext: string }> = {
  preseed: { dir: 'preseeds.d', ext: '.cfg.ejs' },
  install: { dir: 'installs.d', ext: '.sh' },
  script: { dir: 'scripts.d', ext: '.sh' },
  verify: { dir: 'verify.d', ext: '.sh' },
};

/** The profiles of a project (profiles.d/*.yml across layers) and their templates. */
export class Profiles {
  private loaded?: KeyedConfig;

  constructor(private readonly project: Project) {}

  private config(): KeyedConfig {
    this.loaded ??= this.project.layers.loadKeyedDir('profiles.d');
    return this.loaded;
  }

  names(): string[] {
    return this.config().names();
  }

  /** The `default`-merged, validated profile NAME. */
  get(name: string): Profile {
    if (name !== '') checkSafeName(name, 'profile');
    return this.config().resolve(profileSchema, name, 'profile');
  }

  /** Where NAME's entry is defined, for error messages. */
  locate(name: string, field?: string): string {
    return this.config().locate(field ? [name, field] : [name]);
  }

  /**
   * SPEC conventions 2 and 3: `DIR/NAME.ext`, then `DIR/default.ext`, each looked for in the
   * project, then the global config dir, then the built-in defaults.
   */
  findTemplate(kind: TemplateKind, name: string, fallback = true): string | undefined {
    checkSafeName(name, kind);
    const { dir, ext } = TEMPLATE_LOCATIONS[kind];
    const candidates = [`${dir}/${name}${ext}`];
    if (fallback && name !== 'default') candidates.push(`${dir}/default${ext}`);
    return this.project.layers.findFirst(candidates);
  }

  requireTemplate(kind: 'preseed' | 'install', name: string): string {
    const path = this.findTemplate(kind, name);
    if (!path) {
      const { dir, ext } = TEMPLATE_LOCATIONS[kind];
      throw new ConfigError(`no ${kind} template for profile '${name}': looked for ${dir}/${name}${ext} and ${dir}/default${ext}`);
    }
    return path;
  }
}
