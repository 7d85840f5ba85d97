// pim deploy: targets, deployments in the registry, a Proxmox node (a network-namespace host with
// a real sshd and stand-in `qm`/`pvesh` that follow the real tools) and UTM bundles (checked
// against UTM's loader rules, and booted with QEMU as UTM would boot them).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Registry, type ImageRecord } from '../../src/registry/registry.js';
import { Vm } from '../../src/qemu/vm.js';
import { waitForSsh } from '../../src/ssh/connection.js';
import { createBuildKeyPair } from '../../src/ssh/keys.js';
import { hashFile } from '../../src/iso/checksum.js';
import { pim, pimAsync, repoRoot, sandbox, type Sandbox } from '../helpers/env.js';
import { until } from '../helpers/fixtures.js';
import { rootSkip } from '../helpers/installer.js';
import { createTestHost, removeNetns, type TestHost } from '../helpers/remote-host.js';
import { SHARED_PROFILE, sharedImage } from '../helpers/shared-image.js';
import { utmBundleProblems, vmSpecOfBundle } from '../helpers/utm-bundle.js';

let box: Sandbox;
let node: TestHost;
let pveState: string;
let image: ImageRecord;
const clientKey = () => createBuildKeyPair(join(box.root, 'deploy-key'), 'deploy-test');
let userKey: ReturnType<typeof createBuildKeyPair>;

before(async () => {
  if (rootSkip) return;
  box = sandbox('pim-deploy-');
  const shared = await sharedImage();
  image = shared.record;
  await new Registry(join(box.root, 'data', 'pim', 'registry.yml')).registerImage(image);
  userKey = clientKey();
  // A Proxmox node: its own network namespace, a real sshd, `qm` and `pvesh` stand-ins on PATH.
  const bin = join(box.root, 'pve-bin');
  pveState = join(box.root, 'pve-state');
  mkdirSync(bin, { recursive: true });
  mkdirSync(pveState, { recursive: true });
  const fake = join(repoRoot, 'dist/test/fixtures/proxmox/fake-pve.js');
  for (const tool of ['qm', 'pvesh']) {
    writeFileSync(join(bin, tool), `#!/bin/sh\necho "${tool} $*" >> ${pveState}/calls.log\nexec node ${fake} ${tool} "$@"\n`);
    chmodSync(join(bin, tool), 0o755);
  }
  node = await createTestHost(join(box.root, 'pve'), { netns: true, env: { PATH: `${bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`, PVE_FAKE_STATE: pveState } });
  await node.start();
  const pve = (name: string, extra: string) =>
    `${name}:\n  type: proxmox\n  host: ${node.address}\n  user: root\n  identity_file: ${node.clientKey.privateKeyPath}\n  host_key: ${node.hostKeyFingerprint}\n  storage: local-lvm\n  bridge: vmbr0\n  ciuser: admin\n  ipconfig0: ip=dhcp\n${extra}`;
  box.write(
    'targets.d/lab.yml',
    `default:\n  ssh_authorized_keys: ["${userKey.publicKey}"]\n` +
      pve('lab-pve', '') +
      pve('pve-nostorage', '') .replace('storage: local-lvm', 'storage: nosuch') +
      pve('pve-badbridge', '').replace('bridge: vmbr0', 'bridge: "my bridge"') +
      pve('pve-wrongkey', '').replace(node.hostKeyFingerprint, `SHA256:${'B'.repeat(43)}`) +
      `mac-utm:\n  type: utm\n  dir: ${join(box.root, 'utm')}\n  user_data: ./cloud-init/utm.yml\n`,
  );
  box.write('cloud-init/utm.yml', `#cloud-config\nusers:\n  - name: utmuser\n    shell: /bin/bash\n    sudo: ALL=(ALL) NOPASSWD:ALL\n    ssh_authorized_keys:\n      - ${userKey.publicKey}\n`);
});
after(async () => {
  if (rootSkip) return;
  await node.stop();
  removeNetns(node);
  box.cleanup();
});

const qmConfig = (vmid: string) => node.run(`qm config ${vmid}`);
const calls = () => (existsSync(join(pveState, 'calls.log')) ? readFileSync(join(pveState, 'calls.log'), 'utf8').trim().split('\n').length : 0);

test('deploy to Proxmox: a template with the imported disk on scsi0 and a cloud-init drive; recorded; again is a no-op; --force makes another; status; remove', { skip: rootSkip, timeout: 30 * 60_000 }, async () => {
  const r = await pim(box, ['deploy', 'run', SHARED_PROFILE, 'lab-pve', '--arch', 'x86_64', '--json'], { timeoutMs: 10 * 60_000 });
  assert.equal(r.status, 0, r.stderr);
  const record = JSON.parse(r.stdout);
  assert.equal(record.deployed, true);
  const vmid = record.ids.vmid as string;
  assert.match(vmid, /^\d{3,}$/);
  const config = qmConfig(vmid);
  assert.match(config, /^template: 1$/m);
  assert.match(config, /^scsi0: local-lvm:base-\d+-disk-\d+,size=8G$/m, 'the imported disk on scsi0, a base volume');
  assert.match(config, /^ide2: local-lvm:vm-\d+-cloudinit,media=cdrom$/m);
  assert.match(config, /^boot: order=scsi0$/m);
  assert.match(config, /^net0: virtio=BC:24:11:[0-9A-F:]+,bridge=vmbr0$/m);
  assert.match(config, /^ciuser: admin$/m);
  assert.match(config, /^sshkeys: ssh-ed25519%20/m);
  assert.doesNotMatch(config, /^unused\d+:/m);
  assert.equal(node.run('ls /var/tmp | grep -c pim-deploy || true').trim(), '0', 'the copied image is gone from the node');
  const listed = JSON.parse((await pim(box, ['deploy', 'list', '--json'])).stdout);
  assert.equal(listed.length, 1);
  assert.equal(listed[0].ids.vmid, vmid);
  assert.equal(listed[0].cache_key, image.cache_key);
  assert.equal(listed[0].sha256, image.sha256);

  const before = calls();
  const again = await pim(box, ['deploy', 'run', SHARED_PROFILE, 'lab-pve', '--arch', 'x86_64']);
  assert.equal(again.status, 0, again.stderr);
  assert.match(again.stdout, /already deployed to lab-pve with this image/);
  assert.equal(calls(), before, 'no qm or pvesh call');

  const forced = JSON.parse((await pim(box, ['deploy', 'run', SHARED_PROFILE, 'lab-pve', '--arch', 'x86_64', '--force', '--json'], { timeoutMs: 10 * 60_000 })).stdout);
  assert.notEqual(forced.ids.vmid, vmid, 'a new VM id');
  assert.equal(forced.previous[0].ids.vmid, vmid);

  const status = JSON.parse((await pim(box, ['deploy', 'status', 'lab-pve', '--json'])).stdout) as { role: string; exists: boolean; current_image: boolean; ids: { vmid: string } }[];
  assert.deepEqual(status.map((s) => [s.role, s.exists, s.current_image, s.ids.vmid]), [['current', true, true, forced.ids.vmid], ['previous', true, true, vmid]]);
  assert.match((await pim(box, ['build', 'list', '--all'])).stdout, new RegExp(`small/x86_64 deployed to lab-pve \\(proxmox: .*vmid ${forced.ids.vmid}.*, current image`));

  const removed = await pim(box, ['deploy', 'remove', SHARED_PROFILE, 'lab-pve', '--arch', 'x86_64']);
  assert.equal(removed.status, 0, removed.stderr);
  assert.throws(() => qmConfig(forced.ids.vmid));
  assert.throws(() => qmConfig(vmid));
  assert.deepEqual(JSON.parse((await pim(box, ['deploy', 'list', '--json'])).stdout), []);
});

test('deploy an arm64 image to Proxmox: ovmf, an efidisk, the cloud-init drive on scsi1', { skip: rootSkip, timeout: 10 * 60_000 }, async () => {
  // Proxmox only stores the image; an arm64 qcow2 stands in until the arm64 build exists (PIM_E2E_ARM64 deploys the real one).
  const file = join(box.root, 'arm64.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', file, '2G']);
  const registry = new Registry(join(box.root, 'data', 'pim', 'registry.yml'));
  await registry.registerImage({ ...image, arch: 'arm64', path: file, sha256: await hashFile(file), file_size: readFileSync(file).length, virtual_size: 2 * 1024 ** 3 });
  const r = await pim(box, ['deploy', 'run', SHARED_PROFILE, 'lab-pve', '--arch', 'arm64', '--json']);
  assert.equal(r.status, 0, r.stderr);
  const config = qmConfig(JSON.parse(r.stdout).ids.vmid);
  assert.match(config, /^arch: aarch64$/m);
  assert.match(config, /^bios: ovmf$/m);
  assert.match(config, /^efidisk0: local-lvm:base-\d+-disk-0,efitype=4m,size=4M$/m);
  assert.match(config, /^scsi1: local-lvm:vm-\d+-cloudinit,media=cdrom$/m);
  assert.doesNotMatch(config, /^ide2:/m);
  assert.doesNotMatch(config, /^vmgenid:/m);
  assert.equal((await pim(box, ['deploy', 'remove', SHARED_PROFILE, 'lab-pve', '--arch', 'arm64'])).status, 0);
});

test("a node without the storage, a bridge name with a space, a node whose host key does not match: exit 1 with the node's message or the fingerprint; nothing recorded, no VM left", { skip: rootSkip, timeout: 15 * 60_000 }, async () => {
  const vms = () => node.run(`ls ${pveState}/nodes/*/qemu-server/ 2>/dev/null || true`).trim();
  const before = vms();
  const storage = await pim(box, ['deploy', 'run', SHARED_PROFILE, 'pve-nostorage', '--arch', 'x86_64']);
  assert.equal(storage.status, 1, storage.stderr);
  assert.match(storage.stderr, /storage 'nosuch' does not exist/);
  const bridge = await pim(box, ['deploy', 'run', SHARED_PROFILE, 'pve-badbridge', '--arch', 'x86_64']);
  assert.equal(bridge.status, 1, bridge.stderr);
  assert.match(bridge.stderr, /400 Parameter verification failed\. \/ net0: invalid format - format error \/ net0\.bridge: invalid format - invalid bridge ID 'my bridge'/);
  const key = await pim(box, ['deploy', 'run', SHARED_PROFILE, 'pve-wrongkey', '--arch', 'x86_64']);
  assert.equal(key.status, 1, key.stderr);
  assert.ok(key.stderr.includes(`its host key is ${node.hostKeyFingerprint}, not the pinned SHA256:${'B'.repeat(43)}`), key.stderr);
  assert.equal(vms(), before, 'no VM left on the node');
  const listed = JSON.parse((await pim(box, ['deploy', 'list', '--json'])).stdout) as { target: string }[];
  assert.deepEqual(listed.filter((d) => d.target !== 'lab-pve'), []);
});

test('deploy to UTM: small.utm that UTM would load; it boots as UTM describes it and answers SSH with the target\'s user-data; status and remove', { skip: rootSkip, timeout: 30 * 60_000 }, async () => {
  const r = await pim(box, ['deploy', 'run', SHARED_PROFILE, 'mac-utm', '--arch', 'x86_64']);
  assert.equal(r.status, 0, r.stderr);
  const bundle = join(box.root, 'utm', 'small.utm');
  assert.deepEqual(readdirSync(join(box.root, 'utm')), ['small.utm'], 'no temporary bundle left');
  assert.deepEqual(utmBundleProblems(bundle), []);
  assert.deepEqual(readdirSync(join(bundle, 'Data')).sort(), ['disk.qcow2', 'seed.iso']);
  // Boot what the bundle describes: its disk (an overlay, so the bundle stays as deployed) and its seed.
  const { spec, disk } = vmSpecOfBundle(bundle, join(box.root, 'utm-boot.log'));
  const overlay = join(box.root, 'utm-overlay.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', disk, '-F', 'qcow2', overlay]);
  const vm = await Vm.start({ spec: { ...spec, disk: { path: overlay, format: 'qcow2' } }, forwardSsh: true });
  try {
    const ssh = await waitForSsh({ host: '127.0.0.1', port: vm.sshPort!, username: 'utmuser', privateKeyPath: userKey.privateKeyPath, hostKey: { kind: 'any' } }, { timeoutMs: 10 * 60_000, intervalMs: 2_000, maxIntervalMs: 5_000 });
    try {
      assert.equal((await ssh.capture('hostname')).trim(), 'small');
      assert.match(await ssh.capture('cloud-init status --wait || true'), /status: done/);
    } finally {
      ssh.end();
    }
  } finally {
    await vm.stop({ timeoutMs: 60_000 });
  }
  const status = JSON.parse((await pim(box, ['deploy', 'status', 'mac-utm', '--json'])).stdout);
  assert.equal(status[0].exists, true);
  assert.equal((await pim(box, ['deploy', 'remove', SHARED_PROFILE, 'mac-utm', '--arch', 'x86_64'])).status, 0);
  assert.ok(!existsSync(bundle));
});

test('the arm64 UTM bundle: virt, UEFI, the seed on VirtIO; UTM would load it', { skip: rootSkip, timeout: 10 * 60_000 }, async () => {
  const r = await pim(box, ['deploy', 'run', SHARED_PROFILE, 'mac-utm', '--arch', 'arm64']);
  assert.equal(r.status, 0, r.stderr);
  const bundle = join(box.root, 'utm', 'small.utm');
  assert.deepEqual(utmBundleProblems(bundle), []);
  const config = readFileSync(join(bundle, 'config.plist'), 'utf8');
  assert.match(config, /<key>Architecture<\/key>\s*<string>aarch64<\/string>/);
  assert.match(config, /<key>Target<\/key>\s*<string>virt<\/string>/);
  assert.match(config, /<key>UEFIBoot<\/key>\s*<true\/>/);
  assert.equal((await pim(box, ['deploy', 'remove', SHARED_PROFILE, 'mac-utm', '--arch', 'arm64'])).status, 0);
});

test('an interrupted UTM deploy leaves no bundle and records nothing', { skip: rootSkip, timeout: 10 * 60_000 }, async () => {
  const child = pimAsync(box, ['deploy', 'run', SHARED_PROFILE, 'mac-utm', '--arch', 'x86_64']);
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  child.stdout.resume();
  const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
  await until(() => /copying the image/.test(stderr), 60_000, 'the copy');
  child.kill('SIGINT');
  assert.equal(await exited, 130, stderr);
  assert.match(stderr, /deploy interrupted; nothing was recorded/);
  assert.deepEqual(readdirSync(join(box.root, 'utm')), []);
  const listed = JSON.parse((await pim(box, ['deploy', 'list', '--json'])).stdout) as { target: string }[];
  assert.equal(listed.filter((d) => d.target === 'mac-utm').length, 0);
});

test('target files with a typo in the type, a missing field, or a name with / exit 2 naming file, line and field', { skip: rootSkip }, async () => {
  const sub = sandbox('pim-targets-');
  try {
    sub.write('targets.d/t.yml', 'typo:\n  type: proxmx\n  host: h\n  storage: s\nmissing:\n  type: proxmox\n  host: h\n');
    const typo = await pim(sub, ['deploy', 'run', 'small', 'typo']);
    assert.equal(typo.status, 2);
    assert.match(typo.stderr, /targets\.d\/t\.yml:2: target 'typo': field 'type': Invalid discriminator value\. Expected 'proxmox' \| 'utm' \| 'aws'/);
    const missing = await pim(sub, ['deploy', 'run', 'small', 'missing']);
    assert.equal(missing.status, 2);
    assert.match(missing.stderr, /targets\.d\/t\.yml:5: target 'missing': field 'storage': Required/);
    const slash = await pim(sub, ['deploy', 'run', 'small', 'a/b']);
    assert.equal(slash.status, 2);
    assert.match(slash.stderr, /invalid target name 'a\/b'/);
  } finally {
    sub.cleanup();
  }
});
