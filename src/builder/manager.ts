import { existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Project } from '../config/project.js';
import { ConfigError, InterruptedError, WorkError, errorMessage } from '../errors.js';
import { tryLock } from '../files/lock.js';
import { IsoStore } from '../iso/store.js';
import { interruptSignal, withGracefulInterrupts } from '../lifecycle.js';
import { Registry, imageIntact, type ImageRecord } from '../registry/registry.js';
import { secretsOf } from '../secrets.js';
import { BuildLog } from './build-log.js';
import type { Builder, BuildJob } from './builder.js';
import { changedInputs } from './cache-key.js';
import { LocalBuilder } from './local-builder.js';
import { RemoteBuilder } from './remote-builder.js';
import { resolvePlan, type BuildPlan, type BuildRequest } from './plan.js';
import { registerBuilt } from './register.js';
import { checkScriptSyntax } from './scripts.js';
import type { StepReporter, StepTiming } from './steps.js';

export { selectedAccelerator } from './accelerator.js';

export interface BuildOptions extends BuildRequest {
  force?: boolean;
  verbose?: boolean;
  keepFailed?: boolean;
  /** Fail (exit 2) unless the plan computes this key: a remote build checks it got the caller's exact inputs. */
  expectKey?: string;
}

export interface BuildIo {
  say(line: string): void;
  reporter: StepReporter;
  /** Download progress for the ISO, when it has to be fetched first. */
  progress?: (label: string) => { update(received: number, total: number | undefined): void; done(): void };
}

export type BuildResult =
  | { cached: true; record: ImageRecord; plan: BuildPlan }
  | { cached: false; record: ImageRecord; plan: BuildPlan; timings: StepTiming[]; logPath: string; removed: string[]; keptModified: string[] };

/** The cache check: `record` (the registered image for the plan's profile and arch) if it has the plan's key and is intact. */
export function cacheHit(record: ImageRecord | undefined, plan: BuildPlan): ImageRecord | undefined {
  return record && record.cache_key === plan.cacheKey && imageIntact(record) ? record : undefined;
}

/** The work dir of every build: under the images dir, so that its image moves into place with a rename. */
export function workRoot(project: Project): string {
  return join(project.imagesDir(), '.work');
}

function builderFor(project: Project, plan: BuildPlan): Builder {
  if (plan.builder === 'local') return new LocalBuilder(project);
  const remote = project.pimConfig().build.remotes[plan.builder];
  if (!remote) throw new ConfigError(`build.builders routes ${plan.arch} to '${plan.builder}', which build.remotes does not define`);
  return new RemoteBuilder(project, plan.builder, remote);
}

/** `pim build run`: plan, answer from the cache, or build and register the image. */
export async function buildImage(project: Project, options: BuildOptions, io: BuildIo): Promise<BuildResult> {
  const plan = resolvePlan(project, options);
  if (options.expectKey && options.expectKey !== plan.cacheKey) {
    throw new ConfigError(
      `this PIM computes the cache key ${plan.cacheKey} for ${plan.profileName}/${plan.arch}, but the caller expected ${options.expectKey}: the inputs or PIM's built-in defaults differ`,
    );
  }
  const previous = new Registry(project.registryPath()).getImage(plan.profileName, plan.arch);
  if (!options.force) {
    const hit = cacheHit(previous, plan);
    if (hit) return { cached: true, record: hit, plan };
  }
  if (options.verbose && previous) {
    const changed = previous.cache_key === plan.cacheKey ? ['(none: the image file is missing or changed, or --force)'] : changedInputs(previous.inputs ?? {}, plan.inputs);
    io.say(`cache miss for ${plan.profileName}/${plan.arch}; changed since the last build: ${changed.join(', ')}`);
  }
  const builder = builderFor(project, plan);
  await checkScriptSyntax(plan.scripts);
  if (builder.name === 'local') await ensureIso(project, plan, io);

  const buildId = `${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
  const base = join(workRoot(project), `${plan.profileName}-${plan.arch}-${buildId}`);
  mkdirSync(workRoot(project), { recursive: true });
  // Held for the build's whole life: `pim build clean --all` leaves a work dir alone while it is.
  const workLock = tryLock(base);
  if (!workLock) throw new WorkError(`cannot lock the work dir ${base}`);
  // The log lives outside the work dir (which the builder removes): under the state dir while
  // the build runs and when it fails, next to the image when it succeeds.
  mkdirSync(project.logsDir(), { recursive: true });
  const log = new BuildLog(join(project.logsDir(), `${plan.profileName}-${plan.arch}-${buildId}.log`), secretsOf(plan.profile));
  log.line(`pim build ${plan.profileName} ${plan.arch}: key ${plan.cacheKey}, ISO ${plan.iso.name}, builder ${builder.name}`);
  const say = (line: string) => {
    log.line(line);
    io.say(line);
  };
  const outputPath = `${base}.qcow2`;
  const startedAt = Date.now();
  try {
    return await withGracefulInterrupts(async (signal) => {
      const job: BuildJob = {
        plan, buildId, workDir: base, outputPath, keepFailed: options.keepFailed ?? false, verbose: options.verbose ?? false, force: options.force ?? false,
        log, say, reporter: io.reporter, progress: io.progress, signal,
      };
      const built = await builder.build(job);
      if (signal.aborted) throw new InterruptedError();
      io.reporter.start('register');
      const t0 = Date.now();
      let registered;
      try {
        registered = await registerBuilt(project, plan, built, buildId, { startedAt });
      } catch (err) {
        io.reporter.end('register', (Date.now() - t0) / 1000, false);
        throw err;
      }
      const seconds = (Date.now() - t0) / 1000;
      io.reporter.end('register', seconds, true);
      for (const path of registered.removed) say(`removed the superseded image ${path}`);
      for (const path of registered.keptModified) say(`kept the superseded image ${path}: it was modified since it was built (remove it yourself when done with it)`);
      const logPath = `${registered.record.path}.log`;
      renameSync(log.path, logPath);
      if (project.pimConfig().build.verify) {
        io.reporter.start('verify');
        const { verifyImage } = await import('./verify.js');
        const t1 = Date.now();
        const verdict = await verifyImage(project, { profileName: plan.profileName, arch: plan.arch }, io.say);
        io.reporter.end('verify', (Date.now() - t1) / 1000, verdict.ok);
        if (!verdict.ok) {
          throw new WorkError(`the image was built and registered, but its verification failed: ${verdict.checks.filter((c) => !c.ok).map((c) => c.name).join(', ')}${verdict.consoleTail ? `\nlast console lines:\n${verdict.consoleTail}` : ''}`);
        }
      }
      return {
        cached: false as const,
        record: registered.record,
        plan,
        timings: [...built.timings, { name: 'register', seconds }],
        logPath,
        removed: registered.removed,
        keptModified: registered.keptModified,
      };
    });
  } catch (err) {
    const saved = log.path;
    // A step can fail because of the interrupt itself (a VM killed under it): still an interrupt.
    if (err instanceof InterruptedError || interruptSignal.aborted) throw new InterruptedError(`build interrupted; nothing was registered (log: ${saved})`);
    const tail = log.tail(15).split('\n').map((l) => `  ${l}`).join('\n');
    throw new WorkError(`build of ${plan.profileName}/${plan.arch} failed: ${errorMessage(err)}\nlog: ${saved}\nlast lines of the log:\n${tail}`);
  } finally {
    // Whatever happened, an unregistered output file is nobody's image.
    if (existsSync(outputPath)) rmSync(outputPath, { force: true });
    workLock.release();
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
  await store.download(entry, (r, t) => bar?.update(r, t), { onWait: (holder) => io.say(`waiting for another download of ${entry.name} (${holder})`) });
  bar?.done();
}
