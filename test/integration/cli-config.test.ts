import { test, after } from 'node:test';
import assert from 'node:assert/strict';
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
