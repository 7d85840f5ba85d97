import { closeSync, openSync, readFileSync, rmSync, statSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { WorkError } from '../errors.js';

/**
 * A cross-process lock: a lock file created with O_EXCL that names its owner (host and pid).
 * Waiters poll; a lock whose owner process is gone (same host) or that is older than
 * `staleMs` is taken over.
 */
export async function withFileLock<T>(path: string, fn: () => Promise<T> | T, options: { timeoutMs?: number; staleMs?: number } = {}): Promise<T> {
  const lockPath = `${path}.lock`;
  const started = Date.now();
  const timeoutMs = options.timeoutMs ?? 30_000;
  const staleMs = options.staleMs ?? 10 * 60_000;
  let delay = 5;
  for (;;) {
    try {
      const fd = openSync(lockPath, 'wx', 0o600);
      writeSync(fd, `${hostname()} ${process.pid}\n`);
      closeSync(fd);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw new WorkError(`cannot create lock ${lockPath}: ${(err as Error).message}`);
      if (isStale(lockPath, staleMs)) {
        rmSync(lockPath, { force: true });
        continue;
      }
      if (Date.now() - started > timeoutMs) {
        throw new WorkError(`timed out after ${Math.round(timeoutMs / 1000)} s waiting for the lock ${lockPath} (held by ${safeRead(lockPath).trim() || 'unknown'})`);
      }
      await new Promise((r) => setTimeout(r, delay + Math.random() * delay));
      delay = Math.min(delay * 2, 100);
    }
  }
  try {
    return await fn();
  } finally {
    rmSync(lockPath, { force: true });
  }
}

function safeRead(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

function isStale(lockPath: string, staleMs: number): boolean {
  const [host, pidText] = safeRead(lockPath).trim().split(' ');
  const pid = Number(pidText);
  if (host === hostname() && Number.isInteger(pid) && pid > 0) {
    try {
      process.kill(pid, 0);
      return false;
    } catch (err) {
      return (err as NodeJS.ErrnoException).code === 'ESRCH';
    }
  }
  try {
    return Date.now() - statSync(lockPath).mtimeMs > staleMs;
  } catch {
    return false;
  }
}
