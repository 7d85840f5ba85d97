// arm64 end to end on this x86_64 machine, under TCG: the arm64 test media, a real build through
// the same code paths a Mac with HVF uses, the image booted with UEFI and a NoCloud seed, and its
// deploys. An arm64 guest under emulation is several times slower than an x86_64 one, so this
// file runs only with PIM_E2E_ARM64=1 (see README, Testing).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Registry, type ImageRecord } from '../../src/registry/registry.js';
import { Vm } from '../../src/qemu/vm.js';
import { findAarch64Firmware } from '../../src/qemu/firmware.js';
import { waitForSsh } from '../../src/ssh/connection.js';
import { createBuildKeyPair } from '../../src/ssh/keys.js';
import { pim, repoRoot, sandbox, type Sandbox } from '../helpers/env.js';
import { rootSkip } from '../helpers/installer.js';
import { createTestHost, removeNetns, type TestHost } from '../helpers/remote-host.js';
import { utmBundleProblems, vmSpecOfBundle } from '../helpers/utm-bundle.js';
import { FakeAws } from '../fixtures/aws/fake-aws.js';

const skip = rootSkip || (process.env['PIM_E2E_ARM64'] === '1' ? false : 'set PIM_E2E_ARM64=1 to run the arm64 end-to-end tests (about an hour under TCG)');
let box: Sandbox;
let iso: string;
let image: ImageRecord;
let userKey: ReturnType<typeof createBuildKeyPair>;

before(() => {
  if (skip) return;
  box = sandbox('pim-arm64-');
  const started = Date.now();
  iso = execFileSync('bash', [join(repoRoot, 'test/fixtures/test-installer/build.sh'), '--arch', 'arm64'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 26 }).trim().split('\n').at(-1)!;
  process.stderr.write(`arm64 media ready after ${((Date.now() - started) / 1000).toFixed(1)} s: ${iso}\n`);
  const sum = createHash('sha256').update(readFileSync(iso)).digest('hex');
  box.write('isos.d/arm64.yml', `pim-test-installer-arm64:\n  url: file://${iso}\n  checksum: sha256:${sum}\n  arch: arm64\n  distro: debian\n  version: "12.0-pimtest"\n`);
  box.write('profiles.d/small.yml', 'default:\n  iso: pim-test-installer-arm64\n  password: build-secret-pw\n  packages: openssh-server sudo\n  build: { disk_size: 8G, memory: 2048, cpus: 2 }\nsmall:\n  hostname: small-arm\n  architectures: [arm64]\n');
  box.write('verify.d/small.sh', '#!/bin/bash\nset -e\ntest "$(uname -m)" = aarch64\ntest -f /boot/efi/EFI/BOOT/BOOTAA64.EFI\ngrep -q ttyAMA0 /proc/cmdline\n');
  userKey = createBuildKeyPair(join(box.root, 'user-key'), 'arm64-test');
});
after(() => box?.cleanup());

test('the arm64 media: /install.a64 holds the kernel and initrd, and the ISO boots with UEFI', { skip }, () => {
  const found = execFileSync('xorriso', ['-indev', iso, '-find', '/install.a64'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  assert.match(found, /\/install\.a64\/vmlinuz/);
  assert.match(found, /\/install\.a64\/initrd\.gz/);
  const boot = execFileSync('xorriso', ['-indev', iso, '-report_el_torito', 'plain'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  assert.match(boot, /El Torito boot img\s*:\s*1\s+UEFI/);
});

test('pim build run --arch arm64 under TCG builds an image that boots with UEFI and a NoCloud seed and passes pim build verify', { skip, timeout: 180 * 60_000 }, async () => {
  const r = await pim(box, ['build', 'run', 'small', '--arch', 'arm64'], { timeoutMs: 170 * 60_000 });
  assert.equal(r.status, 0, r.stderr);
  process.stderr.write(`${r.stderr.split('\n').filter((l) => /^<== /.test(l)).join('\n')}\n`);
  image = new Registry(join(box.root, 'data', 'pim', 'registry.yml')).getImage('small', 'arm64')!;
  assert.equal(image.arch, 'arm64');
  const verify = await pim(box, ['build', 'verify', 'small', '--arch', 'arm64'], { timeoutMs: 60 * 60_000 });
  process.stderr.write(verify.stderr);
  assert.equal(verify.status, 0, verify.stderr);
  assert.match(verify.stderr, /ok {3}profile checks/);
});

test('the arm64 UTM bundle boots (virt, UEFI, serial) and answers SSH', { skip, timeout: 60 * 60_000 }, async () => {
  box.write('targets.d/mac.yml', `mac-utm:\n  type: utm\n  dir: ${join(box.root, 'utm')}\n  ssh_authorized_keys: ["${userKey.publicKey}"]\n  user_data: ./cloud-init/utm.yml\n`);
  box.write('cloud-init/utm.yml', `#cloud-config\nusers:\n  - name: utmuser\n    shell: /bin/bash\n    ssh_authorized_keys:\n      - ${userKey.publicKey}\n`);
  const r = await pim(box, ['deploy', 'run', 'small', 'mac-utm', '--arch', 'arm64']);
  assert.equal(r.status, 0, r.stderr);
  const bundle = join(box.root, 'utm', 'small.utm');
  assert.deepEqual(utmBundleProblems(bundle), []);
  const { spec, disk } = vmSpecOfBundle(bundle, join(box.root, 'utm-arm.log'), findAarch64Firmware());
  const overlay = join(box.root, 'utm-arm.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', disk, '-F', 'qcow2', overlay]);
  const vm = await Vm.start({ spec: { ...spec, disk: { path: overlay, format: 'qcow2' }, efiVars: join(box.root, 'utm-efivars.fd') }, forwardSsh: true });
  try {
    const ssh = await waitForSsh({ host: '127.0.0.1', port: vm.sshPort!, username: 'utmuser', privateKeyPath: userKey.privateKeyPath, hostKey: { kind: 'any' } }, { timeoutMs: 30 * 60_000, intervalMs: 5_000, maxIntervalMs: 10_000 });
    try {
      assert.equal((await ssh.capture('uname -m')).trim(), 'aarch64');
    } finally {
      ssh.end();
    }
  } finally {
    await vm.stop({ timeoutMs: 60_000 });
  }
});

test('the real arm64 image deployed to Proxmox (ovmf, efidisk0, cloud-init on scsi1) and registered on AWS with BootMode uefi', { skip, timeout: 60 * 60_000 }, async () => {
  const bin = join(box.root, 'pve-bin');
  const state = join(box.root, 'pve-state');
  mkdirSync(bin, { recursive: true });
  mkdirSync(state, { recursive: true });
  for (const tool of ['qm', 'pvesh']) {
    writeFileSync(join(bin, tool), `#!/bin/sh\nexec node ${join(repoRoot, 'dist/test/fixtures/proxmox/fake-pve.js')} ${tool} "$@"\n`);
    chmodSync(join(bin, tool), 0o755);
  }
  const node: TestHost = await createTestHost(join(box.root, 'pve'), { netns: true, env: { PATH: `${bin}:/usr/sbin:/usr/bin:/sbin:/bin`, PVE_FAKE_STATE: state } });
  await node.start();
  const aws = new FakeAws();
  await aws.start();
  try {
    box.write(
      'targets.d/lab.yml',
      `pve:\n  type: proxmox\n  host: ${node.address}\n  identity_file: ${node.clientKey.privateKeyPath}\n  host_key: ${node.hostKeyFingerprint}\n  storage: local-lvm\n` +
        `aws:\n  type: aws\n  region: eu-central-1\n  endpoint: ${aws.url}\n`,
    );
    const r = await pim(box, ['deploy', 'run', 'small', 'pve', '--arch', 'arm64', '--json'], { timeoutMs: 30 * 60_000 });
    assert.equal(r.status, 0, r.stderr);
    const config = node.run(`qm config ${JSON.parse(r.stdout).ids.vmid}`);
    assert.match(config, /^bios: ovmf$/m);
    assert.match(config, /^efidisk0: /m);
    assert.match(config, /^scsi1: local-lvm:vm-\d+-cloudinit,media=cdrom$/m);
    const a = await pim(box, ['deploy', 'run', 'small', 'aws', '--arch', 'arm64', '--json'], { env: { AWS_ACCESS_KEY_ID: 'a', AWS_SECRET_ACCESS_KEY: 'b' }, timeoutMs: 30 * 60_000 });
    assert.equal(a.status, 0, a.stderr);
    const params = aws.images.get(JSON.parse(a.stdout).ids.ami)!.params;
    assert.equal(params['BootMode'], 'uefi');
    assert.equal(params['Architecture'], 'arm64');
  } finally {
    await aws.stop();
    await node.stop();
    removeNetns(node);
  }
});
