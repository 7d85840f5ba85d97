// PIM's own qcow2 reader against images qemu-img writes: zstd-compressed and uncompressed
// clusters, holes, read in the order the EBS upload reads them; images it must leave to qemu-nbd;
// a damaged compressed cluster fails the read with one line and leaves no zstd running.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdirSync, mkdtempSync, readlinkSync, symlinkSync, openSync, readFileSync, readSync, readdirSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { blocksOfExtents } from '../../src/deploy/aws/ebs-upload.js';
import { dataExtents } from '../../src/qemu/image-reader.js';
import { Qcow2Reader, readQcow2Map, zstdContentSize, zstdFrameLength, type Qcow2Map } from '../../src/qemu/qcow2-reader.js';

const MiB = 1024 * 1024;

/** Zstd processes whose parent is this test process. */
function zstdChildren(): number[] {
  return readdirSync('/proc')
    .filter((e) => /^\d+$/.test(e))
    .filter((e) => {
      try {
        const stat = readFileSync(`/proc/${e}/stat`, 'utf8');
        return stat.includes('(zstd)') && stat.replace(/^.*\) /, '').split(' ')[1] === String(process.pid);
      } catch {
        return false;
      }
    })
    .map(Number);
}

/** A raw disk: compressible text, incompressible random bytes (stored uncompressed), holes. */
function makeRaw(dir: string): Buffer {
  const raw = Buffer.alloc(16 * MiB);
  raw.write('pim '.repeat(MiB / 2), 0);
  randomBytes(MiB).copy(raw, 3 * MiB);
  raw.write('cluster-crossing text '.repeat(20_000), 6 * MiB + 12_345);
  randomBytes(70_000).copy(raw, 9 * MiB + 500);
  // Hex digits: compressed to about half, in frames of many blocks' worth.
  raw.write(randomBytes(MiB / 2).toString('hex'), 11 * MiB);
  raw.write('the last bytes', 16 * MiB - 14);
  writeFileSync(join(dir, 'disk.raw'), raw);
  return raw;
}

/** `disk.raw` of `dir` as a zstd-compressed qcow2 (as PIM writes them), with its cluster map. */
function zstdQcow2(dir: string, name: string): { image: string; map: Qcow2Map } {
  const image = join(dir, name);
  execFileSync('qemu-img', ['convert', '-q', '-c', '-f', 'raw', '-O', 'qcow2', '-o', 'compression_type=zstd', join(dir, 'disk.raw'), image]);
  const map = readQcow2Map(image);
  assert.ok(typeof map !== 'string', String(map));
  return { image, map };
}

/** The ranges the EBS upload reads, in its order: the blocks overlapping data, block by block. */
async function uploadRanges(image: string) {
  const { extents } = await dataExtents(image);
  const blocks = blocksOfExtents(extents);
  return [...blocks.keys()].sort((a, b) => a - b).flatMap((i) => blocks.get(i)!);
}

test('a zstd-compressed qcow2 read through zstd in upload order gives its guest-visible bytes, compressed and uncompressed clusters alike', { timeout: 60_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'pim-qcow2-'));
  try {
    const raw = makeRaw(dir);
    const { image, map } = zstdQcow2(dir, 'disk.qcow2');
    const kinds = [0, 0, 0];
    for (const k of map.kind) kinds[k]!++;
    assert.ok(kinds[1]! >= 16, `random data is stored uncompressed: ${kinds[1]} clusters`);
    assert.ok(kinds[2]! >= 16, `text is stored compressed: ${kinds[2]} clusters`);
    const ranges = await uploadRanges(image);
    const lines: string[] = [];
    const reader = await Qcow2Reader.open(image, ranges, (l) => lines.push(l));
    assert.ok(reader, lines.join('\n'));
    try {
      assert.match(lines.join('\n'), /reading the image itself: \d+ compressed clusters through zstd/);
      // As the upload does: many reads in flight, issued in order, some into a given buffer.
      const into = Buffer.alloc(ranges[0]!.length);
      const reads = await Promise.all(ranges.map((r, i) => (i === 0 ? reader.read(r.start, r.length, into) : reader.read(r.start, r.length))));
      ranges.forEach((r, i) => assert.ok(reads[i]!.subarray(0, r.length).equals(raw.subarray(r.start, r.start + r.length)), `bytes at ${r.start}+${r.length}`));
      assert.equal(reader.bytesRead, ranges.reduce((sum, r) => sum + r.length, 0));
      // Outside the plan: holes read as zeros, data clusters from the file.
      assert.ok((await reader.read(12 * MiB, 4096)).equals(Buffer.alloc(4096)));
      assert.ok((await reader.read(3 * MiB + 100, 1000)).equals(raw.subarray(3 * MiB + 100, 3 * MiB + 1100)));
      // A compressed cluster read a second time is refused at once, not waited for forever.
      await assert.rejects(reader.read(0, 4096), /the compressed cluster at guest offset 0 is not \(or no longer\) in the reads given to open/);
    } finally {
      await reader.close();
    }
    assert.deepEqual(zstdChildren(), []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a reader slower than zstd: zstd waits once 128 clusters are ready, and every byte still arrives (decompressed clusters reuse their buffers)', { timeout: 60_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'pim-qcow2-'));
  try {
    // 32 MiB of text that compresses, each cluster different: 512 compressed clusters.
    const raw = Buffer.alloc(32 * MiB);
    for (let at = 0, n = 0; at < raw.length; n++) at += raw.write(`line ${n} of a slow read `, at);
    writeFileSync(join(dir, 'disk.raw'), raw);
    const { image, map } = zstdQcow2(dir, 'disk.qcow2');
    assert.ok(map.kind.filter((k) => k === 2).length >= 500, 'the text is stored compressed');
    const ranges = await uploadRanges(image);
    const reader = await Qcow2Reader.open(image, ranges);
    assert.ok(reader);
    const ready = () => (reader as unknown as { ready: Map<number, Buffer> }).ready.size;
    try {
      // Nothing read yet: zstd runs ahead until 128 clusters wait (plus what one read of its output brought).
      const deadline = Date.now() + 20_000;
      while (ready() < 128 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      await new Promise((r) => setTimeout(r, 500));
      assert.ok(ready() >= 128 && ready() <= 128 + 4, `clusters waiting for their reader: ${ready()}`);
      // Read one range at a time, as slowly as the event loop turns.
      for (const r of ranges) {
        const got = await reader.read(r.start, r.length);
        assert.ok(got.equals(raw.subarray(r.start, r.start + r.length)), `bytes at ${r.start}+${r.length}`);
        await new Promise((resolve) => setImmediate(resolve));
      }
      assert.equal(reader.bytesRead, raw.length);
    } finally {
      await reader.close();
    }
    assert.deepEqual(zstdChildren(), []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('images PIM does not read itself are left to qemu-nbd, with the reason: a backing file, zlib clusters, a cluster not one zstd frame', { timeout: 60_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'pim-qcow2-'));
  try {
    makeRaw(dir);
    execFileSync('qemu-img', ['convert', '-q', '-c', '-f', 'raw', '-O', 'qcow2', '-o', 'compression_type=zlib', join(dir, 'disk.raw'), join(dir, 'zlib.qcow2')]);
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', join(dir, 'zlib.qcow2'), '-F', 'qcow2', join(dir, 'child.qcow2')]);
    // A zstd image whose first compressed cluster does not start with a zstd frame header.
    const bad = zstdQcow2(dir, 'bad.qcow2');
    const fd = openSync(bad.image, 'r+');
    writeSync(fd, Buffer.alloc(4), 0, 4, bad.map.host[bad.map.kind.indexOf(2)]!);
    closeSync(fd);
    for (const [file, reason] of [
      ['zlib.qcow2', /zlib-compressed clusters/],
      ['child.qcow2', /it has a backing file/],
      ['disk.raw', /not a qcow2 image/],
      ['bad.qcow2', /the compressed cluster at guest offset 0 is not one zstd frame of one cluster/],
    ] as const) {
      const lines: string[] = [];
      const image = join(dir, file);
      assert.equal(await Qcow2Reader.open(image, [{ start: 0, length: 16 * MiB }], (l) => lines.push(l)), undefined, file);
      assert.match(lines.join('\n'), new RegExp(`reading the image through qemu-nbd: ${reason.source}`), file);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('without mkfifo or a temp dir (no FIFO for zstd\'s output) the image is left to qemu-nbd, with the reason, and nothing is left open', { timeout: 60_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'pim-qcow2-'));
  const path = process.env['PATH'];
  try {
    makeRaw(dir);
    const { image } = zstdQcow2(dir, 'disk.qcow2');
    const bin = join(dir, 'bin');
    mkdirSync(bin);
    symlinkSync(execFileSync('sh', ['-c', 'command -v zstd'], { encoding: 'utf8' }).trim(), join(bin, 'zstd'));
    const ranges = await uploadRanges(image);
    process.env['PATH'] = bin;
    const lines: string[] = [];
    assert.equal(await Qcow2Reader.open(image, ranges, (l) => lines.push(l)), undefined);
    process.env['PATH'] = path;
    assert.match(lines.join('\n'), /reading the image through qemu-nbd: no FIFO for zstd's output \(.*mkfifo/);
    const open = readdirSync('/proc/self/fd').map((fd) => {
      try {
        return readlinkSync(`/proc/self/fd/${fd}`);
      } catch {
        return '';
      }
    });
    assert.deepEqual(open.filter((target) => target === image || target.includes('pim-zstd-')), [], 'neither the image nor a FIFO is left open');
    // No temp dir to make the FIFO in: the same (it threw before, and the upload failed).
    const tmp = process.env['TMPDIR'];
    process.env['TMPDIR'] = join(dir, 'gone');
    const more: string[] = [];
    try {
      assert.equal(await Qcow2Reader.open(image, ranges, (l) => more.push(l)), undefined);
    } finally {
      if (tmp === undefined) delete process.env['TMPDIR'];
      else process.env['TMPDIR'] = tmp;
    }
    assert.match(more.join('\n'), /reading the image through qemu-nbd: no FIFO for zstd's output \(.*ENOENT/);
  } finally {
    process.env['PATH'] = path;
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a damaged compressed cluster fails the read naming zstd and the image; no zstd is left running', { timeout: 60_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'pim-qcow2-'));
  try {
    makeRaw(dir);
    const { image, map } = zstdQcow2(dir, 'disk.qcow2');
    // A large compressed cluster's first block turned into a last, compressed block of one
    // garbage byte (zstd frames from QEMU carry no checksum: garbage inside a block could decode).
    const victim = map.kind.findIndex((k, c) => k === 2 && map.csize[c]! > 20_000);
    assert.ok(victim > 0);
    const fd = openSync(image, 'r+');
    const header = Buffer.alloc(6);
    readSync(fd, header, 0, 6, map.host[victim]!);
    const descriptor = header[4]!;
    const single = (descriptor >> 5) & 1;
    const headerLength = 5 + (single ? 0 : 1) + [0, 1, 2, 4][descriptor & 3]! + [single ? 1 : 0, 2, 4, 8][descriptor >> 6]!;
    writeSync(fd, Buffer.from([0x0d, 0x00, 0x00, 0xff]), 0, 4, map.host[victim]! + headerLength);
    closeSync(fd);
    const ranges = await uploadRanges(image);
    const reader = await Qcow2Reader.open(image, ranges);
    assert.ok(reader);
    try {
      const reads = ranges.map((r) => reader.read(r.start, r.length));
      const settled = await Promise.allSettled(reads);
      const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      assert.ok(failed, 'a read fails');
      // zstd's own reason is in the message (it was lost when the end of zstd's output came first).
      assert.match(String(failed.reason.message), /zstd ended after \d+ of \d+ compressed clusters of .*disk\.qcow2: .*(error|corrupt)|disk\.qcow2: the compressed cluster at guest offset \d+: /i);
    } finally {
      await reader.close();
    }
    assert.deepEqual(zstdChildren(), []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('zstd frames are measured by their block headers and their declared size read, whatever follows them', () => {
  const cases: [string, Buffer][] = [
    ['text', Buffer.from('pim '.repeat(40_000))],
    ['random', randomBytes(200_000)],
    ['one byte', Buffer.from('x')],
    ['300 bytes', Buffer.alloc(300, 7)],
  ];
  const dir = mkdtempSync(join(tmpdir(), 'pim-zstd-'));
  try {
    for (const [name, input] of cases) {
      writeFileSync(join(dir, 'in'), input);
      for (const flags of [[], ['--check'], ['--no-check']]) {
        // From a file the frame declares its size; from a pipe zstd cannot know it.
        const frame = execFileSync('zstd', ['-c', '-q', ...flags, join(dir, 'in')]);
        const piped = execFileSync('zstd', ['-c', '-q', ...flags], { input });
        for (const f of [frame, piped]) assert.equal(zstdFrameLength(Buffer.concat([f, randomBytes(100)])), f.length, `${name} ${flags.join(' ')}`);
        assert.equal(zstdContentSize(frame), input.length, `${name}: declared size`);
        assert.equal(zstdContentSize(piped), undefined, `${name}: no declared size`);
      }
    }
    // A frame's header alone is enough to read its declared size (a tiny frame may end a sector).
    for (const [size, header] of [[1, 6], [300, 7], [70_000, 9]]) {
      writeFileSync(join(dir, 'in'), Buffer.alloc(size!, 1));
      const tiny = execFileSync('zstd', ['-c', '-q', join(dir, 'in')]);
      assert.equal(zstdContentSize(tiny.subarray(0, header)), size, `${size} bytes: the size from a ${header}-byte header`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const frame = execFileSync('zstd', ['-c', '-q'], { input: Buffer.from('pim '.repeat(40_000)) });
  assert.match(String(zstdFrameLength(frame.subarray(0, frame.length - 5))), /runs past its cluster/);
  assert.equal(zstdFrameLength(Buffer.from('not a frame')), 'no zstd frame');
});
