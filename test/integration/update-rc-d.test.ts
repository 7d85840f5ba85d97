// pim-prepare's update-rc.d for the build: the script it writes into the guest, taken out of
// assets/guest/prepare.sh and run here as it is, with its paths moved into a temp dir and a
// stand-in for Debian's update-rc.d that notes how it was called.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../helpers/env.js';

const PREPARE = readFileSync(join(repoRoot, 'assets', 'guest', 'prepare.sh'), 'utf8');
const UNITS = '/etc/systemd/system /run/systemd/system /lib/systemd/system /usr/lib/systemd/system';

/** Runs the wrapper with `args` (and DPKG_ROOT when given); what Debian's update-rc.d was called with. */
function box() {
  const dir = mkdtempSync(join(tmpdir(), 'pim-update-rc-d-'));
  const m = /cat > \/usr\/lib\/pim-build\/update-rc\.d <<'SH'\n([\s\S]*?)\nSH\n/.exec(PREPARE);
  assert.ok(m, 'prepare.sh writes /usr/lib/pim-build/update-rc.d');
  assert.ok(m[1]!.includes(`units="${UNITS}"`), "the wrapper looks for native units in systemd's unit dirs");
  const unitDirs = UNITS.split(' ').map((_, i) => join(dir, `units-${i}`));
  for (const d of unitDirs) mkdirSync(d, { recursive: true });
  const body = m[1]!.replace('/usr/sbin/update-rc.d.pim-real', join(dir, 'real')).replace(`units="${UNITS}"`, `units="${unitDirs.join(' ')}"`);
  assert.doesNotMatch(body.replaceAll(dir, ''), /\/usr\/|\/etc\/|\/run\/|\/lib\//, 'every path moved into the test dir');
  writeFileSync(join(dir, 'update-rc.d'), `${body}\n`, { mode: 0o755 });
  writeFileSync(join(dir, 'real'), `#!/bin/sh\necho "DPKG_ROOT=\${DPKG_ROOT-unset} $*"\nexit 3\n`, { mode: 0o755 });
  return {
    dir,
    unit: (where: number, name: string) => writeFileSync(join(unitDirs[where]!, `${name}.service`), '[Service]\n'),
    run(args: string[], dpkgRoot?: string) {
      const env = { ...process.env };
      delete env['DPKG_ROOT'];
      if (dpkgRoot !== undefined) env['DPKG_ROOT'] = dpkgRoot;
      const r = spawnSync(join(dir, 'update-rc.d'), args, { encoding: 'utf8', env });
      return { status: r.status, out: r.stdout.trim() };
    },
  };
}

test("update-rc.d for a script with a native unit runs Debian's with DPKG_ROOT=/ (no daemon-reload), in whichever unit dir the unit is", () => {
  const b = box();
  try {
    b.unit(2, 'cloud-init');
    b.unit(0, 'pimtest');
    assert.deepEqual(b.run(['cloud-init', 'defaults']), { status: 3, out: 'DPKG_ROOT=/ cloud-init defaults' }, "Debian's exit code, its arguments as they were");
    assert.deepEqual(b.run(['-f', 'pimtest', 'remove']), { status: 3, out: 'DPKG_ROOT=/ -f pimtest remove' });
    assert.deepEqual(b.run(['cloud-init', 'enable', '2', '3']), { status: 3, out: 'DPKG_ROOT=/ cloud-init enable 2 3' });
    // An empty DPKG_ROOT is no root to update-rc.d, as if unset.
    assert.deepEqual(b.run(['cloud-init', 'defaults'], ''), { status: 3, out: 'DPKG_ROOT=/ cloud-init defaults' });
  } finally {
    rmSync(b.dir, { recursive: true, force: true });
  }
});

test("update-rc.d for a script without a native unit, or called with DPKG_ROOT set, or with no name, is Debian's as it is", () => {
  const b = box();
  try {
    b.unit(1, 'other');
    // Only systemd-sysv-generator makes a unit for it: systemd needs the reload to see it.
    assert.deepEqual(b.run(['sysv-only', 'defaults']), { status: 3, out: 'DPKG_ROOT=unset sysv-only defaults' });
    assert.deepEqual(b.run(['other', 'defaults'], '/target'), { status: 3, out: 'DPKG_ROOT=/target other defaults' });
    assert.deepEqual(b.run(['-f']), { status: 3, out: 'DPKG_ROOT=unset -f' });
    assert.deepEqual(b.run(['../other', 'defaults']), { status: 3, out: 'DPKG_ROOT=unset ../other defaults' });
  } finally {
    rmSync(b.dir, { recursive: true, force: true });
  }
});
