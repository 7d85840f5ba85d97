import { stringify } from 'yaml';

export { MASK, maskSecrets } from '../secrets.js';

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

export function printYaml(value: unknown): void {
  process.stdout.write(stringify(value));
}

export function println(line = ''): void {
  process.stdout.write(`${line}\n`);
}

export function warn(line: string): void {
  process.stderr.write(`pim: warning: ${line}\n`);
}

/** A plain text table with padded columns. */
export function table(rows: string[][]): string {
  const widths: number[] = [];
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)));
  return rows.map((row) => row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  ')).join('\n');
}

export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

/** A progress reporter: a rewritten line on a terminal, a line every 10% otherwise. */
export function progressReporter(label: string, stream: NodeJS.WriteStream = process.stderr) {
  let lastDecile = -1;
  let lastDraw = 0;
  return {
    update(received: number, total: number | undefined) {
      const pct = total ? Math.floor((received / total) * 100) : undefined;
      if (stream.isTTY) {
        const now = Date.now();
        if (now - lastDraw < 100 && received !== total) return;
        lastDraw = now;
        const text = pct !== undefined ? `${pct}% (${formatBytes(received)} of ${formatBytes(total!)})` : formatBytes(received);
        stream.write(`\r${label}: ${text}\x1b[K`);
      } else if (pct !== undefined && Math.floor(pct / 10) > lastDecile) {
        lastDecile = Math.floor(pct / 10);
        stream.write(`${label}: ${pct}%\n`);
      }
    },
    done() {
      if (stream.isTTY) stream.write('\n');
    },
  };
}
