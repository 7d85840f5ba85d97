import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { IsoCatalog, patternToRegex } from '../../src/iso/catalog.js';
import { compareVersions } from '../../src/iso/version.js';
import { Project } from '../../src/config/project.js';
import { ConfigError } from '../../src/errors.js';
import { sandbox } from '../helpers/env.js';

test('versions compare as versions', () => {
  assert.equal(compareVersions('12.10.0', '12.9.0'), 1);
  assert.equal(compareVersions('12.9', '12.10'), -1);
  assert.equal(compareVersions('13', '12.11.0'), 1);
  assert.equal(compareVersions('12.11.0', '12.11.0'), 0);
  assert.equal(compareVersions('12.11', '12.11.1'), -1);
});

const box = sandbox();
after(() => box.cleanup());
const entry = (version: string, arch: string, extra = '') =>
  `  url: https://example.invalid/debian-${version}-${arch}-netinst.iso\n  checksum: sha256:${'a'.repeat(64)}\n  arch: ${arch}\n  distro: debian\n  version: "${version}"\n${extra}`;
box.write(
  'isos.d/test.yml',
  [
    `debian-12.9.0-amd64-netinst:\n${entry('12.9.0', 'amd64')}`,
    `debian-12.10.0-amd64-netinst:\n${entry('12.10.0', 'amd64')}`,
    `debian-12.2.0-arm64-netinst:\n${entry('12.2.0', 'arm64')}`,
    `ubuntu-24.04-amd64-live:\n${entry('24.04', 'x86_64').replace('distro: debian', 'distro: ubuntu')}`,
  ].join('\n'),
);
const catalog = IsoCatalog.fromConfig(new Project({ projectDir: box.project, env: box.env, builtinDir: box.root + '/none' }).layers.loadKeyedDir('isos.d'));

test('arch aliases are normalised and filenames default to the URL basename', () => {
  const e = catalog.get('debian-12.9.0-amd64-netinst');
  assert.equal(e.arch, 'x86_64');
  assert.equal(e.filename, 'debian-12.9.0-amd64-netinst.iso');
});

test('findByArch picks the most recent version of that arch (12.10 over 12.9)', () => {
  assert.equal(catalog.findByArch('x86_64')?.name, 'ubuntu-24.04-amd64-live');
  assert.equal(catalog.findByArch('amd64', 'debian-*-{arch}-netinst')?.name, 'debian-12.10.0-amd64-netinst');
  assert.equal(catalog.findByArch('aarch64')?.name, 'debian-12.2.0-arm64-netinst');
});

test('findByPattern substitutes {arch}, {distro} and {version} and globs', () => {
  assert.equal(catalog.findByPattern('debian-*-{arch}-netinst', { arch: 'arm64' })?.name, 'debian-12.2.0-arm64-netinst');
  assert.equal(catalog.findByPattern('{distro}-{version}-{arch}-netinst', { arch: 'x86_64', version: '12.9.0' })?.name, 'debian-12.9.0-amd64-netinst');
  assert.equal(catalog.findByPattern('{distro}-*-{arch}-*', { arch: 'x86_64', distro: 'ubuntu' })?.name, 'ubuntu-24.04-amd64-live');
  assert.equal(catalog.findByPattern('fedora-*', { arch: 'x86_64' }), undefined);
  assert.ok(patternToRegex('debian-*-{arch}', 'x86_64').test('debian-13-x86_64'));
  assert.ok(!patternToRegex('debian-*-{arch}', 'arm64').test('debian-13-amd64'));
});

test('an unknown ISO lists the known ones', () => {
  assert.throws(() => catalog.get('nope'), (err: unknown) => err instanceof ConfigError && err.message.includes('debian-12.10.0-amd64-netinst'));
});

test('the shipped catalog has Debian netinst entries for both arches with real-looking checksums', () => {
  const shipped = IsoCatalog.load(new Project({ projectDir: box.root + '/empty', env: box.env }));
  const arches = new Set(shipped.list().map((e) => e.arch));
  assert.deepEqual([...arches].sort(), ['arm64', 'x86_64']);
  for (const e of shipped.list()) {
    assert.match(e.url, /^https:\/\/cdimage\.debian\.org\/cdimage\/archive\/\d+\.\d+\.\d+\//);
    assert.match(e.checksum, /^(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$/);
  }
  assert.match(shipped.findByArch('x86_64', 'debian-*-{arch}-netinst')!.version, /^13\./);
});
