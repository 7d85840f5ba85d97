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
import { checkReleaseFiles } from './archive-record.js';

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
    let staleFrom: number | undefined;
    if (reused > 1 && plan.settings.upgrade) ({ reused, staleFrom } = await withCurrentUpgrade(cache, chain, reused, job.say, (line) => job.log.line(line), plan.profile.http_proxy ?? undefined));
    const state: LocalBuildState = {
      job,
      plan,
      project: this.project,
      profiles: new Profiles(this.project),
      accel,
      firmware,
      diskPath: join(job.workDir, 'disk.qcow2'),
      warnings: [],
      layers: { cache, chain, reused, staleFrom, done: [] },
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
 * keeps the cached upgrade, with a warning (the registry says when it was patched). `staleFrom`:
 * the first layer of the chain whose outdated copy another build still uses, so that this build
 * does not put its own layers on top of it.
 */
async function withCurrentUpgrade(cache: LayerCache, chain: Layer[], reused: number, say: (line: string) => void, log: (line: string) => void, proxy?: string): Promise<{ reused: number; staleFrom?: number }> {
  const upgrade = chain[1]!;
  const record = cache.releaseFiles(upgrade.key);
  const { changed, unchecked } = record ? await checkReleaseFiles(record, { proxy }) : { changed: [], unchecked: [] };
  if (!record || changed.length > 0) {
    say(record ? `the archive has changed since layer ${upgrade.name} was made (${changed.join(', ')}): making it again` : `layer ${upgrade.name} has no record of the archive it was upgraded from: making it again`);
    // Out of the cache with the layers made on it, so that this build's layers of the same keys
    // take their place (a layer in use by another build stays until a later build).
    const { removed, inUse } = await cache.removeWithDescendants(upgrade.key);
    log(`removed ${removed.length} outdated layer(s) from the layer cache${inUse.length > 0 ? `; ${inUse.length} in use by another build kept` : ''}`);
    const kept = chain.findIndex((layer) => inUse.includes(layer.key));
    return { reused: 1, staleFrom: kept >= 0 ? kept : undefined };
  }
  if (unchecked.length > 0) {
    say(`warning: could not check whether the archive has changed since layer ${upgrade.name} was made (${unchecked[0]!.url}: ${unchecked[0]!.reason}); reusing it (packages as of ${cache.createdAt(upgrade.key) ?? 'its making'})`);
  }
  return { reused };
}
