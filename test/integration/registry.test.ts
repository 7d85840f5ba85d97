import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, readFileSync, writeFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { Registry } from '../../src/registry/registry.js';
import { acquireLock, tryLock } from '../../src/files/lock.js';
import { WorkError } from '../../src/errors.js';
import { pim, repoRoot, sandbox } from '../helpers/env.js';

const box = sandbox('pim-reg-');
after(() => box.cleanup());
const fixture = (name: string) => join(repoRoot, `dist/test/fixtures/${name}.js`);

async function registerConcurrently(path: string, count: number): Promise<void> {
  const children = Array.from({ length: count }, (_, i) => spawn(process.execPath, [fixture('register-image'), path, `p${i}`], { stdio: ['ignore', 'ignore', 'inherit'] }));
  const codes = await Promise.all(children.map(async (c) => (await once(c, 'exit'))[0]));
  assert.deepEqual(codes, Array(count).fill(0));
}

/** A lock left behind by a writer that was SIGKILLed while holding it. */
async function staleLock(target: string): Promise<void> {
  const holder = spawn(process.execPath, [fixture('hold-lock'), target], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve) => holder.stdout!.on('data', (c: Buffer) => c.toString().includes('HELD') && resolve()));
  holder.kill('SIGKILL');
  await once(holder, 'exit');
  assert.ok(existsSync(`${target}.lock`), 'the dead writer left its lock file');
}

test('sixteen processes registering images at once into one registry lose no entry', async () => {
  const path = join(box.root, 'data', 'registry.yml');
  await registerConcurrently(path, 16);
  const images = new Registry(path).listImages();
  assert.deepEqual(images.map((i) => i.profile).sort(), Array.from({ length: 16 }, (_, i) => `p${i}`).sort());
  assert.deepEqual(readdirSync(join(box.root, 'data')), ['registry.yml'], 'no temp or lock files left');
});

test('a lock left by a SIGKILLed writer, then 16 concurrent writers: all 16 entries kept, 20 runs in a row', { timeout: 10 * 60_000 }, async () => {
  for (let run = 0; run < 20; run++) {
    const dir = join(box.root, `stale-${run}`);
    mkdirSync(dir, { recursive: true });
    const path = join(dir, 'registry.yml');
    await staleLock(path);
    await registerConcurrently(path, 16);
    assert.equal(new Registry(path).listImages().length, 16, `run ${run}`);
    assert.deepEqual(readdirSync(dir), ['registry.yml'], `run ${run}: no lock, break or temp files left`);
  }
});

test('a lock is released only by its owner: a release after a takeover leaves the new owner\'s lock alone', async () => {
  const target = join(box.root, 'owned');
  const first = tryLock(target)!;
  assert.ok(first);
  assert.equal(tryLock(target), undefined, 'held by a live owner');
  // Simulate the lock having been taken over (its file now names someone else).
  writeFileSync(`${target}.lock`, 'otherhost 1 someoneelsestoken\n');
  first.release();
  assert.equal(readFileSync(`${target}.lock`, 'utf8'), 'otherhost 1 someoneelsestoken\n');
});

test('an empty lock file (an older PIM, or a full disk mid-write) does not block writers for long', async () => {
  const path = join(box.root, 'empty-lock', 'registry.yml');
  mkdirSync(join(box.root, 'empty-lock'), { recursive: true });
  writeFileSync(`${path}.lock`, '');
  const old = new Date(Date.now() - 60_000);
  execFileSync('touch', ['-d', old.toISOString(), `${path}.lock`]);
  const started = Date.now();
  await new Registry(path).update(() => undefined);
  assert.ok(Date.now() - started < 5_000);
});

test('a full disk while taking the lock leaves no lock file behind, and the registry unchanged', { skip: process.getuid?.() === 0 ? false : 'needs root to mount a small tmpfs' }, async () => {
  const mnt = join(box.root, 'tiny');
  mkdirSync(mnt, { recursive: true });
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', mnt]);
  try {
    const path = join(mnt, 'registry.yml');
    await new Registry(path).update(() => undefined);
    const before = readFileSync(path);
    spawnSync('dd', ['if=/dev/zero', `of=${join(mnt, 'fill')}`, 'bs=4k'], { stdio: 'ignore' });
    await assert.rejects(acquireLock(path, { timeoutMs: 1_000 }), (err: unknown) => err instanceof WorkError && /no space left on device/i.test(err.message));
    assert.deepEqual(readdirSync(mnt).sort(), ['fill', 'registry.yml'], 'no lock or temp file left');
    assert.deepEqual(readFileSync(path), before);
  } finally {
    execFileSync('umount', [mnt]);
  }
});

const shapes: [string, string][] = [
  ['unparsable', 'images:\n  a: [unclosed\n'],
  ['a list of numbers as images', 'images: [1, 2]\nversion: 1\n'],
  ['a record missing fields', 'images:\n  web/x86_64:\n    profile: web\n    arch: x86_64\nversion: 1\n'],
  ['truncated', 'deployments: {}\nimages:\n  web/x86_64:\n    arch: x86_64\n    build_seconds: 1\n    builder: local\n    built_at: 2026-11-01T00:00:00Z\n    cache_key: k\n    file_size: 1\n    inputs: {}\n    iso: i\n    path: /x\n    profile: web\n    sha256: s\n    virtual_size: 1\n'],
  ['empty', ''],
];
for (const [what, content] of shapes) {
  test(`a registry that is ${what} is reported with exit 1 and its path, and left byte-for-byte unchanged`, async () => {
    const sub = sandbox('pim-regshape-');
    try {
      const path = join(sub.root, 'data', 'pim', 'registry.yml');
      mkdirSync(join(sub.root, 'data', 'pim'), { recursive: true });
      writeFileSync(path, content);
      for (const args of [['build', 'list'], ['build', 'clean'], ['build', 'clean', '--all']]) {
        const r = await pim(sub, args);
        assert.equal(r.status, 1, `${args.join(' ')}: ${r.stderr}`);
        assert.ok(r.stderr.includes(path), r.stderr);
        assert.match(r.stderr, /PIM will not overwrite it/);
        assert.doesNotMatch(r.stderr, /internal error|at .*\.js:\d+/);
        assert.equal(readFileSync(path, 'utf8'), content);
      }
    } finally {
      sub.cleanup();
    }
  });
}

test('a registry that is a directory is reported with exit 1 and left alone', async () => {
  const sub = sandbox('pim-regdir-');
  try {
    const path = join(sub.root, 'data', 'pim', 'registry.yml');
    mkdirSync(path, { recursive: true });
    const r = await pim(sub, ['build', 'list']);
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /registry .*registry\.yml cannot be read .*EISDIR/);
    assert.deepEqual(readdirSync(path), []);
  } finally {
    sub.cleanup();
  }
});
