// A build that fails or is interrupted stops everything it started and registers nothing.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { pim, pimAsync, sandbox } from '../helpers/env.js';
import { until } from '../helpers/fixtures.js';
import { rootSkip, testInstallerIso } from '../helpers/installer.js';
import { useTestInstaller } from '../helpers/build-project.js';

const box = sandbox('pim-fail-');
before(() => {
  if (rootSkip) return;
  const isoName = useTestInstaller(box, testInstallerIso());
  // No extra packages and a trivial base: these builds are about failing, not about cloud-init.
  box.write(
    'profiles.d/f.yml',
    `default:\n  iso: ${isoName}\n  packages: ""\n  build: { disk_size: 6G, memory: 1024, cpus: 2 }\n` +
      'slow:\n  scripts: [base, sleeper, finalize]\nthree:\n  scripts: [base, exit3, finalize]\n',
  );
  box.write('scripts.d/base.sh', '#!/bin/bash\necho "trivial base for failure tests"\n');
  box.write('scripts.d/sleeper.sh', '#!/bin/bash\necho "sleeping"\nsleep 600\n');
  box.write('scripts.d/exit3.sh', '#!/bin/bash\necho "about to fail"\nexit 3\n');
});
after(() => box.cleanup());

const workDir = () => join(box.root, 'data', 'pim', 'images', '.work');
const registry = () => join(box.root, 'data', 'pim', 'registry.yml');
function qemuOfThisSandbox(): string[] {
  try {
    return execFileSync('pgrep', ['-f', `qemu-system.*${box.root}`], { encoding: 'utf8' }).trim().split('\n').filter(Boolean);
  } catch {
    return [];
  }
}

async function interruptAt(profile: string, marker: RegExp, delayMs: number): Promise<{ code: number | null; stderr: string }> {
  const child = pimAsync(box, ['build', 'run', profile, '--arch', 'x86_64']);
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  child.stdout.resume();
  await until(() => marker.test(stderr), 20 * 60_000, `${marker} in the build output`);
  await new Promise((r) => setTimeout(r, delayMs));
  assert.ok(qemuOfThisSandbox().length > 0, 'a VM is running when Ctrl+C arrives');
  child.kill('SIGINT');
  const [code] = await once(child, 'exit');
  return { code: code as number | null, stderr };
}

function assertNothingLeft(stderr: string) {
  assert.deepEqual(qemuOfThisSandbox(), [], 'no qemu-system process left');
  assert.ok(!existsSync(registry()) || !/slow|three/.test(execFileSync('cat', [registry()], { encoding: 'utf8' })), 'nothing registered');
  assert.deepEqual(existsSync(workDir()) ? readdirSync(workDir()) : [], [], 'no work dir left');
  assert.match(stderr, /interrupted; nothing was registered/);
}

test('Ctrl+C in the install step: exit 130, no QEMU, no registry entry, no work dir', { skip: rootSkip, timeout: 30 * 60_000 }, async () => {
  const r = await interruptAt('slow', /==> install/, 5_000);
  assert.equal(r.code, 130, r.stderr);
  assertNothingLeft(r.stderr);
});

test('Ctrl+C in the provision step: exit 130, no QEMU, no registry entry, no work dir', { skip: rootSkip, timeout: 30 * 60_000 }, async () => {
  const r = await interruptAt('slow', /script sleeper/, 3_000);
  assert.equal(r.code, 130, r.stderr);
  assertNothingLeft(r.stderr);
});

test('a script that exits 3 fails the build naming the script and 3', { skip: rootSkip, timeout: 30 * 60_000 }, async () => {
  const r = await pim(box, ['build', 'run', 'three', '--arch', 'x86_64'], { timeoutMs: 25 * 60_000 });
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /provisioning script 'exit3' \(.*exit3\.sh\) exited 3/);
  assert.match(r.stderr, /log: .*state\/pim\/logs\/three-x86_64-.*\.log/);
  assert.match(r.stderr, /\[exit3\] about to fail/, 'the last lines of the log are shown');
  assert.deepEqual(qemuOfThisSandbox(), []);
  assert.deepEqual(existsSync(workDir()) ? readdirSync(workDir()) : [], []);
});
