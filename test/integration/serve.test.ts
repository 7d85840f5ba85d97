import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { Project } from '../../src/config/project.js';
import { Profiles } from '../../src/profile/profiles.js';
import { PreseedServer } from '../../src/server/preseed-server.js';
import { pimAsync, sandbox } from '../helpers/env.js';

const box = sandbox();
after(() => box.cleanup());
box.write('profiles.d/p.yml', 'lab:\n  username: labuser\n  hostname: lab-host\n  password: pw\n');

/** Sends the path exactly as given (no URL normalisation), as curl --path-as-is does. */
function get(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method: 'GET' }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

async function freePort(): Promise<number> {
  const srv = createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const port = (srv.address() as { port: number }).port;
  srv.close();
  return port;
}

test('pim serve PROFILE --port P --bind 127.0.0.1 serves the rendered preseed and install script', async () => {
  const port = await freePort();
  const child = pimAsync(box, ['serve', 'lab', '--port', String(port), '--bind', '127.0.0.1']);
  let out = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  try {
    while (!out.includes('Press Ctrl+C')) await once(child.stdout, 'data');
    assert.match(out, /credentials/);
    const preseed = await get(port, '/preseed.cfg');
    assert.equal(preseed.status, 200);
    assert.match(preseed.body, /^d-i passwd\/username string labuser$/m);
    assert.match(preseed.body, /^d-i netcfg\/get_hostname string lab-host$/m);
    assert.doesNotMatch(preseed.body, /<%/);
    assert.match(preseed.body, new RegExp(`late_command string .*http://127\\.0\\.0\\.1:${port}/install\\.sh`));
    const install = await get(port, '/install.sh');
    assert.equal(install.status, 200);
    assert.match(install.body, /^user=labuser$/m);
    assert.equal((await get(port, '/nope')).status, 404);
    const escape = await get(port, '/../../etc/passwd');
    assert.equal(escape.status, 404);
    assert.doesNotMatch(escape.body, /root:/);
    assert.equal((await get(port, '/preseed.cfg/../../../etc/passwd')).status, 404);
    assert.match(out, /GET \/preseed\.cfg 200/, 'one log line per request');
  } finally {
    child.kill('SIGINT');
    const [code] = await once(child, 'exit');
    assert.equal(code, 130);
  }
});

test('the programmatic server picks a free port, serves the build key, and stops', async () => {
  const profiles = new Profiles(new Project({ projectDir: box.project, env: box.env }));
  const key = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE1x pim-build-test';
  const server = new PreseedServer({ profiles, profileName: 'lab', bind: '127.0.0.1', urlHost: '10.0.2.2', publicKey: key });
  await server.start();
  try {
    assert.ok(server.port > 0);
    assert.equal(server.preseedUrl, `http://10.0.2.2:${server.port}/preseed.cfg`);
    const preseed = await get(server.port, '/preseed.cfg');
    assert.match(preseed.body, new RegExp(`http://10\\.0\\.2\\.2:${server.port}/install\\.sh`));
    assert.equal((await get(server.port, '/authorized_keys')).body, `${key}\n`);
    const install = await get(server.port, '/install.sh');
    assert.ok(install.body.includes(`'${key}' >> "$home/.ssh/authorized_keys"`), install.body);
  } finally {
    await server.stop();
  }
  await assert.rejects(get(server.port, '/preseed.cfg'));
});

test('the shipped preseed passes debconf-set-selections -c without warnings', async (t) => {
  const { spawnSync } = await import('node:child_process');
  if (spawnSync('sh', ['-c', 'command -v debconf-set-selections']).status !== 0) return t.skip('debconf not installed');
  const profiles = new Profiles(new Project({ projectDir: box.project, env: box.env }));
  for (const profileName of ['lab', 'default', 'developer', 'k8s-node']) {
    const server = new PreseedServer({ profiles, profileName, bind: '127.0.0.1' });
    const { writeFileSync } = await import('node:fs');
    const file = `${box.root}/preseed-${profileName}.cfg`;
    writeFileSync(file, server.renderPreseed());
    const r = spawnSync('debconf-set-selections', ['-c', file], { encoding: 'utf8' });
    assert.equal(`${r.stdout}${r.stderr}`.trim(), '', `${profileName}: ${r.stdout}${r.stderr}`);
  }
});
