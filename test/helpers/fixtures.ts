import { execFileSync } from 'node:child_process';
import { readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Vm, VmSpecInput } from '../../src/qemu/vm.js';
import { repoRoot } from './env.js';

let tinyVmDir: string | undefined;

/** Where fixtures too slow to make every run are cached: $PIM_FIXTURE_CACHE, else ~/.cache/pim-fixtures. */
export function fixtureCache(): string {
  return process.env['PIM_FIXTURE_CACHE'] ?? join(process.env['HOME'] ?? '/root', '.cache/pim-fixtures');
}

/**
 * Removes the fixtures named `prefix`+something other than `current` (each code change makes a
 * new one), but not one touched in the last hours: another checkout's run may be using it.
 */
export function pruneFixtures(prefix: string, current: string): void {
  const cache = fixtureCache();
  for (const old of readdirSync(cache).filter((f) => f.startsWith(prefix) && !f.startsWith(`${prefix}${current}`))) {
    if (Date.now() - statSync(join(cache, old)).mtimeMs > 6 * 3600_000) rmSync(join(cache, old), { recursive: true, force: true });
  }
}

/** The tiny VM of test/fixtures/tiny-vm (built once, cached on disk): { kernel, initrd }. */
export function tinyVm(): { kernel: string; initrd: string } {
  tinyVmDir ??= execFileSync('bash', [join(repoRoot, 'test/fixtures/tiny-vm/build.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] })
    .trim()
    .split('\n')
    .at(-1)!;
  return { kernel: join(tinyVmDir, 'vmlinuz'), initrd: join(tinyVmDir, 'initrd.gz') };
}

/** A VM spec of the tiny VM (256 MiB, 1 vCPU, TCG, serial console to `dir/NAME.log`), built on first use. */
export function tinyVmSpec(dir: string, name: string, append = ''): VmSpecInput {
  const { kernel, initrd } = tinyVm();
  return {
    name, arch: 'x86_64', accel: 'tcg', memoryMb: 256, cpus: 1,
    kernel: { path: kernel, initrd, append: `console=ttyS0 ${append}`.trim() },
    serialLog: join(dir, `${name}.log`),
  };
}

/** Kills the VMs and waits until each has exited. */
export async function killVms(...vms: Vm[]): Promise<void> {
  for (const vm of vms) vm.kill();
  await Promise.all(vms.map((vm) => vm.exited));
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
