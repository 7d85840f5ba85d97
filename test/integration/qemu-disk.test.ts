import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { statSync } from 'node:fs';
import { DiskImages } from '../../src/qemu/disk.js';
import { WorkError } from '../../src/errors.js';
import { sandbox } from '../helpers/env.js';

const box = sandbox();
after(() => box.cleanup());
const images = new DiskImages();

test('create, info, resize, convert to raw and to compressed qcow2', async () => {
  const disk = join(box.root, 'disk.qcow2');
  await images.create(disk, '1G');
  let info = await images.info(disk);
  assert.equal(info.format, 'qcow2');
  assert.equal(info.virtualSize, 1024 ** 3);
  assert.ok(info.actualSize < 1024 * 1024, `a fresh qcow2 is small (${info.actualSize})`);
  assert.equal(info.backingFile, undefined);
  await images.resize(disk, '2G');
  assert.equal((await images.info(disk)).virtualSize, 2 * 1024 ** 3);
  const raw = join(box.root, 'disk.raw');
  await images.convert(disk, raw, { format: 'raw' });
  info = await images.info(raw);
  assert.equal(info.format, 'raw');
  assert.equal(statSync(raw).size, 2 * 1024 ** 3);
  const packed = join(box.root, 'packed.qcow2');
  await images.convert(disk, packed, { format: 'qcow2', compress: true });
  assert.equal((await images.info(packed)).format, 'qcow2');
  await images.check(packed);
});

test("errors carry qemu-img's own message", async () => {
  await assert.rejects(images.info(join(box.root, 'missing.qcow2')), (err: unknown) => err instanceof WorkError && /Could not open/.test(err.message));
  await assert.rejects(images.create(join(box.root, 'bad.qcow2'), 'lots'), (err: unknown) => err instanceof WorkError && /qemu-img failed/.test(err.message));
});
