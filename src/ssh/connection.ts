import { readFileSync, writeSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import ssh2, { type Client, type ClientChannel, type ConnectConfig, type SFTPWrapper } from 'ssh2';
import { WorkError, errorMessage } from '../errors.js';
import { shq } from '../shell.js';
import { fingerprintOf, verifyHostKey, type HostKeyPolicy } from './host-keys.js';

export interface SshTarget {
  host: string;
  port?: number;
  username: string;
  privateKey?: string | Buffer;
  privateKeyPath?: string;
  password?: string;
  hostKey: HostKeyPolicy;
  /** Milliseconds to wait for the handshake. */
  readyTimeout?: number;
  /**
   * Keepalive: a probe every `keepaliveIntervalMs` (default 15 s); after `keepaliveCountMax`
   * (default 4) unanswered probes the connection counts as lost and every command on it fails.
   */
  keepaliveIntervalMs?: number;
  keepaliveCountMax?: number;
  /** The SSH agent socket to take keys from when no private key is given. */
  agent?: string;
}

/** The server's host key did not pass the policy: never retried, never accepted silently. */
export class HostKeyRejected extends WorkError {
  constructor(
    message: string,
    readonly fingerprint: string,
  ) {
    super(message);
  }
}

export interface ExecResult {
  code: number | null;
  signal?: string;
}

export type LineCallback = (line: string, stream: 'stdout' | 'stderr') => void;
export type TransferProgress = (transferred: number, total: number) => void;

/** An SSH connection (ssh2): exec with streamed lines, sudo, SFTP upload and download. */
export class SshConnection {
  /** Why the connection is gone (a drop, a keepalive timeout), once it is. */
  private lostReason?: string;
  private readonly onLost = new Set<(reason: string) => void>();

  private constructor(
    private readonly client: Client,
    readonly target: SshTarget,
  ) {
    client.on('error', (err: Error) => this.markLost(errorMessage(err)));
    client.on('close', () => this.markLost('the connection was closed'));
  }

  private markLost(reason: string): void {
    if (this.lostReason) return;
    this.lostReason = reason;
    for (const waiter of this.onLost) waiter(reason);
    this.onLost.clear();
  }

  /** Whether the connection is gone. */
  get lost(): boolean {
    return this.lostReason !== undefined;
  }

  /** Rejects when the connection is lost: race it against anything that waits on the remote side. */
  private lostPromise(): { promise: Promise<never>; dispose(): void } {
    let waiter: ((reason: string) => void) | undefined;
    const promise = new Promise<never>((_, reject) => {
      waiter = (reason) => reject(new WorkError(`SSH connection to ${this.label} lost: ${reason}`));
      if (this.lostReason) waiter(this.lostReason);
      else this.onLost.add(waiter);
    });
    promise.catch(() => undefined);
    return { promise, dispose: () => waiter && this.onLost.delete(waiter) };
  }

  get label(): string {
    return `${this.target.username}@${this.target.host}:${this.target.port ?? 22}`;
  }

  static connect(target: SshTarget): Promise<SshConnection> {
    const port = target.port ?? 22;
    const client = new ssh2.Client();
    let rejectedKey: string | undefined;
    const config: ConnectConfig = {
      host: target.host,
      port,
      username: target.username,
      readyTimeout: target.readyTimeout ?? 20_000,
      keepaliveInterval: target.keepaliveIntervalMs ?? 15_000,
      keepaliveCountMax: target.keepaliveCountMax ?? 4,
      hostVerifier: (key: Buffer) => {
        const ok = verifyHostKey(target.hostKey, target.host, port, key);
        if (!ok) rejectedKey = fingerprintOf(key);
        return ok;
      },
    };
    if (target.privateKeyPath) config.privateKey = readFileSync(target.privateKeyPath);
    else if (target.privateKey) config.privateKey = target.privateKey;
    if (target.password) config.password = target.password;
    if (target.agent && !config.privateKey) config.agent = target.agent;
    return new Promise((resolve, reject) => {
      let settled = false;
      client.once('ready', () => {
        settled = true;
        resolve(new SshConnection(client, target));
      });
      // ssh2 may emit several errors (and more after 'ready' when a connection drops): keep a
      // listener for the connection's whole life, and report only the first before 'ready'.
      client.on('error', (err) => {
        if (settled) return;
        settled = true;
        client.end();
        if (rejectedKey) {
          reject(new HostKeyRejected(`SSH to ${target.host}:${port}: host key ${rejectedKey} is not trusted (${describePolicy(target.hostKey)}); refusing to connect`, rejectedKey));
        } else {
          reject(new WorkError(`SSH to ${target.username}@${target.host}:${port}: ${errorMessage(err)}`, { cause: err }));
        }
      });
      // A server that hangs up after its banner makes ssh2 emit 'close' without an 'error'.
      client.on('close', () => {
        if (settled) return;
        settled = true;
        reject(new WorkError(`SSH to ${target.username}@${target.host}:${port}: connection closed before the handshake completed`));
      });
      client.connect(config);
    });
  }

  /**
   * Runs `command`, streaming stdout and stderr line by line; resolves with the exit code.
   * Rejects when the connection is lost before the command ends.
   */
  async exec(command: string, onLine?: LineCallback): Promise<ExecResult> {
    const lost = this.lostPromise();
    try {
      return await Promise.race([this.execOnChannel(command, onLine), lost.promise]);
    } finally {
      lost.dispose();
    }
  }

  /**
   * Like `exec`, but the command's stdin stays open until `endStdin()`: a remote PIM started
   * with PIM_STDIN_LIFELINE=1 stops (as on Ctrl+C) when it ends.
   */
  execWithStdin(command: string, onLine?: LineCallback): { done: Promise<ExecResult>; endStdin(): void } {
    let channel: ClientChannel | undefined;
    let ended = false;
    const lost = this.lostPromise();
    const done = Promise.race([
      this.execOnChannel(command, onLine, (c) => {
        channel = c;
        if (ended) c.end();
      }),
      lost.promise,
    ]).finally(() => lost.dispose());
    done.catch(() => undefined);
    return {
      done,
      endStdin: () => {
        ended = true;
        channel?.end();
      },
    };
  }

  private execOnChannel(command: string, onLine?: LineCallback, onChannel?: (channel: ClientChannel) => void): Promise<ExecResult> {
    return new Promise((resolve, reject) => {
      this.client.exec(command, (err, stream) => {
        if (err) return reject(new WorkError(`SSH ${this.label}: cannot run command: ${errorMessage(err)}`));
        onChannel?.(stream);
        const out = lineSplitter((line) => onLine?.(line, 'stdout'));
        const errOut = lineSplitter((line) => onLine?.(line, 'stderr'));
        stream.on('data', (chunk: Buffer) => out.push(chunk));
        stream.stderr.on('data', (chunk: Buffer) => errOut.push(chunk));
        stream.once('close', (code: number | null, signal?: string) => {
          out.flush();
          errOut.flush();
          resolve({ code: code ?? null, signal: signal ?? undefined });
        });
      });
    });
  }

  /** Runs `command` as root through `sudo -n` (no password prompt: it fails instead). */
  execAsRoot(command: string, onLine?: LineCallback): Promise<ExecResult> {
    const asRoot = this.target.username === 'root' ? command : `sudo -n -H -- /bin/bash -c ${shq(command)}`;
    return this.exec(asRoot, onLine);
  }

  /** Runs `command` and returns its stdout; throws when it exits non-zero. */
  async capture(command: string): Promise<string> {
    let stdout = '';
    let stderr = '';
    const result = await this.exec(command, (line, stream) => {
      if (stream === 'stdout') stdout += `${line}\n`;
      else stderr += `${line}\n`;
    });
    if (result.code !== 0) throw new WorkError(`SSH ${this.label}: '${command}' exited ${result.code}: ${stderr.trim().split('\n').at(-1) ?? ''}`);
    return stdout;
  }

  /** Writes `data` to `remotePath` (mode `mode`) over SFTP. */
  async uploadContent(data: string | Buffer, remotePath: string, mode = 0o600): Promise<void> {
    const sftp = await this.sftp();
    try {
      await new Promise<void>((resolve, reject) => {
        sftp.writeFile(remotePath, data, { mode }, (err) =>
          err ? reject(new WorkError(`SFTP write ${this.label}:${remotePath}: ${errorMessage(err)}`)) : resolve(),
        );
      });
    } finally {
      sftp.end();
    }
  }

  async upload(localPath: string, remotePath: string, onProgress?: TransferProgress, mode?: number): Promise<void> {
    const sftp = await this.sftp();
    try {
      await new Promise<void>((resolve, reject) => {
        sftp.fastPut(localPath, remotePath, { step: (done, _chunk, total) => onProgress?.(done, total), ...(mode ? { mode } : {}) }, (err) =>
          err ? reject(new WorkError(`SFTP upload ${localPath} -> ${this.label}:${remotePath}: ${errorMessage(err)}`)) : resolve(),
        );
      });
    } finally {
      sftp.end();
    }
  }

  async download(remotePath: string, localPath: string, onProgress?: TransferProgress): Promise<void> {
    const sftp = await this.sftp();
    try {
      await new Promise<void>((resolve, reject) => {
        sftp.fastGet(remotePath, localPath, { step: (done, _chunk, total) => onProgress?.(done, total) }, (err) =>
          err ? reject(new WorkError(`SFTP download ${this.label}:${remotePath} -> ${localPath}: ${errorMessage(err)}`)) : resolve(),
        );
      });
    } finally {
      sftp.end();
    }
  }

  /**
   * Appends the remote file from byte `start` on to the local file descriptor `fd`, in order
   * (so that what is on disk is always a prefix, and an interrupted download can resume), with
   * `window` SFTP reads of `chunk` bytes in flight: one read at a time is bound by latency.
   */
  async downloadFrom(remotePath: string, fd: number, start: number, onProgress?: (done: number) => void, options: { chunk?: number; window?: number } = {}): Promise<number> {
    const chunk = options.chunk ?? 256 * 1024;
    const window = options.window ?? 16;
    const sftp = await this.sftp();
    const lost = this.lostPromise();
    try {
      const handle = await new Promise<Buffer>((resolve, reject) => sftp.open(remotePath, 'r', (err, h) => (err ? reject(new WorkError(`SFTP open ${this.label}:${remotePath}: ${errorMessage(err)}`)) : resolve(h))));
      const size = await new Promise<number>((resolve, reject) => sftp.fstat(handle, (err, st) => (err ? reject(new WorkError(`SFTP stat ${remotePath}: ${errorMessage(err)}`)) : resolve(st.size))));
      const readAt = (position: number) =>
        new Promise<Buffer>((resolve, reject) => {
          const length = Math.min(chunk, size - position);
          const buffer = Buffer.alloc(length);
          const read = (offset: number) =>
            sftp.read(handle, buffer, offset, length - offset, position + offset, (err, n) => {
              if (err) return reject(new WorkError(`SFTP read ${remotePath} at ${position + offset}: ${errorMessage(err)}`));
              if (n === 0) return reject(new WorkError(`SFTP read ${remotePath}: the file ended early at ${position + offset}`));
              if (offset + n < length) read(offset + n);
              else resolve(buffer);
            });
          read(0);
        });
      const pending: Promise<Buffer>[] = [];
      let next = start;
      let written = start;
      while (written < size) {
        while (pending.length < window && next < size) {
          const p = readAt(next);
          p.catch(() => undefined);
          pending.push(p);
          next += Math.min(chunk, size - next);
        }
        const data = await Promise.race([pending.shift()!, lost.promise]);
        writeSync(fd, data, 0, data.length, written);
        written += data.length;
        onProgress?.(written);
      }
      await new Promise<void>((resolve) => sftp.close(handle, () => resolve()));
      return size;
    } finally {
      lost.dispose();
      sftp.end();
    }
  }

  end(): void {
    this.client.end();
  }

  private sftp(): Promise<SFTPWrapper> {
    return new Promise((resolve, reject) => {
      this.client.sftp((err, sftp) => (err ? reject(new WorkError(`SFTP on ${this.label}: ${errorMessage(err)}`)) : resolve(sftp)));
    });
  }
}

function describePolicy(policy: HostKeyPolicy): string {
  return policy.kind === 'fingerprint' ? `pinned ${policy.sha256}` : policy.kind === 'known_hosts' ? `not in ${policy.path}` : 'any';
}

function lineSplitter(emit: (line: string) => void) {
  let pending = '';
  return {
    push(chunk: Buffer) {
      pending += chunk.toString('utf8');
      const lines = pending.split('\n');
      pending = lines.pop() ?? '';
      for (const line of lines) emit(line.replace(/\r$/, ''));
    },
    flush() {
      if (pending) emit(pending);
      pending = '';
    },
  };
}

export interface WaitOptions {
  /** Total milliseconds to keep trying. */
  timeoutMs: number;
  /** First pause between attempts; doubles up to `maxIntervalMs`. */
  intervalMs: number;
  maxIntervalMs?: number;
  signal?: AbortSignal;
  onAttempt?: (attempt: number, error: string) => void;
  /**
   * Before each attempt, wait at most this long for the server's `SSH-` identification on a bare
   * TCP connection, and retry at once without back-off when none comes. A VM's forwarded port
   * (QEMU user networking) accepts while the guest is still booting and then stalls: without the
   * probe an attempt made then waits out the whole handshake timeout, seconds after sshd is up.
   */
  bannerProbeMs?: number;
}

/** Resolves when the server at host:port sends its SSH identification; rejects otherwise. */
export function sshBanner(host: string, port: number, timeoutMs: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = netConnect(port, host);
    let seen = '';
    const done = (err?: Error) => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      socket.destroy();
      if (err) reject(err);
      else resolve();
    };
    const onAbort = () => done(new WorkError('interrupted while waiting for SSH'));
    const timer = setTimeout(() => done(new WorkError(`no SSH banner within ${timeoutMs} ms`)), timeoutMs);
    signal?.addEventListener('abort', onAbort, { once: true });
    socket.on('data', (chunk: Buffer) => {
      seen += chunk.toString('latin1');
      // RFC 4253 4.2: the server may send other lines before its identification string.
      if (/(^|\n)SSH-/.test(seen)) done();
      else if (seen.length > 8192) done(new WorkError('no SSH banner: the server sent something else'));
    });
    socket.on('error', (err) => done(new WorkError(`no SSH banner: ${errorMessage(err)}`)));
    socket.on('close', () => done(new WorkError('no SSH banner: the connection was closed')));
  });
}

/**
 * Connects, retrying with back-off until `timeoutMs`: while a VM boots, its forwarded port
 * accepts and then drops connections, refuses them, or stalls the handshake -- all retried.
 * A host key that is not trusted is not retried.
 */
export async function waitForSsh(target: SshTarget, options: WaitOptions): Promise<SshConnection> {
  const started = Date.now();
  let interval = options.intervalMs;
  let lastError = 'no attempt made';
  for (let attempt = 1; ; attempt++) {
    if (options.signal?.aborted) throw new WorkError('interrupted while waiting for SSH');
    if (options.bannerProbeMs) {
      try {
        const remaining = options.timeoutMs - (Date.now() - started);
        await sshBanner(target.host, target.port ?? 22, Math.max(100, Math.min(options.bannerProbeMs, remaining)), options.signal);
      } catch (err) {
        // Interrupted: not a failed attempt to log and pause after.
        if (options.signal?.aborted) throw err;
        lastError = errorMessage(err);
        options.onAttempt?.(attempt, lastError);
        if (options.timeoutMs - (Date.now() - started) <= 0) break;
        // The probe waited already (or the port refused at once: a short pause, not a back-off).
        await sleep(Math.min(500, options.timeoutMs - (Date.now() - started)), options.signal);
        continue;
      }
    }
    const remaining = options.timeoutMs - (Date.now() - started);
    try {
      return await SshConnection.connect({ ...target, readyTimeout: Math.max(1000, Math.min(target.readyTimeout ?? 20_000, remaining)) });
    } catch (err) {
      lastError = errorMessage(err);
      if (err instanceof HostKeyRejected) throw err;
      options.onAttempt?.(attempt, lastError);
    }
    const left = options.timeoutMs - (Date.now() - started);
    if (left <= 0) break;
    await sleep(Math.min(interval, left), options.signal);
    interval = Math.min(interval * 2, options.maxIntervalMs ?? Math.max(options.intervalMs, 10_000));
  }
  const waited = Math.round((Date.now() - started) / 1000);
  throw new WorkError(`SSH on ${target.host}:${target.port ?? 22} not ready after ${waited} s (timeout ${Math.round(options.timeoutMs / 1000)} s): ${lastError}`);
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(timer);
      resolve();
    }, { once: true });
  });
}
