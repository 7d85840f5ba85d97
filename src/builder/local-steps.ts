import { mkdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Project } from '../config/project.js';
import { WorkError } from '../errors.js';
import { hashFile } from '../iso/checksum.js';
import { extractInstallerBootFiles } from '../iso/media.js';
import type { Profiles } from '../profile/profiles.js';
import type { Accelerator } from '../qemu/command.js';
import { DiskImages } from '../qemu/disk.js';
import type { Aarch64Firmware } from '../qemu/firmware.js';
import { Vm, type VmSpecInput } from '../qemu/vm.js';
import { Registry, type ImageRecord } from '../registry/registry.js';
import { PreseedServer } from '../server/preseed-server.js';
import { waitForSsh, type SshConnection } from '../ssh/connection.js';
import { createBuildKeyPair, type BuildKeyPair } from '../ssh/keys.js';
import { shq } from '../shell.js';
import { followFile } from './build-log.js';
import type { BuildPlan } from './plan.js';
import type { Step, StepContext } from './steps.js';

export interface LocalBuildState {
  plan: BuildPlan;
  project: Project;
  profiles: Profiles;
  accel: Accelerator;
  firmware?: Aarch64Firmware;
  workDir: string;
  keepFailed: boolean;
  buildId: string;
  startedAt: number;
  diskPath: string;
  keys?: BuildKeyPair;
  server?: PreseedServer;
  vm?: Vm;
  ssh?: SshConnection;
  record?: ImageRecord;
}

const disks = (ctx: StepContext) => new DiskImages('qemu-img', (line) => ctx.log.line(line));

function baseSpec(state: LocalBuildState, name: string): VmSpecInput {
  const { plan } = state;
  return {
    name: `pim-${state.buildId}-${name}`,
    arch: plan.arch,
    accel: state.accel,
    memoryMb: plan.settings.memoryMb,
    cpus: plan.settings.cpus,
    disk: { path: state.diskPath, format: 'qcow2' },
    serialLog: join(state.workDir, `${name}-console.log`),
    firmware: state.firmware,
    efiVars: state.firmware?.vars ? join(state.workDir, 'efivars.fd') : undefined,
  };
}

/** Runs `vm`'s life with its serial console copied into the build log (and shown with --verbose). */
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

export const diskStep: Step<LocalBuildState> = {
  name: 'disk',
  async run(state, ctx) {
    mkdirSync(state.workDir, { recursive: true, mode: 0o700 });
    await disks(ctx).create(state.diskPath, state.plan.settings.diskSize);
    ctx.say(`disk ${state.diskPath} (${state.plan.settings.diskSize})`);
  },
  cleanup(state, ctx, outcome) {
    if (outcome !== 'success' && state.keepFailed) {
      ctx.say(`kept the work dir for debugging: ${state.workDir}`);
      return;
    }
    rmSync(state.workDir, { recursive: true, force: true });
  },
};

export const keysStep: Step<LocalBuildState> = {
  name: 'keys',
  async run(state) {
    state.keys = createBuildKeyPair(join(state.workDir, 'keys'), `pim-build-${state.buildId}`);
  },
  cleanup(state) {
    state.keys?.remove();
  },
};

export const serveStep: Step<LocalBuildState> = {
  name: 'serve',
  async run(state, ctx) {
    // Bound to loopback only: the VM reaches it as 10.0.2.2 through user-mode networking.
    state.server = new PreseedServer({
      profiles: state.profiles,
      profileName: state.plan.profileName,
      bind: '127.0.0.1',
      urlHost: '10.0.2.2',
      publicKey: state.keys!.publicKey,
      arch: state.plan.arch,
      log: (line) => ctx.log.line(`http| ${line}`),
    });
    await state.server.start();
    ctx.say(`preseed server on 127.0.0.1:${state.server.port} (the VM uses ${state.server.preseedUrl})`);
  },
  async cleanup(state) {
    await state.server?.stop();
  },
};

export const installStep: Step<LocalBuildState> = {
  name: 'install',
  async run(state, ctx) {
    const { plan } = state;
    const boot = await extractInstallerBootFiles(plan.isoPath, plan.arch, join(state.workDir, 'installer'), (l) => ctx.log.line(l));
    ctx.log.line(`installer kernel ${boot.source.kernel}, initrd ${boot.source.initrd}`);
    const console = plan.arch === 'arm64' ? 'ttyAMA0' : 'ttyS0';
    const append = `auto=true priority=critical preseed/url=${state.server!.preseedUrl} DEBIAN_FRONTEND=text console=${console},115200n8`;
    const spec = { ...baseSpec(state, 'install'), cdrom: plan.isoPath, kernel: { path: boot.kernel, initrd: boot.initrd, append }, noReboot: true };
    const stopFollowing = followConsole(spec.serialLog, ctx);
    try {
      state.vm = await Vm.start({ spec, log: (l) => ctx.log.line(l), onStderr: (l) => ctx.log.line(`qemu| ${l}`) });
      try {
        await state.vm.waitForExit(plan.settings.installTimeoutS * 1000);
      } catch {
        throw new WorkError(`install step timed out after ${plan.settings.installTimeoutS} s (build.install_timeout); last console lines:\n${Vm.tail(spec.serialLog, 15)}`);
      }
    } finally {
      stopFollowing();
      await stopVm(state);
    }
    if (state.server!.expectsInstallReport() && !state.server!.installReported) {
      throw new WorkError(`the installer stopped without reporting success (preseed/late_command did not finish); last console lines:\n${Vm.tail(spec.serialLog, 15)}`);
    }
  },
  async cleanup(state) {
    await stopVm(state);
  },
};

export const bootStep: Step<LocalBuildState> = {
  name: 'boot',
  async run(state, ctx) {
    const { settings } = state.plan;
    const spec = baseSpec(state, 'boot');
    state.vm = await Vm.start({ spec, forwardSsh: true, log: (l) => ctx.log.line(l), onStderr: (l) => ctx.log.line(`qemu| ${l}`) });
    const stop = followConsole(spec.serialLog, ctx);
    const vm = state.vm;
    vm.exited.then(() => stop(), () => stop());
    ctx.say(`waiting for SSH on 127.0.0.1:${vm.sshPort} as ${settings.sshUser} (up to ${settings.sshTimeoutS} s)`);
    state.ssh = await waitForSsh(
      { host: '127.0.0.1', port: vm.sshPort!, username: settings.sshUser, privateKeyPath: state.keys!.privateKeyPath, hostKey: { kind: 'any' }, readyTimeout: 30_000 },
      {
        timeoutMs: settings.sshTimeoutS * 1000,
        intervalMs: Math.min(2_000, settings.pollIntervalS * 1000),
        maxIntervalMs: settings.pollIntervalS * 1000,
        signal: ctx.signal,
        onAttempt: (n, err) => ctx.log.line(`ssh attempt ${n}: ${err}`),
      },
    );
  },
  async cleanup(state) {
    state.ssh?.end();
    state.ssh = undefined;
    await stopVm(state);
  },
};

export const provisionStep: Step<LocalBuildState> = {
  name: 'provision',
  async run(state, ctx) {
    const ssh = state.ssh!;
    for (const script of state.plan.scripts) {
      const remote = `/tmp/pim-provision-${script.name}.sh`;
      await ssh.upload(script.path, remote, undefined, 0o700);
      ctx.say(`script ${script.name}`);
      const env = `PIM_BUILD_KEY_COMMENT=${shq(state.keys!.comment)} PIM_BUILD_USER=${shq(state.plan.settings.sshUser)} PIM_PROFILE=${shq(state.plan.profileName)}`;
      const result = await ssh.execAsRoot(`${env} bash ${shq(remote)}; code=$?; rm -f ${shq(remote)}; exit $code`, (line) => {
        ctx.log.line(`[${script.name}] ${line}`);
        if (ctx.verbose) process.stderr.write(`  [${script.name}] ${ctx.log.mask(line)}\n`);
      });
      if (result.code !== 0) {
        throw new WorkError(`provisioning script '${script.name}' (${script.path}) exited ${result.code ?? `on signal ${result.signal}`}`);
      }
    }
  },
};

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
    const { plan } = state;
    mkdirSync(join(plan.imagePath, '..'), { recursive: true });
    const partial = join(state.workDir, 'final.qcow2');
    await disks(ctx).convert(state.diskPath, partial, { format: 'qcow2', compress: plan.settings.compress });
    const info = await disks(ctx).info(partial);
    const sha256 = await hashFile(partial);
    renameSync(partial, plan.imagePath);
    state.record = {
      profile: plan.profileName,
      arch: plan.arch,
      cache_key: plan.cacheKey,
      inputs: plan.inputs,
      path: plan.imagePath,
      iso: plan.iso.name,
      built_at: new Date().toISOString(),
      build_seconds: 0,
      builder: 'local',
      virtual_size: info.virtualSize,
      file_size: statSync(plan.imagePath).size,
      sha256,
    };
  },
  cleanup(state, _ctx, outcome) {
    // An image that was never registered must not look like a finished build.
    if (outcome !== 'success') rmSync(state.plan.imagePath, { force: true });
  },
};

export const registerStep: Step<LocalBuildState> = {
  name: 'register',
  async run(state) {
    const record = { ...state.record!, build_seconds: Math.round((Date.now() - state.startedAt) / 1000) };
    state.record = record;
    await new Registry(state.project.registryPath()).registerImage(record);
  },
};

export const LOCAL_STEPS = [diskStep, keysStep, serveStep, installStep, bootStep, provisionStep, shutdownStep, compactStep, registerStep];
