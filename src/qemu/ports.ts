import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { WorkError } from '../errors.js';

/**
 * Free loopback ports that no two PIM processes ever share. The OS picks a free port (bind to
 * port 0); a lock file created with O_EXCL claims it across processes until `release()`. A lock
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

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function tryClaim(path: string): boolean {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(path, 'wx', 0o600);
      writeSync(fd, String(process.pid));
      closeSync(fd);
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const owner = Number(readFileSync(path, 'utf8').trim() || NaN);
      if (Number.isFinite(owner) && alive(owner)) return false;
      rmSync(path, { force: true }); // stale: its owner died
    }
  }
  return false;
}

export async function leasePort(): Promise<PortLease> {
  const dir = lockDir();
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = await osFreePort();
    const path = join(dir, `${port}.lock`);
    if (tryClaim(path)) {
      let released = false;
      return {
        port,
        release() {
          if (!released) rmSync(path, { force: true });
          released = true;
        },
      };
    }
  }
  throw new WorkError('could not find a free loopback port after 50 attempts');
}
