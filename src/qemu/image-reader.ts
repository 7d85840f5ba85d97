import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WorkError, errorMessage } from '../errors.js';
import { runChecked, spawnManaged, type LogFn } from '../process.js';

/** A range of the guest-visible disk that holds data (not a hole, not known zeros). */
export interface DataExtent {
  start: number;
  length: number;
}

/**
 * The data extents of an image, from `qemu-img map --output=json`: what a guest would read as
 * anything but zeros lies inside them. Adjacent extents are merged.
 */
export async function dataExtents(image: string, log?: LogFn, format: 'qcow2' | 'raw' = 'qcow2'): Promise<{ extents: DataExtent[]; virtualSize: number }> {
  const { stdout } = await runChecked('qemu-img', ['map', '--output=json', '-f', format, image], { log });
  const entries = JSON.parse(stdout) as { start: number; length: number; data: boolean; zero: boolean }[];
  const extents: DataExtent[] = [];
  let virtualSize = 0;
  for (const e of entries) {
    virtualSize = Math.max(virtualSize, e.start + e.length);
    if (!e.data || e.zero) continue;
    const last = extents.at(-1);
    if (last && last.start + last.length === e.start) last.length += e.length;
    else extents.push({ start: e.start, length: e.length });
  }
  return { extents, virtualSize };
}

const NBD_MAGIC = Buffer.from('NBDMAGIC');
const IHAVEOPT = Buffer.from('IHAVEOPT');
const NBD_FLAG_FIXED_NEWSTYLE = 1;
const NBD_FLAG_NO_ZEROES = 2;
const NBD_OPT_EXPORT_NAME = 1;
const NBD_REQUEST_MAGIC = 0x25609513;
const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
const NBD_CMD_READ = 0;
const NBD_CMD_DISC = 2;
/** How long qemu-nbd may take to greet once its socket accepts (it greets at once when well). */
const HANDSHAKE_TIMEOUT_MS = 15_000;

/**
 * Reads an image's guest-visible bytes at any offset, whatever its format (qcow2, compressed or
 * not, with backing files): `qemu-nbd` serves it read-only on a unix socket, and this is a
 * minimal NBD client (fixed newstyle handshake, simple replies). Only what is asked for is read:
 * a 20 GiB image holding 1 GiB costs 1 GiB of reads, and no raw copy is ever written.
 */
export class ImageReader {
  // The handshake reads through take(); after it, replies are parsed as they arrive (reply mode).
  private buffer = Buffer.alloc(0);
  private waiters: { need: number; resolve: (b: Buffer) => void; reject: (e: Error) => void }[] = [];
  private replyMode = false;
  private header = Buffer.alloc(0);
  private pending = new Map<bigint, { offset: number; length: number; into?: Buffer; resolve: (b: Buffer) => void; reject: (e: Error) => void }>();
  private current?: { out: Buffer; filled: number; resolve: (b: Buffer) => void; reject: (e: Error) => void };
  private failed?: Error;
  private nextHandle = 1n;
  /** Bytes read from the image so far. */
  bytesRead = 0;

  /** The guest-visible size, from the NBD handshake. */
  size = 0;

  private constructor(
    private readonly socket: Socket,
    private readonly stop: () => Promise<void>,
  ) {
    socket.on('data', (chunk: Buffer) => {
      if (this.replyMode) return this.onReplies(chunk);
      this.buffer = Buffer.concat([this.buffer, chunk]);
      this.drain();
    });
    socket.on('error', (err) => this.fail(new WorkError(`NBD connection to qemu-nbd: ${errorMessage(err)}`)));
    socket.on('close', () => this.fail(new WorkError('qemu-nbd closed the connection')));
  }

  private fail(err: Error): void {
    this.failed ??= err;
    for (const w of this.waiters.splice(0)) w.reject(err);
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
    this.current?.reject(err);
    this.current = undefined;
  }

  static async open(image: string, format: 'qcow2' | 'raw' = 'qcow2', log?: LogFn, { handshakeTimeoutMs = HANDSHAKE_TIMEOUT_MS } = {}): Promise<ImageReader> {
    const dir = mkdtempSync(join(tmpdir(), 'pim-nbd-'));
    const sock = join(dir, 'nbd.sock');
    const child = spawnManaged('qemu-nbd', ['--read-only', '--format', format, '--socket', sock, '--export-name', '', image], { stdio: ['ignore', 'ignore', 'pipe'], log });
    let stderr = '';
    child.stderr?.on('data', (c: Buffer) => (stderr += c.toString()));
    let exited = false;
    const ended = new Promise<void>((resolve) => {
      child.once('exit', () => resolve());
      // A program that could not be started emits 'error' and, without setpriv, no 'exit'.
      child.once('error', (err) => {
        stderr ||= errorMessage(err);
        resolve();
      });
    }).then(() => {
      exited = true;
    });
    const stop = async () => {
      if (!exited) {
        child.kill('SIGTERM');
        await ended;
      }
      rmSync(dir, { recursive: true, force: true });
    };
    const started = Date.now();
    let socket: Socket | undefined;
    while (!socket) {
      if (exited) {
        await stop();
        throw new WorkError(`qemu-nbd could not serve ${image}: ${stderr.trim().split('\n').at(-1) ?? 'it exited'}`);
      }
      if (Date.now() - started > 15_000) {
        await stop();
        throw new WorkError(`qemu-nbd did not start serving ${image} within 15 s`);
      }
      if (existsSync(sock)) {
        socket = await new Promise<Socket | undefined>((resolve) => {
          const s = connect(sock);
          s.once('connect', () => resolve(s));
          s.once('error', () => resolve(undefined));
        });
      }
      if (!socket) await new Promise((r) => setTimeout(r, 50));
    }
    const reader = new ImageReader(socket, stop);
    let timer: NodeJS.Timeout | undefined;
    try {
      // A server that accepts and never greets must not hold the deploy forever.
      const silent = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new WorkError(`qemu-nbd did not answer the NBD handshake for ${image} within ${handshakeTimeoutMs / 1000} s`)), handshakeTimeoutMs);
      });
      reader.size = await Promise.race([reader.handshake(), silent]);
      return reader;
    } catch (err) {
      socket.destroy();
      await stop();
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  private drain(): void {
    while (this.waiters.length && this.buffer.length >= this.waiters[0]!.need) {
      const w = this.waiters.shift()!;
      const out = this.buffer.subarray(0, w.need);
      this.buffer = this.buffer.subarray(w.need);
      w.resolve(Buffer.from(out));
    }
  }

  private take(need: number): Promise<Buffer> {
    if (this.failed) return Promise.reject(this.failed);
    return new Promise((resolve, reject) => {
      this.waiters.push({ need, resolve, reject });
      this.drain();
    });
  }

  private async handshake(): Promise<number> {
    const hello = await this.take(18);
    if (!hello.subarray(0, 8).equals(NBD_MAGIC) || !hello.subarray(8, 16).equals(IHAVEOPT)) throw new WorkError('qemu-nbd did not greet as an NBD (fixed newstyle) server');
    const serverFlags = hello.readUInt16BE(16);
    const noZeroes = (serverFlags & NBD_FLAG_NO_ZEROES) !== 0;
    const client = Buffer.alloc(4);
    client.writeUInt32BE(NBD_FLAG_FIXED_NEWSTYLE | (noZeroes ? NBD_FLAG_NO_ZEROES : 0));
    const option = Buffer.alloc(16);
    IHAVEOPT.copy(option, 0);
    option.writeUInt32BE(NBD_OPT_EXPORT_NAME, 8);
    option.writeUInt32BE(0, 12); // the default export, ''
    this.socket.write(Buffer.concat([client, option]));
    const info = await this.take(10 + (noZeroes ? 0 : 124));
    this.replyMode = true;
    return Number(info.readBigUInt64BE(0));
  }

  /**
   * `length` bytes at `offset` of the guest-visible disk, in a new buffer or, to spare the
   * allocation, written into the start of `into`. Requests are pipelined: qemu-nbd works on
   * several at once (decompressing on more than one core) and replies in any order.
   */
  read(offset: number, length: number, into?: Buffer): Promise<Buffer> {
    if (this.failed) return Promise.reject(this.failed);
    if (into && into.length < length) return Promise.reject(new RangeError(`a ${into.length}-byte buffer cannot take ${length} bytes`));
    if (length === 0) return Promise.resolve(Buffer.alloc(0));
    const handle = this.nextHandle++;
    const request = Buffer.alloc(28);
    request.writeUInt32BE(NBD_REQUEST_MAGIC, 0);
    request.writeUInt16BE(0, 4);
    request.writeUInt16BE(NBD_CMD_READ, 6);
    request.writeBigUInt64BE(handle, 8);
    request.writeBigUInt64BE(BigInt(offset), 16);
    request.writeUInt32BE(length, 24);
    return new Promise((resolve, reject) => {
      this.pending.set(handle, { offset, length, into, resolve, reject });
      this.socket.write(request);
    });
  }

  /** Simple replies: a 16-byte header (magic, error, handle), then the data of a read that succeeded. */
  private onReplies(chunk: Buffer): void {
    let pos = 0;
    while (pos < chunk.length && !this.failed) {
      if (this.current) {
        const c = this.current;
        const n = Math.min(chunk.length - pos, c.out.length - c.filled);
        chunk.copy(c.out, c.filled, pos, pos + n);
        c.filled += n;
        pos += n;
        if (c.filled === c.out.length) {
          this.current = undefined;
          this.bytesRead += c.out.length;
          c.resolve(c.out);
        }
        continue;
      }
      const n = Math.min(chunk.length - pos, 16 - this.header.length);
      this.header = Buffer.concat([this.header, chunk.subarray(pos, pos + n)]);
      pos += n;
      if (this.header.length < 16) break;
      const header = this.header;
      this.header = Buffer.alloc(0);
      if (header.readUInt32BE(0) !== NBD_SIMPLE_REPLY_MAGIC) return this.fail(new WorkError('qemu-nbd sent an unexpected reply'));
      const handle = header.readBigUInt64BE(8);
      const request = this.pending.get(handle);
      if (!request) return this.fail(new WorkError('qemu-nbd answered a request that was never made'));
      this.pending.delete(handle);
      const error = header.readUInt32BE(4);
      if (error) {
        request.reject(new WorkError(`qemu-nbd could not read ${request.length} bytes at ${request.offset} (NBD error ${error})`));
        continue;
      }
      const out = request.into ? request.into.subarray(0, request.length) : Buffer.allocUnsafe(request.length);
      this.current = { out, filled: 0, resolve: request.resolve, reject: request.reject };
    }
  }

  async close(): Promise<void> {
    try {
      const request = Buffer.alloc(28);
      request.writeUInt32BE(NBD_REQUEST_MAGIC, 0);
      request.writeUInt16BE(NBD_CMD_DISC, 6);
      this.socket.write(request);
      this.socket.end();
    } catch {
      /* closed already */
    }
    this.socket.destroy();
    await this.stop();
  }
}
