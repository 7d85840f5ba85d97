import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { shellJoin } from './shell.js';
import { WorkError, errorMessage } from './errors.js';

/**
 * The one place PIM starts external processes: it logs each command line, captures output, and
 * keeps every long-running child in a registry so that nothing outlives PIM -- on SIGINT or
 * SIGTERM (see lifecycle.ts) and on exit, every child still running is killed.
 */
export type LogFn = (line: string) => void;

const live = new Set<ChildProcess>();

export function liveChildren(): ReadonlySet<ChildProcess> {
  return live;
}

/** Kills every child still running, synchronously (safe in 'exit' handlers). */
export function killAllChildren(signal: NodeJS.Signals = 'SIGKILL'): void {
  for (const child of live) {
    try {
      child.kill(signal);
    } catch {
      /* already gone */
    }
  }
}
process.on('exit', () => killAllChildren());

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  log?: LogFn;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  input?: string;
  timeoutMs?: number;
  /** Called with each line of stdout/stderr as it arrives. */
  onLine?: (line: string, stream: 'stdout' | 'stderr') => void;
}

/** Runs a command to completion. Never throws for a non-zero exit: callers decide. */
export function run(command: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  options.log?.(`$ ${shellJoin([command, ...args])}`);
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: options.cwd, env: options.env, stdio: ['pipe', 'pipe', 'pipe'] });
    live.add(child);
    let stdout = '';
    let stderr = '';
    const splitter = (stream: 'stdout' | 'stderr') => {
      let pending = '';
      return (chunk: Buffer) => {
        const text = chunk.toString();
        if (stream === 'stdout') stdout += text;
        else stderr += text;
        if (!options.onLine) return;
        pending += text;
        const lines = pending.split('\n');
        pending = lines.pop() ?? '';
        for (const line of lines) options.onLine(line, stream);
      };
    };
    child.stdout!.on('data', splitter('stdout'));
    child.stderr!.on('data', splitter('stderr'));
    const timer = options.timeoutMs ? setTimeout(() => child.kill('SIGKILL'), options.timeoutMs) : undefined;
    child.on('error', (err) => {
      live.delete(child);
      clearTimeout(timer);
      reject(new WorkError(`cannot run ${command}: ${errorMessage(err)}`));
    });
    child.on('close', (code, signal) => {
      live.delete(child);
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr });
    });
    if (options.input !== undefined) child.stdin!.end(options.input);
    else child.stdin!.end();
  });
}

/** Runs a command and throws a WorkError carrying the tool's own message when it fails. */
export async function runChecked(command: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  const result = await run(command, args, options);
  if (result.code !== 0) {
    const detail = (result.stderr.trim() || result.stdout.trim()).split('\n').slice(-3).join(' / ');
    throw new WorkError(`${command} failed (exit ${result.code}): ${detail || 'no output'}`);
  }
  return result;
}

/**
 * Starts a long-running process (QEMU) and registers it. On Linux it is wrapped in
 * `setpriv --pdeathsig SIGKILL` when available, so that the kernel kills it even if PIM itself
 * is killed with SIGKILL and never gets to clean up.
 */
export function spawnManaged(command: string, args: readonly string[], options: SpawnOptions & { log?: LogFn } = {}): ChildProcess {
  const { log, ...spawnOptions } = options;
  log?.(`$ ${shellJoin([command, ...args])}`);
  // Its own process group: a terminal's Ctrl+C reaches PIM only, and PIM stops the child in
  // its own time (a build's cleanup), instead of the child dying under a step that runs it.
  spawnOptions.detached ??= true;
  const wrap = process.platform === 'linux' && setprivPath() !== undefined;
  const child = wrap
    ? spawn(setprivPath()!, ['--pdeathsig', 'SIGKILL', '--', command, ...args], spawnOptions)
    : spawn(command, args, spawnOptions);
  live.add(child);
  child.on('exit', () => live.delete(child));
  child.on('error', () => live.delete(child));
  return child;
}

let setprivCache: string | null | undefined;
function setprivPath(): string | undefined {
  if (setprivCache === undefined) {
    setprivCache = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p)) ?? null;
  }
  return setprivCache ?? undefined;
}

/** The absolute path of `name` on PATH, or undefined. */
export function which(name: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  for (const dir of (env.PATH ?? '').split(':')) {
    if (!dir) continue;
    const candidate = `${dir}/${name}`;
    if (existsSync(candidate)) return candidate;
  }
  return undefined;
}

/** fcntl's F_SETPIPE_SZ on Linux (F_LINUX_SPECIFIC_BASE + 7). */
const F_SETPIPE_SZ = 1031;

/**
 * `command` and `args`, to be spawned with its stdin and stdout pipes (or FIFOs) enlarged to
 * `bytes`, capped at what the system lets anyone ask (/proc/sys/fs/pipe-max-size, 1 MiB by
 * default): Node has no fcntl, so perl (part of every Debian system) sets F_SETPIPE_SZ and then
 * execs the command. A pipe of 64 KiB, Linux's default, stalls a fast child whenever its reader
 * or writer is busy for a moment. Not on Linux, or without perl, the command as it is; a refused
 * fcntl leaves the pipe as it was.
 */
export function withPipeSize(bytes: number, command: string, args: readonly string[]): [string, string[]] {
  if (process.platform !== 'linux' || !which('perl')) return [command, [...args]];
  let max = bytes;
  try {
    max = Number(readFileSync('/proc/sys/fs/pipe-max-size', 'utf8').trim()) || bytes;
  } catch {
    /* no /proc: ask for what was asked */
  }
  const size = Math.min(bytes, max);
  const script = `my $n = 0 + shift; fcntl(STDIN, ${F_SETPIPE_SZ}, $n); fcntl(STDOUT, ${F_SETPIPE_SZ}, $n); exec { $ARGV[0] } @ARGV or die "$ARGV[0]: $!\\n"`;
  return ['perl', ['-e', script, String(size), command, ...args]];
}
