// A build that fails or is interrupted stops everything it started, registers nothing, never
// removes a registered image, and fails fast instead of hanging.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { chmodSync, existsSync, readdirSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Project } from '../../src/config/project.js';
import { resolvePlan } from '../../src/builder/plan.js';
import { Registry } from '../../src/registry/registry.js';
import { pim, pimAsync, repoRoot, sandbox } from '../helpers/env.js';
import { until } from '../helpers/fixtures.js';
import { rootSkip, testInstallerIso } from '../helpers/installer.js';
import { useTestInstaller } from '../helpers/build-project.js';
import { startAuthProxy, type AuthProxy } from '../helpers/auth-proxy.js';

const box = sandbox('pim-fail-');
const PROXY_SECRET = 's3cret-proxy-pw';
let proxy: AuthProxy;
/** Tells the test installer (pim-test/kernel-trouble-once) when to fail after kernel trouble. */
let troubleServer: Server;
const troubleAsks = { once: 0, always: 0 };
before(async () => {
  if (rootSkip) return;
  troubleServer = createServer((req, res) => {
    if (req.url === '/wait') return void res.end('trouble-wait');
    const which = req.url === '/once' ? 'once' : 'always';
    troubleAsks[which]++;
    res.end(which === 'always' || troubleAsks.once === 1 ? 'trouble' : 'fine');
  });
  troubleServer.listen(0, '127.0.0.1');
  await once(troubleServer, 'listening');
  const troublePort = (troubleServer.address() as AddressInfo).port;
  const preseed = readFileSync(join(repoRoot, 'assets/preseeds.d/default.cfg.ejs'), 'utf8');
  for (const which of ['once', 'always', 'wait']) {
    box.write(`preseeds.d/trouble-${which}.cfg.ejs`, `${preseed}\nd-i pim-test/kernel-trouble-once string http://10.0.2.2:${troublePort}/${which}\n`);
  }
  const isoName = useTestInstaller(box, testInstallerIso());
  // No extra packages, no upgrade and a trivial base: these builds are about failing, not about
  // cloud-init. The mirror is reached through a proxy that wants a user and a password (PIM's
  // package cache forwards to it): the password must show up in no log or error.
  proxy = await startAuthProxy('pimuser', PROXY_SECRET);
  box.write(
    'profiles.d/f.yml',
    `default:\n  iso: ${isoName}\n  packages: ""\n  http_proxy: ${proxy.url('pimuser', PROXY_SECRET)}\n  build: { disk_size: 6G, memory: 1024, cpus: 2, upgrade: false }\n` +
      'slow:\n  scripts: [base, sleeper, finalize]\n' +
      'three:\n  scripts: [base, exit3, finalize]\n' +
      'timeout:\n  scripts: [base, sleeper, finalize]\n  build: { script_timeout: 5 }\n' +
      'nofetch:\n  build: { preseed_fetch_timeout: 2 }\n' +
      'bootkill: {}\n' +
      'compactfail: {}\n' +
      'trouble-once: {}\n' +
      'trouble-always: {}\n' +
      'trouble-wait: {}\n',
  );
  box.write('scripts.d/base.sh', '#!/bin/bash\necho "trivial base for failure tests"\n');
  box.write('scripts.d/sleeper.sh', '#!/bin/bash\necho "sleeping"\nsleep 600\n');
  box.write('scripts.d/exit3.sh', '#!/bin/bash\necho "about to fail"\nexit 3\n');
});
after(async () => {
  await proxy?.close();
  troubleServer?.close();
  box.cleanup();
});

const workDir = () => join(box.root, 'data', 'pim', 'images', '.work');
const registry = () => join(box.root, 'data', 'pim', 'registry.yml');
const logs = () => join(box.root, 'state', 'pim', 'logs');
function qemuOfThisSandbox(): string[] {
  try {
    return execFileSync('pgrep', ['-f', `qemu-system.*${box.root}`], { encoding: 'utf8' }).trim().split('\n').filter(Boolean);
  } catch {
    return [];
  }
}

function startBuild(profile: string, extra: string[] = [], env?: NodeJS.ProcessEnv) {
  const child = pimAsync(box, ['build', 'run', profile, '--arch', 'x86_64', ...extra], env);
  const out = { stdout: '', stderr: '' };
  child.stderr.on('data', (c: Buffer) => (out.stderr += c.toString()));
  child.stdout.on('data', (c: Buffer) => (out.stdout += c.toString()));
  const exited = once(child, 'exit').then(([code]) => code as number | null);
  return { child, out, exited };
}

/**
 * A build this test gave up on (a guest that hung under TCG, say) is stopped as a user would stop
 * it, and its VM killed if it outlives that: else it fails the next tests of this file too.
 */
async function abandon(build: ReturnType<typeof startBuild>): Promise<void> {
  if (build.child.exitCode !== null) return;
  build.child.kill('SIGINT');
  const stopped = await Promise.race([build.exited.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 60_000))]);
  if (!stopped) build.child.kill('SIGKILL');
  for (const pid of qemuOfThisSandbox()) process.kill(Number(pid), 'SIGKILL');
}

async function interruptAt(profile: string, marker: RegExp, delayMs: number, extra: string[] = []): Promise<{ code: number | null; stderr: string }> {
  const build = startBuild(profile, extra);
  try {
    await until(() => marker.test(build.out.stderr) || build.child.exitCode !== null, 20 * 60_000, `${marker} in the build output`);
  } catch (err) {
    await abandon(build);
    throw err;
  }
  assert.equal(build.child.exitCode, null, `the build ended before ${marker}:\n${build.out.stderr}`);
  await new Promise((r) => setTimeout(r, delayMs));
  assert.ok(qemuOfThisSandbox().length > 0, 'a VM is running when Ctrl+C arrives');
  build.child.kill('SIGINT');
  return { code: await build.exited, stderr: build.out.stderr };
}

function assertNothingLeft(stderr: string) {
  assert.deepEqual(qemuOfThisSandbox(), [], 'no qemu-system process left');
  assert.ok(!existsSync(registry()) || !/slow|three|timeout|bootkill|trouble/.test(readFileSync(registry(), 'utf8')), 'nothing registered');
  assert.deepEqual(existsSync(workDir()) ? readdirSync(workDir()) : [], [], 'no work dir left');
  assert.doesNotMatch(stderr, new RegExp(PROXY_SECRET));
}

test('an installer that never fetches its preseed fails after build.preseed_fetch_timeout, with the console tail', { skip: rootSkip, timeout: 5 * 60_000 }, async () => {
  const started = Date.now();
  const r = await pim(box, ['build', 'run', 'nofetch', '--arch', 'x86_64']);
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /the installer did not fetch the preseed within 2 s \(build\.preseed_fetch_timeout\); last console lines/);
  assert.ok(Date.now() - started < 60_000);
  assertNothingLeft(r.stderr);
});

test('Ctrl+C in the install step: exit 130, no QEMU, no registry entry, no work dir', { skip: rootSkip, timeout: 30 * 60_000 }, async () => {
  const r = await interruptAt('slow', /==> install/, 5_000);
  assert.equal(r.code, 130, r.stderr);
  assertNothingLeft(r.stderr);
  assert.match(r.stderr, /interrupted; nothing was registered/);
});

test('a VM killed during the boot step fails the build within 10 s, with its console tail', { skip: rootSkip, timeout: 30 * 60_000 }, async () => {
  const build = startBuild('bootkill');
  await until(() => /waiting for SSH on 127\.0\.0\.1/.test(build.out.stderr) || build.child.exitCode !== null, 20 * 60_000, 'the boot step');
  assert.equal(build.child.exitCode, null, `the build ended before the boot step:\n${build.out.stderr}`);
  const vms = execFileSync('pgrep', ['-f', `qemu-system.*pim-.*-boot.*${box.root}`], { encoding: 'utf8' }).trim().split('\n');
  assert.equal(vms.length, 1);
  const killedAt = Date.now();
  execFileSync('kill', ['-9', vms[0]!]);
  const code = await build.exited;
  assert.ok(Date.now() - killedAt < 10_000, `failed ${Date.now() - killedAt} ms after the kill`);
  assert.equal(code, 1, build.out.stderr);
  assert.match(build.out.stderr, /the VM exited \(killed by SIGKILL\) during the boot step \(waiting for SSH\); last console lines/);
  assertNothingLeft(build.out.stderr);
});

test('an installer that fails after its kernel reported trouble is run again, once, on a new disk; the build goes on', { skip: rootSkip, timeout: 30 * 60_000 }, async () => {
  const r = await interruptAt('trouble-once', /waiting for SSH on 127\.0\.0\.1/, 0);
  assert.equal(r.code, 130, r.stderr);
  assert.equal(troubleAsks.once, 2, 'the installer ran twice');
  assert.match(r.stderr, /the installer failed after its kernel reported trouble \("\[ {2}197\.085505\] WARNING: CPU: 1 PID: 1 at kernel\/pim-test\.c:1 pim_test\+0x0\/0x10"\): installing again on a new disk, once/);
  assert.match(r.stderr, /<== install done in/);
  assertNothingLeft(r.stderr);
});

test('an installer that fails again after kernel trouble fails the build: one more install, not two', { skip: rootSkip, timeout: 10 * 60_000 }, async () => {
  const r = await pim(box, ['build', 'run', 'trouble-always', '--arch', 'x86_64']);
  assert.equal(r.status, 1, r.stderr);
  assert.equal(troubleAsks.always, 2);
  assert.equal(r.stderr.match(/installing again on a new disk, once/g)?.length, 1);
  assert.match(r.stderr, /second install \(the first failed after its kernel reported trouble\): the installer stopped without reporting success \(preseed\/late_command did not finish\); last console lines:\n[^]*FAILED: installing after the kernel's trouble/);
  assertNothingLeft(r.stderr);
});

test('Ctrl+C in an install whose kernel reported trouble: exit 130, and no second install', { skip: rootSkip, timeout: 10 * 60_000 }, async () => {
  // --verbose: the console reaches the terminal, so the test sees the trouble before its Ctrl+C.
  const r = await interruptAt('trouble-wait', /waiting after the kernel's trouble/, 0, ['--verbose']);
  assert.equal(r.code, 130, r.stderr);
  assert.doesNotMatch(r.stderr, /installing again/);
  assertNothingLeft(r.stderr);
});

test('Ctrl+C in the provision step: exit 130, no QEMU, no registry entry, no work dir', { skip: rootSkip, timeout: 30 * 60_000 }, async () => {
  const r = await interruptAt('slow', /script sleeper/, 3_000);
  assert.equal(r.code, 130, r.stderr);
  assertNothingLeft(r.stderr);
});

test('a script that sleeps past build.script_timeout fails naming the script and the timeout', { skip: rootSkip, timeout: 30 * 60_000 }, async () => {
  const r = await pim(box, ['build', 'run', 'timeout', '--arch', 'x86_64'], { timeoutMs: 25 * 60_000 });
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /provisioning script 'sleeper' \(.*sleeper\.sh\) did not finish within 5 s \(build\.script_timeout\)/);
  assertNothingLeft(r.stderr);
});

test('a script that exits 3 fails the build naming the script and 3; no log holds the proxy password', { skip: rootSkip, timeout: 30 * 60_000 }, async () => {
  const r = await pim(box, ['build', 'run', 'three', '--arch', 'x86_64'], { timeoutMs: 25 * 60_000 });
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /provisioning script 'exit3' \(.*exit3\.sh\) exited 3/);
  assert.match(r.stderr, /log: .*state\/pim\/logs\/three-x86_64-.*\.log/);
  assert.match(r.stderr, /\[exit3\] about to fail/, 'the last lines of the log are shown');
  assertNothingLeft(r.stderr);
  const all = readdirSync(logs()).map((f) => readFileSync(join(logs(), f), 'utf8')).join('\n');
  assert.match(all, /pkg\| (MISS|HIT) /, 'packages went through the package cache');
  assert.ok(proxy.requests > 0 && proxy.refused === 0, `the cache reached the mirror through the profile's proxy, with its credentials (${proxy.requests} requests, ${proxy.refused} refused)`);
  assert.doesNotMatch(all, new RegExp(PROXY_SECRET), 'the proxy password is in no build log');
});

test('a --force rebuild that fails in compact leaves the registered image and its record intact', { skip: rootSkip, timeout: 30 * 60_000 }, async () => {
  // The registered image of compactfail/x86_64, with the key this build will compute.
  const plan = resolvePlan(new Project({ projectDir: box.project, env: box.env }), { profileName: 'compactfail', arch: 'x86_64' });
  const imagesDir = join(box.root, 'data', 'pim', 'images');
  mkdirSync(imagesDir, { recursive: true });
  const good = join(imagesDir, `compactfail-x86_64-${plan.cacheKey.slice(0, 12)}.qcow2`);
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', good, '1G']);
  const goodBytes = readFileSync(good);
  await new Registry(registry()).registerImage({
    profile: 'compactfail', arch: 'x86_64', cache_key: plan.cacheKey, inputs: plan.inputs, path: good, iso: plan.iso.name,
    built_at: '2026-11-01T00:00:00Z', build_seconds: 1, builder: 'local', virtual_size: 1024 ** 3, file_size: goodBytes.length, sha256: 'x',
  });
  const registryBefore = readFileSync(registry(), 'utf8');
  // A qemu-img whose convert fails as on a full disk; everything else goes to the real one.
  const bin = join(box.root, 'fake-bin');
  mkdirSync(bin, { recursive: true });
  const realQemuImg = execFileSync('sh', ['-c', 'command -v qemu-img'], { encoding: 'utf8' }).trim();
  writeFileSync(join(bin, 'qemu-img'), `#!/bin/sh\nif [ "$1" = convert ]; then echo "qemu-img: error while writing at byte 0: No space left on device" >&2; exit 1; fi\nexec ${realQemuImg} "$@"\n`);
  chmodSync(join(bin, 'qemu-img'), 0o755);
  const cached = await pim(box, ['build', 'run', 'compactfail', '--arch', 'x86_64']);
  assert.match(cached.stderr, /cached: compactfail\/x86_64 is up to date/);
  const r = await pim(box, ['build', 'run', 'compactfail', '--arch', 'x86_64', '--force'], { timeoutMs: 25 * 60_000, env: { PATH: `${bin}:${process.env.PATH}` } });
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /<== compact FAILED/);
  assert.match(r.stderr, /No space left on device/);
  assert.deepEqual(readFileSync(good), goodBytes, 'the registered image is untouched');
  assert.equal(readFileSync(registry(), 'utf8'), registryBefore, 'the registry is byte-for-byte unchanged');
  assert.deepEqual(readdirSync(imagesDir).filter((f) => f.endsWith('.qcow2')), [`compactfail-x86_64-${plan.cacheKey.slice(0, 12)}.qcow2`], 'no new image file');
  assertNothingLeft(r.stderr);
});
