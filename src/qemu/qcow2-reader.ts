import type { ChildProcess } from 'node:child_process';
import { closeSync, constants, mkdtempSync, openSync, readSync, rmSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { Socket, type OnReadOpts, type SocketConstructorOpts } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WorkError, errorMessage } from '../errors.js';
import { runChecked, spawnManaged, which, withPipeSize, type LogFn } from '../process.js';
import type { DataExtent } from './image-reader.js';

/** A read waiting for a compressed cluster; `target`: where the whole cluster goes, if it wants all of it. */
interface Waiter {
  target?: Buffer;
  resolve: (b: Buffer) => void;
  reject: (e: Error) => void;
}

/** What the EBS upload reads an image through: this reader or qemu-nbd's. */
export interface DiskReader {
  read(offset: number, length: number, into?: Buffer): Promise<Buffer>;
  /** Bytes of the guest-visible disk read so far. */
  bytesRead: number;
  close(): Promise<void>;
}

const QCOW2_MAGIC = 0x514649fb;
/** Incompatible feature bit 3: the header names the compression type. Any other bit: not for us. */
const INCOMPAT_COMPRESSION_TYPE = 1n << 3n;
const COMPRESSION_ZSTD = 1;
const ZSTD_MAGIC = 0xfd2fb528;

const enum Kind {
  Zero = 0,
  Data = 1,
  Compressed = 2,
}

/** Where each guest cluster's bytes are: nowhere (zeros), at a host offset, or compressed there. */
export interface Qcow2Map {
  clusterSize: number;
  virtualSize: number;
  kind: Uint8Array;
  host: Float64Array;
  /** For compressed clusters: the most bytes their compressed data may span (from the L2 entry). */
  csize: Uint32Array;
}

/**
 * Reads the header and the L1/L2 tables of a qcow2 image PIM can read itself: version 2 or 3, no
 * backing file, no encryption, no external data file, no extended L2 entries, no snapshots in
 * use, compressed clusters (if any) in zstd. Anything else: the reason, and qemu-nbd reads it.
 */
export function readQcow2Map(image: string): Qcow2Map | string {
  const fd = openSync(image, 'r');
  try {
    const header = Buffer.alloc(112);
    readSync(fd, header, 0, header.length, 0);
    if (header.readUInt32BE(0) !== QCOW2_MAGIC) return 'not a qcow2 image';
    const version = header.readUInt32BE(4);
    if (version !== 2 && version !== 3) return `qcow2 version ${version}`;
    if (header.readBigUInt64BE(8) !== 0n) return 'it has a backing file';
    const clusterBits = header.readUInt32BE(20);
    if (clusterBits < 9 || clusterBits > 21) return `cluster bits ${clusterBits}`;
    const virtualSize = Number(header.readBigUInt64BE(24));
    if (header.readUInt32BE(32) !== 0) return 'it is encrypted';
    const l1Size = header.readUInt32BE(36);
    const l1Offset = Number(header.readBigUInt64BE(40));
    let compression = 0;
    if (version === 3) {
      const incompatible = header.readBigUInt64BE(72);
      if (incompatible & ~INCOMPAT_COMPRESSION_TYPE) return `incompatible features 0x${incompatible.toString(16)}`;
      if (incompatible & INCOMPAT_COMPRESSION_TYPE) {
        if (header.readUInt32BE(100) <= 104) return 'a compression type flag without the field';
        compression = header.readUInt8(104);
      }
    }
    const clusterSize = 2 ** clusterBits;
    const clusters = Math.ceil(virtualSize / clusterSize);
    const l2Entries = clusterSize / 8;
    const map: Qcow2Map = { clusterSize, virtualSize, kind: new Uint8Array(clusters), host: new Float64Array(clusters), csize: new Uint32Array(clusters) };
    // Compressed entries: the host offset in bits 0..s-1, then the count of extra 512-byte sectors.
    const shift = 62 - (clusterBits - 8);
    const offsetHighMask = 2 ** (shift - 32) - 1;
    const sectorsMask = 2 ** (clusterBits - 8) - 1;
    const l1 = Buffer.alloc(l1Size * 8);
    readSync(fd, l1, 0, l1.length, l1Offset);
    const l2 = Buffer.alloc(clusterSize);
    for (let i = 0; i < l1Size && i * l2Entries < clusters; i++) {
      const l2Offset = (l1.readUInt32BE(i * 8) & 0x00ffffff) * 2 ** 32 + (l1.readUInt32BE(i * 8 + 4) & 0xfffffe00);
      if (l2Offset === 0) continue;
      readSync(fd, l2, 0, clusterSize, l2Offset);
      for (let j = 0; j < l2Entries; j++) {
        const c = i * l2Entries + j;
        if (c >= clusters) break;
        const hi = l2.readUInt32BE(j * 8);
        const lo = l2.readUInt32BE(j * 8 + 4);
        if (hi & 0x40000000) {
          if (compression !== COMPRESSION_ZSTD) return compression === 0 ? 'zlib-compressed clusters' : `compression type ${compression}`;
          const host = (hi & offsetHighMask) * 2 ** 32 + lo;
          const sectors = ((hi >>> (shift - 32)) & sectorsMask) + 1;
          map.kind[c] = Kind.Compressed;
          map.host[c] = host;
          map.csize[c] = sectors * 512 - (host % 512);
        } else {
          const host = (hi & 0x00ffffff) * 2 ** 32 + (lo & 0xfffffe00);
          // Bit 0: reads as zeros (v3); no host offset: unallocated, zeros without a backing file.
          if ((lo & 1) === 0 && host !== 0) {
            map.kind[c] = Kind.Data;
            map.host[c] = host;
          }
        }
      }
    }
    return map;
  } finally {
    closeSync(fd);
  }
}

/** The header of the zstd frame at the start of `data` (RFC 8878, 3.1.1.1), or undefined. */
function zstdHeader(data: Buffer): { fcsAt: number; fcsSize: number; length: number; checksum: boolean } | undefined {
  if (data.length < 6 || data.readUInt32LE(0) !== ZSTD_MAGIC) return undefined;
  const descriptor = data[4]!;
  const singleSegment = (descriptor >> 5) & 1;
  // After the descriptor: the window descriptor (unless single-segment), the dictionary id, the content size.
  const fcsAt = 5 + (singleSegment ? 0 : 1) + [0, 1, 2, 4][descriptor & 3]!;
  const fcsSize = [singleSegment, 2, 4, 8][descriptor >> 6]!;
  return { fcsAt, fcsSize, length: fcsAt + fcsSize, checksum: ((descriptor >> 2) & 1) === 1 };
}

/** The length of the zstd frame at the start of `data`, walking its block headers; or a reason. */
export function zstdFrameLength(data: Buffer): number | string {
  const header = zstdHeader(data);
  if (!header) return 'no zstd frame';
  let pos = header.length;
  for (;;) {
    if (pos + 3 > data.length) return 'a zstd frame runs past its cluster';
    const block = data.readUIntLE(pos, 3);
    const type = (block >> 1) & 3;
    const size = block >>> 3;
    if (type === 3) return 'a reserved zstd block type';
    pos += 3 + (type === 1 ? 1 : size);
    if (block & 1) break;
  }
  if (header.checksum) pos += 4;
  return pos <= data.length ? pos : 'a zstd frame runs past its cluster';
}

/** The content size a zstd frame header declares, or undefined when it declares none. */
export function zstdContentSize(data: Buffer): number | undefined {
  const header = zstdHeader(data);
  if (!header || header.fcsSize === 0 || data.length < header.length) return undefined;
  const { fcsAt, fcsSize } = header;
  if (fcsSize === 1) return data.readUInt8(fcsAt);
  if (fcsSize === 2) return data.readUInt16LE(fcsAt) + 256;
  if (fcsSize === 4) return data.readUInt32LE(fcsAt);
  return Number(data.readBigUInt64LE(fcsAt));
}

/** How many decompressed clusters may wait for their reader before zstd's output is paused. */
const READY_LIMIT = 128;
const WINDOW = 4 * 1024 * 1024;
/** zstd's output FIFO is enlarged to this (bench/README.md has the figures). */
const ZSTD_PIPE_BYTES = 1024 * 1024;
/** zstd's output is read into this one buffer, again and again. */
const OUTPUT_BUFFER = 256 * 1024;

/**
 * Reads the guest-visible bytes of a qcow2 image that `readQcow2Map` accepts, without qemu-nbd:
 * data clusters are read from the file, zero and unallocated ones are zeros, and compressed
 * clusters are decompressed by one `zstd -dc`, fed their frames in the order the reads will ask
 * for them (the ranges given to `open`, which must then be read in that order). qemu-nbd spent
 * 1.9-3.0 CPU-seconds serving the demo image's 863 MiB of data; zstd decompresses them in 0.8
 * (bench/README.md, "PIM's own qcow2 reader").
 */
export class Qcow2Reader implements DiskReader {
  bytesRead = 0;
  private readonly ready = new Map<number, Buffer>();
  /** Buffers of decompressed clusters that no read wants any more, for the next ones. */
  private readonly spare: Buffer[] = [];
  private readonly waiting = new Map<number, Waiter[]>();
  private output?: Socket;
  private out?: { cluster: number; buf: Buffer; filled: number; direct?: Waiter };
  private outPos = 0;
  private failed?: Error;
  private paused = false;
  private closed = false;
  private exited: Promise<void>;

  private constructor(
    private readonly map: Qcow2Map,
    private readonly file: FileHandle,
    private readonly plan: number[],
    /** How many reads of the plan still want each compressed cluster. */
    private readonly refs: Map<number, number>,
    private readonly zstd: ChildProcess | undefined,
    /** The read end of zstd's output (a FIFO), when there is a zstd. */
    private readonly outputFd: number | undefined,
    private readonly image: string,
  ) {
    this.exited = zstd ? new Promise((resolve) => {
      zstd.once('exit', () => resolve());
      zstd.once('error', () => resolve());
    }) : Promise.resolve();
  }

  /**
   * The reader for `image`, to read `ranges` in this order; undefined (with the reason logged)
   * when this reader cannot read the image, which qemu-nbd then serves.
   */
  static async open(image: string, ranges: DataExtent[], log?: LogFn): Promise<Qcow2Reader | undefined> {
    const map = readQcow2Map(image);
    if (typeof map === 'string') {
      log?.(`reading the image through qemu-nbd: ${map}`);
      return undefined;
    }
    const { plan, refs } = compressedPlan(map, ranges);
    if (plan.length && !which('zstd')) {
      log?.('reading the image through qemu-nbd: no zstd program to decompress its clusters (Debian package zstd)');
      return undefined;
    }
    const problem = checkFrames(image, map, plan);
    if (problem) {
      log?.(`reading the image through qemu-nbd: ${problem}`);
      return undefined;
    }
    const file = await open(image, 'r');
    let fifo: { read: number; write: number } | undefined;
    if (plan.length) {
      const made = await outputFifo();
      if (typeof made === 'string') {
        await file.close();
        log?.(`reading the image through qemu-nbd: ${made}`);
        return undefined;
      }
      fifo = made;
    }
    let zstd: ChildProcess | undefined;
    let reader: Qcow2Reader | undefined;
    try {
      if (fifo) {
        try {
          // zstd stalls on a 64 KiB FIFO whenever PIM's thread is busy for a moment (hashing, a
          // request). A 1 MiB one took the demo image's upload from a median of 3.52-3.75 s to
          // 3.28-3.48 s. (Its stdin is a socket pair, which F_SETPIPE_SZ does not apply to.)
          const [command, args] = withPipeSize(ZSTD_PIPE_BYTES, 'zstd', ['-d', '-c', '-q', '--no-asyncio']);
          zstd = spawnManaged(command, args, { stdio: ['pipe', fifo.write, 'pipe'], log });
        } finally {
          // zstd has its own copy: the output ends when zstd's ends.
          closeSync(fifo.write);
        }
      }
      reader = new Qcow2Reader(map, file, plan, refs, zstd, fifo?.read, image);
      reader.start();
    } catch (err) {
      // Nothing left behind: not zstd, not the file, not the FIFO's read end (the socket's once it has one).
      if (reader) await reader.close();
      else {
        zstd?.kill('SIGKILL');
        if (fifo) closeSync(fifo.read);
        await file.close();
      }
      throw err;
    }
    log?.(`reading the image itself: ${plan.length} compressed clusters through zstd`);
    return reader;
  }

  private start(): void {
    const zstd = this.zstd;
    if (!zstd) return;
    let stderr = '';
    zstd.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
    // One buffer for all of zstd's output: a pipe's 'data' events bring a new 64 KiB buffer
    // each, and those 600 MiB of short-lived buffers made the garbage collector run 51 full
    // collections during the demo image's upload (bench/README.md).
    // Node's Socket takes `onread` with an fd too (lib/net.js); its types name it for connect() only.
    const options: SocketConstructorOpts & { onread: OnReadOpts } = {
      fd: this.outputFd!,
      readable: true,
      writable: false,
      onread: {
        buffer: Buffer.allocUnsafe(OUTPUT_BUFFER),
        callback: (n: number, buf: Uint8Array) => {
          this.onOutput(buf.subarray(0, n) as Buffer);
          return !this.paused;
        },
      },
    };
    const output = new Socket(options);
    this.output = output;
    output.on('error', (err) => this.fail(new WorkError(`reading zstd's output: ${errorMessage(err)}`)));
    const ended = new Promise<void>((resolve) => output.once('close', () => resolve()));
    const closed = new Promise<void>((resolve) => zstd.once('close', () => resolve()));
    // Both: its whole output read, and its last words on stderr.
    void Promise.all([ended, closed]).then(() => {
      if (this.outPos < this.plan.length) this.fail(new WorkError(`zstd ended after ${this.outPos} of ${this.plan.length} compressed clusters of ${this.image}${stderr.trim() ? `: ${stderr.trim().split('\n').at(-1)}` : ''}`));
    });
    zstd.once('error', (err) => this.fail(new WorkError(`zstd could not be run: ${errorMessage(err)}`)));
    zstd.stdin!.on('error', () => {
      /* zstd gone: its exit or the end of its output says why */
    });
    this.feed().catch((err: unknown) => this.fail(err instanceof Error ? err : new Error(String(err))));
  }

  /**
   * Writes the compressed clusters' frames to zstd, in plan order, as fast as it takes them;
   * frames that lie end to end in the file (as QEMU packs them) go in one write.
   */
  private async feed(): Promise<void> {
    const stdin = this.zstd!.stdin!;
    // Read windows of the file, reused once zstd's pipe has taken all that was written from
    // them: 235 MiB of fresh windows were 60 000 page faults in the demo image's upload.
    const windows: { buf: Buffer; writing: number }[] = [];
    let window: { start: number; buf: Buffer; of: { writing: number } } | undefined;
    let span: { from: number; to: number } | undefined;
    const flush = async () => {
      if (!span) return;
      const data = window!.buf.subarray(span.from, span.to);
      const of = window!.of;
      span = undefined;
      // zstd gone (its exit or the end of its output says why): its stdin takes nothing, and never drains.
      if (stdin.destroyed) return;
      of.writing++;
      if (!stdin.write(data, () => of.writing--)) {
        await new Promise<void>((resolve) => {
          const done = () => {
            stdin.off('drain', done);
            stdin.off('close', done);
            resolve();
          };
          stdin.once('drain', done);
          stdin.once('close', done);
        });
      }
    };
    for (const c of this.plan) {
      if (this.failed || this.closed) return;
      const host = this.map.host[c]!;
      const csize = this.map.csize[c]!;
      if (!window || host < window.start || host + csize > window.start + window.buf.length) {
        await flush();
        let free = windows.find((w) => w.writing === 0 && w.buf.length >= csize);
        if (!free) {
          free = { buf: Buffer.allocUnsafe(Math.max(WINDOW, csize)), writing: 0 };
          windows.push(free);
        }
        const { bytesRead } = await this.file.read(free.buf, 0, free.buf.length, host);
        window = { start: host, buf: free.buf.subarray(0, bytesRead), of: free };
      }
      const from = host - window.start;
      const length = zstdFrameLength(window.buf.subarray(from, from + csize));
      if (typeof length === 'string') throw new WorkError(`${this.image}: the compressed cluster at guest offset ${c * this.map.clusterSize}: ${length}`);
      if (span && span.to === from) span.to += length;
      else {
        await flush();
        span = { from, to: from + length };
      }
    }
    await flush();
    stdin.end();
  }

  private onOutput(chunk: Buffer): void {
    let pos = 0;
    const size = this.map.clusterSize;
    while (pos < chunk.length) {
      if (!this.out) {
        const cluster = this.plan[this.outPos];
        if (cluster === undefined) return this.fail(new WorkError(`zstd gave more than the ${this.plan.length} compressed clusters of ${this.image}`));
        // The one read of a whole cluster waiting for it: decompressed straight into its buffer.
        const waiters = this.waiting.get(cluster);
        const direct = waiters?.length === 1 && waiters[0]!.target && this.refs.get(cluster) === 1 ? waiters[0] : undefined;
        this.out = { cluster, buf: direct ? direct.target! : (this.spare.pop() ?? Buffer.allocUnsafe(size)), filled: 0, direct };
      }
      const o = this.out;
      const n = Math.min(chunk.length - pos, size - o.filled);
      chunk.copy(o.buf, o.filled, pos, pos + n);
      o.filled += n;
      pos += n;
      if (o.filled === size) {
        this.out = undefined;
        this.outPos++;
        const waiters = this.waiting.get(o.cluster);
        this.waiting.delete(o.cluster);
        if (o.direct) {
          this.refs.delete(o.cluster);
          o.direct.resolve(o.buf);
          continue;
        }
        this.ready.set(o.cluster, o.buf);
        for (const w of waiters ?? []) w.resolve(o.buf);
      }
    }
    if (this.ready.size >= READY_LIMIT && this.waiting.size === 0 && !this.paused) this.paused = true;
  }

  /** Compressed cluster `c`, decompressed; into `target` (a whole cluster's room) where possible. */
  private cluster(c: number, target?: Buffer): Promise<Buffer> {
    if (this.failed) return Promise.reject(this.failed);
    const buf = this.ready.get(c);
    if (buf) return Promise.resolve(buf);
    return new Promise((resolve, reject) => {
      const list = this.waiting.get(c) ?? [];
      list.push({ target, resolve, reject });
      this.waiting.set(c, list);
      this.resume();
    });
  }

  private release(c: number): void {
    const left = (this.refs.get(c) ?? 1) - 1;
    if (left > 0) {
      this.refs.set(c, left);
      return;
    }
    this.refs.delete(c);
    const buf = this.ready.get(c);
    if (buf) {
      this.ready.delete(c);
      this.spare.push(buf);
    }
    if (this.ready.size < READY_LIMIT) this.resume();
  }

  private resume(): void {
    if (!this.paused) return;
    this.paused = false;
    this.output?.resume();
  }

  private fail(err: Error): void {
    if (this.failed) return;
    this.failed = err;
    for (const list of this.waiting.values()) for (const w of list) w.reject(err);
    this.waiting.clear();
    // No more output copied into a buffer whose read has just been refused.
    this.output?.destroy();
  }

  /**
   * `length` bytes at `offset` of the guest-visible disk, in a new buffer or written into the
   * start of `into`. Compressed clusters must be asked for in the order of the ranges given to
   * `open`; anything else may be read at any time.
   */
  async read(offset: number, length: number, into?: Buffer): Promise<Buffer> {
    if (this.failed) throw this.failed;
    if (into && into.length < length) throw new RangeError(`a ${into.length}-byte buffer cannot take ${length} bytes`);
    const out = into ? into.subarray(0, length) : Buffer.allocUnsafe(length);
    const size = this.map.clusterSize;
    // Only what the plan streams comes out of zstd: a read of anything else would wait forever.
    for (let c = Math.floor(offset / size); c * size < offset + length && c < this.map.kind.length; c++) {
      if (this.map.kind[c] === Kind.Compressed && !this.refs.has(c)) {
        throw new WorkError(`${this.image}: the compressed cluster at guest offset ${c * size} is not (or no longer) in the reads given to open`);
      }
    }
    const parts: Promise<unknown>[] = [];
    for (let pos = offset; pos < offset + length; ) {
      const c = Math.floor(pos / size);
      const within = pos - c * size;
      let n = Math.min(size - within, offset + length - pos);
      const at = pos - offset;
      const kind = c < this.map.kind.length ? this.map.kind[c]! : Kind.Zero;
      if (kind === Kind.Compressed) {
        const whole = n === size ? out.subarray(at, at + n) : undefined;
        parts.push(this.cluster(c, whole).then((buf) => {
          if (buf !== whole) {
            buf.copy(out, at, within, within + n);
            this.release(c);
          }
        }));
      } else if (kind === Kind.Data) {
        // Host-contiguous data clusters in one read.
        let next = c + 1;
        while (pos + n < offset + length && this.map.kind[next] === Kind.Data && this.map.host[next] === this.map.host[c]! + (next - c) * size) {
          n += Math.min(size, offset + length - pos - n);
          next++;
        }
        parts.push(this.readFully(out.subarray(at, at + n), this.map.host[c]! + within));
      } else {
        out.fill(0, at, at + n);
      }
      pos += n;
    }
    // Settled, not raced: no part may still be writing into `out` once this returns.
    const settled = await Promise.allSettled(parts);
    const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
    this.bytesRead += length;
    return out;
  }

  private async readFully(into: Buffer, position: number): Promise<void> {
    let done = 0;
    while (done < into.length) {
      const { bytesRead } = await this.file.read(into, done, into.length - done, position + done);
      if (bytesRead === 0) throw new WorkError(`${this.image} ends before its cluster at ${position}: the image is truncated`);
      done += bytesRead;
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    this.fail(new WorkError('the image reader is closed'));
    if (this.zstd && this.zstd.exitCode === null && this.zstd.signalCode === null) {
      this.zstd.kill('SIGTERM');
    }
    // fail() destroyed the socket, which owns the FIFO's read end; without one (start() failed), nobody does.
    if (!this.output && this.outputFd !== undefined) closeSync(this.outputFd);
    await this.exited;
    await this.file.close();
  }
}

/**
 * A FIFO for zstd's output, opened at both ends and already unlinked: a reader PIM can read into
 * one buffer of its own (a child's stdout pipe cannot be), and a writer to give zstd. Or why not.
 */
async function outputFifo(): Promise<{ read: number; write: number } | string> {
  let dir: string | undefined;
  try {
    dir = mkdtempSync(join(tmpdir(), 'pim-zstd-'));
    const path = join(dir, 'out');
    await runChecked('mkfifo', ['-m', '600', path]);
    // The read end first, without waiting for a writer; then the write end does not wait either.
    const read = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
    try {
      return { read, write: openSync(path, constants.O_WRONLY) };
    } catch (err) {
      closeSync(read);
      throw err;
    }
  } catch (err) {
    return `no FIFO for zstd's output (${errorMessage(err)})`;
  } finally {
    if (dir) rmSync(dir, { recursive: true, force: true });
  }
}

/** The compressed clusters the ranges touch, in the order they are read, and how many reads use each. */
export function compressedPlan(map: Qcow2Map, ranges: DataExtent[]): { plan: number[]; refs: Map<number, number> } {
  const plan: number[] = [];
  const refs = new Map<number, number>();
  for (const r of ranges) {
    if (r.length <= 0) continue;
    const first = Math.floor(r.start / map.clusterSize);
    const last = Math.floor((r.start + r.length - 1) / map.clusterSize);
    for (let c = first; c <= last && c < map.kind.length; c++) {
      if (map.kind[c] !== Kind.Compressed) continue;
      if (!refs.has(c)) plan.push(c);
      refs.set(c, (refs.get(c) ?? 0) + 1);
    }
  }
  return { plan, refs };
}

/**
 * Each compressed cluster must be one zstd frame that declares the cluster's size (as QEMU
 * writes them), or the stream of frames could not be cut back into clusters: checked on the
 * frame headers before anything is started.
 */
function checkFrames(image: string, map: Qcow2Map, plan: number[]): string | undefined {
  if (!plan.length) return undefined;
  const fd = openSync(image, 'r');
  try {
    const head = Buffer.alloc(18);
    for (const c of plan) {
      const n = readSync(fd, head, 0, Math.min(head.length, map.csize[c]!), map.host[c]!);
      const size = zstdContentSize(head.subarray(0, n));
      if (size !== map.clusterSize) return `the compressed cluster at guest offset ${c * map.clusterSize} is not one zstd frame of one cluster`;
    }
    return undefined;
  } finally {
    closeSync(fd);
  }
}
