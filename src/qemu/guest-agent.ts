import { connect, type Socket } from 'node:net';
import { WorkError, errorMessage } from '../errors.js';

/**
 * A client for the QEMU guest agent (qemu-guest-agent in the guest, on a virtio-serial port that
 * QEMU exposes as a unix socket here). Used to freeze the guest's file systems while QEMU takes a
 * layer of its disk. The agent greets with nothing: `guest-sync-delimited` finds the start of
 * its answers (a 0xff byte) after whatever an earlier client left in the channel.
 */
export class GuestAgent {
  private buffer = '';
  private waiter?: (message: Record<string, unknown>) => void;

  private constructor(private readonly socket: Socket) {
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      this.buffer += chunk;
      this.drain();
    });
    socket.on('error', () => undefined);
  }

  /** Connects and syncs; undefined when no agent answers within `timeoutMs` (not installed, not running). */
  static async connect(path: string, timeoutMs = 5_000): Promise<GuestAgent | undefined> {
    const socket = await new Promise<Socket | undefined>((resolve) => {
      const s = connect(path);
      s.once('connect', () => resolve(s));
      s.once('error', () => resolve(undefined));
    });
    if (!socket) return undefined;
    const agent = new GuestAgent(socket);
    const id = Math.floor(Math.random() * 2 ** 31);
    try {
      socket.write(`\xff${JSON.stringify({ execute: 'guest-sync-delimited', arguments: { id } })}\n`, 'latin1');
      for (;;) {
        const reply = await agent.next(timeoutMs);
        if (reply['return'] === id) return agent;
      }
    } catch {
      agent.close();
      return undefined;
    }
  }

  private drain(): void {
    // Answers to guest-sync-delimited start after a 0xff byte; drop anything before it.
    const sentinel = this.buffer.lastIndexOf('\xff');
    if (sentinel >= 0) this.buffer = this.buffer.slice(sentinel + 1);
    let newline: number;
    while (this.waiter && (newline = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, newline).trim();
      this.buffer = this.buffer.slice(newline + 1);
      if (!line) continue;
      try {
        const message = JSON.parse(line) as Record<string, unknown>;
        const waiter = this.waiter;
        this.waiter = undefined;
        waiter(message);
      } catch {
        /* not JSON: noise from a previous client */
      }
    }
  }

  private next(timeoutMs: number): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        reject(new WorkError(`the guest agent did not answer within ${timeoutMs / 1000} s`));
      }, timeoutMs);
      this.waiter = (message) => {
        clearTimeout(timer);
        resolve(message);
      };
      this.drain();
    });
  }

  async execute<T = unknown>(command: string, timeoutMs = 30_000): Promise<T> {
    this.socket.write(`${JSON.stringify({ execute: command })}\n`);
    const reply = await this.next(timeoutMs);
    if ('error' in reply) {
      const error = reply['error'] as { desc?: string };
      throw new WorkError(`guest agent: ${command}: ${error.desc ?? 'failed'}`);
    }
    return reply['return'] as T;
  }

  /** Freezes every file system of the guest; returns how many. */
  async freeze(): Promise<number> {
    return this.execute<number>('guest-fsfreeze-freeze', 60_000);
  }

  async thaw(): Promise<number> {
    try {
      return await this.execute<number>('guest-fsfreeze-thaw', 60_000);
    } catch (err) {
      throw new WorkError(`could not thaw the guest's file systems: ${errorMessage(err)}`);
    }
  }

  close(): void {
    this.socket.destroy();
  }
}
