import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, writeFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { Project } from '../../src/config/project.js';
import { resolvePlan } from '../../src/builder/plan.js';
import { Registry } from '../../src/registry/registry.js';
import { ConfigError } from '../../src/errors.js';
import { pim, sandbox } from '../helpers/env.js';

const box = sandbox('pim-plan-');
after(() => box.cleanup());
box.write(
  'isos.d/local.yml',
  `local-iso:\n  url: http://127.0.0.1:9/none.iso\n  checksum: sha256:${'a'.repeat(64)}\n  arch: x86_64\n  distro: debian\n  version: "12"\n`,
);
box.write(
  'profiles.d/p.yml',
  'default:\n  iso: local-iso\n  password: hunter2-secret\nweb:\n  scripts: [base, nginx, tools, nginx, finalize, base]\nx86only:\n  architectures: [x86_64]\nbroken:\n  scripts: [base, bad, finalize]\nfails:\n  scripts: [base, finalize]\n',
);
box.write('scripts.d/nginx.sh', '#!/bin/bash\necho nginx\n');
box.write('scripts.d/tools.sh', '#!/bin/bash\necho tools\n');
box.write('scripts.d/web.sh', '#!/bin/bash\necho own script of web\n');
box.write('scripts.d/bad.sh', '#!/bin/bash\nif then fi (\n');
const project = () => new Project({ projectDir: box.project, env: box.env });

test('scripts run base, the profile\'s own script, the listed ones in order, finalize last, each once', () => {
  const plan = resolvePlan(project(), { profileName: 'web', arch: 'x86_64' });
  assert.deepEqual(plan.scripts.map((s) => s.name), ['base', 'web', 'nginx', 'tools', 'finalize']);
  assert.ok(plan.scripts[0]!.path.endsWith('assets/scripts.d/base.sh'), 'built-in base');
  assert.ok(plan.scripts[1]!.path.startsWith(box.project), 'project script');
});

test('editing one provisioning script changes the cache key; editing nothing does not', () => {
  const before = resolvePlan(project(), { profileName: 'web', arch: 'x86_64' }).cacheKey;
  assert.equal(resolvePlan(project(), { profileName: 'web', arch: 'x86_64' }).cacheKey, before);
  box.write('scripts.d/tools.sh', '#!/bin/bash\necho tools v2\n');
  const after = resolvePlan(project(), { profileName: 'web', arch: 'x86_64' });
  assert.notEqual(after.cacheKey, before);
  box.write('scripts.d/tools.sh', '#!/bin/bash\necho tools\n');
  assert.equal(resolvePlan(project(), { profileName: 'web', arch: 'x86_64' }).cacheKey, before);
});

test('settings that change the output file are in the cache key (build.compress, build.disk_size); one that changes only speed is not', () => {
  const keyWith = (yml: string) => {
    box.write('pim.yml', yml);
    try {
      return resolvePlan(project(), { profileName: 'web', arch: 'x86_64' }).cacheKey;
    } finally {
      box.write('pim.yml', '{}\n');
    }
  };
  const base = keyWith('{}\n');
  assert.notEqual(keyWith('build:\n  compress: false\n'), base, 'an uncompressed image is another image');
  assert.notEqual(keyWith('build:\n  disk_size: 30G\n'), base);
  assert.equal(keyWith('build:\n  cpus: 1\n'), base, 'the vCPU count changes how fast, not what');
});

test('a profile that does not list the requested arch is refused with exit 2', async () => {
  assert.throws(() => resolvePlan(project(), { profileName: 'x86only', arch: 'arm64' }), ConfigError);
  const r = await pim(box, ['build', 'run', 'x86only', '--arch', 'aarch64']);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /profile 'x86only' does not list architecture arm64 \(it lists: x86_64\)/);
});

test('a script with a syntax error fails before QEMU starts, naming the script', async () => {
  const r = await pim(box, ['build', 'run', 'broken', '--arch', 'x86_64']);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /script 'bad' \(.*scripts\.d\/bad\.sh\) has a syntax error/);
  assert.doesNotMatch(r.stderr, /==> disk/);
  assert.ok(!existsSync(join(box.root, 'data', 'pim', 'images', '.work')), 'no work dir was made');
});

test('an arch routed to a remote builder goes there (a remote that cannot be reached fails in the connect phase); --local builds here', async () => {
  box.write('pim.yml', `build:\n  builders: { x86_64: far-away }\n  remotes: { far-away: { host: 127.0.0.1, port: 9, user: pim, identity_file: ${join(box.root, 'no-key')} } }\n`);
  writeFileSync(join(box.root, 'no-key'), 'not a key');
  try {
    const dry = await pim(box, ['build', 'run', 'fails', '--arch', 'x86_64', '--dry-run']);
    assert.match(dry.stdout, /builder:\s+far-away \(remote: 127\.0\.0\.1\)/);
    const r = await pim(box, ['build', 'run', 'fails', '--arch', 'x86_64']);
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /remote build on 'far-away' failed in the connect phase/);
    assert.doesNotMatch(r.stderr, /==> disk/, 'nothing was built here');
    const local = await pim(box, ['build', 'run', 'fails', '--arch', 'x86_64', '--local', '--dry-run']);
    assert.match(local.stdout, /builder:\s+local/);
  } finally {
    box.write('pim.yml', '{}\n');
  }
});

test('--dry-run prints the whole plan with secrets masked and touches nothing', async () => {
  const r = await pim(box, ['build', 'run', 'web', '--arch', 'x86_64', '--dry-run']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /cache key:\s+[0-9a-f]{64} \(miss: would build\)/);
  assert.match(r.stdout, /scripts:\s+pim-prepare -> base -> web -> nginx -> tools -> finalize -> pim-seal/);
  assert.match(r.stdout, /install VM:\s+qemu-system-x86_64 .*-kernel .*-append 'auto=true priority=critical preseed\/url=http:\/\/10\.0\.2\.2:<port>\/preseed\.cfg/);
  assert.match(r.stdout, /boot VM:\s+qemu-system-x86_64 .*hostfwd=tcp:127\.0\.0\.1:<free port>-:22/);
  assert.match(r.stdout, /local-iso -> .*none\.iso \(missing\)/);
  assert.doesNotMatch(r.stdout, /hunter2-secret/);
  assert.match(r.stdout, /password: "\*{8}"/);
  assert.ok(!existsSync(join(box.root, 'data', 'pim', 'registry.yml')));
  assert.ok(!existsSync(join(box.root, 'cache', 'pim', 'isos')));
});

test('build list, show and clean: clean drops entries whose file is gone, and filtered images', async () => {
  const registry = new Registry(join(box.root, 'data', 'pim', 'registry.yml'));
  const file = (name: string) => {
    const path = join(box.root, `${name}.qcow2`);
    writeFileSync(path, 'x'.repeat(10));
    return path;
  };
  const rec = (profile: string, arch: 'x86_64' | 'arm64', path: string) => ({
    profile, arch, cache_key: 'k'.repeat(64), inputs: {}, path, iso: 'i', built_at: '2026-11-26T00:00:00Z', build_seconds: 1, builder: 'local', virtual_size: 100, file_size: 10, sha256: 's',
  });
  await registry.registerImage(rec('keep', 'x86_64', file('keep')));
  await registry.registerImage(rec('gone', 'x86_64', join(box.root, 'never-existed.qcow2')));
  await registry.registerImage(rec('drop', 'arm64', file('drop')));
  const list = JSON.parse((await pim(box, ['build', 'list', '--json'])).stdout) as { profile: string }[];
  assert.deepEqual(list.map((i) => i.profile), ['drop', 'gone', 'keep']);
  const shown = JSON.parse((await pim(box, ['build', 'show', 'keep', '--json'])).stdout);
  assert.equal(shown.path, join(box.root, 'keep.qcow2'));
  assert.equal((await pim(box, ['build', 'show', 'nope'])).status, 2);
  const cleaned = await pim(box, ['build', 'clean', '--profile', 'drop']);
  assert.equal(cleaned.status, 0, cleaned.stderr);
  assert.match(cleaned.stdout, /removed gone\/x86_64 \(orphaned entry/);
  assert.match(cleaned.stdout, /removed drop\/arm64/);
  assert.deepEqual(registry.listImages().map((i) => i.profile), ['keep']);
  assert.ok(!existsSync(join(box.root, 'drop.qcow2')));
  assert.ok(existsSync(join(box.root, 'keep.qcow2')));
  assert.ok(readdirSync(box.root).includes('keep.qcow2'));
});

test('build status --json names the host arch, accelerators and builders', async () => {
  const r = await pim(box, ['build', 'status', '--json']);
  assert.equal(r.status, 0, r.stderr);
  const s = JSON.parse(r.stdout);
  assert.ok(['x86_64', 'arm64'].includes(s.host_arch));
  assert.equal(s.arches.arm64.builder, 'local');
  assert.ok(['tcg', 'kvm', 'hvf'].includes(s.arches.x86_64.accelerator));
});

test('--verbose on a cache miss names the inputs that changed since the last build', async () => {
  const plan = resolvePlan(project(), { profileName: 'broken', arch: 'x86_64' });
  const registry = new Registry(join(box.root, 'data', 'pim', 'registry.yml'));
  const image = join(box.root, 'broken-old.qcow2');
  writeFileSync(image, 'x');
  await registry.registerImage({
    profile: 'broken', arch: 'x86_64', cache_key: 'old', inputs: { ...plan.inputs, 'script:bad': 'previous-hash', iso_checksum: 'sha256:old' }, path: image,
    iso: 'local-iso', built_at: '2026-11-01T00:00:00Z', build_seconds: 1, builder: 'local', virtual_size: 1, file_size: 1, sha256: 'x',
  });
  const r = await pim(box, ['build', 'run', 'broken', '--arch', 'x86_64', '--verbose']);
  assert.match(r.stderr, /cache miss for broken\/x86_64; changed since the last build: iso_checksum, script:bad/);
  assert.equal(r.status, 2, 'and then the syntax check stops it');
});
