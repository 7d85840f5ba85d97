// One finished image for every test that needs one: built once (per content of PIM and the test
// media) on a remote test host over SSH -- so the same build also proves the remote builder -- and
// cached under the fixture cache. Tests read it; none modify it (the layer tests rebuild from a
// copy of its remote's cache): a later run of the suite on the same machine and code reuses it,
// and must find it as this build left it -- unless the archive has published since it was built
// (checked once per run): then it is no longer a patched image, and is built again.
import { createHash } from 'node:crypto';
import { execFileSync, spawn } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { checkReleaseFiles, type ReleaseRecord } from '../../src/builder/archive-record.js';
import { acquireLock } from '../../src/files/lock.js';
import { Registry, type ImageRecord } from '../../src/registry/registry.js';
import { pimBin, repoRoot, sandboxAt, type Sandbox } from './env.js';
import { fixtureCache, pruneFixtures, until } from './fixtures.js';
import { testInstallerIso } from './installer.js';
import { createTestHost, installedPim } from './remote-host.js';

export interface SharedImage {
  /** The sandbox the image was built in (its project, XDG dirs and registry). */
  box: Sandbox;
  record: ImageRecord;
  /** `pim build run small` as it ran: exit status and output. */
  build: { status: number | null; stdout: string; stderr: string; editedDuringBuild: boolean };
  buildLog: string;
  /** The remote's cache dir and its home, to check what the build left there. */
  remoteCacheDir: string;
  remoteHome: string;
  /** What the profile's build user's password was (to show it no longer works). */
  buildPassword: string;
}

export const SHARED_PROFILE = 'small';
export const BUILD_PASSWORD = 'build-secret-pw';
export const RECORD_SCRIPT =
  '#!/bin/bash\nset -euo pipefail\necho "BUILD-MACHINE-ID $(cat /etc/machine-id)"\necho "BUILD-HOSTKEY $(ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub | cut -d" " -f2)"\n' +
  'history -c\necho "echo from-the-build" >> /root/.bash_history\n';

let memo: Promise<SharedImage> | undefined;

/** The shared image, built on first use (other test processes wait for it). */
export function sharedImage(): Promise<SharedImage> {
  memo ??= buildShared();
  return memo;
}

async function buildShared(): Promise<SharedImage> {
  const iso = testInstallerIso();
  const pimPath = await installedPim();
  // Keyed by PIM's code (the install path holds its hash): what a test sees is what this code
  // builds. PIM_SHARED_IMAGE_ANY_CODE=1 (while developing) keeps an image across code changes.
  const key = createHash('sha256')
    .update(iso)
    .update(process.env['PIM_SHARED_IMAGE_ANY_CODE'] === '1' ? 'any' : pimPath)
    .update(readFileSync(join(repoRoot, 'test/helpers/shared-image.ts')))
    .digest('hex')
    .slice(0, 16);
  const root = join(fixtureCache(), `shared-image-${key}`);
  mkdirSync(fixtureCache(), { recursive: true });
  const lock = await acquireLock(root, { timeoutMs: 90 * 60_000 });
  try {
    const resultPath = join(root, 'result.json');
    if (existsSync(resultPath)) {
      const result = JSON.parse(readFileSync(resultPath, 'utf8')) as Omit<SharedImage, 'box'>;
      // Checked against the archive once per run of the suite: another test process of this run
      // may be using the image already, and it must not be removed under it.
      const checked = existsSync(join(root, runMarker()));
      const moved = existsSync(result.record.path) && !checked ? await archiveMovedSince(result.remoteCacheDir) : undefined;
      if (moved) process.stderr.write(`# shared image: the archive has changed since it was built (${moved}): building it again\n`);
      if (existsSync(result.record.path) && !moved) {
        markRun(root);
        const now = new Date();
        utimesSync(root, now, now); // in use: not pruned by another checkout's run
        return { ...result, box: sandboxAt(root, { keep: true }) };
      }
    }
    rmSync(root, { recursive: true, force: true });
    const result = await build(root, iso, pimPath);
    writeFileSync(resultPath, JSON.stringify(result, null, 2));
    markRun(root);
    // Each change of PIM's code builds a new one (2-3 GB with its remote's cache).
    pruneFixtures('shared-image-', key);
    return { ...result, box: sandboxAt(root, { keep: true }) };
  } finally {
    lock.release();
  }
}

/** This run of the suite (scripts/test.sh sets PIM_TEST_RUN for all its test processes). */
const runMarker = () => `.checked-in-run-${(process.env['PIM_TEST_RUN'] ?? `pid-${process.pid}`).replace(/[^\w.-]/g, '_')}`;

function markRun(root: string): void {
  for (const f of readdirSync(root)) if (f.startsWith('.checked-in-run-')) rmSync(join(root, f), { force: true });
  writeFileSync(join(root, runMarker()), '');
}

/**
 * A release file the image's upgrade layer was made from that the mirror now serves changed, if
 * any: an image kept across a security update would fail every check that it is patched (and
 * its layers would no longer be reused by the rebuilds of the layer tests).
 */
async function archiveMovedSince(remoteCacheDir: string): Promise<string | undefined> {
  const dir = join(remoteCacheDir, 'cache', 'pim', 'layers');
  if (!existsSync(dir)) return undefined;
  for (const file of readdirSync(dir).filter((f) => f.endsWith('.json'))) {
    const record = (JSON.parse(readFileSync(join(dir, file), 'utf8')) as { release_files?: ReleaseRecord }).release_files;
    if (!record) continue;
    const { changed } = await checkReleaseFiles(record);
    if (changed.length > 0) return changed.join(', ');
  }
  return undefined;
}

async function build(root: string, iso: string, pimPath: string): Promise<Omit<SharedImage, 'box'>> {
  const box = sandboxAt(root, { keep: true });
  mkdirSync(box.project, { recursive: true });
  const host = await createTestHost(join(root, 'remote'));
  await host.start();
  try {
    const sum = createHash('sha256').update(readFileSync(iso)).digest('hex');
    box.write('isos.d/test-installer.yml', `pim-test-installer-amd64:\n  url: file://${iso}\n  checksum: sha256:${sum}\n  arch: x86_64\n  distro: debian\n  version: "12.0-pimtest"\n`);
    box.write(
      'profiles.d/small.yml',
      `default:\n  iso: pim-test-installer-amd64\n  password: ${BUILD_PASSWORD}\n  packages: openssh-server sudo\n  build: { disk_size: 8G, memory: 1024, cpus: 2 }\n` +
        `${SHARED_PROFILE}:\n  hostname: small-build\n  scripts: [base, record, finalize]\n`,
    );
    box.write('scripts.d/record.sh', RECORD_SCRIPT);
    const remoteCacheDir = join(host.home, 'pim-cache');
    box.write(
      'pim.yml',
      `build:\n  builders: { x86_64: lab }\n  remotes:\n    lab:\n      host: ${host.address}\n      port: ${host.port}\n      user: ${host.user}\n` +
        `      identity_file: ${host.clientKey.privateKeyPath}\n      host_key: ${host.hostKeyFingerprint}\n      pim_path: ${pimPath}\n      cache_dir: ${remoteCacheDir}\n`,
    );
    // The build, with an edit of one of its scripts while it installs: the build must not see it.
    const child = spawn(process.execPath, [pimBin, 'build', 'run', SHARED_PROFILE, '--arch', 'x86_64'], { cwd: box.project, env: box.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    let editedDuringBuild = false;
    await until(() => /\[lab\] ==> install/.test(stderr) || child.exitCode !== null, 30 * 60_000, 'the remote install step');
    if (child.exitCode === null) {
      appendFileSync(join(box.project, 'scripts.d/record.sh'), 'echo EDITED-DURING-THE-BUILD\n');
      editedDuringBuild = true;
    }
    const status = await exited;
    writeFileSync(join(box.project, 'scripts.d/record.sh'), RECORD_SCRIPT);
    if (status !== 0) throw new Error(`the shared image build failed (exit ${status}):\n${stderr.split('\n').slice(-40).join('\n')}`);
    const record = new Registry(join(root, 'data', 'pim', 'registry.yml')).getImage(SHARED_PROFILE, 'x86_64')!;
    execFileSync('qemu-img', ['check', '-q', record.path]);
    return {
      record,
      build: { status, stdout, stderr, editedDuringBuild },
      buildLog: readFileSync(`${record.path}.log`, 'utf8'),
      remoteCacheDir,
      remoteHome: host.home,
      buildPassword: BUILD_PASSWORD,
    };
  } finally {
    await host.stop();
  }
}
