import { mkdirSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { hostArch, normalizeArch, type Arch } from '../arch.js';
import type { Project } from '../config/project.js';
import { BuildLog } from '../builder/build-log.js';
import { ConfigError, InterruptedError, WorkError, errorMessage } from '../errors.js';
import { interruptSignal, withGracefulInterrupts } from '../lifecycle.js';
import { Registry, imageState, type DeploymentRecord, type ImageRecord } from '../registry/registry.js';
import type { DeployContext, Deployer, DeploymentStatus } from './deployer.js';
import { Targets, expandName, type TargetType } from './targets.js';

export interface DeployIo {
  say(line: string): void;
  progress?: DeployContext['progress'];
}

export interface DeployRequest {
  profileName: string;
  targetName: string;
  arch?: string;
  force?: boolean;
}

export type DeployOutcome =
  | { deployed: false; record: DeploymentRecord; image: ImageRecord }
  | { deployed: true; record: DeploymentRecord; image: ImageRecord; summary: string; logPath: string };

const DEFAULT_NAMES: Record<TargetType, string> = { proxmox: 'pim-{profile}-{arch}', utm: '{profile}', aws: 'pim-{profile}-{arch}-{key}' };

/** The deployer of a target type, loaded only when used (the AWS SDK is large). */
export async function deployerFor(type: TargetType): Promise<Deployer> {
  switch (type) {
    case 'proxmox':
      return new (await import('./proxmox/proxmox-deployer.js')).ProxmoxDeployer() as Deployer;
    case 'utm':
      return new (await import('./utm/utm-deployer.js')).UtmDeployer() as Deployer;
    case 'aws':
      return new (await import('./aws/aws-deployer.js')).AwsDeployer() as Deployer;
  }
}

/** A deploy's log (URL credentials masked, as in build logs). */
function openLog(project: Project, label: string): BuildLog {
  mkdirSync(project.logsDir(), { recursive: true });
  return new BuildLog(join(project.logsDir(), `deploy-${label}-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}.log`));
}

/** `pim deploy run`: the registered image of PROFILE/ARCH onto TARGET, recorded in the registry. */
export async function deployImage(project: Project, request: DeployRequest, io: DeployIo): Promise<DeployOutcome> {
  const target = new Targets(project).get(request.targetName);
  const arch: Arch = normalizeArch(request.arch ?? hostArch());
  const registry = new Registry(project.registryPath());
  const image = registry.getImage(request.profileName, arch);
  if (!image) {
    throw new ConfigError(`no image of ${request.profileName}/${arch} is registered; build it with 'pim build run ${request.profileName} --arch ${arch}'`);
  }
  const state = imageState(image);
  if (state !== 'ok') {
    throw new WorkError(`the registered image of ${request.profileName}/${arch} (${image.path}) is ${state === 'missing' ? 'missing' : 'modified since it was built'}; rebuild it with 'pim build run ${request.profileName} --arch ${arch} --force'`);
  }
  const existing = registry.getDeployment(request.profileName, arch, request.targetName);
  if (existing && existing.cache_key === image.cache_key && !request.force) return { deployed: false, record: existing, image };

  const deployer = await deployerFor(target.type);
  const name = expandName(target.name ?? DEFAULT_NAMES[target.type], { profile: request.profileName, arch, key: image.cache_key });
  const log = openLog(project, `${request.profileName}-${arch}-${request.targetName}`);
  const say = (line: string) => {
    log.line(line);
    io.say(line);
  };
  log.line(`pim deploy ${request.profileName}/${arch} to ${request.targetName} (${target.type}) as ${name}: image ${image.path}, key ${image.cache_key}`);
  try {
    const result = await withGracefulInterrupts((signal) =>
      deployer.deploy({ project, targetName: request.targetName, target, image, name, force: request.force ?? false, log, say, progress: io.progress, signal }),
    );
    const record: DeploymentRecord = {
      profile: request.profileName,
      arch,
      target: request.targetName,
      type: target.type,
      ids: result.ids,
      cache_key: image.cache_key,
      sha256: image.sha256,
      deployed_at: new Date().toISOString(),
      ...(existing ? { previous: [{ ids: existing.ids, cache_key: existing.cache_key, deployed_at: existing.deployed_at }, ...(existing.previous ?? [])] } : {}),
    };
    await registry.recordDeployment(record);
    const logPath = log.path.replace(/\.log$/, '.done.log');
    renameSync(log.path, logPath);
    return { deployed: true, record, image, summary: result.summary, logPath };
  } catch (err) {
    if (err instanceof InterruptedError || interruptSignal.aborted) throw new InterruptedError(`deploy interrupted; nothing was recorded (log: ${log.path})`);
    throw new WorkError(`deploy of ${request.profileName}/${arch} to ${request.targetName} failed: ${errorMessage(err)}\nlog: ${log.path}`);
  }
}

export interface StatusRow {
  record: DeploymentRecord;
  /** The deployment checked: the current one or one of its predecessors. */
  ids: Record<string, string>;
  cacheKey: string;
  role: 'current' | 'previous';
  status: DeploymentStatus;
  /** Whether it holds the image currently registered for its profile and arch. */
  currentImage: boolean;
}

/** `pim deploy status TARGET`: every recorded deployment on TARGET, checked there. */
export async function deploymentStatus(project: Project, targetName: string, io: DeployIo): Promise<StatusRow[]> {
  const target = new Targets(project).get(targetName);
  const registry = new Registry(project.registryPath());
  const records = registry.listDeployments().filter((d) => d.target === targetName);
  if (!records.length) return [];
  const deployer = await deployerFor(target.type);
  const log = openLog(project, `status-${targetName}`);
  const rows: StatusRow[] = [];
  for (const record of records) {
    const image = registry.getImage(record.profile, record.arch);
    const all = [{ ids: record.ids, cache_key: record.cache_key, role: 'current' as const }, ...(record.previous ?? []).map((p) => ({ ...p, role: 'previous' as const }))];
    for (const entry of all) {
      const status = await deployer.status({ ...record, ids: entry.ids, cache_key: entry.cache_key }, { project, targetName, target, log, say: io.say, signal: interruptSignal });
      rows.push({ record, ids: entry.ids, cacheKey: entry.cache_key, role: entry.role, status, currentImage: image?.cache_key === entry.cache_key });
    }
  }
  return rows;
}

/** `pim deploy remove PROFILE TARGET`: removes the deployment (and its predecessors) from the target, then the record. */
export async function removeDeployment(project: Project, request: Omit<DeployRequest, 'force'>, io: DeployIo): Promise<DeploymentRecord> {
  const target = new Targets(project).get(request.targetName);
  const arch = normalizeArch(request.arch ?? hostArch());
  const registry = new Registry(project.registryPath());
  const record = registry.getDeployment(request.profileName, arch, request.targetName);
  if (!record) throw new ConfigError(`no deployment of ${request.profileName}/${arch} to ${request.targetName} is recorded ('pim deploy list' shows what is)`);
  const deployer = await deployerFor(target.type);
  const log = openLog(project, `remove-${request.profileName}-${arch}-${request.targetName}`);
  const entries = [{ ids: record.ids, cache_key: record.cache_key }, ...(record.previous ?? [])];
  const removed: string[] = [];
  for (const entry of entries) {
    try {
      await deployer.remove({ ...record, ids: entry.ids, cache_key: entry.cache_key }, { project, targetName: request.targetName, target, log, say: io.say, signal: interruptSignal });
      removed.push(JSON.stringify(entry.ids));
    } catch (err) {
      // Keep the record (minus what is gone) so that the user can retry.
      if (removed.length) {
        const left = entries.filter((e) => !removed.includes(JSON.stringify(e.ids)));
        await registry.recordDeployment({ ...record, ids: left[0]!.ids, cache_key: left[0]!.cache_key, previous: left.slice(1).map((e) => ({ ids: e.ids, cache_key: e.cache_key, deployed_at: record.deployed_at })) });
      }
      throw new WorkError(`removing ${request.profileName}/${arch} from ${request.targetName} failed; the deployment stays recorded: ${errorMessage(err)}`);
    }
  }
  await registry.removeDeployment(request.profileName, arch, request.targetName);
  return record;
}
