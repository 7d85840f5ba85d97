import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync, writeFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { Registry } from '../../src/registry/registry.js';
import { WorkError } from '../../src/errors.js';
import { repoRoot, sandbox } from '../helpers/env.js';

const box = sandbox('pim-reg-');
after(() => box.cleanup());

test('sixteen processes registering images at once into one registry lose no entry', async () => {
  const path = join(box.root, 'data', 'registry.yml');
  const script = join(repoRoot, 'dist/test/fixtures/register-image.js');
  const children = Array.from({ length: 16 }, (_, i) => spawn(process.execPath, [script, path, `p${i}`], { stdio: 'inherit' }));
  const codes = await Promise.all(children.map(async (c) => (await once(c, 'exit'))[0]));
  assert.deepEqual(codes, Array(16).fill(0));
  const images = new Registry(path).listImages();
  assert.equal(images.length, 16);
  assert.deepEqual(images.map((i) => i.profile).sort(), Array.from({ length: 16 }, (_, i) => `p${i}`).sort());
  assert.deepEqual(readdirSync(join(box.root, 'data')), ['registry.yml'], 'no temp or lock files left');
});

test('an unparsable registry is reported with its path and left untouched', async () => {
  const path = join(box.root, 'broken.yml');
  const content = 'images:\n  a: [unclosed\n';
  writeFileSync(path, content);
  const registry = new Registry(path);
  assert.throws(() => registry.listImages(), (err: unknown) => err instanceof WorkError && err.message.includes(path) && /cannot be parsed/.test(err.message));
  await assert.rejects(registry.removeImages(() => true), /cannot be parsed/);
  assert.equal(readFileSync(path, 'utf8'), content);
});
