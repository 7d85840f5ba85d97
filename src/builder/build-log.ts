import { appendFileSync, closeSync, existsSync, mkdirSync, openSync, readFileSync, readSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import { maskText } from '../secrets.js';

/**
 * A build's log file: command lines, consoles, script output and timings, each line
 * timestamped. Secrets (the profile's passwords, URL credentials) are masked before anything
 * is written.
 */
export class BuildLog {
  private readonly secrets: string[];

  constructor(
    readonly path: string,
    secrets: readonly (string | undefined)[] = [],
  ) {
    mkdirSync(dirname(path), { recursive: true });
    this.secrets = secrets.filter((s): s is string => typeof s === 'string' && s.length >= 3);
  }

  mask(text: string): string {
    return maskText(text, this.secrets);
  }

  line(text: string): void {
    appendFileSync(this.path, `${new Date().toISOString()} ${this.mask(text)}\n`);
  }

  tail(count = 20): string {
    if (!existsSync(this.path)) return '';
    return readFileSync(this.path, 'utf8').trimEnd().split('\n').slice(-count).join('\n');
  }
}

/** The lines appended to a growing file (a serial console) since the last read. */
export class FileTail {
  private offset = 0;
  private pending = '';

  constructor(readonly path: string) {}

  /** The complete lines written since the last call (ANSI colours stripped). */
  read(): string[] {
    if (!existsSync(this.path)) return [];
    const size = statSync(this.path).size;
    if (size <= this.offset) return [];
    const fd = openSync(this.path, 'r');
    try {
      const buffer = Buffer.alloc(size - this.offset);
      readSync(fd, buffer, 0, buffer.length, this.offset);
      this.offset = size;
      this.pending += buffer.toString('utf8');
    } finally {
      closeSync(fd);
    }
    const parts = this.pending.split('\n');
    this.pending = parts.pop() ?? '';
    return parts.map(clean);
  }

  /** The unfinished last line read so far (a login prompt), cleaned, without taking it. */
  get partial(): string {
    return clean(this.pending);
  }

  /** The last line, unfinished (a login prompt), handed over once. */
  rest(): string[] {
    const rest = this.pending;
    this.pending = '';
    return rest ? [clean(rest)] : [];
  }
}

const clean = (line: string) => line.replace(/\r$/, '').replace(/\x1b\[[0-9;=?]*[A-Za-z]/g, '');

/** Follows a growing file (a serial console) and hands each new line to `onLine` until stopped. */
export function followFile(path: string, onLine: (line: string) => void, intervalMs = 300): () => void {
  const tail = new FileTail(path);
  const timer = setInterval(() => tail.read().forEach(onLine), intervalMs);
  return () => {
    clearInterval(timer);
    tail.read().forEach(onLine);
    tail.rest().forEach(onLine);
  };
}
