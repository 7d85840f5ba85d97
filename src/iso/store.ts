import { createReadStream, createWriteStream, existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import type { IsoEntry } from '../config/schema.js';
import { WorkError, errorMessage } from '../errors.js';
import { writeFileAtomic } from '../files/atomic-write.js';
import { withFileLock } from '../files/lock.js';
import { checksumFromSumsFile, hashFile, parseChecksum, type Checksum } from './checksum.js';

export type IsoState = 'missing' | 'partial' | 'downloaded' | 'verified';

export interface IsoStatus {
  state: IsoState;
  path: string;
  bytes?: number;
}

export type ProgressCallback = (received: number, total: number | undefined) => void;

/**
 * Downloaded media in `iso_dir`. A file appears under its final name only once its checksum
 * matched; until then it is `NAME.part`, which a later download resumes. A `NAME.verified`
 * stamp (size, mtime, checksum) lets `pim iso list` say "verified" without rehashing.
 */
export class IsoStore {
  constructor(readonly dir: string) {}

  pathOf(entry: IsoEntry): string {
    return join(this.dir, entry.filename);
  }

  status(entry: IsoEntry): IsoStatus {
    const path = this.pathOf(entry);
    if (existsSync(path)) {
      const bytes = statSync(path).size;
      return { state: this.stampMatches(entry) ? 'verified' : 'downloaded', path, bytes };
    }
    if (existsSync(`${path}.part`)) return { state: 'partial', path, bytes: statSync(`${path}.part`).size };
    return { state: 'missing', path };
  }

  /**
   * Downloads (resuming a partial file), verifies, and moves the file into place. Two downloads
   * of one entry, in two processes, do not race: the second waits for the first (a lock on the
   * file) and then finds it verified.
   */
  async download(entry: IsoEntry, onProgress?: ProgressCallback, options: { onWait?: (holder: string) => void } = {}): Promise<{ path: string; skipped: boolean }> {
    const path = this.pathOf(entry);
    if (this.status(entry).state === 'verified') return { path, skipped: true };
    mkdirSync(this.dir, { recursive: true });
    return withFileLock(path, () => this.downloadLocked(entry, onProgress), { timeoutMs: 24 * 3600_000, onWait: options.onWait });
  }

  private async downloadLocked(entry: IsoEntry, onProgress?: ProgressCallback): Promise<{ path: string; skipped: boolean }> {
    const path = this.pathOf(entry);
    if (this.status(entry).state === 'verified') return { path, skipped: true };
    const expected = await this.expectedChecksum(entry);
    const part = `${path}.part`;
    if (!existsSync(path)) await fetchResumable(entry.url, part, onProgress);
    else renameSync(path, part); // present but never verified: verify it as a partial file
    const actual = await hashFile(part, expected.algorithm);
    if (actual !== expected.hex) {
      rmSync(part, { force: true });
      throw new WorkError(
        `checksum mismatch for ${entry.name} (${entry.url}): expected ${expected.algorithm}:${expected.hex}, got ${expected.algorithm}:${actual}; the download was removed`,
      );
    }
    renameSync(part, path);
    this.writeStamp(entry, expected);
    return { path, skipped: false };
  }

  /** Rehashes the downloaded file; returns whether it matches the catalog. */
  async verify(entry: IsoEntry): Promise<{ ok: boolean; expected: string; actual: string }> {
    const path = this.pathOf(entry);
    if (!existsSync(path)) throw new WorkError(`${entry.name} is not downloaded (expected ${path}); run 'pim iso download ${entry.name}'`);
    const expected = await this.expectedChecksum(entry);
    const actual = await hashFile(path, expected.algorithm);
    const ok = actual === expected.hex;
    if (ok) this.writeStamp(entry, expected);
    else rmSync(`${path}.verified`, { force: true });
    return { ok, expected: `${expected.algorithm}:${expected.hex}`, actual: `${expected.algorithm}:${actual}` };
  }

  async expectedChecksum(entry: IsoEntry): Promise<Checksum> {
    if (entry.checksum.startsWith('file:')) return checksumFromSumsFile(entry.checksum.slice(5), entry.filename);
    const parsed = parseChecksum(entry.checksum);
    if (!parsed) throw new WorkError(`ISO ${entry.name}: unusable checksum '${entry.checksum}'`);
    return parsed;
  }

  private stampMatches(entry: IsoEntry): boolean {
    const path = this.pathOf(entry);
    try {
      const stamp = JSON.parse(readFileSync(`${path}.verified`, 'utf8')) as Record<string, unknown>;
      const st = statSync(path);
      const checksumOk = entry.checksum.startsWith('file:') || stamp.checksum === normalized(entry.checksum);
      return checksumOk && stamp.size === st.size && stamp.mtimeMs === st.mtimeMs;
    } catch {
      return false;
    }
  }

  private writeStamp(entry: IsoEntry, checksum: Checksum): void {
    const path = this.pathOf(entry);
    const st = statSync(path);
    const stamp = { checksum: `${checksum.algorithm}:${checksum.hex}`, size: st.size, mtimeMs: st.mtimeMs };
    writeFileAtomic(`${path}.verified`, `${JSON.stringify(stamp)}\n`);
  }
}

function normalized(checksum: string): string {
  const parsed = parseChecksum(checksum);
  return parsed ? `${parsed.algorithm}:${parsed.hex}` : checksum;
}

/** Downloads `url` into `part`, resuming from its current size when the server allows it. */
async function fetchResumable(url: string, part: string, onProgress?: ProgressCallback): Promise<void> {
  if (url.startsWith('file:')) return copyLocal(fileURLToPath(url), part, onProgress);
  const have = existsSync(part) ? statSync(part).size : 0;
  let res: Response;
  try {
    res = await fetch(url, { headers: have > 0 ? { range: `bytes=${have}-` } : {} });
  } catch (err) {
    throw new WorkError(`cannot download ${url}: ${errorMessage(err)}`);
  }
  if (res.status === 416 && have > 0) return; // already complete: the checksum decides
  if (!res.ok || !res.body) throw new WorkError(`cannot download ${url}: HTTP ${res.status}`);
  const resumed = res.status === 206;
  const start = resumed ? have : 0;
  const length = Number(res.headers.get('content-length') ?? NaN);
  const total = Number.isFinite(length) ? start + length : undefined;
  let received = start;
  const body = Readable.fromWeb(res.body as unknown as WebReadableStream<Uint8Array>);
  body.on('data', (chunk: Buffer) => {
    received += chunk.length;
    onProgress?.(received, total);
  });
  try {
    await pipeline(body, createWriteStream(part, { flags: resumed ? 'a' : 'w' }));
  } catch (err) {
    throw new WorkError(`download of ${url} broke off after ${received} bytes (kept ${part} to resume): ${errorMessage(err)}`);
  }
  if (total !== undefined && received < total) {
    throw new WorkError(`download of ${url} ended early at ${received} of ${total} bytes (kept ${part} to resume)`);
  }
}

/** `file://` URLs: media already on this machine (a local mirror, a test installer). */
async function copyLocal(path: string, part: string, onProgress?: ProgressCallback): Promise<void> {
  let total: number;
  try {
    total = statSync(path).size;
  } catch (err) {
    throw new WorkError(`cannot read ${path}: ${errorMessage(err)}`);
  }
  let received = 0;
  const source = createReadStream(path);
  source.on('data', (chunk) => {
    received += chunk.length;
    onProgress?.(received, total);
  });
  await pipeline(source, createWriteStream(part));
}
