import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { once } from 'node:events';
import { existsSync, readdirSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { pim, sandbox } from '../helpers/env.js';

const box = sandbox();
const payload = randomBytes(3 * 1024 * 1024 + 123);
const sha256 = createHash('sha256').update(payload).digest('hex');
const sha512 = createHash('sha512').update(payload).digest('hex');
let server: Server;
let port = 0;
let rangeRequests = 0;
let slowRequests = 0;

before(async () => {
  server = createServer((req, res) => {
    if (req.url === '/SHA256SUMS') {
      res.end(`${'0'.repeat(64)}  other.iso\n${sha256}  media.iso\n`);
      return;
    }
    if (req.url === '/slow.iso') {
      // Sent in 8 pieces over ~1.6 s: long enough for a second download to start meanwhile.
      slowRequests++;
      res.writeHead(200, { 'content-length': payload.length });
      let piece = 0;
      const size = Math.ceil(payload.length / 8);
      const timer = setInterval(() => {
        res.write(payload.subarray(piece * size, (piece + 1) * size));
        if (++piece === 8) {
          clearInterval(timer);
          res.end();
        }
      }, 200);
      return;
    }
    if (req.url !== '/media.iso') {
      res.writeHead(404).end();
      return;
    }
    const range = /bytes=(\d+)-/.exec(req.headers.range ?? '');
    if (range) {
      rangeRequests++;
      const start = Number(range[1]);
      res.writeHead(206, { 'content-length': payload.length - start, 'content-range': `bytes ${start}-${payload.length - 1}/${payload.length}` });
      res.end(payload.subarray(start));
    } else {
      res.writeHead(200, { 'content-length': payload.length });
      res.end(payload);
    }
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  port = (server.address() as { port: number }).port;
});
after(() => {
  server.close();
  box.cleanup();
});

function catalog(name: string, checksum: string) {
  box.write(
    `isos.d/${name}.yml`,
    `${name}:\n  url: http://127.0.0.1:${port}/media.iso\n  checksum: "${checksum}"\n  arch: amd64\n  distro: test\n  version: "1.0"\n  filename: ${name}.iso\n`,
  );
}
const isoDir = () => join(box.root, 'cache', 'pim', 'isos');

test('a wrong checksum exits 1 and leaves no file under the final name (nor a partial one)', async () => {
  catalog('wrong', `sha256:${'1'.repeat(64)}`);
  const r = await pim(box, ['iso', 'download', 'wrong']);
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /checksum mismatch for wrong/);
  assert.ok(!existsSync(join(isoDir(), 'wrong.iso')));
  assert.ok(!existsSync(join(isoDir(), 'wrong.iso.part')));
});

test('the right checksum exits 0, the file is in iso_dir, and list says verified', async () => {
  catalog('right', `sha256:${sha256}`);
  const r = await pim(box, ['iso', 'download', 'right']);
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(readFileSync(join(isoDir(), 'right.iso')), payload);
  const list = JSON.parse((await pim(box, ['iso', 'list', '--json'])).stdout) as { name: string; state: string }[];
  assert.equal(list.find((e) => e.name === 'right')?.state, 'verified');
  assert.equal(list.find((e) => e.name === 'wrong')?.state, 'missing');
  assert.equal((await pim(box, ['iso', 'verify', 'right'])).status, 0);
});

test('a partial download is resumed with a range request', async () => {
  catalog('resume', `sha512:${sha512}`);
  mkdirSync(isoDir(), { recursive: true });
  writeFileSync(join(isoDir(), 'resume.iso.part'), payload.subarray(0, 1_000_000));
  const before = rangeRequests;
  const r = await pim(box, ['iso', 'download', 'resume']);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(rangeRequests, before + 1);
  assert.deepEqual(readFileSync(join(isoDir(), 'resume.iso')), payload);
  assert.ok(!readdirSync(isoDir()).some((f) => f.endsWith('.part')));
});

test('file:URL reads the checksum from a SHA256SUMS list', async () => {
  catalog('sums', `file:http://127.0.0.1:${port}/SHA256SUMS`);
  box.write('isos.d/sums.yml', readFileSync(join(box.project, 'isos.d/sums.yml'), 'utf8').replace('filename: sums.iso', 'filename: media.iso'));
  const r = await pim(box, ['iso', 'download', 'sums']);
  assert.equal(r.status, 0, r.stderr);
  assert.ok(existsSync(join(isoDir(), 'media.iso')));
});

test('verify notices a file that changed after download', async () => {
  const path = join(isoDir(), 'right.iso');
  const changed = Buffer.from(payload);
  changed[0] = changed[0]! ^ 0xff;
  writeFileSync(path, changed);
  const r = await pim(box, ['iso', 'verify', 'right']);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /checksum mismatch/);
  const list = JSON.parse((await pim(box, ['iso', 'list', '--json'])).stdout) as { name: string; state: string }[];
  assert.equal(list.find((e) => e.name === 'right')?.state, 'downloaded');
});

test('two downloads of one ISO at once: the second waits for the first, both succeed, the file is whole', async () => {
  box.write('isos.d/slow.yml', `slow:\n  url: http://127.0.0.1:${port}/slow.iso\n  checksum: sha256:${sha256}\n  arch: amd64\n  distro: test\n  version: "1.0"\n`);
  const [a, b] = await Promise.all([pim(box, ['iso', 'download', 'slow']), pim(box, ['iso', 'download', 'slow'])]);
  assert.equal(a.status, 0, a.stderr);
  assert.equal(b.status, 0, b.stderr);
  assert.match(a.stderr + b.stderr, /another download of it is running \(.* pid \d+\); waiting for it/);
  assert.match(a.stdout + b.stdout, /already downloaded and verified/);
  assert.equal(slowRequests, 1, 'fetched once');
  assert.deepEqual(readFileSync(join(isoDir(), 'slow.iso')), payload);
  assert.ok(!readdirSync(isoDir()).some((f) => f.endsWith('.part') || f.endsWith('.lock')));
});

test("a catalog filename of '.' or '..' is refused (exit 2) and moves nothing", async () => {
  for (const bad of ['.', '..']) {
    box.write('isos.d/dot.yml', `dot:\n  url: http://127.0.0.1:${port}/media.iso\n  checksum: sha256:${sha256}\n  arch: amd64\n  distro: test\n  version: "1.0"\n  filename: "${bad}"\n`);
    const before = readdirSync(isoDir()).sort();
    const r = await pim(box, ['iso', 'download', 'dot']);
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /isos\.d\/dot\.yml:\d+: .*filename/);
    assert.deepEqual(readdirSync(isoDir()).sort(), before);
  }
  box.write('isos.d/dot.yml', '{}\n');
});
