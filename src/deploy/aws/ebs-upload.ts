import { createHash } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { CompleteSnapshotCommand, PutSnapshotBlockCommand, StartSnapshotCommand, type EBSClient } from '@aws-sdk/client-ebs';
import { WorkError } from '../../errors.js';
import { ImageReader, dataExtents, type DataExtent } from '../../qemu/image-reader.js';
import { Qcow2Reader, type DiskReader } from '../../qemu/qcow2-reader.js';
import { awsCall, withRetries, type RetryCounter } from './errors.js';
import { allOrStop } from './workers.js';

export const EBS_BLOCK_SIZE = 524288;

/** The blocks (by index) that overlap data, each with the data ranges inside it. */
export function blocksOfExtents(extents: DataExtent[], blockSize = EBS_BLOCK_SIZE): Map<number, DataExtent[]> {
  const blocks = new Map<number, DataExtent[]>();
  for (const e of extents) {
    for (let index = Math.floor(e.start / blockSize); index * blockSize < e.start + e.length; index++) {
      const from = Math.max(e.start, index * blockSize);
      const to = Math.min(e.start + e.length, (index + 1) * blockSize);
      if (!blocks.has(index)) blocks.set(index, []);
      blocks.get(index)!.push({ start: from, length: to - from });
    }
  }
  return blocks;
}

export interface UploadOptions {
  image: string;
  volumeSizeGiB?: number;
  clientToken: string;
  tags: { Key: string; Value: string }[];
  description: string;
  concurrency: number;
  signal: AbortSignal;
  log: (line: string) => void;
  /** Called once StartSnapshot answered: the snapshot exists from then on (cleanup must know). */
  onStarted(snapshotId: string): void;
  progress?: (done: number, total: number) => void;
}

export interface UploadResult {
  snapshotId: string;
  blocksSent: number;
  blocksSkipped: number;
  /** Bytes of data read from the image (the data extents, not the virtual size). */
  bytesRead: number;
  retries: number;
  volumeSizeGiB: number;
}

/**
 * Uploads the image's guest-visible disk as an EBS snapshot through the EBS direct APIs: only
 * the blocks that overlap data are read, blocks that are all zero are not sent, each block goes
 * with its SHA-256, a bounded number at a time, retried with back-off on throttling and 5xx.
 */
export async function uploadSnapshot(ebs: EBSClient, options: UploadOptions): Promise<UploadResult> {
  const { extents, virtualSize } = await dataExtents(options.image, options.log);
  const volumeSizeGiB = options.volumeSizeGiB ?? Math.ceil(virtualSize / 1024 ** 3);
  const blocks = blocksOfExtents(extents);
  const dataBytes = extents.reduce((sum, e) => sum + e.length, 0);
  options.log(`image: ${virtualSize} bytes virtual, ${dataBytes} bytes of data in ${extents.length} extents, ${blocks.size} blocks of ${EBS_BLOCK_SIZE} to read`);
  const counter: RetryCounter = { retries: 0 };
  // The image is opened before the snapshot is started: an unreadable image costs no snapshot.
  // The blocks are read in index order: PIM reads the qcow2 itself where it can (its compressed
  // clusters streamed through zstd in that order), else qemu-nbd serves it.
  const indices = [...blocks.keys()].sort((a, b) => a - b);
  const reader: DiskReader =
    (await Qcow2Reader.open(options.image, indices.flatMap((i) => blocks.get(i)!), options.log)) ?? (await ImageReader.open(options.image, 'qcow2', options.log));
  const digests = new Map<number, Buffer>();
  const limit = new AdaptiveLimit(Math.max(1, options.concurrency));
  const free: Buffer[] = [];
  // One failed block stops the others (they would go on sending after the deploy gave up).
  const stop = new AbortController();
  const signal = AbortSignal.any([options.signal, stop.signal]);
  // Every request in flight listens on the one signal.
  setMaxListeners(options.concurrency + 16, signal);
  let snapshotId = '';
  let skipped = 0;
  let done = 0;
  try {
    const started = await withRetries(
      'ebs:StartSnapshot',
      () =>
        ebs.send(
          new StartSnapshotCommand({ VolumeSize: volumeSizeGiB, ClientToken: options.clientToken, Tags: options.tags, Description: options.description, Timeout: 60 }),
          { abortSignal: options.signal },
        ),
      counter,
      options,
    );
    snapshotId = started.SnapshotId!;
    options.onStarted(snapshotId);
    if (started.BlockSize !== undefined && started.BlockSize !== EBS_BLOCK_SIZE) {
      throw new WorkError(`EBS answered a block size of ${started.BlockSize}; PIM writes ${EBS_BLOCK_SIZE}-byte blocks`);
    }
    options.log(`started snapshot ${snapshotId} (${volumeSizeGiB} GiB)`);

    let next = 0;
    const worker = async () => {
      while (next < indices.length) {
        await limit.acquire();
        try {
          if (next >= indices.length) break;
          await sendBlock(indices[next++]!);
        } finally {
          limit.release();
        }
      }
    };
    const sendBlock = async (index: number) => {
      if (signal.aborted) throw new WorkError('interrupted');
      const ranges = blocks.get(index)!;
      // Block buffers are reused once their request is done: 1 GiB of data is not 2000 buffers
      // for the garbage collector.
      const block = free.pop() ?? Buffer.allocUnsafe(EBS_BLOCK_SIZE);
      try {
        await putBlock(index, ranges, block);
      } finally {
        free.push(block);
      }
    };
    const putBlock = async (index: number, ranges: DataExtent[], block: Buffer) => {
      if (ranges.length === 1 && ranges[0]!.length === EBS_BLOCK_SIZE) {
        // The whole block is data (the common case): read straight into the block.
        await reader.read(ranges[0]!.start, EBS_BLOCK_SIZE, block);
        done += EBS_BLOCK_SIZE;
      } else {
        block.fill(0);
        // Settled, not raced: no read may still be writing into the block once it is back in the pool.
        const reads = await Promise.allSettled(ranges.map((range) => reader.read(range.start, range.length, block.subarray(range.start - index * EBS_BLOCK_SIZE))));
        const failed = reads.find((r): r is PromiseRejectedResult => r.status === 'rejected');
        if (failed) throw failed.reason;
        for (const range of ranges) done += range.length;
      }
      options.progress?.(done, dataBytes);
      if (isZero(block)) {
        skipped++;
        return;
      }
      // Hashed here, not on the thread pool (WebCrypto's digest copies the block first): the
      // upload is bound by the CPU of all the processes together, not by this thread.
      const digest = createHash('sha256').update(block).digest();
      await withRetries(
        'ebs:PutSnapshotBlock',
        () =>
          ebs.send(
            withPayloadDigest(new PutSnapshotBlockCommand({
              SnapshotId: snapshotId,
              BlockIndex: index,
              BlockData: block,
              DataLength: EBS_BLOCK_SIZE,
              Checksum: digest.toString('base64'),
              ChecksumAlgorithm: 'SHA256',
              Progress: Math.min(100, Math.floor((100 * done) / Math.max(1, dataBytes))),
            }), digest),
            { abortSignal: signal },
          ),
        counter,
        { ...options, signal, onThrottled: () => limit.throttled() },
      );
      limit.succeeded();
      digests.set(index, digest);
    };
    await allOrStop(Math.min(options.concurrency, Math.max(1, indices.length)), worker, stop);
  } finally {
    await reader.close();
  }
  if (limit.lowest < limit.max) options.log(`throttled: concurrency went down to ${limit.lowest} of ${limit.max} (${limit.limit} at the end)`);
  // LINEAR aggregation: SHA-256 over the raw digests of the written blocks, in block order.
  const aggregate = createHash('sha256');
  for (const index of [...digests.keys()].sort((a, b) => a - b)) aggregate.update(digests.get(index)!);
  await withRetries(
    'ebs:CompleteSnapshot',
    () =>
      ebs.send(
        new CompleteSnapshotCommand({
          SnapshotId: snapshotId,
          ChangedBlocksCount: digests.size,
          Checksum: aggregate.digest('base64'),
          ChecksumAlgorithm: 'SHA256',
          ChecksumAggregationMethod: 'LINEAR',
        }),
        { abortSignal: options.signal },
      ),
    counter,
    options,
  );
  options.log(`completed snapshot ${snapshotId}: ${digests.size} blocks sent, ${skipped} all-zero blocks skipped, ${reader.bytesRead} bytes read, ${counter.retries} retries`);
  return { snapshotId, blocksSent: digests.size, blocksSkipped: skipped, bytesRead: reader.bytesRead, retries: counter.retries, volumeSizeGiB };
}

/**
 * How many blocks may be in flight: halved when EBS throttles (at most once a second, so that
 * one burst of refusals counts once), grown by one after as many successes as the current limit,
 * up to the configured concurrency.
 */
export class AdaptiveLimit {
  limit: number;
  lowest: number;
  private active = 0;
  private successes = 0;
  private lastCut = 0;
  private waiting: (() => void)[] = [];

  constructor(readonly max: number) {
    this.limit = max;
    this.lowest = max;
  }

  async acquire(): Promise<void> {
    while (this.active >= this.limit) await new Promise<void>((resolve) => this.waiting.push(resolve));
    this.active++;
  }

  release(): void {
    this.active--;
    this.wake();
  }

  throttled(now = Date.now()): void {
    if (now - this.lastCut < 1_000) return;
    this.lastCut = now;
    this.limit = Math.max(1, Math.floor(this.limit / 2));
    this.lowest = Math.min(this.lowest, this.limit);
    this.successes = 0;
  }

  succeeded(): void {
    if (this.limit >= this.max || ++this.successes < this.limit) return;
    this.limit++;
    this.successes = 0;
    this.wake();
  }

  private wake(): void {
    for (let free = this.limit - this.active; free > 0 && this.waiting.length; free--) this.waiting.shift()!();
  }
}

const ZERO_BLOCK = Buffer.alloc(EBS_BLOCK_SIZE);

function isZero(block: Buffer): boolean {
  return block.equals(ZERO_BLOCK);
}

/**
 * The block's SHA-256 is already known (it goes with the block as its checksum): give it to the
 * SigV4 signer as the payload hash (x-amz-content-sha256), which it would otherwise compute again
 * over every block.
 */
function withPayloadDigest(command: PutSnapshotBlockCommand, digest: Buffer): PutSnapshotBlockCommand {
  command.middlewareStack.add(
    (next) => async (args) => {
      const request = args.request as { headers?: Record<string, string> };
      if (request.headers) request.headers['x-amz-content-sha256'] = digest.toString('hex');
      return next(args);
    },
    { step: 'build', name: 'pimPayloadDigest' },
  );
  return command;
}

export { awsCall };
