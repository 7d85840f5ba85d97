import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { userInfo } from 'node:os';
import { createBuildKeyPair, type BuildKeyPair } from '../../src/ssh/keys.js';
import { fingerprintOf } from '../../src/ssh/host-keys.js';
import { leasePort } from '../../src/qemu/ports.js';

/** A real OpenSSH server on a loopback port, with its own config, host key and authorized key. */
export interface TestSshd {
  port: number;
  user: string;
  clientKey: BuildKeyPair;
  hostKeyFingerprint: string;
  hostKeyLine: string;
  start(): Promise<void>;
  stop(): Promise<void>;
}

export async function prepareSshd(dir: string, port?: number): Promise<TestSshd> {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
  const lease = port ? undefined : await leasePort();
  const listenPort = port ?? lease!.port;
  lease?.release();
  const hostKey = join(dir, 'host_ed25519');
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', hostKey]);
  const clientKey = createBuildKeyPair(join(dir, 'client'), 'pim-test-client');
  writeFileSync(join(dir, 'authorized_keys'), `${clientKey.publicKey}\n`, { mode: 0o600 });
  const config = join(dir, 'sshd_config');
  writeFileSync(
    config,
    [
      `Port ${listenPort}`,
      'ListenAddress 127.0.0.1',
      `HostKey ${hostKey}`,
      `PidFile ${join(dir, 'sshd.pid')}`,
      `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'UsePAM no',
      'StrictModes no',
      'PermitRootLogin prohibit-password',
      'Subsystem sftp internal-sftp',
      'LogLevel ERROR',
      '',
    ].join('\n'),
  );
  const pub = readFileSync(`${hostKey}.pub`, 'utf8').trim().split(/\s+/);
  let child: ChildProcess | undefined;
  return {
    port: listenPort,
    user: userInfo().username,
    clientKey,
    hostKeyFingerprint: fingerprintOf(Buffer.from(pub[1]!, 'base64')),
    hostKeyLine: `${pub[0]} ${pub[1]}`,
    async start() {
      child = spawn('/usr/sbin/sshd', ['-D', '-e', '-f', config], { stdio: ['ignore', 'ignore', 'pipe'] });
      child.stderr!.resume();
      await new Promise((r) => setTimeout(r, 300));
    },
    async stop() {
      if (!child || child.exitCode !== null) return;
      const exited = new Promise((r) => child!.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    },
  };
}
