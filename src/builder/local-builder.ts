import type { Project } from '../config/project.js';
import { Profiles } from '../profile/profiles.js';
import { TCG_WARNING } from '../qemu/accel.js';
import { requireAarch64Firmware } from '../qemu/firmware.js';
import { join } from 'node:path';
import type { Builder, BuildJob, BuiltImage } from './builder.js';
import { LOCAL_STEPS, type LocalBuildState } from './local-steps.js';
import { selectedAccelerator } from './accelerator.js';
import { runSteps } from './steps.js';
import { LayerCache, layerChain, parseSize, type Layer } from './layers.js';
import { checkReleaseFiles, type ArchiveCheck } from './archive-record.js';
import { errorMessage, InterruptedError } from '../errors.js';
import { maskUrlCredentials } from '../secrets.js';

/** The layer cache of this machine: under the cache dir, capped by build.layer_cache_size. */
export function layerCache(project: Project): LayerCache {
  return new LayerCache(join(project.paths.cacheDir, 'layers'), parseSize(project.pimConfig().build.layer_cache_size));
}

/** Builds on this machine: QEMU, the preseed server on loopback, SSH to the VM (local-steps.ts). */
export class LocalBuilder implements Builder {
  readonly name = 'local';

  constructor(private readonly project: Project) {}

  async build(job: BuildJob): Promise<BuiltImage> {
    const { plan } = job;
    const accel = await selectedAccelerator(this.project, plan.arch);
    if (accel === 'tcg') job.say(`warning: ${TCG_WARNING}`);
    const firmware = plan.arch === 'arm64' ? requireAarch64Firmware() : undefined;
    job.log.line(`local build of ${plan.profileName}/${plan.arch}: accelerator ${accel}`);
    const chain = layerChain(plan);
    const cache = layerCache(this.project);
    let reused = job.force ? 0 : cache.cachedPrefix(chain);
    if (reused > 1 && plan.settings.upgrade) {
      reused = await withCurrentUpgrade(cache, chain, reused, job, plan.profile.http_proxy ?? undefined);
      // (Another build may have evicted a layer while this one asked the mirror.)
      reused = Math.min(reused, cache.cachedPrefix(chain));
    }
    const state: LocalBuildState = {
      job,
      plan,
      project: this.project,
      profiles: new Profiles(this.project),
      accel,
      firmware,
      diskPath: join(job.workDir, 'disk.qcow2'),
      warnings: [],
      layers: { cache, chain, reused, done: [] },
    };
    const timings = await runSteps(LOCAL_STEPS, state, { signal: job.signal, log: job.log, say: job.say, verbose: job.verbose }, job.reporter);
    const output = state.output!;
    return {
      path: job.outputPath,
      sha256: output.sha256,
      virtualSize: output.virtualSize,
      fileSize: output.fileSize,
      timings,
      builder: this.name,
      patchedAt: state.patchedAt,
      warnings: state.warnings,
    };
  }
}

/**
 * How many of the `reused` cached layers a build may reuse once the upgrade layer (chain[1]) is
 * checked against the archive (archive-record.ts): all of them while the mirror serves the
 * release files the upgrade saw, else only the install layer. A mirror that cannot be reached
 * keeps the cached upgrade, with a warning (the registry says when it was patched).
 */
async function withCurrentUpgrade(cache: LayerCache, chain: Layer[], reused: number, job: BuildJob, proxy?: string): Promise<number> {
  const upgrade = chain[1]!;
  const record = cache.releaseFiles(upgrade.key);
  let check: ArchiveCheck = { changed: [], unchecked: [] };
  try {
    if (record && Object.keys(record).length > 0) check = await checkReleaseFiles(record, { proxy, signal: job.signal });
  } catch (err) {
    if (job.signal.aborted) throw new InterruptedError();
    throw err;
  }
  const { changed, unchecked } = check;
  if (!record || changed.length > 0) {
    job.say(
      record
        ? `the archive has changed since layer ${upgrade.name} was made (${changed.map(maskUrlCredentials).join(', ')}): making it again`
        : `layer ${upgrade.name} has no record of the archive it was upgraded from: making it again`,
    );
    // Out of the cache with the layers made on it, so that this build's layers of the same keys
    // take their place. One in use by another build stays until a later build; this build's
    // commit then finds it and caches nothing on top of it (LayerCache.commit).
    try {
      const { removed, inUse } = await cache.removeWithDescendants(upgrade.key);
      job.log.line(`removed ${removed.length} outdated layer(s) from the layer cache${inUse.length > 0 ? `; ${inUse.length} in use by another build kept` : ''}`);
    } catch (err) {
      job.log.line(`could not remove the outdated layers: ${errorMessage(err)}`);
    }
    return 1;
  }
  const reusing = `reusing it (packages as of ${cache.createdAt(upgrade.key) ?? 'its making'})`;
  if (Object.keys(record).length === 0) {
    job.say(`warning: layer ${upgrade.name} names no release file to check against the archive; ${reusing}`);
  } else if (unchecked.length > 0) {
    job.say(`warning: could not check whether the archive has changed since layer ${upgrade.name} was made (${maskUrlCredentials(unchecked[0]!.url)}: ${unchecked[0]!.reason}); ${reusing}`);
  }
  return reused;
}
