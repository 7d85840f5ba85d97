import type { Project } from '../config/project.js';
import { Profiles } from '../profile/profiles.js';
import { TCG_WARNING } from '../qemu/accel.js';
import { requireAarch64Firmware } from '../qemu/firmware.js';
import { join } from 'node:path';
import type { Builder, BuildJob, BuiltImage } from './builder.js';
import { LOCAL_STEPS, type LocalBuildState } from './local-steps.js';
import { selectedAccelerator } from './accelerator.js';
import { runSteps } from './steps.js';
import { LayerCache, layerChain, parseSize } from './layers.js';

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
    const state: LocalBuildState = {
      job,
      plan,
      project: this.project,
      profiles: new Profiles(this.project),
      accel,
      firmware,
      diskPath: join(job.workDir, 'disk.qcow2'),
      warnings: [],
      layers: { cache, chain, reused: job.force ? 0 : cache.cachedPrefix(chain), done: [] },
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
