// `pim build run` end to end with the test installer media, then the finished image booted
// the way a cloud would boot it: a fresh overlay and a NoCloud seed.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync, existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { Vm } from '../../src/qemu/vm.js';
import { waitForSsh } from '../../src/ssh/connection.js';
import { createBuildKeyPair } from '../../src/ssh/keys.js';
import { Registry } from '../../src/registry/registry.js';
import { pim, sandbox } from '../helpers/env.js';
import { rootSkip, testInstallerIso } from '../helpers/installer.js';
import { useTestInstaller } from '../helpers/build-project.js';

const box = sandbox('pim-build-');
before(() => {
  if (rootSkip) return;
  const isoName = useTestInstaller(box, testInstallerIso());
  box.write(
    'profiles.d/e2e.yml',
    `default:\n  iso: ${isoName}\n  password: build-secret-pw\n  packages: openssh-server sudo\n  build: { disk_size: 8G, memory: 1024, cpus: 2 }\n` +
      'e2e:\n  hostname: e2e-build\n  scripts: [base, record, finalize]\n',
  );
  // What the build saw, printed into the build log for the test to compare with the clone.
  box.write('scripts.d/record.sh', '#!/bin/bash\nset -euo pipefail\necho "BUILD-MACHINE-ID $(cat /etc/machine-id)"\necho "BUILD-HOSTKEY $(ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub | cut -d" " -f2)"\nhistory -c\necho "echo from-the-build" >> /root/.bash_history\n');
});
after(() => box.cleanup());

test('pim build run builds a registered image; booted with a NoCloud seed it is a clean cloud-init clone', { skip: rootSkip, timeout: 60 * 60_000 }, async () => {
  const r = await pim(box, ['build', 'run', 'e2e', '--arch', 'x86_64'], { timeoutMs: 50 * 60_000 });
  assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
  for (const step of ['disk', 'keys', 'serve', 'install', 'boot', 'provision', 'shutdown', 'compact', 'register']) {
    assert.match(r.stderr, new RegExp(`<== ${step} done in \\d+\\.\\d s`), step);
  }
  const image = r.stdout.trim().split('\n').at(-1)!;
  assert.ok(existsSync(image), image);
  execFileSync('qemu-img', ['check', image]);
  const record = new Registry(join(box.root, 'data', 'pim', 'registry.yml')).getImage('e2e', 'x86_64')!;
  assert.equal(record.path, image);
  assert.match(record.sha256, /^[0-9a-f]{64}$/);
  assert.equal(record.virtual_size, 8 * 1024 ** 3);
  assert.ok(record.file_size < record.virtual_size / 2, `compact: ${record.file_size}`);
  const buildLog = readFileSync(`${image}.log`, 'utf8');
  assert.doesNotMatch(buildLog, /build-secret-pw/, 'the password is masked in the log');
  const buildMachineId = /BUILD-MACHINE-ID (\w+)/.exec(buildLog)![1];
  const buildHostKey = /BUILD-HOSTKEY (\S+)/.exec(buildLog)![1];
  assert.ok(!readdirSync(join(box.root, 'data', 'pim', 'images', '.work')).length, 'no work dir left');

  // A second run with nothing changed answers from the cache.
  const again = await pim(box, ['build', 'run', 'e2e', '--arch', 'x86_64']);
  assert.equal(again.status, 0);
  assert.equal(again.stdout.trim(), image);
  assert.match(again.stderr, /cached: e2e\/x86_64 is up to date/);

  // Boot a clone: an overlay over the image, and a cidata seed whose user-data adds a key.
  const overlay = join(box.root, 'clone.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', image, '-F', 'qcow2', overlay]);
  const key = createBuildKeyPair(join(box.root, 'clone-key'), 'clone-key');
  const seedDir = join(box.root, 'seed');
  execFileSync('mkdir', ['-p', seedDir]);
  writeFileSync(join(seedDir, 'meta-data'), 'instance-id: pim-e2e-clone-1\nlocal-hostname: e2e-clone\n');
  writeFileSync(
    join(seedDir, 'user-data'),
    `#cloud-config\nusers:\n  - name: tester\n    sudo: ALL=(ALL) NOPASSWD:ALL\n    shell: /bin/bash\n    ssh_authorized_keys:\n      - ${key.publicKey}\n`,
  );
  const seed = join(box.root, 'seed.iso');
  execFileSync('xorriso', ['-as', 'mkisofs', '-quiet', '-V', 'cidata', '-J', '-r', '-o', seed, join(seedDir, 'user-data'), join(seedDir, 'meta-data')], { stdio: 'ignore' });
  const vm = await Vm.start({
    spec: { name: 'e2e-clone', arch: 'x86_64', accel: 'tcg', memoryMb: 1024, cpus: 2, disk: { path: overlay, format: 'qcow2' }, cdrom: seed, serialLog: join(box.root, 'clone.log') },
    forwardSsh: true,
  });
  try {
    const ssh = await waitForSsh(
      { host: '127.0.0.1', port: vm.sshPort!, username: 'tester', privateKeyPath: key.privateKeyPath, hostKey: { kind: 'any' } },
      { timeoutMs: 10 * 60_000, intervalMs: 2_000, maxIntervalMs: 5_000 },
    );
    try {
      assert.match(await ssh.capture('cloud-init status --wait || true'), /status: done/);
      assert.equal((await ssh.capture('hostname')).trim(), 'e2e-clone');
      const machineId = (await ssh.capture('cat /etc/machine-id')).trim();
      assert.match(machineId, /^[0-9a-f]{32}$/);
      assert.notEqual(machineId, buildMachineId);
      const hostKey = (await ssh.capture("ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub | cut -d' ' -f2")).trim();
      assert.match(hostKey, /^SHA256:/);
      assert.notEqual(hostKey, buildHostKey, 'host keys were regenerated');
      assert.equal((await ssh.capture('sudo grep -rl pim-build- /root/.ssh /home/*/.ssh 2>/dev/null || true')).trim(), '', 'no build key left');
      assert.equal((await ssh.capture('sudo sh -c "ls /root/.bash_history /home/*/.bash_history 2>/dev/null" || true')).trim(), '', 'no shell history');
      assert.equal((await ssh.capture("sudo find /var/lib/apt/lists -name '*_Packages' -o -name '*InRelease' | head -1")).trim(), '', 'no apt lists');
      assert.match(await ssh.capture('systemctl is-enabled cloud-init.service'), /enabled/);
    } finally {
      ssh.end();
    }
  } finally {
    await vm.stop({ timeoutMs: 60_000 });
  }
});
