import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { fingerprintOf, knownHostsAccepts, verifyHostKey } from '../../src/ssh/host-keys.js';
import { normalizeArch } from '../../src/arch.js';
import { sandbox } from '../helpers/env.js';

const box = sandbox();
after(() => box.cleanup());
const key = randomBytes(51);
const other = randomBytes(51);

test('fingerprints use the OpenSSH SHA256 format', () => {
  assert.equal(fingerprintOf(key), `SHA256:${createHash('sha256').update(key).digest('base64').replace(/=+$/, '')}`);
  assert.ok(verifyHostKey({ kind: 'fingerprint', sha256: fingerprintOf(key) }, 'h', 22, key));
  assert.ok(!verifyHostKey({ kind: 'fingerprint', sha256: fingerprintOf(key) }, 'h', 22, other));
  assert.ok(verifyHostKey({ kind: 'any' }, 'h', 22, other));
});

test('known_hosts: plain, bracketed port, wildcard, hashed and revoked entries', () => {
  const salt = randomBytes(20);
  const hashed = `|1|${salt.toString('base64')}|${createHmac('sha1', salt).update('[hashed.lab]:2222').digest('base64')}`;
  const path = box.write(
    'known_hosts',
    [
      `# comment`,
      `pve1.lab,10.0.0.5 ssh-ed25519 ${key.toString('base64')}`,
      `[builder.lab]:2200 ssh-ed25519 ${key.toString('base64')}`,
      `*.wild.lab ssh-ed25519 ${key.toString('base64')}`,
      `${hashed} ssh-ed25519 ${key.toString('base64')}`,
      `@revoked revoked.lab ssh-ed25519 ${key.toString('base64')}`,
      `revoked.lab ssh-ed25519 ${key.toString('base64')}`,
    ].join('\n'),
  );
  assert.ok(knownHostsAccepts(path, 'pve1.lab', 22, key));
  assert.ok(knownHostsAccepts(path, '10.0.0.5', 22, key));
  assert.ok(!knownHostsAccepts(path, 'pve1.lab', 22, other), 'wrong key');
  assert.ok(!knownHostsAccepts(path, 'pve1.lab', 2200, key), 'port must match');
  assert.ok(knownHostsAccepts(path, 'builder.lab', 2200, key));
  assert.ok(knownHostsAccepts(path, 'x.wild.lab', 22, key));
  assert.ok(knownHostsAccepts(path, 'hashed.lab', 2222, key));
  assert.ok(!knownHostsAccepts(path, 'revoked.lab', 22, key));
  assert.ok(!knownHostsAccepts(path + '.missing', 'pve1.lab', 22, key));
});

test('arch aliases are accepted everywhere', () => {
  assert.equal(normalizeArch('aarch64'), 'arm64');
  assert.equal(normalizeArch('AMD64'), 'x86_64');
  assert.throws(() => normalizeArch('sparc'));
});

test('every build key pair made is one ssh2 can read back (its generator makes about 1 in 256 unreadable)', async () => {
  const { generateEd25519 } = await import('../../src/ssh/keys.js');
  const ssh2 = (await import('ssh2')).default;
  let unreadable = 0;
  for (let i = 0; i < 3000; i++) {
    const pair = generateEd25519('pim-test');
    if (ssh2.utils.parseKey(pair.private) instanceof Error || ssh2.utils.parseKey(pair.public) instanceof Error) unreadable++;
  }
  assert.equal(unreadable, 0);
});
