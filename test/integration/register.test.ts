// Registration, superseded images and clean: nothing registered is ever lost, and no image that a
// record points at (or that someone modified) is deleted.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { appendFileSync, existsSync, mkdirSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Project } from '../../src/config/project.js';
import { resolvePlan, type BuildPlan } from '../../src/builder/plan.js';
import { registerBuilt } from '../../src/builder/register.js';
import { workRoot } from '../../src/builder/manager.js';
import { Registry } from '../../src/registry/registry.js';
import { hashFile } from '../../src/iso/checksum.js';
import type { BuiltImage } from '../../src/builder/builder.js';
import { pim, repoRoot, sandbox, type Sandbox } from '../helpers/env.js';

const boxes: Sandbox[] = [];
after(() => boxes.forEach((b) => b.cleanup()));

function setup(pimYml = '{}\n') {
  const box = sandbox('pim-register-');
  boxes.push(box);
  box.write('isos.d/local.yml', `local-iso:\n  url: http://127.0.0.1:9/none.iso\n  checksum: sha256:${'a'.repeat(64)}\n  arch: x86_64\n  distro: debian\n  version: "12"\n`);
  box.write('profiles.d/p.yml', 'default:\n  iso: local-iso\nweb: {}\n');
  box.write('pim.yml', pimYml);
  const project = new Project({ projectDir: box.project, env: box.env });
  const registry = new Registry(project.registryPath());
  return { box, project, registry, plan: resolvePlan(project, { profileName: 'web', arch: 'x86_64' }) };
}

let counter = 0;
/** A builder's output: a real qcow2 in the work root, as a builder leaves it for the manager. */
async function built(project: Project, plan: BuildPlan): Promise<{ image: BuiltImage; buildId: string }> {
  const buildId = `t${counter++}-abcdef`;
  mkdirSync(workRoot(project), { recursive: true });
  const path = join(workRoot(project), `${plan.profileName}-${plan.arch}-${buildId}.qcow2`);
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', path, '1G']);
  const size = statSync(path).size;
  return { buildId, image: { path, sha256: await hashFile(path), virtualSize: 1024 ** 3, fileSize: size, timings: [], builder: 'local', warnings: [] } };
}

async function register(project: Project, plan: BuildPlan, options?: { lockTimeoutMs?: number }) {
  const { image, buildId } = await built(project, plan);
  return registerBuilt(project, plan, image, buildId, { startedAt: Date.now(), ...options });
}

test('a rebuild writes its own file, and removes the superseded image only after registering the new one', async () => {
  const { project, registry, plan } = setup();
  const first = await register(project, plan);
  const second = await register(project, plan);
  assert.notEqual(first.record.path, second.record.path, 'every build has its own path (same cache key, --force)');
  assert.ok(existsSync(second.record.path));
  assert.ok(!existsSync(first.record.path), 'the superseded image is removed (build.keep: 0)');
  assert.deepEqual(second.removed, [first.record.path]);
  assert.equal(registry.getImage('web', 'x86_64')!.path, second.record.path);
  assert.deepEqual(readdirSync(workRoot(project)), [], 'nothing left in the work root');
});

test('build.keep: 1 keeps one superseded image, listed by pim build list --all', async () => {
  const { box, project, plan } = setup('build:\n  keep: 1\n');
  const first = await register(project, plan);
  const second = await register(project, plan);
  const third = await register(project, plan);
  assert.ok(!existsSync(first.record.path));
  assert.ok(existsSync(second.record.path) && existsSync(third.record.path));
  const listed = JSON.parse((await pim(box, ['build', 'list', '--all', '--json'])).stdout);
  assert.deepEqual(listed.images.map((i: { path: string }) => i.path), [third.record.path]);
  assert.deepEqual(listed.previous.map((i: { path: string }) => i.path), [second.record.path]);
  const table = (await pim(box, ['build', 'list', '--all'])).stdout;
  assert.match(table, /web\s+x86_64\s+previous/);
});

test('a superseded image that was modified since it was built (someone booted it) is kept, and said so', async () => {
  const { project, plan } = setup();
  const first = await register(project, plan);
  appendFileSync(first.record.path, Buffer.alloc(4096));
  const second = await register(project, plan);
  assert.ok(existsSync(first.record.path));
  assert.deepEqual(second.keptModified, [first.record.path]);
});

test('a failure in the register step (the registry lock held past its timeout) removes only the new file; nothing registered is lost', async () => {
  const { project, registry, plan } = setup();
  const good = await register(project, plan);
  const before = readFileSync(registry.path, 'utf8');
  const holder = spawn(process.execPath, [join(repoRoot, 'dist/test/fixtures/hold-lock.js'), registry.path], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve) => holder.stdout!.on('data', (c: Buffer) => c.toString().includes('HELD') && resolve()));
  try {
    await assert.rejects(register(project, plan, { lockTimeoutMs: 500 }), /registering web\/x86_64 failed, so the new image was removed and the registry is unchanged: timed out/);
  } finally {
    holder.kill('SIGKILL');
    await once(holder, 'exit');
  }
  assert.equal(readFileSync(registry.path, 'utf8'), before);
  assert.ok(existsSync(good.record.path), 'the registered image is still there');
  const files = readdirSync(project.imagesDir()).filter((f) => f.endsWith('.qcow2'));
  assert.deepEqual(files.map((f) => join(project.imagesDir(), f)), [good.record.path], 'no orphan image file');
  assert.deepEqual(readdirSync(workRoot(project)), []);
});

test('pim build clean keeps an image whose file grew and reports it as modified; drops entries whose file is gone', async () => {
  const { box, project, registry, plan } = setup();
  const grown = await register(project, plan);
  appendFileSync(grown.record.path, Buffer.alloc(65536));
  const other = resolvePlan(project, { profileName: 'default', arch: 'x86_64' });
  const gone = await register(project, other);
  execFileSync('rm', [gone.record.path]);
  const r = await pim(box, ['build', 'clean']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /kept web\/x86_64: .* was modified since it was built/);
  assert.match(r.stdout, /removed default\/x86_64 \(orphaned entry/);
  assert.ok(existsSync(grown.record.path));
  assert.deepEqual(registry.listImages().map((i) => i.profile), ['web']);
  assert.match((await pim(box, ['build', 'list'])).stdout, /modified since built/);
});

test('pim build clean --all leaves the work dir of a running build alone and removes the leftovers of dead ones', async () => {
  const { box, project } = setup();
  const work = workRoot(project);
  const running = join(work, 'web-x86_64-running-aaaaaa');
  const dead = join(work, 'web-x86_64-dead-bbbbbb');
  mkdirSync(running, { recursive: true });
  mkdirSync(dead, { recursive: true });
  const holder = spawn(process.execPath, [join(repoRoot, 'dist/test/fixtures/hold-lock.js'), running], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve) => holder.stdout!.on('data', (c: Buffer) => c.toString().includes('HELD') && resolve()));
  try {
    const r = await pim(box, ['build', 'clean', '--all']);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`kept the work dir ${running}: a build is using it \\(.* pid ${holder.pid}\\)`));
    assert.match(r.stdout, /removed the leftover work dir .*dead-bbbbbb/);
    assert.ok(existsSync(running));
    assert.ok(!existsSync(dead));
  } finally {
    holder.kill('SIGKILL');
    await once(holder, 'exit');
  }
});
