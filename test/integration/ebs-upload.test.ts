// The EBS-direct upload against the AWS stand-in, on small qcow2 images made here with qemu-img
// (no VM): what arrives must be the image's guest-visible bytes, whatever the qcow2 holds.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EBSClient } from '@aws-sdk/client-ebs';
import { uploadSnapshot } from '../../src/deploy/aws/ebs-upload.js';
import { BLOCK, FakeAws } from '../fixtures/aws/fake-aws.js';

process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] = 'true';
const dir = mkdtempSync(join(tmpdir(), 'pim-ebs-upload-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/**
 * A 64 MiB disk whose data starts and ends inside blocks, spans block boundaries, includes a block
 * of written zeros and a block that is only partly data: a raw file, then the qcow2 under test.
 */
function makeImage(name: string, qcow2Options: string[]): { image: string; raw: Buffer } {
  const raw = Buffer.alloc(64 * 1024 * 1024);
  const fill = (at: number, length: number, seed: number) => {
    for (let i = 0; i < length; i++) raw[at + i] = (seed + i * 7 + (i >> 9)) & 0xff || 1;
  };
  fill(0, 3 * BLOCK, 11); // three whole blocks
  fill(5 * BLOCK + 4096, 8192, 23); // a few KiB inside block 5
  fill(9 * BLOCK - 65536, 2 * 65536, 37); // straddles the 8/9 boundary
  fill(100 * BLOCK + 12345, 1000, 41); // unaligned, inside block 100
  fill(127 * BLOCK, BLOCK, 53); // the last block
  const rawPath = join(dir, `${name}.raw`);
  writeFileSync(rawPath, raw);
  const image = join(dir, `${name}.qcow2`);
  execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', ...qcow2Options, rawPath, image]);
  // Written zeros in block 20: allocated in the qcow2 (data), but all zero to a guest.
  execFileSync('qemu-io', ['-f', 'qcow2', '-c', `write -P 0 ${20 * BLOCK} ${BLOCK}`, image], { stdio: 'ignore' });
  rmSync(rawPath);
  return { image, raw };
}

async function upload(f: FakeAws, image: string, log: string[] = []) {
  const url = await f.start();
  const ebs = new EBSClient({ region: 'eu-central-1', endpoint: url, credentials: { accessKeyId: 'test', secretAccessKey: 'test' }, maxAttempts: 1 });
  try {
    return await uploadSnapshot(ebs, {
      image, clientToken: `t-${Date.now()}-${Math.random()}`, tags: [{ Key: 'PIM', Value: 'test' }], description: 'test', concurrency: 8,
      signal: new AbortController().signal, log: (l) => log.push(l), onStarted: () => undefined,
    });
  } finally {
    ebs.destroy();
    await f.stop();
  }
}

function reassemble(f: FakeAws, snapshotId: string, size: number): Buffer {
  const out = Buffer.alloc(size);
  for (const [index, block] of f.snapshots.get(snapshotId)!.blocks) block.copy(out, index * BLOCK);
  return out;
}

for (const [kind, options] of [['plain', []], ['zstd-compressed', ['-c', '-o', 'compression_type=zstd']]] as const) {
  test(`a ${kind} qcow2 arrives as its guest-visible bytes: only data blocks, no all-zero block, partial blocks zero-filled`, { timeout: 120_000 }, async () => {
    const { image, raw } = makeImage(kind, [...options]);
    const f = new FakeAws();
    const result = await upload(f, image);
    const snap = f.snapshots.get(result.snapshotId)!;
    assert.equal(snap.state, 'completed');
    assert.equal(result.volumeSizeGiB, 1);
    assert.deepEqual([...snap.blocks.keys()].sort((a, b) => a - b), [0, 1, 2, 5, 8, 9, 100, 127]);
    assert.equal(f.zeroBlocksReceived, 0);
    assert.ok(result.blocksSkipped >= 1, `the block of written zeros is skipped (skipped ${result.blocksSkipped})`);
    assert.ok(reassemble(f, result.snapshotId, raw.length).equals(raw), 'the snapshot reassembles the disk');
  });
}

test('the benchmark\'s digests-only endpoint checks blocks as the full one does, keeps the same digests, and refuses to read data back', { timeout: 120_000 }, async () => {
  const { image } = makeImage('digests', ['-c', '-o', 'compression_type=zstd']);
  const full = new FakeAws();
  const lean = new FakeAws({ digestsOnly: true });
  const a = await upload(full, image);
  const b = await upload(lean, image);
  const snapA = full.snapshots.get(a.snapshotId)!;
  const snapB = lean.snapshots.get(b.snapshotId)!;
  assert.equal(snapB.state, 'completed', 'CompleteSnapshot accepted the aggregate checksum of the digests');
  assert.deepEqual([...snapB.digests.keys()].sort((x, y) => x - y), [...snapA.digests.keys()].sort((x, y) => x - y));
  for (const [index, digest] of snapA.digests) assert.ok(snapB.digests.get(index)!.equals(digest), `block ${index}`);
  assert.throws(() => lean.snapshotBytes(b.snapshotId), /digestsOnly: it kept no block data/);
});

test('throttled on every third PutSnapshotBlock: the upload completes, the concurrency goes down, every retry counted', { timeout: 120_000 }, async () => {
  const { image, raw } = makeImage('throttle', []);
  const f = new FakeAws({ throttleEvery: 3 });
  const log: string[] = [];
  const result = await upload(f, image, log);
  assert.ok(f.throttled >= 3, `throttled ${f.throttled} times`);
  assert.equal(result.retries, f.throttled);
  assert.ok(reassemble(f, result.snapshotId, raw.length).equals(raw));
  assert.ok(log.some((l) => /^ebs:PutSnapshotBlock: RequestThrottledException \(throttled 1 of 20\); retrying in \d+ ms$/.test(l)), log.join('\n'));
  assert.ok(log.some((l) => /^throttled: concurrency went down to [1-4] of 8/.test(l)), log.join('\n'));
});

test('an image qemu-nbd cannot open fails with one line naming it, and no snapshot is started', { timeout: 60_000 }, async () => {
  const bad = join(dir, 'not-an-image.qcow2');
  writeFileSync(bad, 'this is not a qcow2\n');
  const f = new FakeAws();
  await assert.rejects(upload(f, bad), (err: Error) => err.message.includes(bad) && !err.message.includes('\n    at '));
  assert.equal(f.snapshots.size, 0);
  assert.ok(readFileSync(bad, 'utf8').startsWith('this is not'));
});
