import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { pim, sandbox } from '../helpers/env.js';

const box = sandbox();
after(() => box.cleanup());

test('pim doctor --json reports accelerators by trying them, and TCG selected where nothing else works', async () => {
  const r = await pim(box, ['doctor', '--json', '--no-cache']);
  assert.equal(r.status, 0, r.stderr);
  const report = JSON.parse(r.stdout);
  assert.equal(report.accelerators.tcg.usable, true);
  assert.equal(report.accelerators.hvf.usable, false);
  assert.equal(report.selected.arm64, 'tcg', 'x86_64 host: arm64 guests are emulated');
  if (!report.accelerators.kvm.usable) {
    // The test machines: /dev/kvm exists, yet no guest runs under KVM.
    assert.ok(report.accelerators.kvm.reason.length > 10, report.accelerators.kvm.reason);
    assert.equal(report.selected.x86_64, 'tcg');
  } else {
    assert.equal(report.selected.x86_64, 'kvm');
  }
  for (const tool of ['qemu-system-x86_64', 'qemu-system-aarch64', 'qemu-img', 'aarch64-uefi-firmware', 'iso-reader', 'zstd']) {
    assert.ok(tool in report.tools, tool);
  }
  assert.match(report.tools['qemu-img'].version, /^\d+\.\d+/);
});

test('pim doctor prints the same for a person, with install commands for what is missing', async () => {
  const r = await pim(box, ['doctor'], { env: { PATH: '/nonexistent' } });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /MISSING\s+qemu-img: install with: apt-get install qemu-utils/);
  assert.match(r.stdout, /apt-get install qemu-system-x86/);
  // zstd is optional: named with what it is for, not among what is missing.
  assert.match(r.stdout, /optional zstd: not found \(AWS uploads read compressed images through it .*\); install with: apt-get install zstd/);
  const json = JSON.parse((await pim(box, ['doctor', '--json'], { env: { PATH: '/nonexistent' } })).stdout);
  assert.equal(json.tools.zstd.found, false);
  assert.ok(!json.missing.some((m: { what: string }) => m.what === 'zstd'), 'zstd is not missing, only optional');
  assert.ok(json.missing.some((m: { what: string }) => m.what === 'qemu-img'));
  const real = await pim(box, ['doctor']);
  assert.match(real.stdout, /usable\s+tcg/);
  assert.match(real.stdout, /selected: tcg/);
});

test('build.accelerator in pim.yml overrides the probe', async () => {
  box.write('pim.yml', 'build:\n  accelerator: kvm\n');
  try {
    const report = JSON.parse((await pim(box, ['doctor', '--json'])).stdout);
    assert.equal(report.selected.x86_64, 'kvm');
    assert.equal(report.override, 'kvm');
  } finally {
    box.write('pim.yml', '{}\n');
  }
});
