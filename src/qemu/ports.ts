import { mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { WorkError } from '../errors.js';
import { tryLock } from '../files/lock.js';

/**
 * Free loopback ports that no two PIM processes ever share. The OS picks a free port (bind to
 * port 0); a lock on it (files/lock.ts) claims it across processes until `release()`. A lock
 * whose owner process is gone is taken over.
 */
export interface PortLease {
  port: number;
  release(): void;
}

function lockDir(): string {
  const dir = join(tmpdir(), `pim-ports-${userInfo().uid}`);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  return dir;
}

function osFreePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

export async function leasePort(): Promise<PortLease> {
  const dir = lockDir();
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = await osFreePort();
    const lock = tryLock(join(dir, String(port)));
    if (lock) return { port, release: () => lock.release() };
  }
  throw new WorkError('could not find a free loopback port after 50 attempts');
}
