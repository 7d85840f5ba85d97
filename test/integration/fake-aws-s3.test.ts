// The AWS stand-in's S3 (multipart upload) and VM Import (ImportSnapshot) halves, driven through the
// real SDK clients: what PIM's S3 import path will meet must be what AWS answers, errors included.
process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] = 'true';
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  HeadObjectCommand,
  ListPartsCommand,
  S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { CancelImportTaskCommand, DescribeImportSnapshotTasksCommand, DescribeSnapshotsCommand, EC2Client, ImportSnapshotCommand } from '@aws-sdk/client-ec2';
import { BLOCK, FakeAws, MIN_PART } from '../fixtures/aws/fake-aws.js';

const dir = mkdtempSync(join(tmpdir(), 'pim-fake-aws-s3-'));
const credentials = { accessKeyId: 'test', secretAccessKey: 'test' };
const Bucket = 'pim-imports';
let f: FakeAws;
let s3: S3Client;
let ec2: EC2Client;

function s3Client(url: string): S3Client {
  return new S3Client({ forcePathStyle: true, endpoint: url, region: 'eu-central-1', credentials, requestChecksumCalculation: 'WHEN_REQUIRED', maxAttempts: 1 });
}

before(async () => {
  f = new FakeAws();
  const url = await f.start();
  s3 = s3Client(url);
  ec2 = new EC2Client({ endpoint: url, region: 'eu-central-1', credentials, maxAttempts: 1 });
});

after(async () => {
  s3.destroy();
  ec2.destroy();
  await f.stop();
  rmSync(dir, { recursive: true, force: true });
});

const md5 = (data: Buffer) => createHash('md5').update(data).digest();

function pattern(length: number, seed: number): Buffer {
  const b = Buffer.alloc(length);
  for (let i = 0; i < length; i++) b[i] = (seed + i * 31 + (i >> 11)) & 0xff;
  return b;
}

async function uploadParts(Key: string, parts: Buffer[]): Promise<{ UploadId: string; etags: string[] }> {
  const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket, Key, ContentType: 'application/octet-stream' }));
  const etags: string[] = [];
  for (const [i, Body] of parts.entries()) {
    const out = await s3.send(new UploadPartCommand({ Bucket, Key, UploadId, PartNumber: i + 1, Body, ContentLength: Body.length, ContentMD5: md5(Body).toString('base64') }));
    etags.push(out.ETag!);
  }
  return { UploadId: UploadId!, etags };
}

async function complete(Key: string, UploadId: string, etags: string[]) {
  return s3.send(new CompleteMultipartUploadCommand({ Bucket, Key, UploadId, MultipartUpload: { Parts: etags.map((ETag, i) => ({ PartNumber: i + 1, ETag })) } }));
}

async function putObject(Key: string, data: Buffer): Promise<void> {
  const { UploadId, etags } = await uploadParts(Key, [data]);
  await complete(Key, UploadId, etags);
}

test('a multipart upload of a 5 MiB part and a small one, with Content-MD5, completes into the concatenation; ListParts lists the parts', async () => {
  const parts = [pattern(MIN_PART, 1), pattern(12345, 2)];
  const Key = 'images/a b/disk.vmdk';
  const before = f.partUploads;
  const { UploadId, etags } = await uploadParts(Key, parts);
  assert.equal(f.partUploads - before, 2);
  assert.deepEqual(etags, parts.map((p) => `"${md5(p).toString('hex')}"`));

  const listed = await s3.send(new ListPartsCommand({ Bucket, Key, UploadId }));
  assert.equal(listed.IsTruncated, false);
  assert.deepEqual(listed.Parts?.map((p) => [p.PartNumber, p.ETag, p.Size]), [[1, etags[0], MIN_PART], [2, etags[1], 12345]]);
  assert.ok(listed.Parts?.every((p) => p.LastModified instanceof Date));
  const page = await s3.send(new ListPartsCommand({ Bucket, Key, UploadId, MaxParts: 1 }));
  assert.equal(page.IsTruncated, true);
  assert.deepEqual(page.Parts?.map((p) => p.PartNumber), [1]);
  const rest = await s3.send(new ListPartsCommand({ Bucket, Key, UploadId, PartNumberMarker: page.NextPartNumberMarker }));
  assert.deepEqual(rest.Parts?.map((p) => p.PartNumber), [2]);

  const done = await complete(Key, UploadId, etags);
  const expectedEtag = `"${createHash('md5').update(Buffer.concat(parts.map(md5))).digest('hex')}-2"`;
  assert.equal(done.ETag, expectedEtag);
  assert.equal(done.Key, Key);
  assert.equal(done.Bucket, Bucket);
  assert.ok(f.objects.get(`${Bucket}/${Key}`)!.equals(Buffer.concat(parts)), 'the object is the parts, in order');
  assert.equal(f.uploads.has(UploadId), false);

  const head = await s3.send(new HeadObjectCommand({ Bucket, Key }));
  assert.equal(head.ContentLength, MIN_PART + 12345);
  assert.equal(head.ETag, expectedEtag);
  await assert.rejects(s3.send(new ListPartsCommand({ Bucket, Key, UploadId })), (err: Error) => err.name === 'NoSuchUpload');

  await s3.send(new DeleteObjectCommand({ Bucket, Key }));
  await s3.send(new DeleteObjectCommand({ Bucket, Key })); // absent: still 204, as S3 answers
  await assert.rejects(s3.send(new HeadObjectCommand({ Bucket, Key })), (err: Error & { $metadata?: { httpStatusCode?: number } }) => err.name === 'NotFound' && err.$metadata?.httpStatusCode === 404);
});

test('a part whose Content-MD5 is not its MD5 is refused with BadDigest and not stored; a malformed one with InvalidDigest', async () => {
  const Key = 'bad-digest';
  const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket, Key }));
  const Body = pattern(1000, 3);
  await assert.rejects(
    s3.send(new UploadPartCommand({ Bucket, Key, UploadId, PartNumber: 1, Body, ContentMD5: md5(Buffer.from('other')).toString('base64') })),
    (err: Error & { $metadata?: { httpStatusCode?: number } }) => err.name === 'BadDigest' && err.message === 'The Content-MD5 you specified did not match what we received.' && err.$metadata?.httpStatusCode === 400,
  );
  await assert.rejects(s3.send(new UploadPartCommand({ Bucket, Key, UploadId, PartNumber: 1, Body, ContentMD5: 'not-md5' })), (err: Error) => err.name === 'InvalidDigest');
  await assert.rejects(s3.send(new UploadPartCommand({ Bucket, Key, UploadId, PartNumber: 10001, Body })), (err: Error) => err.name === 'InvalidArgument');
  assert.equal(f.uploads.get(UploadId!)!.parts.size, 0);
  await s3.send(new AbortMultipartUploadCommand({ Bucket, Key, UploadId }));
  await assert.rejects(s3.send(new UploadPartCommand({ Bucket, Key, UploadId, PartNumber: 1, Body })), (err: Error) => err.name === 'NoSuchUpload');
  await assert.rejects(s3.send(new AbortMultipartUploadCommand({ Bucket, Key, UploadId })), (err: Error) => err.name === 'NoSuchUpload');
});

test('completing with a part under 5 MiB that is not the last is EntityTooSmall; parts out of order InvalidPartOrder; a wrong ETag InvalidPart', async () => {
  const Key = 'too-small';
  const parts = [pattern(1024, 4), pattern(1024, 5)];
  const { UploadId, etags } = await uploadParts(Key, parts);
  await assert.rejects(complete(Key, UploadId, etags), (err: Error) => err.name === 'EntityTooSmall');
  await assert.rejects(
    s3.send(new CompleteMultipartUploadCommand({ Bucket, Key, UploadId, MultipartUpload: { Parts: [{ PartNumber: 2, ETag: etags[1] }, { PartNumber: 1, ETag: etags[0] }] } })),
    (err: Error) => err.name === 'InvalidPartOrder',
  );
  await assert.rejects(
    s3.send(new CompleteMultipartUploadCommand({ Bucket, Key, UploadId, MultipartUpload: { Parts: [{ PartNumber: 1, ETag: '"0123456789abcdef0123456789abcdef"' }] } })),
    (err: Error) => err.name === 'InvalidPart',
  );
  assert.equal(f.objects.has(`${Bucket}/${Key}`), false);
  // The last part alone may be small: listing only part 1 completes (part 2 is dropped, as S3 does).
  await s3.send(new CompleteMultipartUploadCommand({ Bucket, Key, UploadId, MultipartUpload: { Parts: [{ PartNumber: 1, ETag: etags[0] }] } }));
  assert.ok(f.objects.get(`${Bucket}/${Key}`)!.equals(parts[0]!));
});

test('a bucket that does not exist is NoSuchBucket; with denyS3 every call is AccessDenied', async () => {
  await assert.rejects(
    s3.send(new CreateMultipartUploadCommand({ Bucket: 'no-such-bucket', Key: 'k' })),
    (err: Error & { $metadata?: { httpStatusCode?: number } }) => err.name === 'NoSuchBucket' && err.message === 'The specified bucket does not exist' && err.$metadata?.httpStatusCode === 404,
  );
  const denied = new FakeAws({ denyS3: true });
  const client = s3Client(await denied.start());
  try {
    await assert.rejects(client.send(new CreateMultipartUploadCommand({ Bucket, Key: 'k' })), (err: Error) => err.name === 'AccessDenied' && err.message === 'Access Denied');
  } finally {
    client.destroy();
    await denied.stop();
  }
});

/** A 12 MiB disk with data inside blocks, across a block boundary and at its very end: raw bytes, and a stream-optimized VMDK of them. */
function makeDisk(name: string, subformat: string): { vmdk: Buffer; raw: Buffer } {
  const rawPath = join(dir, `${name}.raw`);
  execFileSync('qemu-img', ['create', '-q', '-f', 'raw', rawPath, '12M']);
  const fd = openSync(rawPath, 'r+');
  for (const [at, length, seed] of [[0, 4096, 7], [3 * BLOCK + 100, 20000, 9], [8 * BLOCK - 3000, 6000, 11], [12 * 1024 * 1024 - 512, 512, 13]] as const) {
    writeSync(fd, pattern(length, seed), 0, length, at);
  }
  closeSync(fd);
  const vmdkPath = join(dir, `${name}.vmdk`);
  execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'vmdk', '-o', `subformat=${subformat}`, rawPath, vmdkPath]);
  return { vmdk: readFileSync(vmdkPath), raw: readFileSync(rawPath) };
}

async function pollTask(ImportTaskId: string, until: (status: string) => boolean): Promise<{ statuses: string[]; detail: NonNullable<Awaited<ReturnType<typeof describe>>> }> {
  const statuses: string[] = [];
  for (let i = 0; i < 200; i++) {
    const detail = await describe(ImportTaskId);
    statuses.push(detail!.Status!);
    if (until(detail!.Status!)) return { statuses, detail: detail! };
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`task ${ImportTaskId} stayed ${statuses.at(-1)}`);
}

async function describe(ImportTaskId: string) {
  const out = await ec2.send(new DescribeImportSnapshotTasksCommand({ ImportTaskIds: [ImportTaskId] }));
  assert.equal(out.ImportSnapshotTasks?.length, 1);
  assert.equal(out.ImportSnapshotTasks![0]!.ImportTaskId, ImportTaskId);
  return out.ImportSnapshotTasks![0]!.SnapshotTaskDetail;
}

test('ImportSnapshot of a stream-optimized VMDK in S3 completes after a few polls into a snapshot holding the disk', { timeout: 60_000 }, async () => {
  const { vmdk, raw } = makeDisk('import', 'streamOptimized');
  const Key = 'pim/import.vmdk';
  await putObject(Key, vmdk);
  const started = await ec2.send(
    new ImportSnapshotCommand({
      DiskContainer: { Format: 'vmdk', UserBucket: { S3Bucket: Bucket, S3Key: Key }, Description: 'the disk' },
      RoleName: 'vmimport',
      ClientToken: 'token-1',
      Description: 'pim import',
      TagSpecifications: [{ ResourceType: 'import-snapshot-task', Tags: [{ Key: 'Name', Value: 'pim' }] }],
    }),
  );
  assert.match(started.ImportTaskId!, /^import-snap-[0-9a-f]{17}$/);
  assert.equal(started.Description, 'pim import');
  assert.equal(started.SnapshotTaskDetail?.Status, 'active');
  assert.equal(started.SnapshotTaskDetail?.StatusMessage, 'pending');
  assert.equal(started.SnapshotTaskDetail?.Format, 'VMDK');
  assert.deepEqual(started.SnapshotTaskDetail?.UserBucket, { S3Bucket: Bucket, S3Key: Key });
  assert.deepEqual(started.Tags, [{ Key: 'Name', Value: 'pim' }]);
  // The same client token answers the same task.
  const again = await ec2.send(new ImportSnapshotCommand({ DiskContainer: { Format: 'VMDK', UserBucket: { S3Bucket: Bucket, S3Key: Key } }, ClientToken: 'token-1' }));
  assert.equal(again.ImportTaskId, started.ImportTaskId);

  const { statuses, detail } = await pollTask(started.ImportTaskId!, (s) => s !== 'active');
  assert.equal(detail.Status, 'completed', `statuses: ${statuses.join(' ')}; ${detail.StatusMessage}`);
  assert.ok(statuses.filter((s) => s === 'active').length >= 2, `active for a couple of polls first: ${statuses.join(' ')}`);
  assert.equal(detail.DiskImageSize, vmdk.length);
  const snapshotId = detail.SnapshotId!;
  const snap = f.snapshots.get(snapshotId)!;
  assert.equal(snap.state, 'completed');
  assert.equal(snap.volumeSize, 1);
  assert.deepEqual([...snap.blocks.keys()].sort((a, b) => a - b), [0, 3, 7, 8, 23], 'only the blocks holding data');
  const bytes = f.snapshotBytes(snapshotId);
  assert.ok(bytes.subarray(0, raw.length).equals(raw), 'the snapshot holds the disk');
  const described = await ec2.send(new DescribeSnapshotsCommand({ SnapshotIds: [snapshotId] }));
  assert.equal(described.Snapshots?.[0]?.State, 'completed');
  assert.equal((await describe(started.ImportTaskId!))?.Status, 'completed');
  await assert.rejects(ec2.send(new CancelImportTaskCommand({ ImportTaskId: started.ImportTaskId })), (err: Error) => err.name === 'IncorrectState');
});

test('a VMDK that is not stream-optimized ends deleted with the validation failure AWS reports, and makes no snapshot', { timeout: 60_000 }, async () => {
  const { vmdk } = makeDisk('sparse', 'monolithicSparse');
  const Key = 'pim/sparse.vmdk';
  await putObject(Key, vmdk);
  const snapshots = f.snapshots.size;
  const started = await ec2.send(new ImportSnapshotCommand({ DiskContainer: { Format: 'VMDK', UserBucket: { S3Bucket: Bucket, S3Key: Key } } }));
  const { detail } = await pollTask(started.ImportTaskId!, (s) => s !== 'active');
  assert.equal(detail.Status, 'deleted');
  assert.equal(detail.StatusMessage, 'ClientError: Disk validation failed [Unsupported VMDK File Format]');
  assert.equal(detail.SnapshotId, undefined);
  assert.equal(f.snapshots.size, snapshots);
});

test('ImportSnapshot with a role that is not there, or an object that is not there, is InvalidParameter', async () => {
  await putObject('pim/role.vmdk', makeDisk('role', 'streamOptimized').vmdk);
  await assert.rejects(
    ec2.send(new ImportSnapshotCommand({ DiskContainer: { Format: 'VMDK', UserBucket: { S3Bucket: Bucket, S3Key: 'pim/role.vmdk' } }, RoleName: 'no-such-role' })),
    (err: Error) => err.name === 'InvalidParameter' && err.message === 'The service role no-such-role provided does not exist or does not have sufficient permissions',
  );
  await assert.rejects(
    ec2.send(new ImportSnapshotCommand({ DiskContainer: { Format: 'VMDK', UserBucket: { S3Bucket: Bucket, S3Key: 'pim/absent.vmdk' } } })),
    (err: Error) => err.name === 'InvalidParameter' && err.message === `User does not have access to the S3 object (${Bucket}/pim/absent.vmdk).`,
  );
  await assert.rejects(
    ec2.send(new DescribeImportSnapshotTasksCommand({ ImportTaskIds: ['import-snap-0123456789abcdef0'] })),
    (err: Error) => err.name === 'InvalidConversionTaskId',
  );
});

test('CancelImportTask: the task goes deleting, then deleted, and no snapshot appears', { timeout: 60_000 }, async () => {
  const Key = 'pim/cancel.vmdk';
  await putObject(Key, makeDisk('cancel', 'streamOptimized').vmdk);
  const snapshots = f.snapshots.size;
  const started = await ec2.send(new ImportSnapshotCommand({ DiskContainer: { Format: 'VMDK', UserBucket: { S3Bucket: Bucket, S3Key: Key } } }));
  const cancelled = await ec2.send(new CancelImportTaskCommand({ ImportTaskId: started.ImportTaskId }));
  assert.deepEqual([cancelled.ImportTaskId, cancelled.PreviousState, cancelled.State], [started.ImportTaskId, 'active', 'deleting']);
  const { statuses, detail } = await pollTask(started.ImportTaskId!, (s) => s === 'deleted');
  assert.deepEqual(statuses, ['deleting', 'deleted']);
  assert.equal(detail.SnapshotId, undefined);
  await f.importTasks.get(started.ImportTaskId!)!.converted;
  assert.equal((await describe(started.ImportTaskId!))?.Status, 'deleted');
  assert.equal(f.snapshots.size, snapshots);
  assert.ok(f.calls.includes('CancelImportTask'));
});
