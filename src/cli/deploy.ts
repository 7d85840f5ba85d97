import { Registry } from '../registry/registry.js';
import { deployImage, deploymentStatus, removeDeployment } from '../deploy/manager.js';
import { projectFrom } from './context.js';
import type { GlobalOptions } from './main.js';
import { printJson, println, progressReporter, table } from './output.js';

type Opts = GlobalOptions & { arch?: string; force?: boolean; json?: boolean };
const say = (line: string) => process.stderr.write(`    ${line}\n`);

export async function run(opts: Opts, profile: string, target: string): Promise<void> {
  const outcome = await deployImage(projectFrom(opts), { profileName: profile, targetName: target, arch: opts.arch, force: opts.force }, { say, progress: (label) => progressReporter(label) });
  if (opts.json) {
    printJson({ deployed: outcome.deployed, ...outcome.record });
    return;
  }
  if (!outcome.deployed) {
    println(`${profile}/${outcome.record.arch} is already deployed to ${target} with this image (${ids(outcome.record.ids)}, ${outcome.record.deployed_at}); --force deploys it again`);
    return;
  }
  println(`deployed ${profile}/${outcome.record.arch} to ${target}: ${outcome.summary}`);
}

function ids(values: Record<string, string>): string {
  return Object.entries(values).map(([k, v]) => `${k} ${v}`).join(', ');
}

export function list(opts: Opts): void {
  const deployments = new Registry(projectFrom(opts).registryPath()).listDeployments();
  if (opts.json) {
    printJson(deployments);
    return;
  }
  if (!deployments.length) {
    println('nothing deployed yet');
    return;
  }
  println(table([
    ['PROFILE', 'ARCH', 'TARGET', 'TYPE', 'IDS', 'IMAGE KEY', 'DEPLOYED'],
    ...deployments.map((d) => [d.profile, d.arch, d.target, d.type, ids(d.ids), d.cache_key.slice(0, 12), d.deployed_at]),
  ]));
}

export async function status(opts: Opts, target: string): Promise<void> {
  const rows = await deploymentStatus(projectFrom(opts), target, { say });
  if (opts.json) {
    printJson(rows.map((r) => ({ profile: r.record.profile, arch: r.record.arch, role: r.role, ids: r.ids, cache_key: r.cacheKey, exists: r.status.exists, detail: r.status.detail, current_image: r.currentImage })));
    return;
  }
  if (!rows.length) {
    println(`nothing recorded as deployed to ${target}`);
    return;
  }
  println(table([
    ['PROFILE', 'ARCH', 'ROLE', 'STATE', 'IMAGE', 'DETAIL'],
    ...rows.map((r) => [r.record.profile, r.record.arch, r.role, r.status.exists ? 'present' : 'GONE', r.currentImage ? 'current' : 'outdated', r.status.detail]),
  ]));
}

export async function remove(opts: Opts, profile: string, target: string): Promise<void> {
  const record = await removeDeployment(projectFrom(opts), { profileName: profile, targetName: target, arch: opts.arch }, { say });
  println(`removed ${profile}/${record.arch} from ${target} (${ids(record.ids)}) and its record`);
}
