// A finished image, booted the way a cloud boots it (a fresh overlay and a NoCloud seed of the
// test's own): a clean cloud-init clone that no one can log in to with anything the build knew.
// The image is the shared one (test/helpers/shared-image.ts), built once for every test file.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Vm } from '../../src/qemu/vm.js';
import { SshConnection, waitForSsh } from '../../src/ssh/connection.js';
import { createBuildKeyPair } from '../../src/ssh/keys.js';
import { Project } from '../../src/config/project.js';
import { resolvePlan } from '../../src/builder/plan.js';
import { sandbox } from '../helpers/env.js';
import { rootSkip } from '../helpers/installer.js';
import { SHARED_PROFILE, sharedImage, type SharedImage } from '../helpers/shared-image.js';

const box = sandbox('pim-clone-');
let shared: SharedImage;
before(async () => {
  if (rootSkip) return;
  shared = await sharedImage();
});
after(() => box.cleanup());

test('pim build run builds and registers an image, from exactly the inputs it planned with', { skip: rootSkip, timeout: 90 * 60_000 }, async () => {
  const { record, build, buildLog } = shared;
  assert.equal(build.status, 0);
  for (const step of ['disk', 'keys', 'serve', 'install', 'boot', 'provision', 'shutdown', 'compact']) {
    assert.match(build.stderr, new RegExp(`<== ${step} done in \\d+\\.\\d s`), step);
  }
  assert.match(build.stderr, /<== register done in/);
  assert.equal(build.stdout.trim().split('\n').at(-1), record.path);
  execFileSync('qemu-img', ['check', '-q', record.path]);
  assert.match(record.sha256, /^[0-9a-f]{64}$/);
  assert.equal(record.virtual_size, 8 * 1024 ** 3);
  assert.ok(record.file_size < record.virtual_size / 2, `compact: ${record.file_size}`);
  assert.doesNotMatch(buildLog, new RegExp(shared.buildPassword), 'the password is masked in the log');
  // A provisioning script was edited while the build ran: the build used (and registered the key
  // of) the bytes it planned with.
  assert.ok(build.editedDuringBuild);
  assert.doesNotMatch(buildLog, /EDITED-DURING-THE-BUILD/);
  // The boot watch recognised the image's first boot reaching its init (it would reset it otherwise).
  assert.match(buildLog, /boot watch: the guest kernel managed to start the root file system's init \d+ s after (power-on|the reset)/);
  assert.match(buildLog, /\[record\] BUILD-MACHINE-ID/);
  assert.equal(record.cache_key, resolvePlan(new Project({ projectDir: shared.box.project, env: shared.box.env }), { profileName: SHARED_PROFILE, arch: 'x86_64' }).cacheKey);
  assert.match(buildLog, /\[pim-prepare\] upgrade done: 0 package\(s\) still upgradable/);
  // The installer had just updated the package lists: pim-prepare did not update them again, and
  // base.sh's apt-get update found the release files the installer fetched unchanged.
  assert.match(buildLog, /\[pim-prepare\] package lists fetched by this build's installer: not updated again/);
  // It named the release files it upgraded from; the upgrade layer keeps them (archive-record.ts).
  const recorded = [...buildLog.matchAll(/\[pim-prepare\] pim-release ([0-9a-f]{64}) (\S+)$/gm)].map((m) => m[2]);
  assert.deepEqual(recorded.filter((url) => /\/dists\/bookworm(-updates|-security)?\/InRelease$/.test(url!)).length, 3, recorded.join(' '));
  const layers = join(shared.remoteCacheDir, 'cache', 'pim', 'layers');
  const kept = readdirSync(layers).filter((f) => f.endsWith('.json')).map((f) => JSON.parse(readFileSync(join(layers, f), 'utf8')) as { release_files?: Record<string, string> });
  assert.deepEqual(kept.filter((m) => m.release_files).map((m) => Object.keys(m.release_files!).sort()), [[...recorded].sort()], 'one layer, the upgrade layer, keeps the record');
  assert.match(buildLog, /pkg\| NOT MODIFIED \/\S+\/InRelease/);
  assert.match(buildLog, /\[base\] Hit:\d+ http:\/\/\S+ \S+ InRelease/);
  assert.match(record.patched_at ?? '', /^\d{4}-/, 'the record says when the image was patched');
  assert.equal(record.build_user, 'lock');
  const work = join(shared.box.root, 'data', 'pim', 'images', '.work');
  assert.deepEqual(existsSync(work) ? readdirSync(work) : [], [], 'no work dir left');
});

test('booted with a NoCloud seed, the image is a clean cloud-init clone that no one can log in to', { skip: rootSkip, timeout: 30 * 60_000 }, async () => {
  const { record, buildLog } = shared;
  const buildMachineId = /BUILD-MACHINE-ID (\w+)/.exec(buildLog)![1];
  const buildHostKey = /BUILD-HOSTKEY (\S+)/.exec(buildLog)![1];
  // A clone: an overlay over the image, and a cidata seed whose user-data adds a user and key.
  const overlay = join(box.root, 'clone.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', record.path, '-F', 'qcow2', overlay]);
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

      // No login anyone knows (the audit found every image handing out root).
      const refused = await SshConnection.connect({ host: '127.0.0.1', port: vm.sshPort!, username: 'ansible', password: shared.buildPassword, hostKey: { kind: 'any' } }).then(
        (c) => {
          c.end();
          return false;
        },
        (err: Error) => /authentication methods failed/i.test(err.message),
      );
      assert.ok(refused, 'password login as the build user is refused');
      assert.match(await ssh.capture('sudo sshd -T | grep -i "^passwordauthentication"'), /^passwordauthentication no$/m);
      assert.match(await ssh.capture('sudo -l -U ansible || true'), /is not allowed to run sudo/);
      assert.equal((await ssh.capture('sudo passwd -S ansible')).split(' ')[1], 'L', "the build user's password is locked");
      assert.equal((await ssh.capture('sudo ls /etc/sudoers.d/')).includes('90-pim-user'), false);
      // Patched: nothing of the security suite is pending.
      const upgradable = await ssh.capture('sudo apt-get update -qq >/dev/null 2>&1; apt-get -s upgrade | grep "^Inst" || true');
      assert.equal(upgradable.split('\n').filter((l) => /security/i.test(l)).length, 0, upgradable);
      // cloud-init owns /etc/hosts and networking.
      assert.equal((await ssh.capture('hostname -f')).trim(), 'e2e-clone');
      assert.doesNotMatch(await ssh.capture('cat /etc/hosts'), /pim-image|small-build/);
      const nics = Number((await ssh.capture('ls /sys/class/net | grep -v "^lo$" | wc -l')).trim());
      const dhcpClients = Number((await ssh.capture('ps -eo comm= | grep -cE "^(dhclient|dhcpcd|udhcpc)" || true')).trim());
      assert.equal(dhcpClients, nics, 'one DHCP client per NIC');
      assert.doesNotMatch(await ssh.capture('cat /etc/network/interfaces'), /iface eth0/);
      assert.equal((await ssh.capture('ls /etc/ssh/ssh_host_dsa_key* 2>/dev/null | wc -l')).trim(), '0', 'no DSA host key');
      assert.match(await ssh.capture('ls /etc/ssh/'), /ssh_host_ed25519_key/);
      // The build's journal is gone: only the clone's own journal directory.
      assert.deepEqual((await ssh.capture('ls /var/log/journal')).trim().split('\n'), [machineId]);
      assert.equal((await ssh.capture('apt-config dump | grep -i proxy || true')).trim(), '', 'no proxy setting');
      assert.equal((await ssh.capture('ls -d /var/log/installer 2>/dev/null || true')).trim(), '', 'no installer logs');
      // What the build switched off for speed is back: dpkg's fsyncs, man-db's trigger.
      assert.equal((await ssh.capture('ls /etc/dpkg/dpkg.cfg.d/')).includes('pim-build'), false);
      // apt's own apt-key again (the build's stands in the removed /usr/lib/pim-build, below).
      assert.equal((await ssh.capture('ls /etc/apt/apt.conf.d/')).includes('pim-build'), false);
      assert.equal((await ssh.capture('apt-config dump | grep -i apt-key || true')).trim(), '', "no apt-key setting: Debian's is used");
      assert.equal((await ssh.capture('test ! -d /var/lib/man-db || test -e /var/lib/man-db/auto-update; echo $?')).trim(), '0');
      // And Python's byte-compiling, queued in the background during the build: Debian's own
      // py3compile and py3clean again, no diversion left, and every module of cloud-init compiled.
      assert.equal((await ssh.capture('dpkg-divert --list | grep -c pim || true')).trim(), '0', 'no diversion left');
      assert.equal((await ssh.capture('ls -d /usr/lib/pim-build /usr/bin/*.pim-real /usr/sbin/*.pim-real 2>/dev/null || true')).trim(), '');
      assert.equal((await ssh.capture('sudo dpkg --verify python3-minimal; echo "exit $?"')).trim(), 'exit 0', "python3-minimal's files are Debian's");
      // update-rc.d too (diverted for the build, without its daemon-reloads), and the init links
      // of cloud-init's units it made.
      assert.equal((await ssh.capture('sudo dpkg --verify init-system-helpers; echo "exit $?"')).trim(), 'exit 0', "init-system-helpers' files are Debian's");
      const disabled = await ssh.capture('for s in cloud-init-local cloud-init cloud-config cloud-final; do ls /etc/rc[S5].d/S??"$s" > /dev/null 2>&1 || echo "$s"; done');
      assert.equal(disabled.trim(), '', "cloud-init's init scripts are enabled (systemd-sysv-install's is-enabled test)");
      const modules = Number((await ssh.capture('find /usr/lib/python3/dist-packages/cloudinit -name "*.py" | wc -l')).trim());
      const uncompiled = await ssh.capture(
        'cd /usr/lib/python3/dist-packages/cloudinit && find . -name "*.py" | while read -r f; do d=$(dirname "$f"); b=$(basename "$f" .py); ls "$d/__pycache__/$b".cpython-*.pyc >/dev/null 2>&1 || echo "$f"; done',
      );
      assert.ok(modules > 100, `cloud-init has its modules (${modules})`);
      assert.equal(uncompiled.trim(), '', 'every module of cloud-init has its byte-code');
    } finally {
      ssh.end();
    }
  } finally {
    await vm.stop({ timeoutMs: 60_000 });
  }
});
