import { ARCHES } from '../arch.js';
import { doctor } from '../qemu/doctor.js';
import { TCG_WARNING } from '../qemu/accel.js';
import { projectFrom } from './context.js';
import type { GlobalOptions } from './main.js';
import { printJson, println } from './output.js';

export default async function doctorCommand(opts: GlobalOptions & { json?: boolean; cache?: boolean }): Promise<void> {
  const project = projectFrom(opts);
  const report = await doctor({
    cacheDir: project.paths.cacheDir,
    refresh: opts.cache === false,
    override: project.pimConfig().build.accelerator,
  });
  if (opts.json) {
    printJson(report);
    return;
  }
  println(`host: ${report.host.platform} ${report.host.arch}`);
  println('tools:');
  for (const [name, check] of Object.entries(report.tools)) {
    if (check.found) println(`  ok       ${name}: ${check.path}${check.version ? ` (${check.version})` : ''}`);
    else if (check.optional) println(`  optional ${name}: not found (${check.optional}); install with: ${check.install}`);
    else println(`  MISSING  ${name}: install with: ${check.install}`);
  }
  for (const arch of ARCHES) {
    println(`accelerators for ${arch} guests:`);
    for (const [accel, verdict] of Object.entries(report.acceleratorsByArch[arch])) {
      println(`  ${verdict.usable ? 'usable   ' : 'unusable '}${accel}${verdict.reason ? `: ${verdict.reason}` : ''}`);
    }
    println(`  selected: ${report.selected[arch]}${report.override ? ' (build.accelerator in pim.yml)' : ''}`);
  }
  if (Object.values(report.selected).includes('tcg') && !report.override) println(`note: ${TCG_WARNING} (for the arches where TCG is selected)`);
  if (report.missing.length) {
    println('to install what is missing:');
    for (const m of report.missing) println(`  ${m.install}`);
  } else {
    println('nothing missing');
  }
}
