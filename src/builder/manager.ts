import { mkdirSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Arch } from '../arch.js';
import type { Project } from '../config/project.js';
import { ConfigError, InterruptedError, WorkError, errorMessage } from '../errors.js';
import { IsoStore } from '../iso/store.js';
import { interruptSignal, withGracefulInterrupts } from '../lifecycle.js';
import { Profiles } from '../profile/profiles.js';
import { acceleratorReport, selectAccelerator, TCG_WARNING } from '../qemu/accel.js';
import type { Accelerator } from '../qemu/command.js';
import { requireAarch64Firmware } from '../qemu/firmware.js';
import { Registry, imageIntact, type ImageRecord } from '../registry/registry.js';
import { BuildLog } from './build-log.js';
import { changedInputs } from './cache-key.js';
import { LOCAL_STEPS, type LocalBuildState } from './local-steps.js';
import { resolvePlan, type BuildPlan, type BuildRequest } from './plan.js';
import { checkScriptSyntax } from './scripts.js';
import { runSteps, type StepReporter, type StepTiming } from './steps.js';

export interface BuildOptions extends BuildRequest {
  force?: boolean;
  verbose?: boolean;
  keepFailed?: boolean;
}

export interface BuildIo {
  say(line: string): void;
  reporter: StepReporter;
  /** Download progress for the ISO, when it has to be fetched first. */
  progress?: (label: string) => { update(received: number, total: number | undefined): void; done(): void };
}

export type BuildResult =
  | { cached: true; record: ImageRecord; plan: BuildPlan }
  | { cached: false; record: ImageRecord; plan: BuildPlan; timings: StepTiming[]; logPath: string };

/** The cache check: `record` (the registered image for the plan's profile and arch) if it has the plan's key and is intact. */
export function cacheHit(record: ImageRecord | undefined, plan: BuildPlan): ImageRecord | undefined {
  return record && record.cache_key === plan.cacheKey && imageIntact(record) ? record : undefined;
}

/** The accelerator for `arch` guests: pim.yml's override, else the best one the (cached) probe found. */
export async function selectedAccelerator(project: Project, arch: Arch): Promise<Accelerator> {
  const report = await acceleratorReport(arch, project.paths.cacheDir);
  return selectAccelerator(report, project.pimConfig().build.accelerator);
}

export function requireLocalBuilder(plan: BuildPlan): void {
  if (plan.builder !== 'local') {
    throw new ConfigError(
      `architecture ${plan.arch} is routed to the remote builder '${plan.builder}' (build.builders in pim.yml), and remote builds are not available yet; run with --local to build on this machine`,
    );
  }
}

/** `pim build run`: plan, answer from the cache, or build locally and register the image. */
export async function buildImage(project: Project, options: BuildOptions, io: BuildIo): Promise<BuildResult> {
  const plan = resolvePlan(project, options);
  const previous = new Registry(project.registryPath()).getImage(plan.profileName, plan.arch);
  if (!options.force) {
    const hit = cacheHit(previous, plan);
    if (hit) return { cached: true, record: hit, plan };
  }
  if (options.verbose && previous) {
    const changed = previous.cache_key === plan.cacheKey ? ['(none: the image file is missing or changed, or --force)'] : changedInputs(previous.inputs ?? {}, plan.inputs);
    io.say(`cache miss for ${plan.profileName}/${plan.arch}; changed since the last build: ${changed.join(', ')}`);
  }
  requireLocalBuilder(plan);
  await checkScriptSyntax(plan.scripts);
  await ensureIso(project, plan, io);
  const accel = await selectedAccelerator(project, plan.arch);
  if (accel === 'tcg') io.say(`warning: ${TCG_WARNING}`);
  const firmware = plan.arch === 'arm64' ? requireAarch64Firmware() : undefined;

  const buildId = `${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
  // Made (and removed) by the disk step.
  const workDir = join(project.imagesDir(), '.work', `${plan.profileName}-${plan.arch}-${buildId}`);
  // The log lives outside the work dir (which the steps' cleanup removes): under the state dir
  // while the build runs and when it fails, next to the image when it succeeds.
  mkdirSync(project.logsDir(), { recursive: true });
  const log = new BuildLog(join(project.logsDir(), `${plan.profileName}-${plan.arch}-${buildId}.log`), [
    plan.profile.password,
    plan.profile.password_crypted as string | undefined,
  ]);
  log.line(`pim build ${plan.profileName} ${plan.arch}: key ${plan.cacheKey}, ISO ${plan.iso.name}, accelerator ${accel}`);
  const state: LocalBuildState = {
    plan,
    project,
    profiles: new Profiles(project),
    accel,
    firmware,
    workDir,
    keepFailed: options.keepFailed ?? false,
    buildId,
    startedAt: Date.now(),
    diskPath: join(workDir, 'disk.qcow2'),
  };
  const say = (line: string) => {
    log.line(line);
    io.say(line);
  };
  try {
    const timings = await withGracefulInterrupts((signal) => runSteps(LOCAL_STEPS, state, { signal, log, say, verbose: options.verbose ?? false }, io.reporter));
    const logPath = `${plan.imagePath}.log`;
    renameSync(log.path, logPath);
    return { cached: false, record: state.record!, plan, timings, logPath };
  } catch (err) {
    const saved = log.path;
    // A step can fail because of the interrupt itself (a VM killed under it): still an interrupt.
    if (err instanceof InterruptedError || interruptSignal.aborted) throw new InterruptedError(`build interrupted; nothing was registered (log: ${saved})`);
    const tail = log.tail(15).split('\n').map((l) => `  ${l}`).join('\n');
    throw new WorkError(`build of ${plan.profileName}/${plan.arch} failed: ${errorMessage(err)}\nlog: ${saved}\nlast lines of the log:\n${tail}`);
  }
}

/** The ISO must be downloaded and verified before a build boots it. */
async function ensureIso(project: Project, plan: BuildPlan, io: BuildIo): Promise<void> {
  const store = new IsoStore(project.isoDir());
  const entry = plan.iso;
  const status = store.status(entry);
  if (status.state === 'verified') return;
  if (status.state === 'downloaded') {
    io.say(`verifying ${entry.filename}`);
    const result = await store.verify(entry);
    if (!result.ok) throw new WorkError(`${store.pathOf(entry)} does not match the catalog checksum (expected ${result.expected}, got ${result.actual}); run 'pim iso download ${entry.name}'`);
    return;
  }
  io.say(`downloading ${entry.name} from ${entry.url}`);
  const bar = io.progress?.(`downloading ${entry.filename}`);
  await store.download(entry, (r, t) => bar?.update(r, t));
  bar?.done();
}
