import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createArgs, importedVolume, parseConfig, parseNextId, setArgs } from '../../src/deploy/proxmox/qm.js';
import { plistText, utmConfig } from '../../src/deploy/utm/config-plist.js';
import { expandName, proxmoxTargetSchema } from '../../src/deploy/targets.js';
import { AdaptiveLimit, blocksOfExtents } from '../../src/deploy/aws/ebs-upload.js';
import { registerImageInput } from '../../src/deploy/aws/aws-deployer.js';
import { userData } from '../../src/deploy/seed.js';
import { utmBundleProblems } from '../helpers/utm-bundle.js';

const tempDirs: string[] = [];
after(() => tempDirs.forEach((dir) => rmSync(dir, { recursive: true, force: true })));
/** A temp dir removed when the file's tests are done. */
function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.push(dir);
  return dir;
}

const target = proxmoxTargetSchema.parse({ type: 'proxmox', host: 'pve', storage: 'local-lvm', ciuser: 'admin', ipconfig0: 'ip=dhcp' });

test('qm create and qm set command lines: x86_64 and arm64', () => {
  assert.deepEqual(createArgs(9000, 'pim-web-x86_64', target, 'x86_64').map(String), [
    'create', '9000', '--name', 'pim-web-x86_64', '--memory', '2048', '--cores', '2', '--net0', 'virtio,bridge=vmbr0',
    '--scsihw', 'virtio-scsi-pci', '--ostype', 'l26', '--agent', 'enabled=1', '--serial0', 'socket', '--vga', 'serial0',
  ]);
  assert.deepEqual(createArgs(9000, 'a', target, 'arm64').slice(-6), ['--arch', 'aarch64', '--bios', 'ovmf', '--efidisk0', 'local-lvm:1,efitype=4m']);
  assert.deepEqual(setArgs(9000, 'local-lvm:vm-9000-disk-0', target, 'x86_64', '/tmp/k.pub').map(String), [
    'set', '9000', '--scsi0', 'local-lvm:vm-9000-disk-0', '--ide2', 'local-lvm:cloudinit', '--boot', 'order=scsi0', '--ciuser', 'admin', '--sshkeys', '/tmp/k.pub', '--ipconfig0', 'ip=dhcp',
  ]);
  assert.equal(setArgs(9000, 'v', target, 'arm64')[4], '--scsi1', 'no IDE on aarch64');
});

test('qm output: config lines, the imported volume, pvesh nextid as a JSON string or a number', () => {
  const config = parseConfig('boot: order=net0\nunused0: local-lvm:vm-100-disk-1\nunused1: local:100/vm-100-disk-2.qcow2\nname: x\n');
  assert.equal(config['name'], 'x');
  assert.equal(importedVolume(config), 'local:100/vm-100-disk-2.qcow2', 'the newest unused volume');
  assert.equal(importedVolume({}), undefined);
  assert.equal(parseNextId('"100"\n'), 100);
  assert.equal(parseNextId('101\n'), 101);
  assert.throws(() => parseNextId('nope'), /not a VM id/);
});

test('target names: {profile}, {arch} and a 12-character {key}', () => {
  assert.equal(expandName('pim-{profile}-{arch}-{key}', { profile: 'web', arch: 'arm64', key: 'abcdef0123456789' }), 'pim-web-arm64-abcdef012345');
});

test('UTM config.plist passes every loader rule for both arches; UEFI only for arm64; IDE only on q35', () => {
  for (const arch of ['x86_64', 'arm64'] as const) {
    const dir = tempDir('pim-utm-');
    mkdirSync(join(dir, 'Data'));
    writeFileSync(join(dir, 'Data', 'disk.qcow2'), '');
    writeFileSync(join(dir, 'Data', 'seed.iso'), '');
    const { config } = utmConfig({ name: 'web', arch, memoryMb: 1024, cores: 1, disk: 'disk.qcow2', seed: 'seed.iso', notes: 'n' });
    writeFileSync(join(dir, 'config.plist'), plistText(config));
    assert.deepEqual(utmBundleProblems(dir), [], arch);
    const c = config as { QEMU: { UEFIBoot: boolean }; Drive: { Interface: string }[]; System: { Target: string } };
    assert.equal(c.QEMU.UEFIBoot, arch === 'arm64');
    assert.equal(c.Drive[1]!.Interface, arch === 'arm64' ? 'VirtIO' : 'IDE');
    assert.equal(c.System.Target, arch === 'arm64' ? 'virt' : 'q35');
  }
});

test('the validator catches what UTM refuses: a wrong ConfigurationVersion, a bool as integer, a stray file in Data', () => {
  const dir = tempDir('pim-utm-bad-');
  mkdirSync(join(dir, 'Data'));
  writeFileSync(join(dir, 'Data', 'disk.qcow2'), '');
  writeFileSync(join(dir, 'Data', 'README'), '');
  const { config } = utmConfig({ name: 'web', arch: 'x86_64', memoryMb: 1024, cores: 1, disk: 'disk.qcow2', notes: 'n' });
  (config as Record<string, unknown>)['ConfigurationVersion'] = 5;
  ((config as Record<string, Record<string, unknown>>)['QEMU']!)['UEFIBoot'] = 1;
  writeFileSync(join(dir, 'config.plist'), plistText(config));
  assert.deepEqual(utmBundleProblems(dir), ['ConfigurationVersion is 5, not 4', 'QEMU.UEFIBoot is a integer, not a bool', 'Data/README is named by no drive (UTM would delete it)']);
});

test('EBS blocks: only those overlapping data, each with the ranges inside it', () => {
  const blocks = blocksOfExtents([{ start: 0, length: 1000 }, { start: 524288 * 3 - 10, length: 20 }]);
  assert.deepEqual([...blocks.keys()], [0, 2, 3]);
  assert.deepEqual(blocks.get(2), [{ start: 524288 * 3 - 10, length: 10 }]);
  assert.deepEqual(blocks.get(3), [{ start: 524288 * 3, length: 10 }]);
});

test('EBS uploads slow down when throttled: the limit halves once per second of refusals, grows back by one per limit successes, and acquire waits for a free slot', async () => {
  const limit = new AdaptiveLimit(32);
  limit.throttled(10_000);
  limit.throttled(10_500); // the same burst: counted once
  assert.equal(limit.limit, 16);
  limit.throttled(11_000);
  limit.throttled(12_000);
  limit.throttled(13_000);
  limit.throttled(14_000);
  limit.throttled(15_000);
  assert.equal(limit.limit, 1);
  assert.equal(limit.lowest, 1);
  limit.succeeded();
  assert.equal(limit.limit, 2);
  limit.succeeded();
  assert.equal(limit.limit, 2);
  limit.succeeded();
  assert.equal(limit.limit, 3);

  const small = new AdaptiveLimit(2);
  await small.acquire();
  await small.acquire();
  let third = false;
  const waiting = small.acquire().then(() => (third = true));
  await new Promise((r) => setImmediate(r));
  assert.equal(third, false, 'a third block must wait while two are in flight');
  small.release();
  await waiting;
  assert.equal(third, true);
});

test('RegisterImage: hvm, ENA, gp3 root on /dev/xvda, IMDSv2; uefi for arm64, legacy-bios for the BIOS-booting x86_64 image', () => {
  const image = { profile: 'web', arch: 'arm64', cache_key: 'a'.repeat(64) } as Parameters<typeof registerImageInput>[2];
  const input = registerImageInput('pim-web', 'snap-1', image, []);
  assert.equal(input.BootMode, 'uefi');
  assert.equal(input.Architecture, 'arm64');
  assert.deepEqual(input.BlockDeviceMappings, [{ DeviceName: '/dev/xvda', Ebs: { SnapshotId: 'snap-1', VolumeType: 'gp3', DeleteOnTermination: true } }]);
  assert.equal(registerImageInput('x', 's', { ...image, arch: 'x86_64' }, []).BootMode, 'legacy-bios');
});

test("cloud-init user-data: the target's file with its ssh_authorized_keys added", () => {
  const dir = tempDir('pim-ud-');
  writeFileSync(join(dir, 'u.yml'), '#cloud-config\nssh_authorized_keys: [a]\npackages: [htop]\n');
  assert.equal(userData({ file: join(dir, 'u.yml'), sshAuthorizedKeys: ['a', 'b'] }), '#cloud-config\nssh_authorized_keys:\n  - a\n  - b\npackages:\n  - htop\n');
  writeFileSync(join(dir, 'bad.yml'), 'users: []\n');
  assert.throws(() => userData({ file: join(dir, 'bad.yml') }), /must be a cloud-config file/);
});
