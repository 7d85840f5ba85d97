// Remote builders over real SSH: a test host is a real sshd with its own environment (and, for
// the dropped-connection test, its own network namespace), running a real `pim` installed from
// this checkout with npm.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import { Registry } from '../../src/registry/registry.js';
import { pim, pimAsync, sandbox, type Sandbox } from '../helpers/env.js';
import { until } from '../helpers/fixtures.js';
import { rootSkip, testInstallerIso } from '../helpers/installer.js';
import { useTestInstaller } from '../helpers/build-project.js';
import { createTestHost, hostLink, installedPim, removeNetns, type TestHost } from '../helpers/remote-host.js';
import { SHARED_PROFILE, sharedImage } from '../helpers/shared-image.js';

const boxes: Sandbox[] = [];
const hosts: TestHost[] = [];
after(async () => {
  for (const h of hosts) {
    await h.stop();
    removeNetns(h);
  }
  boxes.forEach((b) => b.cleanup());
});

function remoteYml(host: TestHost, pimPath: string, extra: Record<string, string | number> = {}): string {
  const fields: Record<string, string | number> = {
    host: host.address, port: host.port, user: host.user, identity_file: host.clientKey.privateKeyPath,
    host_key: host.hostKeyFingerprint, pim_path: pimPath, cache_dir: join(host.home, 'pim-cache'), ...extra,
  };
  const lines = Object.entries(fields).filter(([, v]) => v !== '').map(([k, v]) => `      ${k}: ${v}`);
  return `build:\n  builders: { x86_64: lab }\n  remotes:\n    lab:\n${lines.join('\n')}\n`;
}

/** A sandbox whose `quick` profile needs no network and no cloud-init: builds that are about failing. */
/** A sandbox removed after the tests (a test host's files live in one). */
function tracked(prefix: string): Sandbox {
  const box = sandbox(prefix);
  boxes.push(box);
  return box;
}

function quickProject(): Sandbox {
  const box = tracked('pim-remote-');
  const isoName = useTestInstaller(box, testInstallerIso());
  box.write('profiles.d/q.yml', `quick:\n  iso: ${isoName}\n  packages: ""\n  build: { disk_size: 6G, memory: 1024, cpus: 2, upgrade: false }\n  scripts: [base, finalize]\n`);
  box.write('scripts.d/base.sh', '#!/bin/bash\necho trivial base\n');
  return box;
}

let pimPath: string;
let host: TestHost;
before(async () => {
  if (rootSkip) return;
  pimPath = await installedPim();
  host = await createTestHost(join(tracked('pim-host-').root, 'lab'));
  hosts.push(host);
  await host.start();
});

test('a build routed to a remote builds there: [lab] output, downloaded, registered with builder lab, remote work dir gone; the next run is a cache hit without SSH', { skip: rootSkip, timeout: 90 * 60_000 }, async () => {
  const shared = await sharedImage();
  assert.equal(shared.build.status, 0);
  for (const phase of ['remote-connect', 'remote-check', 'remote-upload', 'remote-build', 'remote-download', 'remote-verify', 'register']) {
    assert.match(shared.build.stderr, new RegExp(`<== ${phase} done in`), phase);
  }
  assert.match(shared.build.stderr, /\[lab\] <== install done in/);
  assert.match(shared.build.stderr, /\[lab\] <== provision done in/);
  assert.match(shared.build.stderr, /uploaded pim-test-installer-amd64\.iso .* verified there/);
  assert.equal(shared.record.builder, 'lab');
  assert.match(shared.record.sha256, /^[0-9a-f]{64}$/);
  assert.deepEqual(readdirSync(join(shared.remoteCacheDir, 'builds')), [], 'the remote work dir is gone');
  assert.ok(existsSync(join(shared.remoteCacheDir, 'isos', 'pim-test-installer-amd64.iso')), 'the uploaded ISO stays for the next build');
  // The remote host of the shared build is stopped now: a cache hit must not need it.
  const again = await pim(shared.box, ['build', 'run', SHARED_PROFILE, '--arch', 'x86_64']);
  assert.equal(again.status, 0, again.stderr);
  assert.match(again.stderr, /cached: small\/x86_64 is up to date/);
  assert.doesNotMatch(again.stderr, /connect/);
});

test('an unknown host key is refused with its fingerprint and how to pin it; a wrong pin is refused', { skip: rootSkip, timeout: 5 * 60_000 }, async () => {
  const box = quickProject();
  box.write('pim.yml', remoteYml(host, pimPath, { host_key: '' }));
  const unknown = await pim(box, ['build', 'run', 'quick', '--arch', 'x86_64']);
  assert.equal(unknown.status, 1, unknown.stderr);
  assert.ok(unknown.stderr.includes(`unknown host key ${host.hostKeyFingerprint}`), unknown.stderr);
  assert.match(unknown.stderr, /pin it: build\.remotes\.lab\.host_key in pim\.yml: SHA256:/);
  assert.match(unknown.stderr, /failed in the connect phase/);
  box.write('pim.yml', remoteYml(host, pimPath, { host_key: `SHA256:${'A'.repeat(43)}` }));
  const wrong = await pim(box, ['build', 'run', 'quick', '--arch', 'x86_64']);
  assert.equal(wrong.status, 1);
  assert.ok(wrong.stderr.includes(`its host key is ${host.hostKeyFingerprint}, not the pinned SHA256:${'A'.repeat(43)}`), wrong.stderr);
  // A known_hosts entry is accepted as well as a pin.
  mkdirSync(join(box.root, 'home', '.ssh'), { recursive: true });
  writeFileSync(join(box.root, 'home', '.ssh', 'known_hosts'), `[${host.address}]:${host.port} ${host.hostKeyLine}\n`);
  box.write('pim.yml', remoteYml(host, '/nonexistent/pim', { host_key: '' }));
  const known = await pim(box, ['build', 'run', 'quick', '--arch', 'x86_64']);
  assert.match(known.stderr, /failed in the check phase: PIM does not answer at \/nonexistent\/pim/);
  assert.ok(!existsSync(join(box.root, 'data', 'pim', 'registry.yml')) || !readFileSync(join(box.root, 'data', 'pim', 'registry.yml'), 'utf8').includes('quick'));
});

test('a remote whose pim is of another major.minor, or missing, is refused, naming what runs there', { skip: rootSkip, timeout: 5 * 60_000 }, async () => {
  const box = quickProject();
  const fake = join(box.root, 'old-pim');
  writeFileSync(fake, '#!/bin/sh\necho 0.9.4\n');
  chmodSync(fake, 0o755);
  box.write('pim.yml', remoteYml(host, fake));
  const r = await pim(box, ['build', 'run', 'quick', '--arch', 'x86_64']);
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /lab runs PIM 0\.9\.4 at .*old-pim, but this build needs 0\.1\.x/);

  // No pim at all at pim_path: refused, naming the path and what the shell said.
  box.write('pim.yml', remoteYml(host, join(box.root, 'no-such-pim')));
  const missing = await pim(box, ['build', 'run', 'quick', '--arch', 'x86_64']);
  assert.equal(missing.status, 1, missing.stderr);
  assert.match(missing.stderr, /PIM does not answer at .*no-such-pim on lab \(.*(not found|No such file).*\); install PIM 0\.1\.x there/);
});

test('a remote with QEMU older than 5.2, or without qemu-img, is refused in the check phase, before the ISO is uploaded', { skip: rootSkip, timeout: 5 * 60_000 }, async () => {
  const box = quickProject();
  // A host whose PATH finds an old qemu-system-x86_64 first (the message Debian's QEMU 4.2 prints).
  const bin = join(box.root, 'old-qemu-bin');
  mkdirSync(bin, { recursive: true });
  writeFileSync(join(bin, 'qemu-system-x86_64'), '#!/bin/sh\necho "QEMU emulator version 4.2.1 (Debian 1:4.2-3ubuntu6.30)"\n');
  writeFileSync(join(bin, 'qemu-img'), '#!/bin/sh\necho "qemu-img: command not found in this test" >&2\nexit 127\n');
  chmodSync(join(bin, 'qemu-system-x86_64'), 0o755);
  const old = await createTestHost(join(tracked('pim-oldqemu-').root, 'old'), { env: { PATH: `${bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin` } });
  hosts.push(old);
  await old.start();
  box.write('pim.yml', remoteYml(old, pimPath));
  const r = await pim(box, ['build', 'run', 'quick', '--arch', 'x86_64']);
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /lab runs qemu-system-x86_64 4\.2\.1; PIM needs QEMU 5\.2 or later there/);
  assert.match(r.stderr, /failed in the check phase/);
  assert.doesNotMatch(r.stderr, /==> remote-upload/);
  assert.ok(!existsSync(join(old.home, 'pim-cache', 'isos')), 'nothing was uploaded');
  // A good qemu-system but no working qemu-img: named, with what the shell said.
  chmodSync(join(bin, 'qemu-img'), 0o755);
  writeFileSync(join(bin, 'qemu-system-x86_64'), '#!/bin/sh\necho "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18)"\n');
  const img = await pim(box, ['build', 'run', 'quick', '--arch', 'x86_64']);
  assert.equal(img.status, 1, img.stderr);
  assert.match(img.stderr, /lab has no working qemu-img \(qemu-img: command not found in this test\); install QEMU 5\.2 or later there/);
});

test('pim build status --json shows a reachable remote with its version and accelerators, and an unreachable one with the reason, within 10 s', { skip: rootSkip, timeout: 5 * 60_000 }, async () => {
  const box = quickProject();
  box.write('pim.yml', `${remoteYml(host, pimPath)}    dead:\n      host: 127.0.0.1\n      port: 9\n      user: root\n      identity_file: ${host.clientKey.privateKeyPath}\n`);
  const started = Date.now();
  const r = await pim(box, ['build', 'status', '--json']);
  assert.equal(r.status, 0, r.stderr);
  assert.ok(Date.now() - started < 15_000, `took ${Date.now() - started} ms`);
  const status = JSON.parse(r.stdout);
  const lab = status.remotes.find((x: { name: string }) => x.name === 'lab');
  assert.equal(lab.reachable, true, JSON.stringify(lab));
  assert.equal(lab.version, JSON.parse(readFileSync(join(pimPath, '../../lib/node_modules/pim/package.json'), 'utf8')).version);
  assert.ok(['tcg', 'kvm'].includes(lab.accelerators.x86_64));
  const dead = status.remotes.find((x: { name: string }) => x.name === 'dead');
  assert.equal(dead.reachable, false);
  assert.match(dead.reason, /ECONNREFUSED|refused/);
});

test('the connection dropped during the remote build: exit 1 within the keepalive time, the phase named, nothing registered, no local temp files', { skip: rootSkip, timeout: 20 * 60_000 }, async () => {
  const nsHost = await createTestHost(join(tracked('pim-nshost-').root, 'ns'), { netns: true, clientAlive: 5 });
  hosts.push(nsHost);
  await nsHost.start();
  const box = quickProject();
  box.write('pim.yml', remoteYml(nsHost, pimPath, { keepalive: 2 }));
  const child = pimAsync(box, ['build', 'run', 'quick', '--arch', 'x86_64']);
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  child.stdout.resume();
  const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
  await until(() => /\[lab\] ==> install/.test(stderr) || child.exitCode !== null, 15 * 60_000, 'the remote install step');
  assert.equal(child.exitCode, null, stderr);
  const cutAt = Date.now();
  execFileSync('ip', ['link', 'set', hostLink(nsHost), 'down']);
  const code = await exited;
  const took = Date.now() - cutAt;
  assert.equal(code, 1, stderr);
  assert.ok(took < 2 * 4 * 1000 + 10_000, `noticed after ${took} ms (keepalive 2 s x 4):\n${stderr}`);
  assert.match(stderr, /remote build on 'lab' failed in the build phase: SSH connection to .* lost/);
  assert.ok(!existsSync(join(box.root, 'data', 'pim', 'registry.yml')) || !readFileSync(join(box.root, 'data', 'pim', 'registry.yml'), 'utf8').includes('quick'), 'nothing registered');
  const work = join(box.root, 'data', 'pim', 'images', '.work');
  assert.deepEqual(existsSync(work) ? readdirSync(work) : [], [], 'no local temp files');
});

test('--arch all: the cached arch costs nothing, a failing arch does not stop the other, one summary table, exit 1', { skip: rootSkip, timeout: 90 * 60_000 }, async () => {
  const shared = await sharedImage();
  const box = tracked('pim-all-');
  cpSync(shared.box.project, box.project, { recursive: true });
  // Both arches; arm64 has no media in this catalog, so it fails (PIM_E2E_ARM64 builds it for real).
  box.write('profiles.d/z-arches.yml', `${SHARED_PROFILE}:\n  architectures: [x86_64, arm64]\n`);
  const registry = new Registry(join(box.root, 'data', 'pim', 'registry.yml'));
  const { Project } = await import('../../src/config/project.js');
  const { resolvePlan } = await import('../../src/builder/plan.js');
  const plan = resolvePlan(new Project({ projectDir: box.project, env: box.env }), { profileName: SHARED_PROFILE, arch: 'x86_64' });
  await registry.registerImage({ ...shared.record, cache_key: plan.cacheKey, inputs: plan.inputs });
  const r = await pim(box, ['build', 'run', SHARED_PROFILE, '--arch', 'all'], { timeoutMs: 60 * 60_000 });
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stdout, /ARCH\s+BUILDER\s+RESULT\s+SECONDS\s+SIZE\s+IMAGE/);
  assert.match(r.stdout, /x86_64\s+lab\s+cached\s+\d+\s+[\d.]+ MiB/);
  assert.match(r.stdout, /arm64\s+local\s+failed\s+\d+\s+-\s+profile 'small' names ISO 'pim-test-installer-amd64', which is for x86_64, not arm64/);
  assert.match(r.stderr, /1 of 2 architectures failed: arm64/);
});
