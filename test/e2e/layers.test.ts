// Layered rebuilds, the package cache and `pim build verify`, on top of the shared image's build:
// a copy of its layer cache and package cache (the remote test host's, a directory on this
// machine) is this sandbox's cache, so the rebuilds here start from its layers.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { appendFileSync, cpSync, existsSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Registry } from '../../src/registry/registry.js';
import { pim, repoRoot, sandbox, type Sandbox } from '../helpers/env.js';
import { rootSkip } from '../helpers/installer.js';
import { SHARED_PROFILE, sharedImage } from '../helpers/shared-image.js';

let box: Sandbox;
before(async () => {
  if (rootSkip) return;
  const shared = await sharedImage();
  box = sandbox('pim-layers-');
  cpSync(shared.box.project, box.project, { recursive: true });
  rmSync(join(box.project, 'pim.yml')); // build here, not on the remote
  // The remote PIM's cache dir (XDG_CACHE_HOME there) holds the shared build's layers and packages.
  // The rebuilds here use a copy of it, hard links of its files (which PIM only ever replaces with a
  // rename, never rewrites): the shared cache must stay as the shared build left it, or the next run
  // of these tests on this machine would find their edited layers already cached.
  box.env['XDG_CACHE_HOME'] = join(box.root, 'layer-cache');
  execFileSync('cp', ['-al', join(shared.remoteCacheDir, 'cache'), box.env['XDG_CACHE_HOME']]);
  // The profile's own check: the edit of the last script shows in the image.
  box.write('verify.d/small.sh', '#!/bin/bash\nset -e\ntest -f /etc/pim-layer-edit\ngrep -q second /etc/pim-layer-edit\n! apt-config dump | grep -qi proxy\n');
});
after(() => box?.cleanup());

const image = () => new Registry(join(box.root, 'data', 'pim', 'registry.yml')).getImage(SHARED_PROFILE, 'x86_64')!;
const ran = (stderr: string) => [...stderr.matchAll(/^ {4}script (\S+)$/gm)].map((m) => m[1]);
// The archive may publish (a security update) between the shared build and a rebuild here: then
// the rebuild makes the upgrade layer and what follows it again, and says so.
const ARCHIVE_MOVED = /the archive has changed since layer pim-prepare\+base was made \(http:\/\/\S+\/InRelease.*\): making it again/;

test('editing the last script reruns only it and finalize; the flattened image shows the edit and passes pim build verify', { skip: rootSkip, timeout: 40 * 60_000 }, async () => {
  appendFileSync(join(box.project, 'scripts.d/record.sh'), 'echo second > /etc/pim-layer-edit\n');
  const r = await pim(box, ['build', 'run', SHARED_PROFILE, '--arch', 'x86_64'], { timeoutMs: 30 * 60_000 });
  assert.equal(r.status, 0, r.stderr);
  const moved = ARCHIVE_MOVED.test(r.stderr);
  assert.match(r.stderr, moved ? /reusing 1 of 3 cached layers: install\n/ : /reusing 2 of 3 cached layers: install, pim-prepare\+base\n/);
  assert.match(r.stderr, /the install layer is cached: nothing to install/);
  assert.deepEqual(ran(r.stderr), [...(moved ? ['pim-prepare', 'base'] : []), 'record', 'finalize', 'pim-seal']);
  const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', image().path], { encoding: 'utf8' }));
  assert.equal(info['backing-filename'], undefined, 'flattened: no backing file');
  assert.equal(info['format-specific'].data['compression-type'], 'zstd');
  const verify = await pim(box, ['build', 'verify', SHARED_PROFILE, '--arch', 'x86_64', '--json'], { timeoutMs: 20 * 60_000 });
  assert.equal(verify.status, 0, `${verify.stdout}\n${verify.stderr}`);
  const checks = JSON.parse(verify.stdout).checks as { name: string; ok: boolean }[];
  assert.ok(checks.some((c) => c.name.startsWith('profile checks') && c.ok), 'the profile check saw the edit');
  assert.equal(image()['verify']?.['verdict' as never], 'pass');
});

test('pim build verify fails, naming the check, on an image where a script re-enabled password login', { skip: rootSkip, timeout: 40 * 60_000 }, async () => {
  box.write('scripts.d/badssh.sh', '#!/bin/bash\nprintf "PasswordAuthentication yes\\n" > /etc/ssh/sshd_config.d/10-oops.conf\n');
  box.write('profiles.d/z-bad.yml', `${SHARED_PROFILE}:\n  scripts: [base, record, badssh, finalize]\n`);
  try {
    const r = await pim(box, ['build', 'run', SHARED_PROFILE, '--arch', 'x86_64'], { timeoutMs: 30 * 60_000 });
    assert.equal(r.status, 0, r.stderr);
    const moved = ARCHIVE_MOVED.test(r.stderr);
    assert.match(r.stderr, moved ? /reusing 1 of 4 cached layers: install\n/ : /reusing 3 of 4 cached layers: install, pim-prepare\+base, record/);
    assert.deepEqual(ran(r.stderr), [...(moved ? ['pim-prepare', 'base', 'record'] : []), 'badssh', 'finalize', 'pim-seal']);
    const verify = await pim(box, ['build', 'verify', SHARED_PROFILE, '--arch', 'x86_64'], { timeoutMs: 20 * 60_000 });
    assert.equal(verify.status, 1, verify.stderr);
    assert.match(verify.stderr, /FAIL sshd refuses passwords: passwordauthentication yes/);
    assert.match(verify.stderr, /verification of small\/x86_64 failed: sshd refuses passwords/);
  } finally {
    rmSync(join(box.project, 'profiles.d/z-bad.yml'));
  }
});

test('editing base reruns everything after the install; its packages come from the package cache; no proxy is left in the image', { skip: rootSkip, timeout: 60 * 60_000 }, async () => {
  // The shipped base, edited in the project (which then takes it over).
  writeFileSync(join(box.project, 'scripts.d/base.sh'), `${readFileSync(join(repoRoot, 'assets/scripts.d/base.sh'), 'utf8')}\necho "base, edited"\n`);
  const base = readFileSync(join(box.project, 'scripts.d/base.sh'), 'utf8');
  assert.match(base, /edited/);
  assert.match(base, /cloud-init/);
  const r = await pim(box, ['build', 'run', SHARED_PROFILE, '--arch', 'x86_64', '--verbose'], { timeoutMs: 50 * 60_000 });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /reusing 1 of 3 cached layers: install/);
  assert.deepEqual(ran(r.stderr), ['pim-prepare', 'base', 'record', 'finalize', 'pim-seal']);
  // base installs cloud-init & co: the shared build fetched them, this one reads them from the cache.
  const m = /package cache: (\d+) served from the cache \(([\d.]+) MiB\), (\d+) fetched from the mirror/.exec(r.stderr);
  assert.ok(m, r.stderr);
  assert.ok(Number(m[1]) >= 20, `served from the cache: ${m[1]}`);
  const log = readFileSync(`${image().path}.log`, 'utf8');
  assert.match(log, /pkg\| HIT \/debian\/pool\/main\/c\/cloud-init\/cloud-init_/);
  // The install layer's package lists are as old as the shared build: brought up to date.
  assert.match(log, /\[pim-prepare\] package lists from a cached install layer: updating them/);
  const verify = await pim(box, ['build', 'verify', SHARED_PROFILE, '--arch', 'x86_64'], { timeoutMs: 20 * 60_000 });
  assert.equal(verify.status, 0, verify.stderr);
});

test('once the archive has changed since the upgrade layer was made, a rebuild makes it and every layer after it again, from updated package lists', { skip: rootSkip, timeout: 60 * 60_000 }, async () => {
  // The upgrade layer of the last build (base edited) says it saw other content of the security
  // suite's InRelease than the mirror serves: as if a security update had been published since.
  const dir = join(box.env['XDG_CACHE_HOME']!, 'pim', 'layers');
  const metas = readdirSync(dir).filter((f) => f.endsWith('.json')).map((f) => ({ file: join(dir, f), meta: JSON.parse(readFileSync(join(dir, f), 'utf8')) as { created_at: string; release_files?: Record<string, string> } }));
  const upgrade = metas.filter((m) => m.meta.release_files).sort((a, b) => a.meta.created_at.localeCompare(b.meta.created_at)).at(-1)!;
  const security = Object.keys(upgrade.meta.release_files!).find((url) => url.endsWith('/bookworm-security/InRelease'))!;
  assert.ok(security, JSON.stringify(upgrade.meta));
  const seen = upgrade.meta.release_files![security]!;
  rmSync(upgrade.file); // (a new file: the shared cache's files are hard links)
  writeFileSync(upgrade.file, JSON.stringify({ ...upgrade.meta, release_files: { ...upgrade.meta.release_files, [security]: '0'.repeat(64) } }));
  const stale = upgrade.file.replace(/\.json$/, '.qcow2');
  // The last image is cached whole (its key holds no archive state): an edit of the last script
  // makes a build, which would rerun only that script if the upgrade layer were still current.
  appendFileSync(join(box.project, 'scripts.d/record.sh'), 'echo third >> /etc/pim-layer-edit\n');
  const r = await pim(box, ['build', 'run', SHARED_PROFILE, '--arch', 'x86_64', '--verbose'], { timeoutMs: 50 * 60_000 });
  assert.equal(r.status, 0, r.stderr);
  // (The security suite's InRelease among the changed ones: another suite may have published too.)
  const changed = /the archive has changed since layer pim-prepare\+base was made \((.+)\): making it again/.exec(r.stderr);
  assert.ok(changed?.[1]!.split(', ').includes(security), r.stderr);
  assert.match(r.stderr, /reusing 1 of 3 cached layers: install\n/);
  assert.deepEqual(ran(r.stderr), ['pim-prepare', 'base', 'record', 'finalize', 'pim-seal']);
  assert.match(r.stderr, /\[pim-prepare\] package lists from a cached install layer: updating them/);
  // The layer of the same key was made again: its record is what the guest fetched this time.
  assert.ok(existsSync(stale), 'the upgrade layer was cached again');
  const again = JSON.parse(readFileSync(upgrade.file, 'utf8')) as { created_at: string; release_files: Record<string, string> };
  assert.ok(again.created_at > upgrade.meta.created_at, `${again.created_at} after ${upgrade.meta.created_at}`);
  assert.notEqual(again.release_files[security], '0'.repeat(64));
  assert.match(again.release_files[security]!, /^[0-9a-f]{64}$/);
  const served = createHash('sha256').update(Buffer.from(await (await fetch(security)).arrayBuffer())).digest('hex');
  assert.ok([seen, served].includes(again.release_files[security]!), 'what the mirror served (before, or if it has published meanwhile, now)');
  const verify = await pim(box, ['build', 'verify', SHARED_PROFILE, '--arch', 'x86_64'], { timeoutMs: 20 * 60_000 });
  assert.equal(verify.status, 0, verify.stderr);
});
