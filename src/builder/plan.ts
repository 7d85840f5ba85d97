import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { hostArch, normalizeArch, type Arch } from '../arch.js';
import { builtinAssetsDir } from '../config/paths.js';
import type { Project } from '../config/project.js';
import { buildSettingsSchema, type IsoEntry, type Profile } from '../config/schema.js';
import { deepMerge } from '../config/merge.js';
import { ConfigError } from '../errors.js';
import { IsoCatalog } from '../iso/catalog.js';
import { IsoStore } from '../iso/store.js';
import { Profiles } from '../profile/profiles.js';
import { computeCacheKey } from './cache-key.js';
import { loadScripts, type ProvisionScript } from './scripts.js';

export interface BuildRequest {
  profileName: string;
  arch?: string;
  local?: boolean;
}

export type BuildUserPolicy = 'lock' | 'remove' | 'keep';

export interface BuildSettings {
  diskSize: string;
  memoryMb: number;
  cpus: number;
  installTimeoutS: number;
  preseedFetchTimeoutS: number;
  /** Seconds a booting kernel has to start the root's init before its VM is reset (0: never). */
  bootStallTimeoutS: number;
  sshUser: string;
  sshTimeoutS: number;
  pollIntervalS: number;
  scriptTimeoutS: number;
  compress: boolean;
  upgrade: boolean;
  buildUser: BuildUserPolicy;
  keep: number;
  /** Whether the build server caches Debian packages for the VM (not in the cache key: it changes nothing in the image). */
  packageCache: boolean;
}

/** A file's path and the exact bytes the plan hashed: the build uses these, never the file again. */
export interface TemplateSource {
  path: string;
  content: string;
}

/** PIM's own guest commands, run as root around the profile's scripts (assets/guest/). */
export interface GuestScripts {
  /** Before `base`: brings the packages up to date (build.upgrade). */
  prepare: TemplateSource;
  /** After `finalize`: what a finished image promises (no known login, no password SSH, ...). */
  seal: TemplateSource;
}

/** Everything a build will do, decided before anything is touched (and all `--dry-run` prints). */
export interface BuildPlan {
  profileName: string;
  profile: Profile;
  arch: Arch;
  builder: string;
  iso: IsoEntry;
  isoPath: string;
  templates: { preseed: TemplateSource; install: TemplateSource };
  scripts: ProvisionScript[];
  guest: GuestScripts;
  cacheKey: string;
  inputs: Record<string, string>;
  settings: BuildSettings;
}

function readSource(path: string): TemplateSource {
  return { path, content: readFileSync(path, 'utf8') };
}

export function guestScripts(): GuestScripts {
  const dir = join(builtinAssetsDir(), 'guest');
  return { prepare: readSource(join(dir, 'prepare.sh')), seal: readSource(join(dir, 'seal.sh')) };
}

/** pim.yml's build section with the profile's own `build:` over it. */
function mergedBuildSection(project: Project, profile: Profile) {
  const config = project.pimConfig().build;
  const own = profile.build ? buildSettingsSchema.parse(profile.build) : {};
  return deepMerge(config as unknown as Record<string, unknown>, own) as typeof config;
}

/** An arm64 guest under emulation boots several times slower than an x86_64 one. */
const defaultBootStallS = (arch: Arch) => (arch === 'arm64' ? 900 : 300);

/** build.boot_stall_timeout for a profile and arch (`pim build verify` boots with it too). */
export function bootStallTimeoutS(project: Project, profile: Profile, arch: Arch): number {
  return mergedBuildSection(project, profile).boot_stall_timeout ?? defaultBootStallS(arch);
}

function buildSettings(project: Project, profile: Profile, profileName: string, arch: Arch): BuildSettings {
  const config = project.pimConfig().build;
  const build = mergedBuildSection(project, profile);
  if (!profile.username && !config.ssh.user) {
    throw new ConfigError(`profile '${profileName}' has no username, and pim.yml sets no build.ssh.user: PIM does not know which user to log in as`);
  }
  return {
    diskSize: String(build.disk_size),
    memoryMb: Number(build.memory),
    cpus: Number(build.cpus),
    installTimeoutS: build.install_timeout,
    preseedFetchTimeoutS: build.preseed_fetch_timeout,
    bootStallTimeoutS: build.boot_stall_timeout ?? defaultBootStallS(arch),
    // The preseed creates the profile's user; pim.yml's ssh.user only stands in when a profile has none.
    sshUser: profile.username ?? config.ssh.user!,
    sshTimeoutS: config.ssh.timeout,
    pollIntervalS: config.ssh.poll_interval,
    scriptTimeoutS: build.script_timeout,
    compress: build.compress,
    upgrade: build.upgrade,
    buildUser: build.build_user,
    keep: build.keep,
    packageCache: build.package_cache,
  };
}

export function resolvePlan(project: Project, request: BuildRequest): BuildPlan {
  const config = project.pimConfig();
  const profiles = new Profiles(project);
  const profile = profiles.get(request.profileName);
  const arch = normalizeArch(request.arch ?? hostArch());
  const catalog = IsoCatalog.load(project);

  const allowed = profile.architectures ?? catalog.arches();
  if (!allowed.includes(arch)) {
    throw new ConfigError(
      profile.architectures
        ? `profile '${request.profileName}' does not list architecture ${arch} (it lists: ${allowed.join(', ')})`
        : `no ISO in the catalog for architecture ${arch} (the catalog has: ${allowed.join(', ') || 'none'})`,
    );
  }
  let iso: IsoEntry | undefined;
  if (typeof profile.iso === 'string') iso = catalog.get(profile.iso);
  else iso = catalog.findByArch(arch, profile.iso_pattern);
  if (!iso) throw new ConfigError(`no ISO in the catalog matches '${profile.iso_pattern ?? '*'}' for ${arch} (profile '${request.profileName}')`);
  if (iso.arch !== arch) throw new ConfigError(`profile '${request.profileName}' names ISO '${iso.name}', which is for ${iso.arch}, not ${arch}`);

  const builder = request.local ? 'local' : config.build.builders[arch] ?? 'local';
  const templates = {
    preseed: readSource(profiles.requireTemplate('preseed', request.profileName)),
    install: readSource(profiles.requireTemplate('install', request.profileName)),
  };
  const scripts = loadScripts(profiles, request.profileName, profile);
  const guest = guestScripts();
  const settings = buildSettings(project, profile, request.profileName, arch);
  const { key, inputs } = computeCacheKey({
    profile: profile as Record<string, unknown>,
    preseedTemplate: templates.preseed.content,
    installTemplate: templates.install.content,
    scripts,
    guestScripts: [guest.prepare.content, guest.seal.content],
    // Every setting that changes the output file (and none that only change how fast it is made).
    settings: { disk_size: settings.diskSize, compress: settings.compress, upgrade: settings.upgrade, build_user: settings.buildUser, user: settings.sshUser },
    isoChecksum: iso.checksum,
    arch,
  });
  return {
    profileName: request.profileName,
    profile,
    arch,
    builder,
    iso,
    isoPath: new IsoStore(project.isoDir()).pathOf(iso),
    templates,
    scripts,
    guest,
    cacheKey: key,
    inputs,
    settings,
  };
}
