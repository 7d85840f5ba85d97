// ImageReader against the real qemu-nbd: guest-visible bytes of a compressed qcow2 at any offset,
// and a clear, bounded failure when the server never greets.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ImageReader, dataExtents } from '../../src/qemu/image-reader.js';

const MiB = 1024 * 1024;

test('reads of a compressed qcow2, pipelined and unaligned, return its guest-visible bytes; holes read as zeros', { timeout: 60_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'pim-reader-'));
  try {
    const raw = Buffer.alloc(8 * MiB);
    randomBytes(MiB).copy(raw, 0);
    randomBytes(300_000).copy(raw, 5 * MiB + 12_345);
    writeFileSync(join(dir, 'disk.raw'), raw);
    execFileSync('qemu-img', ['convert', '-q', '-c', '-f', 'raw', '-O', 'qcow2', '-o', 'compression_type=zstd', join(dir, 'disk.raw'), join(dir, 'disk.qcow2')]);
    const { extents, virtualSize } = await dataExtents(join(dir, 'disk.qcow2'));
    assert.equal(virtualSize, 8 * MiB);
    assert.ok(extents.every((e) => e.start < 6 * MiB), 'the zero tail is not data');
    const reader = await ImageReader.open(join(dir, 'disk.qcow2'));
    try {
      assert.equal(reader.size, 8 * MiB);
      const ranges = [[0, 524288], [1000, 77_777], [5 * MiB, MiB], [7 * MiB + 3, 4096], [MiB - 10, 20]] as const;
      const into = Buffer.alloc(MiB);
      const reads = await Promise.all(ranges.map(([offset, length], i) => (i === 2 ? reader.read(offset, length, into) : reader.read(offset, length))));
      ranges.forEach(([offset, length], i) => assert.ok(reads[i]!.subarray(0, length).equals(raw.subarray(offset, offset + length)), `bytes at ${offset}+${length}`));
      assert.equal(reader.bytesRead, ranges.reduce((sum, [, length]) => sum + length, 0));
    } finally {
      await reader.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a qemu-nbd that accepts and never greets fails the open within the handshake timeout, and is stopped', { timeout: 30_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'pim-reader-'));
  const path = process.env['PATH'];
  try {
    // A stand-in for a hung qemu-nbd, first on PATH: it listens on the socket it is given and says nothing.
    const pidFile = join(dir, 'fake.pid');
    writeFileSync(
      join(dir, 'qemu-nbd'),
      `#!${process.execPath}\nconst a = process.argv.slice(2);\nrequire('fs').writeFileSync(${JSON.stringify(pidFile)}, String(process.pid));\nrequire('net').createServer(() => {}).listen(a[a.indexOf('--socket') + 1]);\n`,
    );
    chmodSync(join(dir, 'qemu-nbd'), 0o755);
    writeFileSync(join(dir, 'disk.qcow2'), '');
    process.env['PATH'] = `${dir}:${path}`;
    const started = Date.now();
    await assert.rejects(ImageReader.open(join(dir, 'disk.qcow2'), 'qcow2', undefined, { handshakeTimeoutMs: 1_000 }), /qemu-nbd did not answer the NBD handshake for .*disk\.qcow2 within 1 s/);
    assert.ok(Date.now() - started < 20_000);
    const pid = Number(readFileSync(pidFile, 'utf8'));
    assert.throws(() => process.kill(pid, 0), /ESRCH/, 'the silent server was stopped');
  } finally {
    process.env['PATH'] = path;
    rmSync(dir, { recursive: true, force: true });
  }
});
