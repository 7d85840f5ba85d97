import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Project } from '../../src/config/project.js';
import { Profiles } from '../../src/profile/profiles.js';
import { ConfigError } from '../../src/errors.js';
import { sandbox } from '../helpers/env.js';

const box = sandbox();
after(() => box.cleanup());
const builtin = join(box.root, 'builtin');
const globalDir = join(box.root, 'config', 'pim');

function write(path: string, content: string) {
  box.write(join('..', path.slice(box.root.length + 1).replace(/^project\//, 'project/')), content);
}
// Three layers: built-in < global < project.
write(join(builtin, 'profiles.d/default.yml'), 'default:\n  username: builtin\n  hostname: b\n  build: { memory: 1, cpus: 1 }\n');
write(join(builtin, 'profiles.d/zz.yml'), 'dev:\n  hostname: builtin-dev\n');
write(join(globalDir, 'profiles.d/default.yml'), 'default:\n  username: global\n  build: { memory: 2 }\n');
write(join(box.project, 'profiles.d/a.yml'), 'dev:\n  hostname: project-dev\n');
for (const [dir, tag] of [[builtin, 'builtin'], [globalDir, 'global'], [box.project, 'project']] as const) {
  write(join(dir, `preseeds.d/only-${tag}.cfg.ejs`), tag);
}
write(join(builtin, 'preseeds.d/default.cfg.ejs'), 'builtin default');
write(join(globalDir, 'preseeds.d/dev.cfg.ejs'), 'global dev');
write(join(box.project, 'scripts.d/default.sh'), 'project default');
write(join(builtin, 'scripts.d/k8s.sh'), 'builtin k8s');

const project = new Project({ projectDir: box.project, env: box.env, builtinDir: builtin });
const profiles = new Profiles(project);

test('YAML files of the same name deep-merge project over global over built-in', () => {
  const dflt = profiles.get('default');
  assert.equal(dflt.username, 'global');
  assert.equal(dflt.hostname, 'b');
  assert.deepEqual(dflt.build, { memory: 2, cpus: 1 });
});

test('a project entry wins over a built-in one whatever the file names', () => {
  assert.equal(profiles.get('dev').hostname, 'project-dev');
  assert.equal(profiles.get('dev').username, 'global');
});

test('template lookup: NAME first in every layer, then default, project before global before built-in', () => {
  assert.equal(profiles.findTemplate('preseed', 'dev'), join(globalDir, 'preseeds.d/dev.cfg.ejs'));
  assert.equal(profiles.findTemplate('preseed', 'other'), join(builtin, 'preseeds.d/default.cfg.ejs'));
  assert.equal(profiles.findTemplate('preseed', 'only-project'), join(box.project, 'preseeds.d/only-project.cfg.ejs'));
  assert.equal(profiles.findTemplate('preseed', 'only-builtin'), join(builtin, 'preseeds.d/only-builtin.cfg.ejs'));
  // a built-in NAME beats a project default: the name is looked for first everywhere
  assert.equal(profiles.findTemplate('script', 'k8s'), join(builtin, 'scripts.d/k8s.sh'));
  assert.equal(profiles.findTemplate('script', 'web'), join(box.project, 'scripts.d/default.sh'));
  assert.equal(profiles.findTemplate('script', 'web', false), undefined);
});

test('template names that would escape their directory are refused', () => {
  assert.throws(() => profiles.findTemplate('preseed', '../../etc/passwd'), ConfigError);
});

test('a schema error names the file, the line and the field', () => {
  const bad = sandbox();
  try {
    bad.write('profiles.d/p.yml', 'default:\n  username: u\nweb:\n  hostname: w\n  build:\n    cpus: many\n');
    const p = new Profiles(new Project({ projectDir: bad.project, env: bad.env, builtinDir: builtin }));
    assert.throws(
      () => p.get('web'),
      (err: unknown) => err instanceof ConfigError && err.message.includes(`${join(bad.project, 'profiles.d/p.yml')}:6`) && err.message.includes("'build.cpus'"),
    );
  } finally {
    bad.cleanup();
  }
});

test('malformed YAML names the file and the line', () => {
  const bad = sandbox();
  try {
    bad.write('profiles.d/broken.yml', 'default:\n  username: u\n  list: [a, b\n');
    const p = new Profiles(new Project({ projectDir: bad.project, env: bad.env, builtinDir: builtin }));
    assert.throws(() => p.names(), (err: unknown) => err instanceof ConfigError && /broken\.yml:\d+: malformed YAML/.test(err.message));
  } finally {
    bad.cleanup();
  }
});

test('XDG variables are honoured', () => {
  assert.equal(project.paths.configDir, globalDir);
  assert.equal(project.isoDir(), join(box.root, 'cache', 'pim', 'isos'));
  assert.equal(project.registryPath(), join(box.root, 'data', 'pim', 'registry.yml'));
  assert.equal(project.logsDir(), join(box.root, 'state', 'pim', 'logs'));
});
