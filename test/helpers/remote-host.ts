// A test's remote machine: a real sshd with its own config, host key, port and environment (its
// own HOME and XDG dirs, so it shares no registry or cache with the local side), optionally in a
// network namespace of its own, and a real `pim` installed there from this checkout with
// `npm pack` and `npm install`, as a user would.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { userInfo } from 'node:os';
import { createBuildKeyPair, type BuildKeyPair } from '../../src/ssh/keys.js';
import { fingerprintOf } from '../../src/ssh/host-keys.js';
import { leasePort } from '../../src/qemu/ports.js';
import { acquireLock } from '../../src/files/lock.js';
import { repoRoot } from './env.js';
import { fixtureCache, pruneFixtures, until } from './fixtures.js';

export interface TestHost {
  /** The address and port sshd listens on. */
  address: string;
  port: number;
  user: string;
  /** The remote side's own home. */
  home: string;
  clientKey: BuildKeyPair;
  hostKeyFingerprint: string;
  hostKeyLine: string;
  /** The network namespace, when the host has one. */
  netns?: string;
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Runs a command on the host (in its namespace, as root). */
  run(command: string): string;
}

export interface TestHostOptions {
  /** Put the host in a network namespace with its own veth link (needs root). */
  netns?: boolean;
  /** sshd's ClientAliveInterval (seconds): how soon the remote side notices a dead link. */
  clientAlive?: number;
  /** More environment for the sessions (PATH for fake tools, their state). */
  env?: Record<string, string>;
}

let netnsCounter = 0;

export async function createTestHost(dir: string, options: TestHostOptions = {}): Promise<TestHost> {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
  const home = join(dir, 'home');
  for (const sub of ['', '.config', '.local/share', '.cache', '.local/state']) mkdirSync(join(home, sub), { recursive: true });
  let address = '127.0.0.1';
  let port: number;
  let netns: string | undefined;
  if (options.netns) {
    const n = (process.pid % 200) + (netnsCounter++ % 50);
    netns = `pimtest-${process.pid}-${netnsCounter}`;
    const hostSide = `pimh${process.pid % 10000}${netnsCounter}`;
    const nsSide = `pimn${process.pid % 10000}${netnsCounter}`;
    const subnet = `10.${200 + (n % 50)}.${n % 250}`;
    execFileSync('ip', ['netns', 'add', netns]);
    execFileSync('ip', ['link', 'add', hostSide, 'type', 'veth', 'peer', 'name', nsSide]);
    execFileSync('ip', ['link', 'set', nsSide, 'netns', netns]);
    execFileSync('ip', ['addr', 'add', `${subnet}.1/30`, 'dev', hostSide]);
    execFileSync('ip', ['link', 'set', hostSide, 'up']);
    execFileSync('ip', ['netns', 'exec', netns, 'ip', 'addr', 'add', `${subnet}.2/30`, 'dev', nsSide]);
    execFileSync('ip', ['netns', 'exec', netns, 'ip', 'link', 'set', nsSide, 'up']);
    execFileSync('ip', ['netns', 'exec', netns, 'ip', 'link', 'set', 'lo', 'up']);
    address = `${subnet}.2`;
    port = 22;
    (hostLinks as Map<string, string>).set(netns, hostSide);
  } else {
    const lease = await leasePort();
    port = lease.port;
    lease.release();
  }
  const hostKey = join(dir, 'host_ed25519');
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', hostKey]);
  const clientKey = createBuildKeyPair(join(dir, 'client'), 'pim-test-client');
  writeFileSync(join(dir, 'authorized_keys'), `${clientKey.publicKey}\n`, { mode: 0o600 });
  const config = join(dir, 'sshd_config');
  const env = {
    HOME: home,
    XDG_CONFIG_HOME: join(home, '.config'),
    XDG_DATA_HOME: join(home, '.local/share'),
    XDG_CACHE_HOME: join(home, '.cache'),
    XDG_STATE_HOME: join(home, '.local/state'),
    PIM_FIXTURE_CACHE: fixtureCache(),
    ...options.env,
  };
  writeFileSync(
    config,
    [
      `Port ${port}`,
      `ListenAddress ${address}`,
      `HostKey ${hostKey}`,
      `PidFile ${join(dir, 'sshd.pid')}`,
      `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'UsePAM no',
      'StrictModes no',
      'PermitRootLogin prohibit-password',
      'Subsystem sftp internal-sftp',
      `SetEnv ${Object.entries(env).map(([k, v]) => `${k}=${v}`).join(' ')}`,
      ...(options.clientAlive ? [`ClientAliveInterval ${options.clientAlive}`, 'ClientAliveCountMax 2'] : []),
      'LogLevel ERROR',
      '',
    ].join('\n'),
  );
  const pub = readFileSync(`${hostKey}.pub`, 'utf8').trim().split(/\s+/);
  let child: ChildProcess | undefined;
  const inNs = (args: string[]) => (netns ? ['ip', ['netns', 'exec', netns, ...args]] : [args[0]!, args.slice(1)]) as [string, string[]];
  const host: TestHost = {
    address,
    port,
    user: userInfo().username,
    home,
    clientKey,
    hostKeyFingerprint: fingerprintOf(Buffer.from(pub[1]!, 'base64')),
    hostKeyLine: `${pub[0]} ${pub[1]}`,
    netns,
    async start() {
      const [cmd, args] = inNs(['/usr/sbin/sshd', '-D', '-e', '-f', config]);
      child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
      child.stderr!.resume();
      await until(() => existsSync(join(dir, 'sshd.pid')) || child!.exitCode !== null, 10_000, 'sshd to start');
    },
    async stop() {
      if (!child || child.exitCode !== null) return;
      const exited = new Promise((r) => child!.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    },
    run(command: string) {
      const [cmd, args] = inNs(['sh', '-c', command]);
      return execFileSync(cmd, args, { encoding: 'utf8', env: { ...process.env, ...env } });
    },
  };
  return host;
}

const hostLinks = new Map<string, string>();

/** The host side of a namespaced host's veth link: set it down to cut the host off without a word. */
export function hostLink(host: TestHost): string {
  return hostLinks.get(host.netns!)!;
}

/** Kills everything in the host's namespace and removes it. */
export function removeNetns(host: TestHost): void {
  if (!host.netns) return;
  try {
    const pids = execFileSync('ip', ['netns', 'pids', host.netns], { encoding: 'utf8' }).trim().split('\n').filter(Boolean);
    for (const pid of pids) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  } catch {
    /* no such namespace */
  }
  try {
    execFileSync('ip', ['link', 'del', hostLink(host)], { stdio: 'ignore' });
  } catch {
    /* removed with the namespace */
  }
  execFileSync('ip', ['netns', 'del', host.netns], { stdio: 'ignore' });
}

/**
 * PIM installed from this checkout as a user installs it: `npm pack`, then `npm install -g` of
 * the tarball into a prefix. Built once per checkout content and cached; returns the `pim` path.
 */
export async function installedPim(): Promise<string> {
  const cache = fixtureCache();
  mkdirSync(cache, { recursive: true });
  const hash = execFileSync('sh', ['-c', 'cat package.json $(find dist/src assets bin -type f | sort) | sha256sum | cut -c1-16'], { cwd: repoRoot, encoding: 'utf8' }).trim();
  const prefix = join(cache, `pim-install-${hash}`);
  const lock = await acquireLock(prefix, { timeoutMs: 10 * 60_000 });
  try {
    const bin = join(prefix, 'bin', 'pim');
    if (existsSync(bin)) return bin;
    const packDir = `${prefix}.pack`;
    mkdirSync(packDir, { recursive: true });
    const tarball = execFileSync('npm', ['pack', '--silent', '--pack-destination', packDir], { cwd: repoRoot, encoding: 'utf8' }).trim().split('\n').at(-1)!;
    execFileSync('npm', ['install', '-g', '--prefix', prefix, '--no-audit', '--no-fund', '--prefer-offline', join(packDir, tarball)], { stdio: ['ignore', 'ignore', 'inherit'] });
    pruneFixtures('pim-install-', hash);
    return bin;
  } finally {
    lock.release();
  }
}
