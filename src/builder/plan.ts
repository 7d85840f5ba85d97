import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { hostArch, normalizeArch, type Arch } from '../arch.js';
import type { Project } from '../config/project.js';
import type { IsoEntry, Profile } from '../config/schema.js';
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

export interface BuildSettings {
  diskSize: string;
  memoryMb: number;
  cpus: number;
  installTimeoutS: number;
  sshUser: string;
  sshTimeoutS: number;
  pollIntervalS: number;
  compress: boolean;
}

/** Everything a build will do, decided before anything is touched (and all `--dry-run` prints). */
export interface BuildPlan {
  profileName: string;
  profile: Profile;
  arch: Arch;
  builder: string;
  iso: IsoEntry;
  isoPath: string;
  preseedTemplate: string;
  installTemplate: string;
  scripts: ProvisionScript[];
  cacheKey: string;
  inputs: Record<string, string>;
  settings: BuildSettings;
  imagePath: string;
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
  const preseedPath = profiles.requireTemplate('preseed', request.profileName);
  const installPath = profiles.requireTemplate('install', request.profileName);
  const preseedTemplate = readFileSync(preseedPath, 'utf8');
  const installTemplate = readFileSync(installPath, 'utf8');
  const scripts = loadScripts(profiles, request.profileName, profile);
  const { key, inputs } = computeCacheKey({
    profile: profile as Record<string, unknown>,
    preseedTemplate,
    installTemplate,
    scripts,
    isoChecksum: iso.checksum,
    arch,
  });
  const build = { ...config.build, ...(profile.build ?? {}) };
  const settings: BuildSettings = {
    diskSize: String(build.disk_size ?? '20G'),
    memoryMb: Number(build.memory ?? 2048),
    cpus: Number(build.cpus ?? 2),
    installTimeoutS: config.build.install_timeout,
    // The preseed creates the profile's user; pim.yml's ssh.user only stands in when a profile has none.
    sshUser: profile.username ?? config.build.ssh.user ?? 'root',
    sshTimeoutS: config.build.ssh.timeout,
    pollIntervalS: config.build.ssh.poll_interval,
    compress: config.build.compress,
  };
  return {
    profileName: request.profileName,
    profile,
    arch,
    builder,
    iso,
    isoPath: new IsoStore(project.isoDir()).pathOf(iso),
    preseedTemplate: preseedPath,
    installTemplate: installPath,
    scripts,
    cacheKey: key,
    inputs,
    settings,
    imagePath: join(project.imagesDir(), `${request.profileName}-${arch}-${key.slice(0, 12)}.qcow2`),
  };
}
