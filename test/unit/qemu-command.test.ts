import { test } from 'node:test';
import assert from 'node:assert/strict';
import { qemuCommand, type VmSpec } from '../../src/qemu/command.js';
import { findAarch64Firmware } from '../../src/qemu/firmware.js';
import { selectAccelerator, type AccelReport } from '../../src/qemu/accel.js';
import { qemuTooOld } from '../../src/qemu/doctor.js';

const base = {
  name: 'pim-test',
  memoryMb: 2048,
  cpus: 2,
  disk: { path: '/work/disk.qcow2', format: 'qcow2' as const },
  cdrom: '/isos/debian.iso',
  kernel: { path: '/work/vmlinuz', initrd: '/work/initrd.gz', append: 'auto=true priority=critical preseed/url=http://10.0.2.2:8000/preseed.cfg' },
  sshPort: 40022,
  serialLog: '/work/serial.log',
  qmpSocket: '/tmp/pim-vm-x/qmp.sock',
  noReboot: true,
};

const tail = [
  '-netdev', 'user,id=net0,hostfwd=tcp:127.0.0.1:40022-:22', '-device', 'virtio-net-pci,netdev=net0',
  '-device', 'virtio-rng-pci',
  '-display', 'none',
  '-chardev', 'file,id=serial0,path=/work/serial.log', '-serial', 'chardev:serial0',
  '-qmp', 'unix:/tmp/pim-vm-x/qmp.sock,server=on,wait=off',
  '-no-reboot',
];
const kernel = ['-kernel', '/work/vmlinuz', '-initrd', '/work/initrd.gz', '-append', base.kernel.append];
const disk = ['-drive', 'id=disk0,file=/work/disk.qcow2,format=qcow2,if=virtio,discard=unmap,detect-zeroes=unmap,cache=writeback'];

for (const [accel, accelArg, cpu] of [['tcg', 'tcg,thread=multi', 'max'], ['kvm', 'kvm', 'host'], ['hvf', 'hvf', 'host']] as const) {
  test(`x86_64 command line under ${accel}, argument by argument`, () => {
    const cmd = qemuCommand({ ...base, arch: 'x86_64', accel });
    assert.equal(cmd.binary, 'qemu-system-x86_64');
    assert.deepEqual(cmd.args, [
      '-name', 'pim-test', '-nodefaults', '-no-user-config',
      '-machine', 'q35', '-accel', accelArg, '-cpu', cpu, '-m', '2048', '-smp', '2',
      ...disk,
      '-drive', 'file=/isos/debian.iso,media=cdrom,readonly=on,if=ide,index=2',
      ...kernel,
      ...tail.slice(0, 6), '-device', 'VGA', ...tail.slice(6),
    ]);
  });

  test(`arm64 command line under ${accel}, argument by argument`, () => {
    const spec: VmSpec = {
      ...base,
      arch: 'arm64',
      accel,
      firmware: { code: '/usr/share/AAVMF/AAVMF_CODE.fd', vars: '/usr/share/AAVMF/AAVMF_VARS.fd', mode: 'pflash' },
      efiVars: '/work/efivars.fd',
    };
    const cmd = qemuCommand(spec);
    assert.equal(cmd.binary, 'qemu-system-aarch64');
    assert.deepEqual(cmd.args, [
      '-name', 'pim-test', '-nodefaults', '-no-user-config',
      '-machine', 'virt', '-accel', accelArg, '-cpu', cpu, '-m', '2048', '-smp', '2',
      '-drive', 'if=pflash,format=raw,readonly=on,file=/usr/share/AAVMF/AAVMF_CODE.fd',
      '-drive', 'if=pflash,format=raw,file=/work/efivars.fd',
      ...disk,
      '-device', 'virtio-scsi-pci,id=scsi0',
      '-drive', 'file=/isos/debian.iso,media=cdrom,readonly=on,if=none,id=cd0',
      '-device', 'scsi-cd,drive=cd0,bus=scsi0.0',
      ...kernel,
      ...tail,
    ]);
  });
}

test('disk boot without kernel, ISO or SSH; boot order; commas in paths are escaped', () => {
  const cmd = qemuCommand({
    name: 'b', arch: 'x86_64', accel: 'tcg', memoryMb: 512, cpus: 1,
    disk: { path: '/a,b/disk.qcow2', format: 'qcow2' },
    boot: { order: 'c', once: 'd' },
    serialLog: '/s.log', qmpSocket: '/q.sock',
  });
  assert.deepEqual(cmd.args.slice(cmd.args.indexOf('-drive'), cmd.args.indexOf('-drive') + 2), [
    '-drive', 'id=disk0,file=/a,,b/disk.qcow2,format=qcow2,if=virtio,discard=unmap,detect-zeroes=unmap,cache=writeback',
  ]);
  assert.deepEqual(cmd.args.slice(cmd.args.indexOf('-boot'), cmd.args.indexOf('-boot') + 2), ['-boot', 'order=c,once=d']);
  assert.ok(cmd.args.includes('user,id=net0'));
  assert.ok(!cmd.args.includes('-no-reboot') && !cmd.args.includes('-kernel') && !cmd.args.includes('-append'));
});

test('arm64 with only QEMU_EFI.fd boots it with -bios; arm64 without firmware is refused', () => {
  const cmd = qemuCommand({
    name: 'a', arch: 'arm64', accel: 'tcg', memoryMb: 512, cpus: 1, serialLog: '/s', qmpSocket: '/q',
    firmware: { code: '/usr/share/qemu-efi-aarch64/QEMU_EFI.fd', mode: 'bios' },
  });
  assert.deepEqual(cmd.args.slice(cmd.args.indexOf('-bios'), cmd.args.indexOf('-bios') + 2), ['-bios', '/usr/share/qemu-efi-aarch64/QEMU_EFI.fd']);
  assert.throws(() => qemuCommand({ name: 'a', arch: 'arm64', accel: 'tcg', memoryMb: 1, cpus: 1, serialLog: '/s', qmpSocket: '/q' }));
});

test('firmware discovery: Debian AAVMF first, then QEMU_EFI.fd, then Homebrew', () => {
  const has = (paths: string[]) => (p: string) => paths.includes(p);
  assert.deepEqual(findAarch64Firmware(has(['/usr/share/AAVMF/AAVMF_CODE.fd', '/usr/share/AAVMF/AAVMF_VARS.fd'])), {
    code: '/usr/share/AAVMF/AAVMF_CODE.fd', vars: '/usr/share/AAVMF/AAVMF_VARS.fd', mode: 'pflash',
  });
  assert.equal(findAarch64Firmware(has(['/usr/share/qemu-efi-aarch64/QEMU_EFI.fd']))?.mode, 'bios');
  assert.deepEqual(findAarch64Firmware(has(['/opt/homebrew/share/qemu/edk2-aarch64-code.fd', '/opt/homebrew/share/qemu/edk2-arm-vars.fd'])), {
    code: '/opt/homebrew/share/qemu/edk2-aarch64-code.fd', vars: '/opt/homebrew/share/qemu/edk2-arm-vars.fd', mode: 'pflash',
  });
  assert.equal(findAarch64Firmware(has([])), undefined);
});

test('accelerator selection: the best usable one per platform, the pim.yml override wins, TCG last', () => {
  const report = (kvm: boolean, hvf: boolean): AccelReport => ({ kvm: { usable: kvm }, hvf: { usable: hvf }, tcg: { usable: true } });
  assert.equal(selectAccelerator(report(true, false), undefined, 'linux'), 'kvm');
  assert.equal(selectAccelerator(report(false, false), undefined, 'linux'), 'tcg');
  assert.equal(selectAccelerator(report(false, true), undefined, 'darwin'), 'hvf');
  assert.equal(selectAccelerator(report(true, false), undefined, 'darwin'), 'tcg');
  assert.equal(selectAccelerator(report(true, false), 'tcg', 'linux'), 'tcg');
});

test('an interactive serial console is a unix socket that still logs to the file', () => {
  const cmd = qemuCommand({ name: 'i', arch: 'x86_64', accel: 'tcg', memoryMb: 1, cpus: 1, serialLog: '/s.log', serialSocket: '/t/serial.sock', qmpSocket: '/q' });
  const at = cmd.args.indexOf('-chardev');
  assert.deepEqual(cmd.args.slice(at, at + 4), ['-chardev', 'socket,id=serial0,path=/t/serial.sock,server=on,wait=off,logfile=/s.log', '-serial', 'chardev:serial0']);
});

test('a build disk may ignore guest flushes (cache=unsafe); a guest agent port when asked', () => {
  const cmd = qemuCommand({ ...base, arch: 'x86_64', accel: 'tcg', disk: { path: '/w/d.qcow2', format: 'qcow2', cache: 'unsafe' }, guestAgentSocket: '/r/qga.sock' });
  assert.ok(cmd.args.includes('id=disk0,file=/w/d.qcow2,format=qcow2,if=virtio,discard=unmap,detect-zeroes=unmap,cache=unsafe'));
  const at = cmd.args.indexOf('virtio-serial-pci,id=vser0');
  assert.deepEqual(cmd.args.slice(at - 1, at + 5), [
    '-device', 'virtio-serial-pci,id=vser0', '-chardev', 'socket,id=qga0,path=/r/qga.sock,server=on,wait=off', '-device', 'virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0',
  ]);
});

test('QEMU older than 5.2 (no qcow2 subclusters) is reported as too old; 5.2 and later, or an unreadable version, are not', () => {
  assert.equal(qemuTooOld('4.2.1 (Debian 1:4.2-3ubuntu6.27)'), true);
  assert.equal(qemuTooOld('5.1.0'), true);
  assert.equal(qemuTooOld('5.2.0 (Debian 1:5.2+dfsg-11+deb11u3)'), false);
  assert.equal(qemuTooOld('7.2.22 (Debian 1:7.2+dfsg-7+deb12u18)'), false);
  assert.equal(qemuTooOld('10.0.0'), false);
  assert.equal(qemuTooOld(undefined), false);
});
