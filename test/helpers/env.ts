import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** The repository root, from dist/test/helpers/env.js. */
export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
export const pimBin = join(repoRoot, 'bin', 'pim.js');

/** A throw-away home: XDG dirs and a project dir, removed by `cleanup()`. */
export interface Sandbox {
  root: string;
  project: string;
  env: NodeJS.ProcessEnv;
  write(relative: string, content: string): string;
  cleanup(): void;
}

export function sandbox(prefix = 'pim-test-'): Sandbox {
  return sandboxAt(mkdtempSync(join(tmpdir(), prefix)));
}

/** A sandbox in `root`; `keep` makes cleanup() leave it (a fixture kept for later runs). */
export function sandboxAt(root: string, options: { keep?: boolean } = {}): Sandbox {
  const project = join(root, 'project');
  mkdirSync(project, { recursive: true });
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    HOME: join(root, 'home'),
    XDG_CONFIG_HOME: join(root, 'config'),
    XDG_DATA_HOME: join(root, 'data'),
    XDG_CACHE_HOME: join(root, 'cache'),
    XDG_STATE_HOME: join(root, 'state'),
  };
  return {
    root,
    project,
    env,
    write(relative, content) {
      const path = resolve(project, relative);
      mkdirSync(dirname(path), { recursive: true });
      writeFileSync(path, content);
      return path;
    },
    cleanup: () => {
      if (!options.keep) rmSync(root, { recursive: true, force: true });
    },
  };
}

export interface CliResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the real `pim` executable in the sandbox's project directory (asynchronously, so that
 * servers in the test process keep answering). */
export function pim(box: Sandbox, args: string[], options: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [pimBin, ...args], {
      cwd: box.project,
      env: { ...box.env, ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 120_000);
    child.on('error', reject);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}

export function pimAsync(box: Sandbox, args: string[], env?: NodeJS.ProcessEnv) {
  return spawn(process.execPath, [pimBin, ...args], { cwd: box.project, env: { ...box.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
}
