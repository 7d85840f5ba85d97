import type { Arch } from '../arch.js';
import type { Project } from '../config/project.js';
import { acceleratorReport, selectAccelerator } from '../qemu/accel.js';
import type { Accelerator } from '../qemu/command.js';

/** The accelerator for `arch` guests: pim.yml's override, else the best one the (cached) probe found. */
export async function selectedAccelerator(project: Project, arch: Arch): Promise<Accelerator> {
  const report = await acceleratorReport(arch, project.paths.cacheDir);
  return selectAccelerator(report, project.pimConfig().build.accelerator);
}
