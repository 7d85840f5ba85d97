import { EventEmitter } from 'node:events';
import { connect, type Socket } from 'node:net';
import { WorkError, errorMessage } from '../errors.js';

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

interface Pending {
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
}

/**
 * A QEMU Machine Protocol client over a unix socket: reads the greeting, negotiates
 * capabilities, runs commands with ids, and emits events (`SHUTDOWN`, `POWERDOWN`, …) as
 * 'event' with a QmpEvent.
 */
export class QmpClient extends EventEmitter {
  private buffer = '';
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  private closed = false;
  greeting?: Record<string, unknown>;

  private constructor(private readonly socket: Socket) {
    super();
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.onData(chunk));
    socket.on('close', () => this.onClose());
    socket.on('error', () => this.onClose());
  }

  /** Connects, retrying until the socket exists and answers or `timeoutMs` passes. */
  static async connect(path: string, timeoutMs = 10_000): Promise<QmpClient> {
    const deadline = Date.now() + timeoutMs;
    let lastError: unknown;
    while (Date.now() < deadline) {
      try {
        const socket = await new Promise<Socket>((resolve, reject) => {
          const s = connect(path);
          s.once('connect', () => resolve(s));
          s.once('error', reject);
        });
        const client = new QmpClient(socket);
        await client.handshake(Math.max(1000, deadline - Date.now()));
        return client;
      } catch (err) {
        lastError = err;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    throw new WorkError(`QMP socket ${path} did not answer within ${timeoutMs} ms: ${errorMessage(lastError)}`);
  }

  private async handshake(timeoutMs: number): Promise<void> {
    this.greeting = await new Promise<Record<string, unknown>>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no QMP greeting')), timeoutMs);
      this.once('greeting', (g: Record<string, unknown>) => {
        clearTimeout(timer);
        resolve(g);
      });
      this.once('closed', () => {
        clearTimeout(timer);
        reject(new Error('connection closed before the greeting'));
      });
    });
    await this.execute('qmp_capabilities');
  }

  /**
   * Runs a QMP command. A QEMU that stops answering (hung, or its monitor blocked) fails the
   * command after `timeoutMs` instead of leaving PIM waiting forever.
   */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, timeoutMs = 10_000): Promise<T> {
    if (this.closed) return Promise.reject(new WorkError(`QMP: cannot run ${command}: connection closed`));
    const id = `pim-${this.nextId++}`;
    const message = JSON.stringify(args ? { execute: command, arguments: args, id } : { execute: command, id });
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new WorkError(`QMP: ${command} got no answer within ${timeoutMs / 1000} s`));
      }, timeoutMs);
      this.pending.set(id, {
        resolve: (value) => {
          clearTimeout(timer);
          (resolve as (v: unknown) => void)(value);
        },
        reject: (err) => {
          clearTimeout(timer);
          reject(err);
        },
      });
      this.socket.write(`${message}\n`);
    });
  }

  /** Resolves with the next event named `name`, or rejects after `timeoutMs`. */
  waitForEvent(name: string, timeoutMs: number): Promise<QmpEvent> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.off('event', onEvent);
        reject(new WorkError(`QMP: no ${name} event within ${timeoutMs} ms`));
      }, timeoutMs);
      const onEvent = (event: QmpEvent) => {
        if (event.event !== name) return;
        clearTimeout(timer);
        this.off('event', onEvent);
        resolve(event);
      };
      this.on('event', onEvent);
    });
  }

  close(): void {
    this.socket.destroy();
  }

  get isClosed(): boolean {
    return this.closed;
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    let newline: number;
    while ((newline = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, newline).trim();
      this.buffer = this.buffer.slice(newline + 1);
      if (!line) continue;
      let message: Record<string, unknown>;
      try {
        message = JSON.parse(line) as Record<string, unknown>;
      } catch {
        continue;
      }
      if ('QMP' in message) this.emit('greeting', message['QMP']);
      else if ('event' in message) this.emit('event', message as unknown as QmpEvent);
      else if (typeof message['id'] === 'string' && this.pending.has(message['id'])) {
        const waiter = this.pending.get(message['id'])!;
        this.pending.delete(message['id']);
        if ('error' in message) {
          const error = message['error'] as { class?: string; desc?: string };
          waiter.reject(new WorkError(`QMP error ${error.class ?? ''}: ${error.desc ?? 'unknown'}`));
        } else waiter.resolve(message['return']);
      }
    }
  }

  private onClose(): void {
    if (this.closed) return;
    this.closed = true;
    for (const waiter of this.pending.values()) waiter.reject(new WorkError('QMP connection closed'));
    this.pending.clear();
    this.emit('closed');
  }
}
