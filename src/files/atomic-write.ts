import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { WorkError, errorMessage } from '../errors.js';

/**
 * Replaces `path` with `data` so that a reader sees the old file or the new one, never a part:
 * a temp file beside it, written and fsynced, renamed over it, and the directory fsynced so the
 * rename itself survives a crash. On any failure (a full disk) the temp file is removed and the
 * old file is untouched.
 */
export function writeFileAtomic(path: string, data: string | Buffer, mode = 0o644): void {
  const temp = join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  try {
    placeComplete(temp, data, mode, (from) => renameSync(from, path));
  } catch (err) {
    throw new WorkError(`cannot write ${path}: ${errorMessage(err)}`);
  }
  fsyncDir(dirname(path));
}

/**
 * Writes `data` to the new file `temp` (refusing to reuse one), fsyncs it, then hands it to
 * `place` (a rename over the final name, or a link to it); `temp` is gone afterwards whatever
 * happened. Errors are thrown as they come (EEXIST from a link says the name is taken).
 */
export function placeComplete(temp: string, data: string | Buffer, mode: number, place: (temp: string) => void): void {
  let fd: number | undefined;
  try {
    fd = openSync(temp, 'wx', mode);
    const bytes = typeof data === 'string' ? Buffer.from(data) : data;
    let offset = 0;
    while (offset < bytes.length) offset += writeSync(fd, bytes, offset, bytes.length - offset);
    fsyncSync(fd);
    closeSync(fd);
    fd = undefined;
    place(temp);
  } finally {
    if (fd !== undefined) closeSync(fd);
    try {
      unlinkSync(temp);
    } catch {
      /* renamed into place, or never created */
    }
  }
}

export function fsyncDir(dir: string): void {
  let fd: number | undefined;
  try {
    fd = openSync(dir, 'r');
    fsyncSync(fd);
  } catch {
    /* some file systems refuse to fsync a directory; the rename is still atomic */
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}
