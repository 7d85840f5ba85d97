import { join } from 'node:path';
import { ARCHES, hostArch, normalizeArch } from '../arch.js';
import { buildImage, cacheHit, selectedAccelerator } from '../builder/manager.js';
import { resolvePlan } from '../builder/plan.js';
import { cleanImages } from '../builder/clean.js';
import { ConfigError } from '../errors.js';
import { IsoStore } from '../iso/store.js';
import { defaultPasswordWarning } from '../profile/warnings.js';
import { qemuCommand } from '../qemu/command.js';
import { findAarch64Firmware } from '../qemu/firmware.js';
import { Registry, imageState, type ImageRecord } from '../registry/registry.js';
import { shellJoin } from '../shell.js';
import { projectFrom } from './context.js';
import type { GlobalOptions } from './main.js';
import { formatBytes, maskSecrets, printJson, printYaml, println, progressReporter, table, warn } from './output.js';
import { prefixedReporter, stepReporter } from './reporter.js';
import { remoteStatus } from '../builder/remote-status.js';
import { pimVersion } from '../version.js';
import { IsoCatalog } from '../iso/catalog.js';
import { Profiles } from '../profile/profiles.js';
import { WorkError, InterruptedError, errorMessage } from '../errors.js';

type RunOptions = GlobalOptions & { arch?: string; force?: boolean; local?: boolean; verbose?: boolean; dryRun?: boolean; keepFailed?: boolean; expectKey?: string };

export async function runBuild(opts: RunOptions, profileName: string): Promise<void> {
  if (opts.arch === 'all') return runAllArches(opts, profileName);
  const project = projectFrom(opts);
  if (opts.dryRun) return dryRun(opts, profileName);
  const reporter = stepReporter();
  const result = await buildImage(
    project,
    { profileName, arch: opts.arch, local: opts.local, force: opts.force, verbose: opts.verbose, keepFailed: opts.keepFailed, expectKey: opts.expectKey },
    { say: (line) => reporter.note(line), reporter, progress: (label) => progressReporter(label) },
  );
  const passwordWarning = defaultPasswordWarning(result.plan.profile, profileName);
  if (passwordWarning) warn(passwordWarning);
  if (result.cached) {
    println(`${result.record.path}`);
    process.stderr.write(`cached: ${profileName}/${result.plan.arch} is up to date (key ${result.record.cache_key.slice(0, 12)}, built ${result.record.built_at}); --force rebuilds\n`);
    return;
  }
  for (const warning of result.record.warnings ?? []) warn(warning);
  const total = result.timings.reduce((sum, t) => sum + t.seconds, 0);
  process.stderr.write(`built ${profileName}/${result.plan.arch} in ${total.toFixed(0)} s: ${formatBytes(result.record.file_size)} (virtual ${formatBytes(result.record.virtual_size)}), log ${result.logPath}\n`);
  println(result.record.path);
}

/**
 * `--arch all`: every arch the profile lists (or the catalog has media for), in parallel, each
 * on its own builder, output prefixed with the arch; one failing does not stop the others.
 */
async function runAllArches(opts: RunOptions, profileName: string): Promise<void> {
  const project = projectFrom(opts);
  const profile = new Profiles(project).get(profileName);
  const arches = profile.architectures ?? IsoCatalog.load(project).arches();
  if (opts.dryRun) {
    for (const arch of arches) await dryRun({ ...opts, arch }, profileName);
    return;
  }
  const rows = await Promise.all(
    arches.map(async (arch) => {
      const reporter = prefixedReporter(`[${arch}] `);
      const started = Date.now();
      try {
        const result = await buildImage(
          project,
          { profileName, arch, local: opts.local, force: opts.force, verbose: opts.verbose, keepFailed: opts.keepFailed },
          { say: (line) => reporter.note(line), reporter },
        );
        return { arch, builder: result.record.builder, result: result.cached ? 'cached' : 'built', seconds: (Date.now() - started) / 1000, size: result.record.file_size, path: result.record.path };
      } catch (err) {
        reporter.note(`FAILED: ${errorMessage(err).split('\n')[0]}`);
        return { arch, builder: project.pimConfig().build.builders[arch] ?? 'local', result: 'failed', seconds: (Date.now() - started) / 1000, error: err };
      }
    }),
  );
  println(table([
    ['ARCH', 'BUILDER', 'RESULT', 'SECONDS', 'SIZE', 'IMAGE'],
    ...rows.map((r) => [r.arch, opts.local ? 'local' : r.builder, r.result, r.seconds.toFixed(0), 'size' in r ? formatBytes(r.size!) : '-', 'path' in r ? r.path! : errorMessage(r.error).split('\n')[0]!]),
  ]));
  const failed = rows.filter((r) => r.result === 'failed');
  if (failed.some((r) => r.error instanceof InterruptedError)) throw new InterruptedError('interrupted; the architectures not finished registered nothing');
  if (failed.length) throw new WorkError(`${failed.length} of ${rows.length} architectures failed: ${failed.map((r) => r.arch).join(', ')}`);
}

async function dryRun(opts: RunOptions, profileName: string): Promise<void> {
  const project = projectFrom(opts);
  const plan = resolvePlan(project, { profileName, arch: opts.arch, local: opts.local });
  const hit = !opts.force && cacheHit(new Registry(project.registryPath()).getImage(plan.profileName, plan.arch), plan);
  const iso = new IsoStore(project.isoDir());
  const accel = await selectedAccelerator(project, plan.arch);
  const firmware = plan.arch === 'arm64' ? findAarch64Firmware() : undefined;
  const work = join(project.imagesDir(), '.work', `${profileName}-${plan.arch}-<id>`);
  const common = {
    name: `pim-<id>`, arch: plan.arch, accel, memoryMb: plan.settings.memoryMb, cpus: plan.settings.cpus,
    disk: { path: join(work, 'disk.qcow2'), format: 'qcow2' as const, cache: 'unsafe' as const }, qmpSocket: '<tmp>/qmp.sock', firmware,
    efiVars: firmware?.vars ? join(work, 'efivars.fd') : undefined,
  };
  const consoleDev = plan.arch === 'arm64' ? 'ttyAMA0' : 'ttyS0';
  const install = qemuCommand({
    ...common, serialLog: join(work, 'install-console.log'), cdrom: plan.isoPath, noReboot: true,
    kernel: { path: join(work, 'installer/vmlinuz'), initrd: join(work, 'installer/initrd.gz'), append: `auto=true priority=critical preseed/url=http://10.0.2.2:<port>/preseed.cfg DEBIAN_FRONTEND=text console=${consoleDev},115200n8` },
  });
  const boot = qemuCommand({ ...common, serialLog: join(work, 'boot-console.log'), sshPort: 65535 });
  const show = (cmd: { binary: string; args: string[] }) => maskSecrets(shellJoin([cmd.binary, ...cmd.args]).replace('127.0.0.1:65535', '127.0.0.1:<free port>'));
  const s = plan.settings;
  println(`plan for ${profileName}/${plan.arch} (dry run: nothing is changed)`);
  println(`  builder:     ${plan.builder}${plan.builder !== 'local' ? ` (remote: ${project.pimConfig().build.remotes[plan.builder]?.host})` : ''}`);
  println(`  ISO:         ${plan.iso.name} -> ${plan.isoPath} (${iso.status(plan.iso).state})`);
  println(`  cache key:   ${plan.cacheKey} (${hit ? `hit: ${hit.path}` : 'miss: would build'})`);
  println(`  accelerator: ${accel}`);
  println(`  disk:        ${s.diskSize}, memory ${s.memoryMb} MiB, ${s.cpus} CPUs`);
  println(`  image:       ${s.compress ? 'compressed' : 'uncompressed'} qcow2; packages ${s.upgrade ? 'upgraded (build.upgrade)' : 'not upgraded (build.upgrade: false)'}; build user ${s.sshUser}: ${s.buildUser}`);
  println(`  templates:   ${plan.templates.preseed.path}, ${plan.templates.install.path}`);
  println(`  scripts:     pim-prepare -> ${plan.scripts.map((x) => x.name).join(' -> ')} -> pim-seal`);
  for (const x of plan.scripts) println(`               ${x.name}: ${x.path}`);
  println(`  output:      ${join(project.imagesDir(), `${profileName}-${plan.arch}-${plan.cacheKey.slice(0, 12)}-<id>.qcow2`)}`);
  println(`  install VM:  ${show(install)}`);
  println(`  boot VM:     ${show(boot)}`);
  println('  profile:');
  printYaml(maskSecrets(plan.profile));
  const passwordWarning = defaultPasswordWarning(plan.profile, profileName);
  if (passwordWarning) warn(passwordWarning);
}

function stateLabel(record: ImageRecord): string {
  const state = imageState(record);
  return state === 'modified' ? 'modified since built' : state;
}

export function list(opts: GlobalOptions & { json?: boolean; all?: boolean }): void {
  const registry = new Registry(projectFrom(opts).registryPath());
  const images = registry.listImages();
  const previous = opts.all ? registry.listPrevious() : [];
  const deployments = opts.all ? registry.listDeployments() : [];
  if (opts.json) {
    printJson(opts.all ? { images, previous, deployments } : images);
    return;
  }
  if (!images.length && !previous.length) {
    println('no images built yet');
    return;
  }
  const row = (i: ImageRecord, current: boolean) => [i.profile, i.arch, current ? 'current' : 'previous', i.built_at, formatBytes(i.file_size), i.cache_key.slice(0, 12), stateLabel(i), i.path];
  println(table([['PROFILE', 'ARCH', 'ROLE', 'BUILT', 'SIZE', 'KEY', 'STATE', 'PATH'], ...images.map((i) => row(i, true)), ...previous.map((i) => row(i, false))]));
  if (!opts.all) return;
  for (const image of images) {
    const mine = deployments.filter((d) => d.profile === image.profile && d.arch === image.arch);
    for (const d of mine) {
      const current = d.cache_key === image.cache_key ? 'current image' : `older image ${d.cache_key.slice(0, 12)}`;
      println(`  ${image.profile}/${image.arch} deployed to ${d.target} (${d.type}: ${Object.entries(d.ids).map(([k, v]) => `${k} ${v}`).join(', ')}) at ${d.deployed_at}, ${current}`);
    }
  }
}

function findRecords(opts: GlobalOptions & { arch?: string }, profileName: string): ImageRecord[] {
  const registry = new Registry(projectFrom(opts).registryPath());
  const arch = opts.arch ? normalizeArch(opts.arch) : undefined;
  const records = registry.listImages().filter((r) => r.profile === profileName && (!arch || r.arch === arch));
  if (!records.length) throw new ConfigError(`no image registered for ${profileName}${arch ? `/${arch}` : ''}; build it with 'pim build run ${profileName}'`);
  return records;
}

export function show(opts: GlobalOptions & { arch?: string; json?: boolean }, profileName: string): void {
  const records = findRecords(opts, profileName);
  if (opts.json) {
    printJson(records.length === 1 ? records[0] : records);
    return;
  }
  for (const r of records) {
    printYaml({ [`${r.profile}/${r.arch}`]: { ...r, state: stateLabel(r), patched: r.patched_at ? `packages brought up to date at ${r.patched_at}` : 'not upgraded during the build (build.upgrade: false)' } });
  }
}

export async function clean(opts: GlobalOptions & { profile?: string; arch?: string; all?: boolean; layers?: boolean; packages?: boolean }): Promise<void> {
  const project = projectFrom(opts);
  if (opts.layers || opts.packages) {
    const { layerCache } = await import('../builder/local-builder.js');
    const { packageCacheOf } = await import('../builder/local-steps.js');
    if (opts.layers) {
      const r = layerCache(project).clean();
      println(`removed ${r.removed} layer(s) (${formatBytes(r.bytes)})${r.inUse ? `; kept ${r.inUse} in use by a running build` : ''}`);
    }
    if (opts.packages) println(`emptied the package cache (${formatBytes(packageCacheOf(project).clean())})`);
    if (!opts.all && opts.profile === undefined && opts.arch === undefined) return;
  }
  const report = await cleanImages(project, { profile: opts.profile, arch: opts.arch ? normalizeArch(opts.arch) : undefined, all: opts.all });
  for (const r of report.removed) println(`removed ${r.profile}/${r.arch}${r.existed ? `: ${r.path}` : ' (orphaned entry: its file was gone)'}`);
  for (const r of report.modified) println(`kept ${r.profile}/${r.arch}: ${r.path} was modified since it was built (its size changed); 'pim build clean --profile ${r.profile}' removes it`);
  for (const path of report.unregistered) println(`removed ${path} (an image file no record refers to)`);
  for (const dir of report.workDirs) println(`removed the leftover work dir ${dir}`);
  for (const busy of report.busyWorkDirs) println(`kept the work dir ${busy.dir}: a build is using it (${busy.holder})`);
  println(`${report.removed.length} image(s) removed`);
}

export async function status(opts: GlobalOptions & { json?: boolean; localOnly?: boolean }): Promise<void> {
  const project = projectFrom(opts);
  const config = project.pimConfig();
  // The remotes are asked while this machine's accelerators are probed: each remote answers (or
  // is given up) within 10 s, whatever the local probe costs.
  const remotesAsked = opts.localOnly ? Promise.resolve([]) : Promise.all(Object.entries(config.build.remotes).map(([name, remote]) => remoteStatus(name, remote)));
  const arches: Record<string, { accelerator: string; builder: string }> = {};
  for (const arch of ARCHES) arches[arch] = { accelerator: await selectedAccelerator(project, arch), builder: config.build.builders[arch] ?? 'local' };
  const remotes = await remotesAsked;
  const result = { host_arch: hostArch(), version: pimVersion(), arches, remotes, registry: project.registryPath(), images_dir: project.imagesDir() };
  if (opts.json) {
    printJson(result);
    return;
  }
  println(`host arch: ${result.host_arch} (PIM ${result.version})`);
  for (const [arch, s] of Object.entries(arches)) println(`  ${arch}: builder ${s.builder}, local accelerator ${s.accelerator}`);
  for (const r of remotes) {
    println(
      r.reachable
        ? `remote ${r.name} (${r.host}): reachable, PIM ${r.version}, accelerators ${Object.entries(r.accelerators ?? {}).map(([a, x]) => `${a} ${x}`).join(', ')}`
        : `remote ${r.name} (${r.host}): NOT reachable: ${r.reason}`,
    );
  }
  println(`registry: ${result.registry}`);
  println(`images:   ${result.images_dir}`);
}

export async function verify(opts: GlobalOptions & { arch?: string; json?: boolean }, profileName: string): Promise<void> {
  const { verifyImage } = await import('../builder/verify.js');
  const result = await verifyImage(projectFrom(opts), { profileName, arch: opts.arch }, (line) => process.stderr.write(`    ${line}\n`));
  if (opts.json) printJson({ ok: result.ok, seconds: result.seconds, image: result.record.path, checks: result.checks });
  else println(`${result.ok ? 'verified' : 'FAILED'}: ${profileName}/${result.record.arch} (${result.record.path}) in ${result.seconds} s: ${result.checks.filter((c) => c.ok).length} of ${result.checks.length} checks passed`);
  if (!result.ok) {
    const failed = result.checks.filter((c) => !c.ok).map((c) => `${c.name} (${c.detail})`).join('; ');
    throw new WorkError(`verification of ${profileName}/${result.record.arch} failed: ${failed}${result.consoleTail ? `\nlast console lines:\n${result.consoleTail}` : ''}`);
  }
}
