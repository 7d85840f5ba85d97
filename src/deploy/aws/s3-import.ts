import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, openSync, readFileSync, readSync, closeSync, renameSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { AbortMultipartUploadCommand, CompleteMultipartUploadCommand, CreateMultipartUploadCommand, DeleteObjectCommand, HeadObjectCommand, ListPartsCommand, UploadPartCommand, type S3Client } from '@aws-sdk/client-s3';
import { CancelImportTaskCommand, CreateTagsCommand, DescribeImportSnapshotTasksCommand, ImportSnapshotCommand, type EC2Client } from '@aws-sdk/client-ec2';
import { WorkError, errorMessage } from '../../errors.js';
import { writeFileAtomic } from '../../files/atomic-write.js';
import { runChecked } from '../../process.js';
import { awsCall, withRetries, type RetryCounter } from './errors.js';
import { allOrStop } from './workers.js';

/** 64 MiB parts: S3's minimum is 5 MiB and its maximum 10,000 parts (640 GiB here). */
export const PART_SIZE = 64 * 1024 * 1024;
const PARTS_IN_FLIGHT = 4;

export interface ImportOptions {
  s3: S3Client;
  ec2: EC2Client;
  image: string;
  bucket: string;
  key: string;
  role: string;
  /** Where the disk converted for S3 and the state of its upload are kept until the import is done. */
  workDir: string;
  clientToken: string;
  tags: { Key: string; Value: string }[];
  description: string;
  timeoutS: number;
  /** Bytes per part (PART_SIZE unless a test asks for smaller ones; S3's minimum is 5 MiB). */
  partSize?: number;
  signal: AbortSignal;
  log: (line: string) => void;
  say: (line: string) => void;
  progress?: (done: number, total: number) => void;
  /** Called once ImportSnapshot answered: the task exists from then on (cleanup must know). */
  onTask(taskId: string): void;
  /** Called as soon as the task has made its snapshot (before anything else can fail). */
  onSnapshot?(snapshotId: string): void;
}

/** What is kept between runs, next to the converted disk: an interrupted upload resumes from it. */
interface UploadState {
  bucket: string;
  key: string;
  /** The image the VMDK was made from: another file, or the same path rebuilt, is converted again. */
  image: { path: string; size: number; mtimeMs: number };
  size: number;
  uploadId?: string;
  /** Set once the object is complete in S3: its ETag. */
  etag?: string;
}

/**
 * The classic path, for accounts that require it: the image converted to a stream-optimized
 * VMDK (compressed, the size of the data, not of the disk), uploaded to S3 in parts (resumable:
 * a run after an interruption uploads only the parts S3 does not have), then ImportSnapshot with
 * the `vmimport` role. Returns the snapshot id; the S3 object is deleted once the import is done.
 */
export async function importSnapshot(options: ImportOptions): Promise<{ snapshotId: string; retries: number; partsSent: number; partsReused: number }> {
  mkdirSync(options.workDir, { recursive: true });
  const disk = join(options.workDir, 'disk.vmdk');
  const stateFile = join(options.workDir, 'upload.json');
  const counter: RetryCounter = { retries: 0 };
  const source = statSync(options.image);
  const image = { path: options.image, size: source.size, mtimeMs: source.mtimeMs };
  let state = readState(stateFile);
  const same = state && existsSync(disk) && state.bucket === options.bucket && state.key === options.key && statSync(disk).size === state.size && JSON.stringify(state.image) === JSON.stringify(image);
  if (!state || !same) {
    // An upload of something else under this key is of no use: drop its parts (best effort).
    if (state?.uploadId) await dropUpload(options, state.bucket, state.key, state.uploadId);
    rmSync(disk, { force: true });
    options.say(`converting ${options.image} to a stream-optimized VMDK for S3`);
    const partial = `${disk}.partial`;
    await runChecked('qemu-img', ['convert', '-f', 'qcow2', '-O', 'vmdk', '-o', 'subformat=streamOptimized', options.image, partial], { log: options.log });
    renameSync(partial, disk);
    state = { bucket: options.bucket, key: options.key, image, size: statSync(disk).size };
    writeFileAtomic(stateFile, JSON.stringify(state));
  }
  const uploaded = await uploadObject(options, disk, state, stateFile, counter);

  const started = await withRetries(
    'ec2:ImportSnapshot',
    () =>
      options.ec2.send(
        new ImportSnapshotCommand({
          DiskContainer: { Format: 'VMDK', UserBucket: { S3Bucket: options.bucket, S3Key: options.key }, Description: options.description },
          RoleName: options.role,
          ClientToken: options.clientToken,
          Description: options.description,
          TagSpecifications: [{ ResourceType: 'import-snapshot-task', Tags: options.tags }],
        }),
        { abortSignal: options.signal },
      ),
    counter,
    options,
  );
  const taskId = started.ImportTaskId!;
  options.onTask(taskId);
  options.say(`import task ${taskId} started (role ${options.role}); waiting for its snapshot`);
  const snapshotId = await waitForImport(options, taskId, counter);
  options.onSnapshot?.(snapshotId);
  // VM Import tags its task, not the snapshot it makes: tagged here, as the EBS path's are.
  await withRetries('ec2:CreateTags', () => options.ec2.send(new CreateTagsCommand({ Resources: [snapshotId], Tags: options.tags }), { abortSignal: options.signal }), counter, options).then(
    () => options.log(`tagged ${snapshotId}`),
    (err: unknown) => {
      if (options.signal.aborted) throw err;
      options.say(`warning: could not tag the snapshot ${snapshotId} (${errorMessage(err)}); the AMI does not need its tags`);
    },
  );
  await awsCall('s3:DeleteObject', () => options.s3.send(new DeleteObjectCommand({ Bucket: options.bucket, Key: options.key }))).then(
    () => options.log(`deleted s3://${options.bucket}/${options.key}`),
    (err: unknown) => options.say(`warning: could not delete s3://${options.bucket}/${options.key} (${errorMessage(err)}); the snapshot does not need it`),
  );
  try {
    rmSync(options.workDir, { recursive: true, force: true });
  } catch (err) {
    options.say(`warning: could not remove ${options.workDir} (${errorMessage(err)})`);
  }
  return { snapshotId, retries: counter.retries, ...uploaded };
}

function readState(file: string): UploadState | undefined {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as UploadState;
  } catch {
    return undefined;
  }
}

function readPart(file: string, index: number, size: number, partSize: number): Buffer {
  const length = Math.min(partSize, size - index * partSize);
  const buffer = Buffer.allocUnsafe(length);
  const fd = openSync(file, 'r');
  try {
    let done = 0;
    while (done < length) done += readSync(fd, buffer, done, length - done, index * partSize + done);
  } finally {
    closeSync(fd);
  }
  return buffer;
}

async function uploadObject(options: ImportOptions, disk: string, state: UploadState, stateFile: string, counter: RetryCounter): Promise<{ partsSent: number; partsReused: number }> {
  const { s3, bucket, key } = options;
  // S3 takes at most 10,000 parts: a disk over 640 GiB gets larger ones.
  const partSize = Math.max(options.partSize ?? PART_SIZE, Math.ceil(state.size / 10_000));
  const partCount = Math.max(1, Math.ceil(state.size / partSize));
  if (state.etag) {
    // Uploaded by an earlier run whose import did not finish: is the object still there?
    if (await objectIs(options, state.etag, state.size, counter)) {
      options.say(`s3://${bucket}/${key} is uploaded already (an earlier run)`);
      return { partsSent: 0, partsReused: partCount };
    }
    state = { ...state, etag: undefined, uploadId: undefined };
  }
  const have = new Map<number, string>();
  if (state.uploadId) {
    const uploadId = state.uploadId;
    try {
      let marker: string | undefined;
      for (;;) {
        const listed = await withRetries('s3:ListMultipartUploadParts', () => s3.send(new ListPartsCommand({ Bucket: bucket, Key: key, UploadId: uploadId, PartNumberMarker: marker }), { abortSignal: options.signal }), counter, options);
        for (const p of listed.Parts ?? []) if (p.PartNumber && p.ETag) have.set(p.PartNumber, unquote(p.ETag));
        if (!listed.IsTruncated) break;
        marker = listed.NextPartNumberMarker;
      }
      options.say(`resuming the upload to s3://${bucket}/${key}: ${have.size} of ${partCount} parts are there`);
    } catch (err) {
      if (!/NoSuchUpload/.test(errorMessage(err))) throw err;
      // Completed by the earlier run just before it stopped, or expired: is the object whole?
      const etag = expectedEtag(disk, state.size, partSize);
      if (await objectIs(options, etag, state.size, counter)) {
        writeFileAtomic(stateFile, JSON.stringify({ ...state, uploadId: undefined, etag }));
        options.say(`s3://${bucket}/${key} is uploaded already (an earlier run)`);
        return { partsSent: 0, partsReused: partCount };
      }
      options.log(`the earlier upload ${uploadId} is gone (NoSuchUpload); starting again`);
      state = { ...state, uploadId: undefined };
      have.clear();
    }
  }
  if (!state.uploadId) {
    const created = await withRetries(
      's3:PutObject',
      () => s3.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key, ContentType: 'application/octet-stream' }), { abortSignal: options.signal }),
      counter,
      options,
    );
    state = { ...state, uploadId: created.UploadId! };
    writeFileAtomic(stateFile, JSON.stringify(state));
    options.say(`uploading ${(state.size / 1048576).toFixed(1)} MiB to s3://${bucket}/${key} in ${partCount} part(s)`);
  }
  const uploadId = state.uploadId!;
  const etags = new Map<number, string>();
  const md5s = new Map<number, Buffer>();
  // One failed part stops the others (they would go on sending after the deploy gave up).
  const stop = new AbortController();
  const signal = AbortSignal.any([options.signal, stop.signal]);
  let sent = 0;
  let reused = 0;
  let done = 0;
  let next = 1;
  const worker = async () => {
    while (next <= partCount) {
      if (signal.aborted) throw new WorkError('interrupted');
      const number = next++;
      const body = readPart(disk, number - 1, state.size, partSize);
      const md5 = createHash('md5').update(body).digest();
      md5s.set(number, md5);
      const etag = `"${md5.toString('hex')}"`;
      if (have.get(number) === unquote(etag)) {
        etags.set(number, etag);
        reused++;
      } else {
        const out = await withRetries(
          's3:PutObject',
          () => s3.send(new UploadPartCommand({ Bucket: bucket, Key: key, UploadId: uploadId, PartNumber: number, Body: body, ContentLength: body.length, ContentMD5: md5.toString('base64') }), { abortSignal: signal }),
          counter,
          { ...options, signal },
        );
        etags.set(number, out.ETag ?? etag);
        sent++;
      }
      done += body.length;
      options.progress?.(done, state.size);
    }
  };
  await allOrStop(Math.min(PARTS_IN_FLIGHT, partCount), worker, stop);
  const expected = multipartEtag([...md5s.keys()].sort((a, b) => a - b).map((n) => md5s.get(n)!));
  const completed = await withRetries(
    's3:PutObject',
    () =>
      s3.send(
        new CompleteMultipartUploadCommand({
          Bucket: bucket,
          Key: key,
          UploadId: uploadId,
          MultipartUpload: { Parts: [...etags.keys()].sort((a, b) => a - b).map((n) => ({ PartNumber: n, ETag: etags.get(n)! })) },
        }),
        { abortSignal: options.signal },
      ),
    counter,
    options,
  ).catch(async (err: unknown) => {
    // A retried Complete whose first answer was lost finds no upload: the object may be whole.
    if (/NoSuchUpload/.test(errorMessage(err)) && (await objectIs(options, expected, state.size, counter))) return { ETag: expected };
    throw err;
  });
  writeFileAtomic(stateFile, JSON.stringify({ ...state, uploadId: undefined, etag: completed.ETag ?? expected }));
  options.log(`uploaded s3://${bucket}/${key}: ${sent} part(s) sent, ${reused} already there`);
  return { partsSent: sent, partsReused: reused };
}

async function waitForImport(options: ImportOptions, taskId: string, counter: RetryCounter): Promise<string> {
  const started = Date.now();
  let delay = 1_000;
  let lastSaid = '';
  for (;;) {
    if (options.signal.aborted) throw new WorkError('interrupted');
    const out = await withRetries('ec2:DescribeImportSnapshotTasks', () => options.ec2.send(new DescribeImportSnapshotTasksCommand({ ImportTaskIds: [taskId] }), { abortSignal: options.signal }), counter, options);
    const detail = out.ImportSnapshotTasks?.[0]?.SnapshotTaskDetail;
    const status = detail?.Status ?? 'unknown';
    if (status === 'completed' && detail?.SnapshotId) return detail.SnapshotId;
    if (status === 'deleted' || status === 'deleting') {
      throw new WorkError(`the import task ${taskId} failed: ${detail?.StatusMessage ?? status} (is the role '${options.role}' set up for VM Import, and can it read s3://${options.bucket}?)`);
    }
    const said = `import ${taskId}: ${status}${detail?.Progress ? ` ${detail.Progress}%` : ''}${detail?.StatusMessage ? ` (${detail.StatusMessage})` : ''}`;
    if (said !== lastSaid) options.say(said);
    lastSaid = said;
    if (Date.now() - started > options.timeoutS * 1000) throw new WorkError(`the import task ${taskId} did not finish within ${options.timeoutS} s (the target's timeout)`);
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 15_000);
  }
}

function unquote(etag: string): string {
  return etag.replace(/^"|"$/g, '');
}

/** S3's ETag of a multipart object: the MD5 of the parts' MD5s (in part order), a dash, the number of parts. */
function multipartEtag(partMd5s: Buffer[]): string {
  const all = createHash('md5');
  for (const md5 of partMd5s) all.update(md5);
  return `"${all.digest('hex')}-${partMd5s.length}"`;
}

/** The multipart ETag of the disk uploaded in parts of `partSize`, read from the file. */
function expectedEtag(disk: string, size: number, partSize: number): string {
  const parts = Math.max(1, Math.ceil(size / partSize));
  return multipartEtag(Array.from({ length: parts }, (_, i) => createHash('md5').update(readPart(disk, i, size, partSize)).digest()));
}

/** Whether the object is in S3 with this ETag and size (a missing object is false; other errors throw). */
async function objectIs(options: ImportOptions, etag: string, size: number, counter: RetryCounter): Promise<boolean> {
  try {
    const head = await withRetries('s3:GetObject', () => options.s3.send(new HeadObjectCommand({ Bucket: options.bucket, Key: options.key }), { abortSignal: options.signal }), counter, options);
    return unquote(head.ETag ?? '') === unquote(etag) && head.ContentLength === size;
  } catch (err) {
    if (/NotFound|NoSuchKey|\b404\b/.test(`${(err as { name?: string }).name ?? ''} ${errorMessage(err)}`)) return false;
    throw err;
  }
}

/** Drops a multipart upload that will not be completed, so that S3 stops keeping its parts. */
async function dropUpload(options: ImportOptions, bucket: string, key: string, uploadId: string): Promise<void> {
  await awsCall('s3:AbortMultipartUpload', () => options.s3.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: uploadId }))).then(
    () => options.log(`dropped the earlier upload ${uploadId} of s3://${bucket}/${key}`),
    (err: unknown) => options.log(`could not drop the earlier upload ${uploadId} of s3://${bucket}/${key}: ${errorMessage(err)}`),
  );
}

/** Stops an import task that has not finished (a failed or interrupted deploy). */
export async function cancelImport(ec2: EC2Client, taskId: string): Promise<void> {
  await awsCall('ec2:CancelImportTask', () => ec2.send(new CancelImportTaskCommand({ ImportTaskId: taskId })));
}
