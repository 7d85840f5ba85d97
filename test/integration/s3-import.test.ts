// `method: import` against the AWS stand-in: the image converted to a stream-optimized VMDK,
// uploaded to S3 in parts, imported with ImportSnapshot; resumed after an interruption.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { S3Client } from '@aws-sdk/client-s3';
import { EC2Client } from '@aws-sdk/client-ec2';
import { importSnapshot, type ImportOptions } from '../../src/deploy/aws/s3-import.js';
import { FakeAws } from '../fixtures/aws/fake-aws.js';

process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] = 'true';
const dir = mkdtempSync(join(tmpdir(), 'pim-s3-import-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** A 1 GiB disk with 12 MiB of incompressible data at its start and a little at 700 MiB. */
function makeImage(name: string): { image: string; raw: Buffer } {
  const rawPath = join(dir, `${name}.raw`);
  execFileSync('truncate', ['-s', '1G', rawPath]);
  const head = randomBytes(12 * 1024 * 1024);
  const tail = Buffer.from('PIM import test, far into the disk\n');
  writeFileSync(join(dir, `${name}.head`), head);
  execFileSync('dd', [`if=${join(dir, `${name}.head`)}`, `of=${rawPath}`, 'conv=notrunc', 'status=none']);
  writeFileSync(join(dir, `${name}.tail`), tail);
  execFileSync('dd', [`if=${join(dir, `${name}.tail`)}`, `of=${rawPath}`, 'bs=1M', 'seek=700', 'conv=notrunc', 'status=none']);
  const image = join(dir, `${name}.qcow2`);
  execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', rawPath, image]);
  const raw = Buffer.alloc(1024 ** 3);
  head.copy(raw, 0);
  tail.copy(raw, 700 * 1024 * 1024);
  rmSync(rawPath);
  return { image, raw };
}

function clients(url: string) {
  const config = { region: 'eu-central-1', endpoint: url, credentials: { accessKeyId: 'test', secretAccessKey: 'test' }, maxAttempts: 1 };
  return { s3: new S3Client({ ...config, forcePathStyle: true, requestChecksumCalculation: 'WHEN_REQUIRED' }), ec2: new EC2Client(config) };
}

function options(f: FakeAws, image: string, workDir: string, extra: Partial<ImportOptions> = {}): ImportOptions & { lines: string[] } {
  const { s3, ec2 } = clients(f.url);
  const lines: string[] = [];
  return {
    s3, ec2, image, bucket: 'pim-imports', key: 'pim/test.vmdk', role: 'vmimport', workDir, clientToken: `t-${Math.random()}`,
    tags: [{ Key: 'PIM', Value: 'test' }], description: 'test', timeoutS: 60, partSize: 5 * 1024 * 1024,
    signal: new AbortController().signal, log: (l) => lines.push(l), say: (l) => lines.push(l), onTask: () => undefined, lines, ...extra,
  };
}

test('import: the snapshot VM Import makes from the uploaded VMDK is the image guest-visible disk; the S3 object and the local VMDK are gone after', { timeout: 180_000 }, async () => {
  const { image, raw } = makeImage('whole');
  const f = new FakeAws();
  await f.start();
  try {
    const workDir = join(dir, 'work-whole');
    const o = options(f, image, workDir);
    const result = await importSnapshot(o);
    assert.ok(result.partsSent >= 3, `a 12 MiB VMDK in 5 MiB parts is 3 parts or more (sent ${result.partsSent})`);
    assert.ok(f.snapshotBytes(result.snapshotId).equals(raw), 'the imported snapshot holds the image disk');
    assert.equal(f.objects.size, 0, 'the S3 object is deleted once the snapshot exists');
    assert.ok(!existsSync(workDir), 'the converted VMDK is removed');
    assert.ok(f.calls.includes('ImportSnapshot'));
    // Tagged like the EBS path's snapshots (VM Import tags only its task).
    assert.deepEqual(f.snapshots.get(result.snapshotId)!.tags, [{ Key: 'PIM', Value: 'test' }]);
    assert.ok(f.calls.indexOf('CreateTags') > f.calls.indexOf('DescribeImportSnapshotTasks'));
  } finally {
    await f.stop();
  }
});

test('import where tagging is not allowed: the snapshot is made all the same, with a one-line warning naming ec2:CreateTags', { timeout: 180_000 }, async () => {
  const { image, raw } = makeImage('untagged');
  const f = new FakeAws({ denyEc2: ['CreateTags'] });
  await f.start();
  try {
    const o = options(f, image, join(dir, 'work-untagged'));
    const result = await importSnapshot(o);
    assert.ok(f.snapshotBytes(result.snapshotId).equals(raw));
    const warning = o.lines.find((l) => l.startsWith('warning: could not tag'));
    assert.ok(warning, o.lines.join('\n'));
    assert.match(warning, new RegExp(`could not tag the snapshot ${result.snapshotId} \\(.*ec2:CreateTags`));
    assert.doesNotMatch(warning, /Encoded authorization failure message/);
  } finally {
    await f.stop();
  }
});

test('import interrupted during the upload: the next run sends only the parts S3 does not have', { timeout: 180_000 }, async () => {
  const { image, raw } = makeImage('resume');
  const f = new FakeAws();
  await f.start();
  try {
    const workDir = join(dir, 'work-resume');
    const controller = new AbortController();
    const first = options(f, image, workDir, { signal: controller.signal, progress: (done) => done >= 5 * 1024 * 1024 && controller.abort() });
    await assert.rejects(importSnapshot(first));
    const partsBefore = f.partUploads;
    assert.ok(partsBefore >= 1 && existsSync(join(workDir, 'upload.json')), `interrupted after ${partsBefore} part(s), the upload state kept`);
    assert.equal(f.importTasks.size, 0, 'no import started');

    const second = options(f, image, workDir);
    const result = await importSnapshot(second);
    assert.ok(result.partsReused >= 1, `parts reused: ${result.partsReused}`);
    assert.ok(second.lines.some((l) => /^resuming the upload to s3:\/\/pim-imports\/pim\/test\.vmdk: \d+ of \d+ parts are there$/.test(l)), second.lines.join('\n'));
    assert.ok(f.snapshotBytes(result.snapshotId).equals(raw));
  } finally {
    await f.stop();
  }
});

test('import with a role VM Import cannot use: one line naming the role; a rerun with the right role uploads nothing again', { timeout: 180_000 }, async () => {
  const { image, raw } = makeImage('role');
  const f = new FakeAws();
  await f.start();
  try {
    const workDir = join(dir, 'work-role');
    await assert.rejects(importSnapshot(options(f, image, workDir, { role: 'no-such-role' })), (err: Error) => /ec2:ImportSnapshot/.test(err.message) && /no-such-role/.test(err.message) && !err.message.includes('\n'));
    const parts = f.partUploads;
    const again = options(f, image, workDir);
    const result = await importSnapshot(again);
    assert.equal(f.partUploads, parts, 'the complete object was not uploaded again');
    assert.equal(result.partsSent, 0);
    assert.ok(f.snapshotBytes(result.snapshotId).equals(raw));
  } finally {
    await f.stop();
  }
});

test('import into a bucket that does not exist, or without s3:PutObject: one line, exit-worthy, nothing imported', { timeout: 120_000 }, async () => {
  const { image } = makeImage('denied');
  for (const [fakeOptions, bucket, pattern] of [
    [{}, 'no-such-bucket', /NoSuchBucket/],
    [{ denyS3: true }, 'pim-imports', /s3:PutObject/],
  ] as const) {
    const f = new FakeAws(fakeOptions);
    await f.start();
    try {
      await assert.rejects(importSnapshot(options(f, image, join(dir, `work-denied-${bucket}`), { bucket })), (err: Error) => pattern.test(err.message) && !err.message.includes('\n'));
      assert.equal(f.importTasks.size, 0);
    } finally {
      await f.stop();
    }
  }
});

test('import after an interrupted upload of an image that has since been rebuilt: converted again, the stale upload dropped, the snapshot is the new image', { timeout: 180_000 }, async () => {
  const first = makeImage('rebuilt');
  const f = new FakeAws();
  await f.start();
  try {
    const workDir = join(dir, 'work-rebuilt');
    const controller = new AbortController();
    await assert.rejects(importSnapshot(options(f, first.image, workDir, { signal: controller.signal, progress: (done) => done >= 5 * 1024 * 1024 && controller.abort() })));
    const second = makeImage('rebuilt'); // the same path, other bytes
    const again = options(f, second.image, workDir);
    const result = await importSnapshot(again);
    assert.equal(result.partsReused, 0);
    assert.ok(f.calls.includes('AbortMultipartUpload'), f.calls.join(' '));
    assert.equal(f.uploads.size, 0, 'no multipart upload is left in the bucket');
    assert.ok(f.snapshotBytes(result.snapshotId).equals(second.raw));
  } finally {
    await f.stop();
  }
});
