import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { repoRoot } from './env.js';

let tinyVmDir: string | undefined;

/** The tiny VM of test/fixtures/tiny-vm (built once, cached on disk): { kernel, initrd }. */
export function tinyVm(): { kernel: string; initrd: string } {
  tinyVmDir ??= execFileSync('bash', [join(repoRoot, 'test/fixtures/tiny-vm/build.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] })
    .trim()
    .split('\n')
    .at(-1)!;
  return { kernel: join(tinyVmDir, 'vmlinuz'), initrd: join(tinyVmDir, 'initrd.gz') };
}

/** Resolves once `predicate` is true, polling; rejects after `timeoutMs`. */
export async function until(predicate: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const start = Date.now();
  while (!predicate()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
