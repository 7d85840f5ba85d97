import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { pim, sandbox } from '../helpers/env.js';

const box = sandbox();
after(() => box.cleanup());
box.write(
  'profiles.d/site.yml',
  'default:\n  username: admin\n  password: s3cret\n  build: { disk_size: 10G, memory: 1024, cpus: 1 }\n  scripts: [base, finalize]\n' +
    'web:\n  hostname: web1\n  build: { memory: 4096 }\n  scripts: [base, nginx, finalize]\n',
);

test('pim profile show NAME --json prints the deep-merged profile', async () => {
  const r = await pim(box, ['profile', 'show', 'web', '--json']);
  assert.equal(r.status, 0, r.stderr);
  const profile = JSON.parse(r.stdout);
  assert.deepEqual(profile.build, { disk_size: '10G', memory: 4096, cpus: 1 }, 'nested maps merged');
  assert.deepEqual(profile.scripts, ['base', 'nginx', 'finalize'], 'arrays replaced');
  assert.equal(profile.hostname, 'web1');
  assert.equal(profile.username, 'admin');
  assert.equal(profile.password, '********', 'masked by default');
  assert.equal(profile.locale, 'en_US.UTF-8', 'built-in default layer merged in');
  const revealed = JSON.parse((await pim(box, ['profile', 'show', 'web', '--json', '--reveal'])).stdout);
  assert.equal(revealed.password, 's3cret');
});

test('pim profile list lists project and built-in profiles', async () => {
  const r = await pim(box, ['profile', 'list']);
  assert.equal(r.status, 0);
  assert.deepEqual(r.stdout.trim().split('\n'), ['default', 'developer', 'k8s-node', 'web']);
});

test('an unknown profile exits 2 and lists the known names, without a stack trace', async () => {
  const r = await pim(box, ['profile', 'show', 'nope']);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /unknown profile 'nope'; known profiles: default, developer, k8s-node, web/);
  assert.doesNotMatch(r.stderr, /\n\s+at /);
  assert.ok(r.stderr.trim().split('\n').length <= 2);
});

test('malformed YAML exits 2 naming the file and the line, without a stack trace', async () => {
  const bad = sandbox();
  try {
    bad.write('profiles.d/ok.yml', 'default:\n  username: a\n');
    bad.write('profiles.d/broken.yml', 'web:\n  hostname: x\n  packages: [a, b\n  other: 1\n');
    const r = await pim(bad, ['profile', 'show', 'web']);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /profiles\.d\/broken\.yml:\d+: malformed YAML/);
    assert.doesNotMatch(r.stderr, /\n\s+at /);
  } finally {
    bad.cleanup();
  }
});

test('bad usage exits 2; --help and --version exit 0', async () => {
  assert.equal((await pim(box, ['profile', 'show'])).status, 2);
  assert.equal((await pim(box, ['frobnicate'])).status, 2);
  const help = await pim(box, ['--help']);
  assert.equal(help.status, 0);
  assert.match(help.stdout, /profile/);
  assert.match((await pim(box, ['--version'])).stdout, /^\d+\.\d+\.\d+/);
});

test('pim init copies the defaults without overwriting existing files', async () => {
  const fresh = sandbox();
  try {
    fresh.write('profiles.d/default.yml', 'default:\n  username: mine\n');
    const r = await pim(fresh, ['--project', fresh.project, 'init']);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /kept\s+.*profiles\.d\/default\.yml/);
    assert.match(r.stdout, /created\s+.*preseeds\.d\/default\.cfg\.ejs/);
    const shown = JSON.parse((await pim(fresh, ['profile', 'show', 'default', '--json'])).stdout);
    assert.equal(shown.username, 'mine');
  } finally {
    fresh.cleanup();
  }
});

const pimYmlCases: [string, string, RegExp][] = [
  ['a remote without host', 'build:\n  builders: { x86_64: r1 }\n  remotes:\n    r1:\n      user: root\n', /pim\.yml:4: pim\.yml: field 'build\.remotes\.r1\.host': Required/],
  ['a remote without user (none in default either)', 'build:\n  remotes:\n    r1:\n      host: r1.lan\n', /pim\.yml:3: pim\.yml: field 'build\.remotes\.r1\.user': Required/],
  ['a builder naming an unknown remote', 'build:\n  builders:\n    x86_64: nowhere\n', /pim\.yml:3: pim\.yml: field 'build\.builders\.x86_64': unknown builder 'nowhere'/],
  ['a builder for an arch that does not exist', 'build:\n  builders:\n    sparc: local\n', /pim\.yml:3: pim\.yml: field 'build\.builders\.sparc': unknown architecture 'sparc'/],
  ['a host_key that is no fingerprint', 'build:\n  remotes:\n    r1: { host: r1.lan, user: u, host_key: "ssh-ed25519 AAAA" }\n', /field 'build\.remotes\.r1\.host_key': expected an OpenSSH fingerprint/],
];
for (const [what, yml, expected] of pimYmlCases) {
  test(`pim.yml with ${what}: pim build status exits 2 naming pim.yml, the line and the field`, async () => {
    const sub = sandbox();
    try {
      sub.write('pim.yml', yml);
      const r = await pim(sub, ['build', 'status']);
      assert.equal(r.status, 2, r.stderr);
      assert.match(r.stderr, expected);
      assert.ok(r.stderr.includes(join(sub.project, 'pim.yml')), r.stderr);
      assert.doesNotMatch(r.stderr, /\n\s+at /);
    } finally {
      sub.cleanup();
    }
  });
}

test("builders: { amd64: local } is read as x86_64, and a remote gets the default remote's settings", async () => {
  const sub = sandbox();
  try {
    sub.write('pim.yml', 'build:\n  builders: { amd64: local, aarch64: mac }\n  remotes:\n    default: { user: builder, pim_path: /opt/pim/bin/pim }\n    mac: { host: mac.lan }\n');
    const r = await pim(sub, ['build', 'status', '--json']);
    assert.equal(r.status, 0, r.stderr);
    const s = JSON.parse(r.stdout);
    assert.equal(s.arches.x86_64.builder, 'local');
    assert.equal(s.arches.arm64.builder, 'mac');
    const { Project } = await import('../../src/config/project.js');
    const config = new Project({ projectDir: sub.project, env: sub.env }).pimConfig();
    assert.deepEqual(
      { host: config.build.remotes['mac']!.host, user: config.build.remotes['mac']!.user, pim_path: config.build.remotes['mac']!.pim_path, port: config.build.remotes['mac']!.port },
      { host: 'mac.lan', user: 'builder', pim_path: '/opt/pim/bin/pim', port: 22 },
    );
    assert.equal('default' in config.build.remotes, false, 'default is merged, not a remote of its own');
  } finally {
    sub.cleanup();
  }
});

test('--dry-run with proxy credentials in the profile prints no secret; profile show masks them too', async () => {
  const sub = sandbox();
  try {
    sub.write('isos.d/x.yml', `x:\n  url: http://127.0.0.1:9/x.iso\n  checksum: sha256:${'a'.repeat(64)}\n  arch: x86_64\n  distro: debian\n  version: "12"\n`);
    sub.write('profiles.d/p.yml', 'default:\n  iso: x\nproxied:\n  http_proxy: http://user:s3cret@proxy.lan:3128\n  api_token: tok-123456\n  mirror_host: deb.debian.org\n');
    const r = await pim(sub, ['build', 'run', 'proxied', '--arch', 'x86_64', '--dry-run']);
    assert.equal(r.status, 0, r.stderr);
    assert.doesNotMatch(r.stdout + r.stderr, /s3cret|tok-123456/);
    assert.match(r.stdout, /http_proxy: http:\/\/user:\*{8}@proxy\.lan:3128/);
    const shown = await pim(sub, ['profile', 'show', 'proxied']);
    assert.doesNotMatch(shown.stdout, /s3cret|tok-123456/);
  } finally {
    sub.cleanup();
  }
});

test('a profile that keeps the shipped default password gets a warning; its own password or a hash gets none', async () => {
  const sub = sandbox();
  try {
    sub.write('profiles.d/p.yml', 'mine:\n  password: correct-horse\nhashed:\n  password_crypted: "$6$salt$hash"\n');
    assert.match((await pim(sub, ['profile', 'show', 'default'])).stderr, /warning: profile 'default' uses the shipped default password.*password_crypted/);
    assert.doesNotMatch((await pim(sub, ['profile', 'show', 'mine'])).stderr, /warning/);
    assert.doesNotMatch((await pim(sub, ['profile', 'show', 'hashed'])).stderr, /warning/);
  } finally {
    sub.cleanup();
  }
});

test("names that become paths refuse '.', '..' and '/'", async () => {
  for (const name of ['.', '..', 'a/b']) {
    const r = await pim(box, ['profile', 'show', name]);
    assert.equal(r.status, 2, name);
    assert.match(r.stderr, /invalid profile name/);
  }
});
