// The test installer honours the netinst contract PIM depends on (test/fixtures/test-installer).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { Project } from '../../src/config/project.js';
import { Profiles } from '../../src/profile/profiles.js';
import { PreseedServer } from '../../src/server/preseed-server.js';
import { extractInstallerBootFiles } from '../../src/iso/media.js';
import { DiskImages } from '../../src/qemu/disk.js';
import { Vm, type VmSpecInput } from '../../src/qemu/vm.js';
import { waitForSsh, type SshConnection } from '../../src/ssh/connection.js';
import { repoRoot, sandbox } from '../helpers/env.js';
import { until } from '../helpers/fixtures.js';
import { rootSkip, testInstallerIso } from '../helpers/installer.js';

const INSTALL_TIMEOUT = 30 * 60_000;
const box = sandbox('pim-ti-');
let iso: string;
let profiles: Profiles;
const disks = new DiskImages();
const shippedInstall = readFileSync(join(repoRoot, 'assets/installs.d/default.sh'), 'utf8');
const shippedPreseed = readFileSync(join(repoRoot, 'assets/preseeds.d/default.cfg.ejs'), 'utf8');

before(() => {
  if (rootSkip) return;
  iso = testInstallerIso();
  box.write(
    'profiles.d/ti.yml',
    [
      'ti:\n  username: tiuser\n  password: "ti pass;1"\n  hostname: ti-host\n  domain: test.lan\n  packages: openssh-server sudo tree\n',
      'tiboot:\n  username: bootuser\n  password: bootpass\n  hostname: ti-boot\n  packages: ""\n',
      'broken:\n  username: x\n  password: x\n  packages: ""\n',
    ].join(''),
  );
  box.write('installs.d/ti.sh', `${shippedInstall}\necho "late-command-ran" > /etc/pim-late-marker\n`);
  box.write('preseeds.d/broken.cfg.ejs', shippedPreseed.replace(/^d-i preseed\/late_command string .*$/m, 'd-i preseed/late_command string in-target /bin/sh -c "exit 1"'));
  profiles = new Profiles(new Project({ projectDir: box.project, env: box.env }));
});
after(() => box.cleanup());

async function serve(profileName: string): Promise<PreseedServer> {
  const server = new PreseedServer({ profiles, profileName, bind: '127.0.0.1', urlHost: '10.0.2.2' });
  await server.start();
  return server;
}

function machine(name: string, extra: Partial<VmSpecInput>): VmSpecInput {
  return { name, arch: 'x86_64', accel: 'tcg', memoryMb: 1024, cpus: 2, serialLog: join(box.root, `${name}.log`), ...extra };
}
const consoleOf = (name: string) => {
  try {
    return readFileSync(join(box.root, `${name}.log`), 'utf8');
  } catch {
    return '';
  }
};

async function sshAs(vm: Vm, username: string, password: string): Promise<SshConnection> {
  return waitForSsh({ host: '127.0.0.1', port: vm.sshPort!, username, password, hostKey: { kind: 'any' } }, { timeoutMs: 5 * 60_000, intervalMs: 2_000, maxIntervalMs: 5_000 });
}

async function installWithKernel(name: string, profileName: string, disk: string): Promise<string> {
  const server = await serve(profileName);
  try {
    const boot = await extractInstallerBootFiles(iso, 'x86_64', join(box.root, `${name}-boot`));
    assert.equal(boot.source.kernel, '/install.amd/vmlinuz');
    const vm = await Vm.start({
      spec: machine(name, {
        disk: { path: disk, format: 'qcow2' },
        cdrom: iso,
        kernel: { path: boot.kernel, initrd: boot.initrd, append: `auto=true priority=critical preseed/url=${server.preseedUrl} console=ttyS0,115200n8` },
        noReboot: true,
      }),
    });
    try {
      await vm.waitForExit(INSTALL_TIMEOUT);
    } finally {
      vm.kill();
    }
    return consoleOf(name);
  } finally {
    await server.stop();
  }
}

test('a preseeded install from the kernel and initrd read out of the ISO; the disk then boots on its own', { skip: rootSkip, timeout: 45 * 60_000 }, async () => {
  const disk = join(box.root, 'ti.qcow2');
  await disks.create(disk, '6G');
  const log = await installWithKernel('ti-install', 'ti', disk);
  assert.match(log, /PIM-TEST-INSTALLER: install complete; powering off/);
  assert.doesNotMatch(log, /FAILED/);

  const vm = await Vm.start({ spec: machine('ti-boot', { disk: { path: disk, format: 'qcow2' } }), forwardSsh: true });
  try {
    const ssh = await sshAs(vm, 'tiuser', 'ti pass;1');
    try {
      assert.equal((await ssh.capture('hostname')).trim(), 'ti-host');
      assert.equal((await ssh.capture('hostname -f')).trim(), 'ti-host.test.lan');
      assert.equal((await ssh.exec('sudo -n true')).code, 0);
      assert.equal((await ssh.capture('cat /etc/pim-late-marker')).trim(), 'late-command-ran');
      assert.match(await ssh.capture("dpkg-query -W -f='${Status}' tree"), /install ok installed/);
      assert.match(await ssh.capture('cat /etc/apt/sources.list'), /^deb http:\/\/deb\.debian\.org\/debian bookworm main/m);
      assert.match(await ssh.capture('cat /etc/os-release'), /VERSION_ID="12"/);
      assert.match(await ssh.capture('cat /proc/cmdline'), /root=UUID=[0-9a-f-]{36} /);
      assert.equal((await ssh.capture('systemctl is-system-running --wait || true')).trim().length > 0, true);
    } finally {
      ssh.end();
    }
  } finally {
    await vm.stop({ timeoutMs: 60_000 });
  }
});

test('booted from the ISO alone: the isolinux prompt on the serial console takes a typed boot line, and the machine reboots into the installed system', { skip: rootSkip, timeout: 45 * 60_000 }, async () => {
  const disk = join(box.root, 'tiboot.qcow2');
  await disks.create(disk, '6G');
  const server = await serve('tiboot');
  const serialSocket = join(box.root, 'serial.sock');
  const vm = await Vm.start({
    spec: machine('ti-iso', { disk: { path: disk, format: 'qcow2' }, cdrom: iso, boot: { once: 'd' }, serialSocket }),
    forwardSsh: true,
  });
  try {
    await until(() => consoleOf('ti-iso').includes('PIM test installer'), 120_000, 'the isolinux menu');
    const serial = connect(serialSocket);
    await new Promise((resolve) => serial.once('connect', resolve));
    serial.write('\x1b'); // Esc: leave the menu for the boot: prompt, as Packer's boot_command does
    await until(() => consoleOf('ti-iso').includes('boot:'), 60_000, 'the boot: prompt');
    for (const ch of `install auto=true priority=critical preseed/url=${server.preseedUrl} debian-installer/exit/poweroff=false\r`) {
      serial.write(ch);
      await new Promise((r) => setTimeout(r, 10));
    }
    await until(() => /install complete; rebooting|FAILED/.test(consoleOf('ti-iso')), INSTALL_TIMEOUT, 'the install to finish');
    assert.match(consoleOf('ti-iso'), /install complete; rebooting/);
    serial.destroy();
    const ssh = await sshAs(vm, 'bootuser', 'bootpass');
    try {
      assert.equal((await ssh.capture('hostname')).trim(), 'ti-boot');
      assert.equal((await ssh.capture('findmnt -n -o SOURCE /')).trim(), '/dev/vda1');
      assert.match(await ssh.capture('cat /proc/cmdline'), /root=UUID=[0-9a-f-]{36} /);
    } finally {
      ssh.end();
    }
  } finally {
    await server.stop();
    await vm.stop({ timeoutMs: 60_000 });
  }
});

test('a preseed that breaks the install ends with the FAILED line and powers off', { skip: rootSkip, timeout: 45 * 60_000 }, async () => {
  const disk = join(box.root, 'broken.qcow2');
  await disks.create(disk, '6G');
  const log = await installWithKernel('broken', 'broken', disk);
  assert.match(log, /PIM-TEST-INSTALLER: FAILED: preseed\/late_command \(exit 1\)/);
  assert.doesNotMatch(log, /install complete/);
});
