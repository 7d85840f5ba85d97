import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Vm, type VmSpecInput } from '../../src/qemu/vm.js';
import { processAlive, tinyVm, until } from '../helpers/fixtures.js';
import { repoRoot, sandbox } from '../helpers/env.js';

const box = sandbox('pim-vm-');
let fixture: { kernel: string; initrd: string };
before(() => {
  fixture = tinyVm();
});
after(() => box.cleanup());

function spec(name: string, append = ''): VmSpecInput {
  return {
    name, arch: 'x86_64', accel: 'tcg', memoryMb: 256, cpus: 1,
    kernel: { path: fixture.kernel, initrd: fixture.initrd, append: `console=ttyS0 ${append}`.trim() },
    serialLog: join(box.root, `${name}.log`),
  };
}
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
    a.kill();
    b.kill();
    await Promise.all([a.exited, b.exited]);
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
