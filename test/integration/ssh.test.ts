import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, statSync, writeFileSync, readFileSync } from 'node:fs';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { once } from 'node:events';
import { join } from 'node:path';
import { SshConnection, waitForSsh, type SshTarget } from '../../src/ssh/connection.js';
import { createBuildKeyPair } from '../../src/ssh/keys.js';
import { leasePort } from '../../src/qemu/ports.js';
import { sandbox } from '../helpers/env.js';
import { prepareSshd, type TestSshd } from '../helpers/sshd.js';

const box = sandbox('pim-ssh-');
let sshd: TestSshd;
let target: SshTarget;

before(async () => {
  sshd = await prepareSshd(join(box.root, 'sshd'));
  await sshd.start();
  target = { host: '127.0.0.1', port: sshd.port, username: sshd.user, privateKeyPath: sshd.clientKey.privateKeyPath, hostKey: { kind: 'fingerprint', sha256: sshd.hostKeyFingerprint } };
});
after(async () => {
  await sshd.stop();
  box.cleanup();
});

async function sha256(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

test('throw-away keys are ed25519 in OpenSSH format, mode 0600, and removable', () => {
  const pair = createBuildKeyPair(join(box.root, 'keys'), 'pim-build-abc');
  assert.match(pair.publicKey, /^ssh-ed25519 \S+ pim-build-abc$/);
  assert.match(readFileSync(pair.privateKeyPath, 'utf8'), /^-----BEGIN OPENSSH PRIVATE KEY-----/);
  assert.equal(statSync(pair.privateKeyPath).mode & 0o777, 0o600);
  pair.remove();
  assert.throws(() => statSync(pair.privateKeyPath));
});

test('exec streams stdout and stderr line by line and returns exit codes faithfully', async () => {
  const ssh = await SshConnection.connect(target);
  try {
    const lines: string[] = [];
    const result = await ssh.exec('for i in 1 2 3; do echo out$i; echo err$i >&2; done; exit 7', (line, stream) => lines.push(`${stream}:${line}`));
    assert.equal(result.code, 7);
    assert.deepEqual(lines.filter((l) => l.startsWith('stdout')), ['stdout:out1', 'stdout:out2', 'stdout:out3']);
    assert.deepEqual(lines.filter((l) => l.startsWith('stderr')), ['stderr:err1', 'stderr:err2', 'stderr:err3']);
    assert.equal((await ssh.exec('true')).code, 0);
    const killed = await ssh.exec('kill -TERM $$');
    assert.equal(killed.signal, 'SIGTERM');
    assert.equal((await ssh.execAsRoot('id -u', () => undefined)).code, 0);
    assert.equal((await ssh.capture("sh -c 'id -u'")).trim(), process.getuid?.() === 0 ? '0' : String(process.getuid?.()));
    await assert.rejects(ssh.capture('echo boom >&2; exit 3'), /exited 3: boom/);
  } finally {
    ssh.end();
  }
});

test('a 50 MB file survives an upload and download round trip', async () => {
  const src = join(box.root, 'big.bin');
  writeFileSync(src, randomBytes(50 * 1024 * 1024));
  const ssh = await SshConnection.connect(target);
  try {
    const progress: number[] = [];
    await ssh.upload(src, join(box.root, 'remote.bin'), (done) => progress.push(done));
    assert.ok(progress.length > 1 && progress.at(-1) === 50 * 1024 * 1024, 'progress reported to the end');
    const back = join(box.root, 'back.bin');
    await ssh.download(join(box.root, 'remote.bin'), back);
    assert.equal(await sha256(back), await sha256(src));
  } finally {
    ssh.end();
  }
});

test('a host key that does not match the pinned fingerprint is refused; known_hosts works', async () => {
  await assert.rejects(
    SshConnection.connect({ ...target, hostKey: { kind: 'fingerprint', sha256: 'SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' } }),
    /host key SHA256:\S+ is not trusted \(pinned SHA256:AAAA/,
  );
  const knownHosts = join(box.root, 'known_hosts');
  writeFileSync(knownHosts, `[127.0.0.1]:${sshd.port} ${sshd.hostKeyLine}\n`);
  const ok = await SshConnection.connect({ ...target, hostKey: { kind: 'known_hosts', path: knownHosts } });
  ok.end();
  writeFileSync(knownHosts, `[127.0.0.1]:${sshd.port + 1} ${sshd.hostKeyLine}\n`);
  await assert.rejects(SshConnection.connect({ ...target, hostKey: { kind: 'known_hosts', path: knownHosts } }), /not trusted/);
  // Retrying does not help a host key that is not trusted: waitForSsh gives up at once.
  const started = Date.now();
  await assert.rejects(waitForSsh({ ...target, hostKey: { kind: 'known_hosts', path: knownHosts } }, { timeoutMs: 10_000, intervalMs: 200 }), /not trusted/);
  assert.ok(Date.now() - started < 5_000);
});

/** A booting VM's forwarded port: `booting` takes each connection until `open()`, then they pass through to sshd. */
function forwardedPort(sshdPort: number, booting: (socket: Socket) => void): { proxy: Server; open: () => void } {
  let up = false;
  const proxy = createServer((socket) => {
    if (!up) return booting(socket);
    const upstream = connect(sshdPort, '127.0.0.1');
    socket.pipe(upstream).pipe(socket);
    upstream.on('error', () => socket.destroy());
    socket.on('error', () => upstream.destroy());
  });
  return { proxy, open: () => (up = true) };
}

test('waitForReady succeeds when sshd starts late, through a port that first accepts and drops connections', async () => {
  const late = await prepareSshd(join(box.root, 'late'));
  const front = await leasePort();
  let dropped = 0;
  // What a booting VM's forwarded port does: accept, then drop; later, pass through to sshd.
  const { proxy, open } = forwardedPort(late.port, (socket) => {
    dropped++;
    socket.destroy();
  });
  proxy.listen(front.port, '127.0.0.1');
  const timer = setTimeout(() => {
    void late.start().then(open);
  }, 3_000);
  try {
    const attempts: string[] = [];
    const ssh = await waitForSsh(
      { host: '127.0.0.1', port: front.port, username: late.user, privateKeyPath: late.clientKey.privateKeyPath, hostKey: { kind: 'any' } },
      { timeoutMs: 30_000, intervalMs: 250, maxIntervalMs: 1_000, onAttempt: (_, err) => attempts.push(err) },
    );
    assert.equal((await ssh.capture('echo ready')).trim(), 'ready');
    ssh.end();
    assert.ok(dropped >= 2, `connections dropped before sshd was up: ${dropped}`);
    assert.ok(attempts.length >= 2);
  } finally {
    clearTimeout(timer);
    proxy.close();
    front.release();
    await late.stop();
  }
});

test('a forwarded port that stalls until sshd is up costs short banner probes, not a handshake timeout', { timeout: 20_000 }, async () => {
  const late = await prepareSshd(join(box.root, 'stall'));
  const front = await leasePort();
  let stalled = 0;
  let stalledClosed = 0;
  const held = new Set<Socket>();
  // What QEMU's user-mode port forward does while the guest's network is not up yet: accept, say
  // nothing, hold the connection. A handshake attempt made then would wait out its whole timeout.
  const { proxy, open } = forwardedPort(late.port, (socket) => {
    stalled++;
    held.add(socket);
    socket.on('close', () => stalledClosed++);
    socket.on('error', () => undefined);
  });
  proxy.listen(front.port, '127.0.0.1');
  await once(proxy, 'listening');
  const timer = setTimeout(() => {
    void late.start().then(open);
  }, 2_000);
  try {
    const attempts: string[] = [];
    const ssh = await waitForSsh(
      // A handshake timeout longer than the test's own: only the probe can make this pass in time.
      { host: '127.0.0.1', port: front.port, username: late.user, privateKeyPath: late.clientKey.privateKeyPath, hostKey: { kind: 'any' }, readyTimeout: 60_000 },
      { timeoutMs: 60_000, intervalMs: 5_000, bannerProbeMs: 500, onAttempt: (_, err) => attempts.push(err) },
    );
    assert.equal((await ssh.capture('echo ready')).trim(), 'ready');
    ssh.end();
    assert.ok(stalled >= 2, `stalled connections: ${stalled}`);
    assert.ok(attempts.length >= 2 && attempts.every((a) => a === 'no SSH banner within 500 ms'), attempts.join('; '));
    // Every probe hung up its own stalled connection.
    for (let i = 0; i < 100 && stalledClosed < stalled; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(stalledClosed, stalled);
  } finally {
    clearTimeout(timer);
    for (const socket of held) socket.destroy();
    proxy.close();
    front.release();
    await late.stop();
  }
});

test('waitForReady fails with a clear message naming host, port and the time waited when sshd never starts', async () => {
  const nothing = await leasePort();
  nothing.release();
  const started = Date.now();
  await assert.rejects(
    waitForSsh({ ...target, port: nothing.port, hostKey: { kind: 'any' } }, { timeoutMs: 3_000, intervalMs: 200 }),
    (err: unknown) => err instanceof Error && new RegExp(`SSH on 127\\.0\\.0\\.1:${nothing.port} not ready after [34] s \\(timeout 3 s\\)`).test(err.message),
  );
  assert.ok(Date.now() - started < 6_000);
});

test('a port that stalls the handshake and then drops the connection yields one clean error, not an uncaught one or a hang', { timeout: 20_000 }, async () => {
  const lease = await leasePort();
  // Accepts, says nothing until the client's ready-timeout has passed, then sends a banner and
  // hangs up: ssh2 reports a timeout and then "connection lost" for the same attempt.
  const server = createServer((socket) => {
    setTimeout(() => {
      socket.write('SSH-2.0-OpenSSH_9.2\r\n');
      socket.destroy();
    }, 700);
  });
  server.listen(lease.port, '127.0.0.1');
  await once(server, 'listening');
  const uncaught: unknown[] = [];
  const onUncaught = (err: unknown) => uncaught.push(err);
  process.on('uncaughtException', onUncaught);
  try {
    await assert.rejects(
      waitForSsh({ host: '127.0.0.1', port: lease.port, username: 'x', password: 'x', hostKey: { kind: 'any' }, readyTimeout: 300 }, { timeoutMs: 2_500, intervalMs: 100 }),
      /not ready after/,
    );
    await new Promise((r) => setTimeout(r, 1_000));
    assert.deepEqual(uncaught, []);
  } finally {
    process.off('uncaughtException', onUncaught);
    server.close();
    lease.release();
  }
});
