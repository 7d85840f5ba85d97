import { randomBytes } from 'node:crypto';
import { linkSync, readFileSync, statSync, unlinkSync, utimesSync } from 'node:fs';
import { hostname } from 'node:os';
import { WorkError, errorMessage } from '../errors.js';
import { placeComplete } from './atomic-write.js';

/**
 * The one cross-process lock of PIM (registry, work dirs, port leases, ISO downloads).
 *
 * A lock on TARGET is the file `TARGET.lock` naming its owner: `host pid token`. It is made
 * complete in a temp file and then hard-linked into place, so a lock file is never empty or
 * half-written (a full disk fails the attempt and leaves nothing behind).
 *
 * A lock whose owner is dead (same host: the pid is gone; another host: not refreshed for
 * `staleMs`) is taken over without a race: removing the lock held by token X needs the
 * "right to break X", itself a lock on `TARGET.lock.break-X` taken the same way. Only its holder
 * removes the lock file, and only while it still names X. Since tokens are never reused, a
 * process that saw X long ago and comes late finds X gone and removes nothing. A breaker that
 * dies holding the right is broken the same way, one level deeper.
 *
 * Release removes the lock file only if it still names this owner.
 */
export interface LockHandle {
  readonly path: string;
  readonly token: string;
  release(): void;
}

export interface LockOptions {
  /** Give up after this long (default 30 s). */
  timeoutMs?: number;
  /** A lock of another host is stale after this long without a refresh (default 10 min). */
  staleMs?: number;
  /** Called once when the lock is held by someone else and we start waiting. */
  onWait?: (holder: string) => void;
  signal?: AbortSignal;
}

interface Owner {
  host: string;
  pid: number;
  token: string;
}

const HOST = hostname();
const DEFAULT_STALE_MS = 10 * 60_000;
const held = new Set<LockHandle>();

function lockFile(target: string): string {
  return `${target}.lock`;
}

function parseOwner(text: string): Owner | undefined {
  const [host, pid, token] = text.trim().split(' ');
  if (!host || !token || !/^\d+$/.test(pid ?? '')) return undefined;
  return { host, pid: Number(pid), token };
}

function readOwner(path: string): { owner?: Owner; id: string } | undefined {
  let text: string;
  let st;
  try {
    st = statSync(path);
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new WorkError(`cannot read the lock ${path}: ${errorMessage(err)}`);
  }
  const owner = parseOwner(text);
  // A lock file this code did not write (empty, or from an older PIM) is known by its inode.
  return { owner, id: owner?.token ?? `ino${st.ino}-${Math.round(st.mtimeMs)}-${st.size}` };
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function ownerDead(path: string, owner: Owner | undefined, staleMs: number): boolean {
  if (owner && owner.host === HOST) return !pidAlive(owner.pid);
  try {
    const age = Date.now() - statSync(path).mtimeMs;
    // Unreadable owner: a few seconds is plenty (our own locks are never in that state).
    return age > (owner ? staleMs : 5_000);
  } catch {
    return false;
  }
}

/** One attempt: link a complete owner file into place. */
function tryCreate(path: string): LockHandle | undefined {
  const token = randomBytes(8).toString('hex');
  try {
    placeComplete(`${path}.${token}.tmp`, `${HOST} ${process.pid} ${token}\n`, 0o600, (temp) => linkSync(temp, path));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return undefined;
    throw new WorkError(`cannot take the lock ${path}: ${errorMessage(err)}`);
  }
  const handle: LockHandle = {
    path,
    token,
    release() {
      if (!held.delete(handle)) return;
      const current = readOwner(path);
      if (current?.owner?.token === token) removeQuietly(path);
    },
  };
  held.add(handle);
  return handle;
}

function removeQuietly(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    /* gone already */
  }
}

/** Removes `path` if it still holds the lock instance `id`, under the right to break it. */
function breakStale(path: string, id: string, staleMs: number, depth = 0): void {
  if (depth > 8) return;
  const rightPath = `${path}.break-${id}`;
  const right = tryCreate(rightPath);
  if (right) {
    try {
      if (readOwner(path)?.id === id) removeQuietly(path);
    } finally {
      right.release();
    }
    return;
  }
  const breaker = readOwner(rightPath);
  if (breaker && ownerDead(rightPath, breaker.owner, staleMs)) breakStale(rightPath, breaker.id, staleMs, depth + 1);
}

function describe(owner: Owner | undefined): string {
  return owner ? `${owner.host} pid ${owner.pid}` : 'an unknown process';
}

/** Takes the lock on `target` now, or returns undefined when a live owner holds it. */
export function tryLock(target: string, options: Pick<LockOptions, 'staleMs'> = {}): LockHandle | undefined {
  const path = lockFile(target);
  const staleMs = options.staleMs ?? DEFAULT_STALE_MS;
  for (let attempt = 0; attempt < 4; attempt++) {
    const handle = tryCreate(path);
    if (handle) {
      keepFresh(handle, staleMs);
      return handle;
    }
    const current = readOwner(path);
    if (!current) continue;
    if (!ownerDead(path, current.owner, staleMs)) return undefined;
    breakStale(path, current.id, staleMs);
  }
  return undefined;
}

/** Who holds the lock on `target` (`host pid N`), or undefined when nobody alive does. */
export function lockHolder(target: string, options: Pick<LockOptions, 'staleMs'> = {}): string | undefined {
  const path = lockFile(target);
  const current = readOwner(path);
  if (!current || ownerDead(path, current.owner, options.staleMs ?? DEFAULT_STALE_MS)) return undefined;
  return describe(current.owner);
}

/** Waits for the lock on `target` (polling with back-off) and returns its handle. */
export async function acquireLock(target: string, options: LockOptions = {}): Promise<LockHandle> {
  const path = lockFile(target);
  const started = Date.now();
  const timeoutMs = options.timeoutMs ?? 30_000;
  const staleMs = options.staleMs ?? DEFAULT_STALE_MS;
  let delay = 5;
  let announced = false;
  for (;;) {
    const handle = tryLock(target, { staleMs });
    if (handle) return handle;
    const holder = describe(readOwner(path)?.owner);
    if (!announced) {
      announced = true;
      options.onWait?.(holder);
    }
    if (options.signal?.aborted) throw new WorkError(`interrupted while waiting for the lock ${path}`);
    if (Date.now() - started > timeoutMs) {
      throw new WorkError(`timed out after ${Math.round(timeoutMs / 1000)} s waiting for the lock ${path} (held by ${holder})`);
    }
    await new Promise((r) => setTimeout(r, delay + Math.random() * delay));
    delay = Math.min(delay * 2, 200);
  }
}

/** Runs `fn` holding the lock on `target`; the lock is released however `fn` ends. */
export async function withFileLock<T>(target: string, fn: () => Promise<T> | T, options: LockOptions = {}): Promise<T> {
  const handle = await acquireLock(target, options);
  try {
    return await fn();
  } finally {
    handle.release();
  }
}

/** A long-held lock of another host would look stale: touch it while it is held. */
function keepFresh(handle: LockHandle, staleMs: number): void {
  const timer = setInterval(() => {
    if (!held.has(handle)) {
      clearInterval(timer);
      return;
    }
    try {
      const now = new Date();
      utimesSync(handle.path, now, now);
    } catch {
      /* released meanwhile */
    }
  }, Math.max(1_000, staleMs / 3));
  timer.unref();
}

/** Every lock this process holds is released when it exits normally. */
process.on('exit', () => {
  for (const handle of [...held]) handle.release();
});
