import { closeSync, existsSync, openSync, renameSync, rmSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import type { Project } from '../config/project.js';
import type { RemoteConfig } from '../config/schema.js';
import { WorkError, errorMessage } from '../errors.js';
import { hashFile } from '../iso/checksum.js';
import { IsoStore } from '../iso/store.js';
import { qemuBinary } from '../qemu/command.js';
import { MIN_QEMU, qemuTooOld } from '../qemu/doctor.js';
import { shq } from '../shell.js';
import type { SshConnection } from '../ssh/connection.js';
import { connectToHost } from '../ssh/hosts.js';
import { pimVersion } from '../version.js';
import type { Builder, BuildJob, BuiltImage } from './builder.js';
import type { BuildPlan } from './plan.js';
import { runSteps, type Step, type StepContext } from './steps.js';

/** Where a remote build broke, for the error message. */
export type RemotePhase = 'connect' | 'check' | 'upload' | 'build' | 'download' | 'verify';

interface RemoteRecord {
  path: string;
  sha256: string;
  file_size: number;
  virtual_size: number;
  patched_at?: string;
  warnings?: string[];
}

interface RemoteBuildState {
  job: BuildJob;
  name: string;
  remote: RemoteConfig;
  project: Project;
  ssh?: SshConnection;
  /** Absolute paths on the remote. */
  cacheDir?: string;
  dir?: string;
  /** The remote PIM's environment: its own config, data and state dirs, a shared cache. */
  env?: string;
  running?: { stdinEnd(): void; done: Promise<unknown> };
  record?: RemoteRecord;
  partial?: string;
  sha256?: string;
}

/**
 * Builds on another machine over SSH: ships the plan's exact inputs into a fresh work dir
 * there, runs `pim build run --local` with them, streams its output back, and downloads the
 * image. The remote's host key is verified; the image is registered here, by the manager.
 */
export class RemoteBuilder implements Builder {
  constructor(
    private readonly project: Project,
    readonly name: string,
    private readonly remote: RemoteConfig,
  ) {}

  async build(job: BuildJob): Promise<BuiltImage> {
    const state: RemoteBuildState = { job, name: this.name, remote: this.remote, project: this.project };
    const timings = await runSteps(REMOTE_STEPS, state, { signal: job.signal, log: job.log, say: job.say, verbose: job.verbose }, job.reporter);
    const record = state.record!;
    return {
      path: job.outputPath,
      sha256: state.sha256!,
      virtualSize: record.virtual_size,
      fileSize: statSync(job.outputPath).size,
      timings,
      builder: this.name,
      patchedAt: record.patched_at,
      warnings: record.warnings ?? [],
    };
  }
}

/** A step whose failure says which phase of the remote build broke. */
function phase(name: RemotePhase, run: (state: RemoteBuildState, ctx: StepContext) => Promise<void>, cleanup?: Step<RemoteBuildState>['cleanup']): Step<RemoteBuildState> {
  return {
    name: `remote-${name}`,
    async run(state, ctx) {
      try {
        await run(state, ctx);
      } catch (err) {
        if (ctx.signal.aborted) throw err;
        throw new WorkError(`remote build on '${state.name}' failed in the ${name} phase: ${errorMessage(err)}`);
      }
    },
    cleanup,
  };
}

async function remoteCapture(state: RemoteBuildState, command: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const result = await state.ssh!.exec(command, (line, stream) => {
    if (stream === 'stdout') stdout += `${line}\n`;
    else stderr += `${line}\n`;
  });
  return { code: result.code, stdout, stderr };
}

async function remoteRun(state: RemoteBuildState, command: string, what: string): Promise<string> {
  const r = await remoteCapture(state, command);
  if (r.code !== 0) throw new WorkError(`${what} exited ${r.code}: ${(r.stderr.trim() || r.stdout.trim()).split('\n').slice(-3).join(' / ') || 'no output'}`);
  return r.stdout;
}

/** `pim ARGS` on the remote, with the build's own XDG dirs. */
function pimCommand(state: RemoteBuildState, args: string[]): string {
  return `${state.env} ${shq(state.remote.pim_path)} ${args.map(shq).join(' ')}`;
}

/** A shell word for a remote path that may start with ~/ (expanded by the remote shell). */
function remotePath(path: string): string {
  return path === '~' ? '"$HOME"' : path.startsWith('~/') ? `"$HOME"/${shq(path.slice(2))}` : shq(path);
}

function majorMinor(version: string): string {
  return version.split('.').slice(0, 2).join('.');
}

const connectPhase = phase(
  'connect',
  async (state) => {
    state.ssh = await connectToHost(state.remote, { label: `remote '${state.name}'`, pinAt: `build.remotes.${state.name}.host_key in pim.yml` });
    state.job.say(`connected to ${state.name} (${state.remote.user}@${state.remote.host}:${state.remote.port})`);
  },
  (state) => {
    state.ssh?.end();
  },
);

const checkPhase = phase('check', async (state) => {
  const { remote, job } = state;
  const found = await remoteCapture(state, `${shq(remote.pim_path)} --version`);
  const version = found.stdout.trim();
  const wanted = pimVersion();
  if (found.code !== 0 || !/^\d+\.\d+/.test(version)) {
    throw new WorkError(
      `PIM does not answer at ${remote.pim_path} on ${state.name} (${(found.stderr.trim() || `exit ${found.code}`).split('\n').at(-1)}); install PIM ${majorMinor(wanted)}.x there, or set build.remotes.${state.name}.pim_path`,
    );
  }
  if (majorMinor(version) !== majorMinor(wanted)) {
    throw new WorkError(`${state.name} runs PIM ${version} at ${remote.pim_path}, but this build needs ${majorMinor(wanted)}.x (this machine runs ${wanted})`);
  }
  // QEMU there, checked before anything is uploaded (the ISO can be hundreds of MiB).
  for (const tool of [qemuBinary(job.plan.arch), 'qemu-img']) {
    const r = await remoteCapture(state, `${shq(tool)} --version`);
    const qemuVersion = /version\s+(\d+\.\d+(?:\.\d+)?)/i.exec(r.stdout)?.[1];
    if (r.code !== 0 || !qemuVersion) {
      const why = (r.stderr.trim() || r.stdout.trim() || `exit ${r.code}`).split('\n').at(-1);
      throw new WorkError(`${state.name} has no working ${tool} (${why}); install QEMU ${MIN_QEMU.join('.')} or later there`);
    }
    if (qemuTooOld(qemuVersion)) throw new WorkError(`${state.name} runs ${tool} ${qemuVersion}; PIM needs QEMU ${MIN_QEMU.join('.')} or later there`);
  }
  const cache = remote.cache_dir ?? '~/.cache/pim/remote';
  const resolved = await remoteRun(state, `mkdir -p ${remotePath(cache)} && cd ${remotePath(cache)} && pwd -P`, `creating the cache dir ${cache}`);
  state.cacheDir = resolved.trim();
  state.dir = `${state.cacheDir}/builds/${job.buildId}`;
  state.env = [
    `XDG_CONFIG_HOME=${shq(`${state.dir}/config`)}`,
    `XDG_DATA_HOME=${shq(`${state.dir}/data`)}`,
    `XDG_STATE_HOME=${shq(`${state.dir}/state`)}`,
    `XDG_CACHE_HOME=${shq(`${state.cacheDir}/cache`)}`,
  ].join(' ');
  const status = JSON.parse(await remoteRun(state, pimCommand(state, ['build', 'status', '--json', '--local-only']), 'pim build status')) as {
    arches: Record<string, { accelerator: string }>;
  };
  const accel = status.arches[job.plan.arch]?.accelerator ?? 'tcg';
  job.say(`${state.name} runs PIM ${version}; its accelerator for ${job.plan.arch}: ${accel}`);
  if (accel === 'tcg') job.say(`warning: ${state.name} has no hardware acceleration for ${job.plan.arch} guests: the build runs under TCG there and will be slow`);
});

/** The plan's exact inputs, as a project the remote PIM reads: it must compute the same cache key. */
export function remoteProjectFiles(plan: BuildPlan, isoDir: string, imagesDir: string): Record<string, string> {
  const s = plan.settings;
  const pimYml = {
    iso_dir: isoDir,
    images_dir: imagesDir,
    build: {
      disk_size: s.diskSize,
      memory: s.memoryMb,
      cpus: s.cpus,
      install_timeout: s.installTimeoutS,
      preseed_fetch_timeout: s.preseedFetchTimeoutS,
      boot_stall_timeout: s.bootStallTimeoutS,
      script_timeout: s.scriptTimeoutS,
      compress: s.compress,
      upgrade: s.upgrade,
      build_user: s.buildUser,
      keep: 0,
      ssh: { user: s.sshUser, timeout: s.sshTimeoutS, poll_interval: s.pollIntervalS },
      builders: {},
      remotes: {},
    },
  };
  const { name: isoName, filename, ...entry } = plan.iso;
  const files: Record<string, string> = {
    'pim.yml': `# Written by PIM for one remote build.\n${stringify(pimYml)}`,
    [`profiles.d/${plan.profileName}.yml`]: stringify({ [plan.profileName]: plan.profile }),
    [`preseeds.d/${plan.profileName}.cfg.ejs`]: plan.templates.preseed.content,
    [`installs.d/${plan.profileName}.sh`]: plan.templates.install.content,
    [`isos.d/${isoName}.yml`]: stringify({ [isoName]: { ...entry, filename } }),
  };
  for (const script of plan.scripts) files[`scripts.d/${script.name}.sh`] = script.content;
  return files;
}

const uploadPhase = phase('upload', async (state) => {
  const { job, ssh } = { job: state.job, ssh: state.ssh! };
  const { plan } = job;
  const isoDir = `${state.cacheDir}/isos`;
  const project = `${state.dir}/project`;
  const files = remoteProjectFiles(plan, isoDir, `${state.dir}/images`);
  const dirs = new Set([`${state.dir}/config`, isoDir, ...Object.keys(files).map((f) => `${project}/${f}`.replace(/\/[^/]+$/, ''))]);
  await remoteRun(state, `mkdir -p ${[...dirs].map(shq).join(' ')}`, 'creating the remote work dir');
  for (const [file, content] of Object.entries(files)) await ssh.uploadContent(content, `${project}/${file}`, 0o600);
  job.say(`shipped the plan to ${state.name}:${project}`);
  await ensureRemoteIso(state, project, isoDir);
});

/** The installer media on the remote: verified there already, fetched there, or uploaded from here once. */
async function ensureRemoteIso(state: RemoteBuildState, project: string, isoDir: string): Promise<void> {
  const { job } = state;
  const entry = job.plan.iso;
  const listed = JSON.parse(await remoteRun(state, pimCommand(state, ['iso', 'list', '--json', '--project', project]), 'pim iso list')) as { name: string; state: string }[];
  if (listed.find((e) => e.name === entry.name)?.state === 'verified') {
    job.say(`${state.name} has ${entry.filename} already`);
    return;
  }
  if (!entry.url.startsWith('file:')) {
    job.say(`${state.name} downloads ${entry.url} itself`);
    const fetched = await remoteCapture(state, pimCommand(state, ['iso', 'download', entry.name, '--project', project]));
    if (fetched.code === 0) return;
    job.say(`${state.name} cannot download it (${fetched.stderr.trim().split('\n').at(-1)}); uploading it from here`);
  }
  const store = new IsoStore(state.project.isoDir());
  let local = entry.url.startsWith('file:') ? fileURLToPath(entry.url) : store.pathOf(entry);
  if (!entry.url.startsWith('file:') || !existsSync(local)) {
    await store.download(entry);
    local = store.pathOf(entry);
  }
  const target = `${isoDir}/${entry.filename}`;
  const size = statSync(local).size;
  const bar = job.progress?.(`uploading ${entry.filename} to ${state.name}`);
  await state.ssh!.upload(local, `${target}.part`, (done, total) => bar?.update(done, total));
  bar?.done();
  await remoteRun(state, `mv -f ${shq(`${target}.part`)} ${shq(target)}`, 'moving the uploaded ISO into place');
  const verified = await remoteCapture(state, pimCommand(state, ['iso', 'verify', entry.name, '--project', project]));
  if (verified.code !== 0) {
    await remoteCapture(state, `rm -f ${shq(target)}`);
    throw new WorkError(`the ISO uploaded to ${state.name} does not verify there: ${verified.stderr.trim().split('\n').at(-1)}`);
  }
  job.say(`uploaded ${entry.filename} (${size} bytes) to ${state.name}, verified there`);
}

const buildPhase = phase(
  'build',
  async (state, ctx) => {
    const { job } = state;
    const { plan } = job;
    const args = ['build', 'run', plan.profileName, '--arch', plan.arch, '--local', '--project', `${state.dir}/project`, '--expect-key', plan.cacheKey];
    if (job.keepFailed) args.push('--keep-failed');
    // --force here means no cached layer there either.
    if (job.force) args.push('--force');
    // PIM_STDIN_LIFELINE: when this connection goes away (Ctrl+C here, a drop), the remote PIM
    // sees its stdin end and stops its build as on Ctrl+C: QEMU stopped, work dir removed.
    const command = `cd ${shq(state.dir!)} && PIM_STDIN_LIFELINE=1 ${pimCommand(state, args)}`;
    const tail: string[] = [];
    const execution = state.ssh!.execWithStdin(command, (line) => {
      tail.push(line);
      if (tail.length > 15) tail.shift();
      job.say(`[${state.name}] ${line}`);
    });
    state.running = { stdinEnd: execution.endStdin, done: execution.done.catch(() => undefined) };
    const result = await execution.done;
    state.running = undefined;
    if (ctx.signal.aborted) return;
    if (result.code !== 0) {
      throw new WorkError(`pim build run on ${state.name} exited ${result.code ?? `on signal ${result.signal}`}; its last lines:\n${tail.map((l) => `  ${l}`).join('\n')}`);
    }
    const shown = await remoteRun(state, pimCommand(state, ['build', 'show', plan.profileName, '--arch', plan.arch, '--json']), 'pim build show');
    state.record = JSON.parse(shown) as RemoteRecord;
    // The remote's own build log (consoles, script output) becomes part of this one.
    const remoteLog = await remoteCapture(state, `cat ${shq(`${state.record.path}.log`)}`);
    job.log.line(`---- the build log of ${state.name} (${state.record.path}.log) ----`);
    for (const line of remoteLog.stdout.split('\n')) if (line) job.log.line(`[${state.name}] ${line.replace(/^\S+Z /, '')}`);
    job.log.line(`---- end of the build log of ${state.name} ----`);
  },
  async (state) => {
    const running = state.running;
    if (!running) return;
    // Interrupted here: end the remote PIM's lifeline and give it time to clean up.
    running.stdinEnd();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([running.done, new Promise((r) => (timer = setTimeout(r, 60_000)))]);
    clearTimeout(timer);
  },
);

const downloadPhase = phase(
  'download',
  async (state) => {
    const { job } = state;
    const record = state.record!;
    state.partial = `${job.outputPath}.part`;
    const bar = job.progress?.(`downloading the image from ${state.name}`);
    await downloadResumable(state, record.path, state.partial, record.file_size, (done) => bar?.update(done, record.file_size));
    bar?.done();
  },
  (state, _ctx, outcome) => {
    if (outcome !== 'success' && state.partial) rmSync(state.partial, { force: true });
  },
);

/** SFTP download into `local`, continuing from what `local` already holds; reconnects and resumes up to 3 times. */
async function downloadResumable(state: RemoteBuildState, remote: string, local: string, size: number, onProgress: (done: number) => void): Promise<void> {
  let lastError = 'the transfer ended early';
  for (let attempt = 1; attempt <= 4; attempt++) {
    const have = existsSync(local) ? statSync(local).size : 0;
    if (have === size) return;
    if (have > size) throw new WorkError(`${local} holds ${have} bytes, more than the ${size} of the image`);
    if (attempt > 1) state.job.say(`download from ${state.name} broke off at ${have} of ${size} bytes (${lastError}); resuming`);
    try {
      if (state.ssh!.lost) {
        state.ssh = await connectToHost(state.remote, { label: `remote '${state.name}'`, pinAt: `build.remotes.${state.name}.host_key in pim.yml` });
      }
      const fd = openSync(local, have > 0 ? 'r+' : 'w');
      try {
        await state.ssh!.downloadFrom(remote, fd, have, onProgress);
      } finally {
        closeSync(fd);
      }
    } catch (err) {
      lastError = errorMessage(err);
    }
  }
  const have = existsSync(local) ? statSync(local).size : 0;
  if (have !== size) throw new WorkError(`the download stopped at ${have} of ${size} bytes after 4 attempts: ${lastError}`);
}

const verifyPhase = phase('verify', async (state) => {
  const { job } = state;
  const record = state.record!;
  const sha256 = await hashFile(state.partial!);
  if (sha256 !== record.sha256) {
    throw new WorkError(`the downloaded image's SHA-256 is ${sha256}, but ${state.name} registered ${record.sha256}`);
  }
  renameSync(state.partial!, job.outputPath);
  state.sha256 = sha256;
});

/** The remote work dir goes whatever happened (kept with --keep-failed when the build failed). */
const workDirStep: Step<RemoteBuildState> = {
  name: 'remote-workdir',
  async run() {
    /* made by the upload phase; this step exists for its cleanup */
  },
  async cleanup(state, ctx, outcome) {
    if (!state.dir) return;
    if (outcome !== 'success' && state.job.keepFailed) {
      ctx.say(`kept the remote work dir for debugging: ${state.name}:${state.dir}`);
      return;
    }
    try {
      if (!state.ssh || state.ssh.lost) {
        state.ssh = await connectToHost(state.remote, { label: `remote '${state.name}'`, pinAt: `build.remotes.${state.name}.host_key in pim.yml`, readyTimeoutMs: 5_000 });
      }
      await remoteRun(state, `rm -rf -- ${shq(state.dir)}`, 'removing the remote work dir');
    } catch (err) {
      ctx.say(`warning: could not remove the remote work dir ${state.name}:${state.dir}: ${errorMessage(err)}`);
    } finally {
      state.ssh?.end();
    }
  },
};

const REMOTE_STEPS: Step<RemoteBuildState>[] = [connectPhase, checkPhase, workDirStep, uploadPhase, buildPhase, downloadPhase, verifyPhase];
