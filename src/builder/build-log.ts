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

/** Follows a growing file (a serial console) and hands each new line to `onLine` until stopped. */
export function followFile(path: string, onLine: (line: string) => void, intervalMs = 300): () => void {
  let offset = 0;
  let pending = '';
  const poll = () => {
    if (!existsSync(path)) return;
    const size = statSync(path).size;
    if (size <= offset) return;
    const fd = openSync(path, 'r');
    try {
      const buffer = Buffer.alloc(size - offset);
      readSync(fd, buffer, 0, buffer.length, offset);
      offset = size;
      pending += buffer.toString('utf8');
      const parts = pending.split('\n');
      pending = parts.pop() ?? '';
      for (const part of parts) onLine(part.replace(/\r$/, '').replace(/\x1b\[[0-9;=?]*[A-Za-z]/g, ''));
    } finally {
      closeSync(fd);
    }
  };
  const timer = setInterval(poll, intervalMs);
  return () => {
    clearInterval(timer);
    poll();
    if (pending) onLine(pending);
    pending = '';
  };
}
