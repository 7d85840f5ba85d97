import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Vm, type VmSpecInput } from '../../src/qemu/vm.js';
import { DiskImages } from '../../src/qemu/disk.js';
import { execFileSync } from 'node:child_process';
import { killVms, processAlive, tinyVm, tinyVmSpec, until } from '../helpers/fixtures.js';
import { repoRoot, sandbox } from '../helpers/env.js';

const box = sandbox('pim-vm-');
before(() => tinyVm());
after(() => box.cleanup());

const spec = (name: string, append = ''): VmSpecInput => tinyVmSpec(box.root, name, append);
const serial = (name: string) => (existsSync(join(box.root, `${name}.log`)) ? readFileSync(join(box.root, `${name}.log`), 'utf8') : '');

test('the serial log receives the guest output, and stop() powers it off through ACPI', async () => {
  const vm = await Vm.start({ spec: spec('acpi') });
  try {
    await until(() => serial('acpi').includes('waiting for the power button'), 120_000, 'the guest to boot');
    assert.match(serial('acpi'), /PIM-TINY-VM: booted 6\./);
    const started = Date.now();
    const outcome = await vm.stop({ timeoutMs: 30_000 });
    assert.equal(outcome, 'acpi');
    assert.ok(Date.now() - started < 30_000);
    assert.match(serial('acpi'), /power button pressed, powering off/);
    assert.ok(!processAlive(vm.pid!));
  } finally {
    vm.kill();
  }
});

test('a guest that ignores ACPI is stopped anyway after the timeout', async () => {
  const vm = await Vm.start({ spec: spec('stubborn', 'pim_ignore_acpi') });
  try {
    await until(() => serial('stubborn').includes('ignoring ACPI power button'), 120_000, 'the guest to boot');
    const started = Date.now();
    const outcome = await vm.stop({ timeoutMs: 3_000, quitTimeoutMs: 3_000 });
    assert.ok(outcome === 'quit' || outcome === 'killed', outcome);
    assert.ok(Date.now() - started >= 3_000, 'waited for ACPI first');
    assert.ok(!processAlive(vm.pid!));
    assert.doesNotMatch(serial('stubborn'), /powering off/);
  } finally {
    vm.kill();
  }
});

test('two VMs started in parallel get different SSH ports and QMP sockets', async () => {
  const [a, b] = await Promise.all([
    Vm.start({ spec: spec('para-a', 'pim_ignore_acpi'), forwardSsh: true }),
    Vm.start({ spec: spec('para-b', 'pim_ignore_acpi'), forwardSsh: true }),
  ]);
  try {
    assert.ok(a.sshPort && b.sshPort);
    assert.notEqual(a.sshPort, b.sshPort);
    assert.notEqual(a.qmpSocket, b.qmpSocket);
    assert.ok(a.command.args.includes(`user,id=net0,hostfwd=tcp:127.0.0.1:${a.sshPort}-:22`));
    assert.deepEqual(await a.qmp.execute('query-status'), { status: 'running', singlestep: false, running: true });
  } finally {
    await killVms(a, b);
  }
});

test('two processes leasing ports at the same moment never get the same port', async () => {
  const script = join(repoRoot, 'dist/test/fixtures/port-leaser.js');
  const children = [spawn(process.execPath, [script, '25']), spawn(process.execPath, [script, '25'])];
  try {
    const lists = await Promise.all(
      children.map(async (child) => {
        const [data] = (await once(child.stdout!, 'data')) as [Buffer];
        return JSON.parse(data.toString()) as number[];
      }),
    );
    const all = lists.flat();
    assert.equal(all.length, 50);
    assert.equal(new Set(all).size, 50);
  } finally {
    for (const child of children) child.kill('SIGKILL');
  }
});

for (const signal of ['SIGTERM', 'SIGINT', 'SIGKILL'] as const) {
  test(`killing the owning PIM process with ${signal} leaves no qemu-system process behind`, async () => {
    const holder = spawn(process.execPath, [join(repoRoot, 'dist/test/fixtures/vm-holder.js'), box.root], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    holder.stdout!.on('data', (c: Buffer) => (out += c.toString()));
    await until(() => /STARTED \d+/.test(out), 60_000, 'the holder to start its VM');
    const qemuPid = Number(/STARTED (\d+)/.exec(out)![1]);
    assert.ok(processAlive(qemuPid));
    assert.match(readFileSync(`/proc/${qemuPid}/cmdline`, 'utf8'), /qemu-system-x86_64/);
    holder.kill(signal);
    const [code, sig] = await once(holder, 'exit');
    if (signal !== 'SIGKILL') assert.equal(code, 130, `exit code after ${signal} (signal ${sig})`);
    await until(() => !processAlive(qemuPid), 5_000, `QEMU ${qemuPid} to be gone`);
    if (signal !== 'SIGKILL') {
      const qmpDir = /unix:(\/[^,]+)\/qmp\.sock/.exec(readFileSync(join(box.root, 'holder-cmdline.txt'), 'utf8'))?.[1];
      assert.ok(qmpDir && !existsSync(qmpDir), `the VM's run dir ${qmpDir} is removed`);
    }
  });
}

test('the accelerator the probe selects for x86_64 really boots a Linux kernel (a KVM that runs firmware but no kernel is not selected)', async () => {
  const { acceleratorReport, selectAccelerator } = await import('../../src/qemu/accel.js');
  const report = await acceleratorReport('x86_64', undefined);
  const accel = selectAccelerator(report);
  const vm = await Vm.start({ spec: { ...spec('selected-accel'), accel } });
  try {
    await until(() => serial('selected-accel').includes('PIM-TINY-VM: booted'), 120_000, `the kernel to boot under ${accel} (${JSON.stringify(report)})`);
  } finally {
    vm.kill();
  }
});

test('a layer taken while the VM runs: QEMU writes to the new overlay (128 KiB clusters with 4 KiB subclusters), the layer below keeps its bytes', async () => {
  const disks = new DiskImages();
  const base = join(box.root, 'layer-disk.qcow2');
  const overlay = join(box.root, 'layer-disk-1.qcow2');
  await disks.create(base, '64M');
  const vm = await Vm.start({ spec: { ...spec('layer'), disk: { path: base, format: 'qcow2', cache: 'unsafe' } } });
  try {
    await until(() => serial('layer').includes('waiting for the power button'), 120_000, 'the guest to boot');
    const write = (what: string) => vm.qmp.execute<string>('human-monitor-command', { 'command-line': `qemu-io disk0 "${what}"` });
    // (HMP's qemu-io prints its result on QEMU's stdout, not in the reply: the files are checked below.)
    await write('write -P 0x11 0 4k');
    await vm.snapshotDisk(base, overlay, disks);
    await write('write -P 0x22 4096 4k');
    const blocks = (await vm.qmp.execute('query-block', {})) as { device: string; inserted?: { file: string; image: { 'backing-image'?: { filename: string } } } }[];
    const disk0 = blocks.find((b) => b.device === 'disk0')!;
    assert.equal(disk0.inserted!.file, overlay);
    assert.equal(disk0.inserted!.image['backing-image']!.filename, base);
    await vm.stop({ timeoutMs: 30_000 });
  } finally {
    vm.kill();
  }
  const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', overlay], { encoding: 'utf8' })) as { 'cluster-size': number; 'backing-filename': string; 'format-specific': { data: { 'extended-l2'?: boolean } } };
  assert.equal(info['cluster-size'], 131072);
  assert.equal(info['format-specific'].data['extended-l2'], true);
  assert.equal(info['backing-filename'], base);
  const read = (file: string, at: number) => execFileSync('qemu-io', ['-f', 'qcow2', '-c', `read -P ${at === 0 ? '0x11' : '0x22'} ${at} 4k`, file], { encoding: 'utf8' });
  assert.match(read(overlay, 0), /read 4096\/4096 bytes/, 'the overlay shows the layer below through its backing file');
  assert.match(read(overlay, 4096), /read 4096\/4096 bytes/);
  assert.match(execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'read -P 0 4096 4k', base], { encoding: 'utf8' }), /read 4096\/4096 bytes/, 'the write after the layer went to the overlay only');
  const map = JSON.parse(execFileSync('qemu-img', ['map', '--output=json', '-f', 'qcow2', overlay], { encoding: 'utf8' })) as { start: number; length: number; depth: number; data: boolean }[];
  const own = map.filter((e) => e.depth === 0 && e.data);
  assert.equal(own.reduce((n, e) => n + e.length, 0), 4096, `the overlay allocated one 4 KiB subcluster, not a whole cluster: ${JSON.stringify(own)}`);
});
