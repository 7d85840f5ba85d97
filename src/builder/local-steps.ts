import { mkdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Project } from '../config/project.js';
import { WorkError, errorMessage } from '../errors.js';
import { hashFile } from '../iso/checksum.js';
import { extractInstallerBootFiles } from '../iso/media.js';
import type { Profiles } from '../profile/profiles.js';
import type { Accelerator } from '../qemu/command.js';
import { DiskImages } from '../qemu/disk.js';
import type { Aarch64Firmware } from '../qemu/firmware.js';
import { Vm, type VmSpecInput } from '../qemu/vm.js';
import { PreseedServer } from '../server/preseed-server.js';
import { PackageCache } from '../server/package-cache.js';
import { parseSize } from './layers.js';
import { releaseRecordLine, type ReleaseRecord } from './archive-record.js';
import type { SshConnection } from '../ssh/connection.js';
import { createBuildKeyPair, loadBuildKeyPair, type BuildKeyPair } from '../ssh/keys.js';
import { GuestAgent } from '../qemu/guest-agent.js';
import type { Layer, LayerCache } from './layers.js';
import { shq } from '../shell.js';
import { runChecked } from '../process.js';
import { followFile } from './build-log.js';
import { kernelTrouble, waitForSshWatchingBoot, watchBoot } from './boot-watch.js';
import type { BuildJob } from './builder.js';
import type { BuildPlan, TemplateSource } from './plan.js';
import type { Step, StepContext } from './steps.js';

export interface LocalBuildState {
  job: BuildJob;
  plan: BuildPlan;
  project: Project;
  profiles: Profiles;
  accel: Accelerator;
  firmware?: Aarch64Firmware;
  diskPath: string;
  keys?: BuildKeyPair;
  server?: PreseedServer;
  vm?: Vm;
  ssh?: SshConnection;
  patchedAt?: string;
  warnings: string[];
  output?: { sha256: string; virtualSize: number; fileSize: number };
  layers: LayerState;
  packageCache?: PackageCache;
}

/** The build's layers: which of the chain came from the cache, and which it made itself. */
export interface LayerState {
  cache: LayerCache;
  chain: Layer[];
  /** How many layers of the chain, from its start, were reused from the cache. */
  reused: number;
  /** Layers this build finished (their files in the work dir), committed to the cache at the end. */
  done: { index: number; file: string }[];
  /** Releases the in-use marks of the reused layers. */
  release?: () => void;
  /** The release files this build's pim-prepare upgraded from, kept with the upgrade layer. */
  releaseFiles?: ReleaseRecord;
}

/** A new overlay in the work dir on top of `backing`: the disk the next VM writes to. */
async function overlayOn(ctx: StepContext, backing: string, path: string): Promise<void> {
  await disks(ctx).overlay(backing, path);
}

const disks = (ctx: StepContext) => new DiskImages('qemu-img', (line) => ctx.log.line(line));

function baseSpec(state: LocalBuildState, name: string): VmSpecInput {
  const { plan, job } = state;
  return {
    name: `pim-${job.buildId}-${name}`,
    arch: plan.arch,
    accel: state.accel,
    memoryMb: plan.settings.memoryMb,
    cpus: plan.settings.cpus,
    disk: { path: state.diskPath, format: 'qcow2', cache: 'unsafe' },
    serialLog: join(job.workDir, `${name}-console.log`),
    firmware: state.firmware,
    efiVars: state.firmware?.vars ? join(job.workDir, 'efivars.fd') : undefined,
  };
}

/** Copies a VM's serial console into the build log (and to the terminal with --verbose). */
function followConsole(path: string, ctx: StepContext): () => void {
  return followFile(path, (line) => {
    ctx.log.line(`console| ${line}`);
    if (ctx.verbose) process.stderr.write(`  | ${ctx.log.mask(line)}\n`);
  });
}

async function stopVm(state: LocalBuildState): Promise<void> {
  const vm = state.vm;
  state.vm = undefined;
  if (vm && !vm.hasExited) {
    vm.kill();
    await vm.exited;
  }
}

function consoleTail(vm: Vm): string {
  return Vm.tail(vm.serialLog, 15);
}

/**
 * `work`, unless the VM exits first: then the step fails at once, with the console's last
 * lines, instead of waiting out a timeout for a machine that is gone.
 */
async function whileVmRuns<T>(vm: Vm, what: string, work: Promise<T>): Promise<T> {
  work.catch(() => undefined);
  const exit = vm.exited.then((info) => {
    throw new WorkError(`the VM exited (${info.signal ? `killed by ${info.signal}` : `code ${info.code}`}) during ${what}; last console lines:\n${consoleTail(vm)}`);
  });
  exit.catch(() => undefined);
  return Promise.race([work, exit]);
}

function timeout(ms: number, message: () => string): { promise: Promise<never>; clear(): void } {
  let timer: NodeJS.Timeout | undefined;
  const promise = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new WorkError(message())), ms);
  });
  promise.catch(() => undefined);
  return { promise, clear: () => clearTimeout(timer) };
}

export const diskStep: Step<LocalBuildState> = {
  name: 'disk',
  async run(state, ctx) {
    mkdirSync(state.job.workDir, { recursive: true, mode: 0o700 });
    const { layers } = state;
    if (layers.reused > 0) {
      // The longest cached prefix of the chain: the build goes on from its last layer.
      const reused = layers.chain.slice(0, layers.reused);
      layers.release = layers.cache.use(reused.map((l) => l.key));
      await overlayOn(ctx, layers.cache.path(reused.at(-1)!.key), state.diskPath);
      ctx.say(`reusing ${reused.length} of ${layers.chain.length} cached layers: ${reused.map((l) => l.name).join(', ')}`);
      return;
    }
    await disks(ctx).create(state.diskPath, state.plan.settings.diskSize);
    ctx.say(`disk ${state.diskPath} (${state.plan.settings.diskSize})${state.job.force ? '; --force: no cached layer is reused' : ''}`);
  },
  async cleanup(state, ctx, outcome) {
    // Layers the build finished are good whatever happened after them (the VM is stopped by
    // now): into the cache they go, so that the next build starts from the last one.
    const { layers } = state;
    // The layer files themselves go into the cache, unless the work dir is kept for debugging.
    const move = outcome === 'success' || !state.job.keepFailed;
    for (const { index, file } of layers.done) {
      const layer = layers.chain[index]!;
      try {
        const how = await layers.cache.commit(layer.key, file, index > 0 ? layers.chain[index - 1]!.key : undefined, index === 0 ? state.keys?.privateKeyPath : undefined, index === 1 ? layers.releaseFiles : undefined, { move });
        if (how === 'kept') {
          ctx.log.line(`layer ${layer.name} was cached meanwhile by another build: kept, and none of this build's later layers cached on it`);
          break;
        }
        ctx.log.line(`cached layer ${layer.name} as ${layer.key.slice(0, 12)}`);
      } catch (err) {
        ctx.log.line(`could not cache layer ${layer.name}: ${errorMessage(err)}`);
        break;
      }
    }
    layers.release?.();
    await layers.cache.evict((l) => ctx.log.line(l)).catch((err: unknown) => ctx.log.line(`layer cache eviction failed: ${errorMessage(err)}`));
    if (outcome !== 'success' && state.job.keepFailed) {
      ctx.say(`kept the work dir for debugging: ${state.job.workDir}`);
      return;
    }
    rmSync(state.job.workDir, { recursive: true, force: true });
  },
};

export const keysStep: Step<LocalBuildState> = {
  name: 'keys',
  async run(state) {
    const { layers } = state;
    // A reused install layer knows only the key of the build that made it.
    state.keys =
      layers.reused > 0
        ? loadBuildKeyPair(layers.cache.keyPath(layers.chain[0]!.key), join(state.job.workDir, 'keys'))
        : createBuildKeyPair(join(state.job.workDir, 'keys'), `pim-build-${state.job.buildId}`);
  },
  // No cleanup of its own: the key lives in the work dir, which the disk step removes -- after
  // it has stored a new install layer's key with the layer.
};

export const serveStep: Step<LocalBuildState> = {
  name: 'serve',
  async run(state, ctx) {
    const { plan } = state;
    // Bound to loopback only: the VM reaches it as 10.0.2.2 through user-mode networking. It
    // serves the profile and template bytes the plan hashed, whatever the files say now.
    state.packageCache = plan.settings.packageCache ? packageCacheOf(state.project, (line) => ctx.log.line(`pkg| ${line}`), plan.profile.http_proxy ?? undefined) : undefined;
    state.server = new PreseedServer({
      profiles: state.profiles,
      profileName: plan.profileName,
      snapshot: { profile: plan.profile, preseed: plan.templates.preseed, install: plan.templates.install },
      packageCache: state.packageCache,
      bind: '127.0.0.1',
      urlHost: '10.0.2.2',
      publicKey: state.keys!.publicKey,
      arch: plan.arch,
      log: (line) => ctx.log.line(`http| ${line}`),
    });
    await state.server.start();
    ctx.say(`preseed server on 127.0.0.1:${state.server.port} (the VM uses ${state.server.preseedUrl})`);
  },
  async cleanup(state, ctx) {
    await state.server?.stop();
    const cache = state.packageCache;
    if (cache) {
      const { hits, hitBytes, misses, missBytes } = cache.stats;
      ctx.say(`package cache: ${hits} served from the cache (${mib(hitBytes)}), ${misses} fetched from the mirror (${mib(missBytes)})`);
      cache.evict();
    }
  },
};

const mib = (bytes: number) => `${(bytes / 1048576).toFixed(1)} MiB`;

export const installStep: Step<LocalBuildState> = {
  name: 'install',
  async run(state, ctx) {
    if (state.layers.reused > 0) {
      ctx.say('the install layer is cached: nothing to install');
      return;
    }
    await install(state, ctx);
    // The disk the installer powered off is the install layer; the next VM writes to an overlay.
    const layerFile = join(state.job.workDir, 'layer-0.qcow2');
    renameSync(state.diskPath, layerFile);
    state.layers.done.push({ index: 0, file: layerFile });
    await overlayOn(ctx, layerFile, state.diskPath);
  },
  async cleanup(state) {
    await stopVm(state);
  },
};

/** The installer ran to its end without reporting success (its late_command did not finish). */
class InstallNotReported extends WorkError {
  constructor(
    message: string,
    /** That installer's serial console. */
    readonly consoleLog: string,
  ) {
    super(message);
  }
}

/**
 * Runs the installer; once more, on a new disk, when it failed after its kernel reported trouble
 * (a stall, a warning's call trace: under TCG on a loaded host, the emulation's doing, not the
 * preseed's). A failure without such a report is the preseed's or the mirror's, and stands.
 */
async function install(state: LocalBuildState, ctx: StepContext): Promise<void> {
  try {
    await installOnce(state, ctx, 'install');
  } catch (err) {
    // (Interrupted: the step's cleanup has stopped the VM, which is why it "failed".)
    const trouble = err instanceof InstallNotReported && !ctx.signal.aborted ? kernelTrouble(readText(err.consoleLog)) : undefined;
    if (!trouble) throw err;
    ctx.say(`the installer failed after its kernel reported trouble ("${trouble}"): installing again on a new disk, once`);
    ctx.log.line(`first install: ${errorMessage(err).split('\n')[0]}`);
    rmSync(state.diskPath, { force: true });
    // (arm64: the first installer's UEFI variables go too.)
    rmSync(join(state.job.workDir, 'efivars.fd'), { force: true });
    await disks(ctx).create(state.diskPath, state.plan.settings.diskSize);
    if (ctx.signal.aborted) throw err;
    state.server!.newInstall();
    try {
      await installOnce(state, ctx, 'install-again');
    } catch (again) {
      if (again instanceof WorkError && !ctx.signal.aborted) {
        throw new WorkError(`second install (the first failed after its kernel reported trouble): ${again.message}`);
      }
      throw again;
    }
  }
}

function readText(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

async function installOnce(state: LocalBuildState, ctx: StepContext, name: string): Promise<void> {
  {
    const { plan, job } = state;
    const { settings } = plan;
    const server = state.server!;
    const boot = await extractInstallerBootFiles(plan.isoPath, plan.arch, join(job.workDir, 'installer'), (l) => ctx.log.line(l));
    ctx.log.line(`installer kernel ${boot.source.kernel}, initrd ${boot.source.initrd}`);
    const console = plan.arch === 'arm64' ? 'ttyAMA0' : 'ttyS0';
    const append = `auto=true priority=critical preseed/url=${server.preseedUrl} DEBIAN_FRONTEND=text console=${console},115200n8`;
    const spec = { ...baseSpec(state, name), cdrom: plan.isoPath, kernel: { path: boot.kernel, initrd: boot.initrd, append }, noReboot: true };
    const stopFollowing = followConsole(spec.serialLog, ctx);
    try {
      const vm = await Vm.start({ spec, log: (l) => ctx.log.line(l), onStderr: (l) => ctx.log.line(`qemu| ${l}`) });
      state.vm = vm;
      // An installer that never asks for its preseed (wrong URL, no network, a boot menu
      // waiting for a key) is noticed after preseed_fetch_timeout, not after install_timeout.
      // The deadline starts again when the watch below resets the VM.
      let restartFetchDeadline = (): void => undefined;
      const fetched = new Promise<never>((_, reject) => {
        const arm = () =>
          setTimeout(() => {
            clearInterval(poll);
            reject(new WorkError(`the installer did not fetch the preseed within ${settings.preseedFetchTimeoutS} s (build.preseed_fetch_timeout); last console lines:\n${consoleTail(vm)}`));
          }, settings.preseedFetchTimeoutS * 1000);
        let timer = arm();
        restartFetchDeadline = () => {
          clearTimeout(timer);
          timer = arm();
        };
        const poll = setInterval(() => {
          if (!server.preseedFetched && !vm.hasExited) return;
          clearInterval(poll);
          clearTimeout(timer);
        }, 250);
        vm.exited.finally(() => {
          clearInterval(poll);
          clearTimeout(timer);
        });
      });
      fetched.catch(() => undefined);
      // An installer kernel that hangs before it asks for the preseed (nothing is on the disk
      // yet) is reset once, as in the boot step -- only on a sign of a hung kernel: an installer
      // that runs but cannot fetch (no network, a wrong URL) is left to the fetch timeout.
      const watch = watchBoot(vm, {
        stallS: settings.bootStallTimeoutS < settings.preseedFetchTimeoutS ? settings.bootStallTimeoutS : 0,
        rootInit: null,
        reached: () => server.preseedFetched,
        onlyOnKernelStall: true,
        waitingFor: 'fetch the preseed',
        onReset: () => restartFetchDeadline(),
        say: (line) => ctx.say(line),
        log: (line) => ctx.log.line(line),
      });
      const limit = timeout(settings.installTimeoutS * 1000, () => `install step timed out after ${settings.installTimeoutS} s (build.install_timeout); last console lines:\n${consoleTail(vm)}`);
      try {
        await Promise.race([vm.exited, fetched, watch.failed, limit.promise]);
      } finally {
        watch.stop();
        limit.clear();
      }
      if (!server.preseedFetched) {
        throw new WorkError(`the installer stopped without fetching the preseed; last console lines:\n${consoleTail(vm)}`);
      }
    } finally {
      stopFollowing();
      await stopVm(state);
    }
    if (server.expectsInstallReport() && !server.installReported) {
      throw new InstallNotReported(`the installer stopped without reporting success (preseed/late_command did not finish); last console lines:\n${Vm.tail(spec.serialLog, 15)}`, spec.serialLog);
    }
  }
}

export const bootStep: Step<LocalBuildState> = {
  name: 'boot',
  async run(state, ctx) {
    const { settings } = state.plan;
    const spec = baseSpec(state, 'boot');
    const vm = await Vm.start({ spec, forwardSsh: true, guestAgent: true, log: (l) => ctx.log.line(l), onStderr: (l) => ctx.log.line(`qemu| ${l}`) });
    state.vm = vm;
    const stop = followConsole(spec.serialLog, ctx);
    vm.exited.then(stop, stop);
    ctx.say(`waiting for SSH on 127.0.0.1:${vm.sshPort} as ${settings.sshUser} (up to ${settings.sshTimeoutS} s)`);
    const giveUp = new AbortController();
    try {
      state.ssh = await whileVmRuns(
        vm,
        'the boot step (waiting for SSH)',
        waitForSshWatchingBoot(
          vm,
          { host: '127.0.0.1', port: vm.sshPort!, username: settings.sshUser, privateKeyPath: state.keys!.privateKeyPath, hostKey: { kind: 'any' }, readyTimeout: 30_000 },
          {
            timeoutMs: settings.sshTimeoutS * 1000,
            intervalMs: Math.min(2_000, settings.pollIntervalS * 1000),
            maxIntervalMs: settings.pollIntervalS * 1000,
            signal: AbortSignal.any([ctx.signal, giveUp.signal]),
            onAttempt: (n, err) => ctx.log.line(`ssh attempt ${n}: ${err}`),
            // The port forward stalls until the guest's network is up: probe, do not wait out 30 s.
            bannerProbeMs: 3_000,
          },
          { stallS: settings.bootStallTimeoutS, say: (line) => ctx.say(line), log: (line) => ctx.log.line(line) },
        ),
      );
    } finally {
      giveUp.abort();
    }
  },
  async cleanup(state) {
    state.ssh?.end();
    state.ssh = undefined;
    await stopVm(state);
  },
};

/** pim-prepare's waiter for the Python byte-compiles it queues in the background (pim-seal removes it). */
const PYTHON_COMPILE_WAIT = '/usr/lib/pim-build/wait-python-compile';

/** What a line of that waiter's --report says failed ("py3compile ARGS, run in the background, failed (exit N)"), if it is one. */
export function backgroundCompileFailure(line: string): string | undefined {
  const m = /^pim: (py3compile .*, run in the background, failed \(exit \d+\)); its last lines:$/.exec(line);
  return m?.[1];
}

/** Runs one guest script as root over SSH, bounded by the script timeout and the VM's life. */
async function runGuestScript(state: LocalBuildState, ctx: StepContext, name: string, source: TemplateSource, env: Record<string, string>, onLine?: (line: string) => void): Promise<void> {
  const ssh = state.ssh!;
  const vm = state.vm!;
  const { settings } = state.plan;
  const remote = `/tmp/pim-provision-${name}.sh`;
  await ssh.uploadContent(source.content, remote, 0o700);
  ctx.say(`script ${name}`);
  const envLine = Object.entries(env).map(([k, v]) => `${k}=${shq(v)}`).join(' ');
  // Then the Python byte-compiles queued in the background while the script ran (pim-prepare):
  // done before the script counts as done, so that a layer taken next holds all of them.
  const waitCompiles = `if [ -x ${PYTHON_COMPILE_WAIT} ]; then ${PYTHON_COMPILE_WAIT} --report || { [ "$code" != 0 ] || code=1; }; fi`;
  let compileFailed: string | undefined;
  const running = ssh.execAsRoot(`${envLine} bash ${shq(remote)}; code=$?; rm -f ${shq(remote)}; ${waitCompiles}; exit $code`, (line) => {
    ctx.log.line(`[${name}] ${line}`);
    compileFailed ??= backgroundCompileFailure(line);
    onLine?.(line);
    if (ctx.verbose) process.stderr.write(`  [${name}] ${ctx.log.mask(line)}\n`);
  });
  const limit = timeout(settings.scriptTimeoutS * 1000, () => `provisioning script '${name}' (${source.path}) did not finish within ${settings.scriptTimeoutS} s (build.script_timeout)`);
  try {
    const result = await whileVmRuns(vm, `provisioning script '${name}'`, Promise.race([running, limit.promise]));
    if (result.code !== 0) {
      const exited = `exited ${result.code ?? `on signal ${result.signal}`}`;
      throw new WorkError(`provisioning script '${name}' (${source.path}) ${exited}${compileFailed ? `: ${ctx.log.mask(compileFailed)}` : ''}`);
    }
  } finally {
    limit.clear();
  }
}

export const provisionStep: Step<LocalBuildState> = {
  name: 'provision',
  async run(state, ctx) {
    const { plan } = state;
    const env = {
      PIM_BUILD_KEY_COMMENT: state.keys!.comment,
      PIM_BUILD_USER: plan.settings.sshUser,
      PIM_BUILD_USER_POLICY: plan.settings.buildUser,
      PIM_PROFILE: plan.profileName,
      PIM_ARCH: plan.arch,
      PIM_UPGRADE: plan.settings.upgrade ? '1' : '0',
    };
    const { layers } = state;
    if (state.packageCache) {
      // apt in the VM goes through this build's package cache (a reused layer may name an
      // earlier build's port; pim-seal removes the setting from the image).
      const proxy = `Acquire::http::Proxy "${state.server!.proxyUrl}";`;
      const set = `sed -i '/Acquire::http::Proxy/d' /etc/apt/apt.conf 2>/dev/null; rm -f /etc/apt/apt.conf.d/01proxy; printf '%s\\n' ${shq(proxy)} > /etc/apt/apt.conf.d/01pim-build-proxy`;
      const result = await state.ssh!.execAsRoot(set);
      if (result.code !== 0) throw new WorkError(`could not point apt at the package cache (exit ${result.code})`);
    }
    // Layer by layer: what a reused layer holds is on the disk already.
    for (let index = 1; index < layers.chain.length; index++) {
      const layer = layers.chain[index]!;
      if (index < layers.reused) continue;
      for (const scriptIndex of layer.scripts) {
        if (scriptIndex === -1) {
          // The installer of this very build fetched the package lists minutes ago; a cached
          // install layer's lists are as old as the layer.
          const releaseFiles: ReleaseRecord = {};
          await runGuestScript(state, ctx, 'pim-prepare', plan.guest.prepare, { ...env, PIM_LISTS_FRESH: layers.reused === 0 ? '1' : '0' }, (line) => {
            const file = releaseRecordLine(line);
            if (file) releaseFiles[file.url] = file.sha256;
          });
          if (plan.settings.upgrade) {
            layers.releaseFiles = releaseFiles;
            state.patchedAt = new Date().toISOString();
          }
        } else {
          await runGuestScript(state, ctx, plan.scripts[scriptIndex]!.name, plan.scripts[scriptIndex]!, env);
        }
      }
      await takeLayer(state, ctx, index);
    }
    if (layers.reused > 1 && plan.settings.upgrade) state.patchedAt = layers.cache.createdAt(layers.chain[1]!.key);
    for (const script of plan.scripts) if (script.name === 'finalize') await runGuestScript(state, ctx, script.name, script, env);
    await runGuestScript(state, ctx, 'pim-seal', plan.guest.seal, env);
    if (plan.settings.buildUser === 'keep') {
      const warning = `build.build_user is 'keep': the build user '${plan.settings.sshUser}' keeps its password and its sudo rule in the image`;
      state.warnings.push(warning);
      ctx.say(`warning: ${warning}`);
    }
  },
};

/**
 * Ends layer `index` at this point of the build: the guest's file systems are frozen through the
 * QEMU guest agent (which `base` installs) -- or, without an agent, synced -- while QEMU switches
 * the disk to a new overlay; the file written so far is the layer and is not touched again.
 */
async function takeLayer(state: LocalBuildState, ctx: StepContext, index: number): Promise<void> {
  const vm = state.vm!;
  const layer = state.layers.chain[index]!;
  const started = Date.now();
  const next = join(state.job.workDir, `disk-${index}.qcow2`);
  const agent = vm.guestAgentSocket ? await GuestAgent.connect(vm.guestAgentSocket, 3_000) : undefined;
  let method: string;
  if (agent) {
    try {
      const frozen = await agent.freeze();
      try {
        await vm.snapshotDisk(state.diskPath, next, disks(ctx));
      } finally {
        await agent.thaw();
      }
      method = `${frozen} file system(s) frozen by the guest agent`;
    } finally {
      agent.close();
    }
  } else {
    await state.ssh!.execAsRoot('sync');
    await vm.snapshotDisk(state.diskPath, next, disks(ctx));
    method = 'no guest agent: synced';
  }
  state.layers.done.push({ index, file: state.diskPath });
  state.diskPath = next;
  ctx.say(`layer ${layer.name} taken in ${((Date.now() - started) / 1000).toFixed(1)} s (${method})`);
}

export const shutdownStep: Step<LocalBuildState> = {
  name: 'shutdown',
  async run(state, ctx) {
    state.ssh?.end();
    state.ssh = undefined;
    const outcome = await state.vm!.stop({ timeoutMs: 180_000 });
    ctx.log.line(`VM stopped: ${outcome}`);
    if (outcome !== 'acpi' && outcome !== 'already-exited') ctx.say(`warning: the VM did not power off through ACPI (${outcome})`);
    state.vm = undefined;
  },
};

export const compactStep: Step<LocalBuildState> = {
  name: 'compact',
  async run(state, ctx) {
    const { plan, job } = state;
    // Written inside the work dir, then moved to the job's output path in one rename: nothing
    // ever sees a half-written image, and no other build's file is touched.
    const partial = join(job.workDir, 'final.qcow2');
    await disks(ctx).convert(state.diskPath, partial, { format: 'qcow2', compress: plan.settings.compress });
    const info = await disks(ctx).info(partial);
    const sha256 = await hashFile(partial);
    renameSync(partial, job.outputPath);
    state.output = { sha256, virtualSize: info.virtualSize, fileSize: statSync(job.outputPath).size };
  },
};

export const LOCAL_STEPS = [diskStep, keysStep, serveStep, installStep, bootStep, provisionStep, shutdownStep, compactStep];

/** The package cache of this machine, under the cache dir (build.package_cache_size). */
export function packageCacheOf(project: Project, log?: (line: string) => void, upstreamProxy?: string): PackageCache {
  return new PackageCache(join(project.paths.cacheDir, 'packages'), parseSize(project.pimConfig().build.package_cache_size), upstreamProxy || undefined, log);
}
