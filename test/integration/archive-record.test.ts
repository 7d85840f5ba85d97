// The check that decides whether a cached upgrade layer still holds the archive's updates:
// against a real HTTP mirror stand-in (and a real forward proxy that wants credentials).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createServer } from 'node:http';
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { checkReleaseFiles, releaseRecordLine } from '../../src/builder/archive-record.js';
import { LayerCache } from '../../src/builder/layers.js';
import { sandbox } from '../helpers/env.js';
import { startAuthProxy } from '../helpers/auth-proxy.js';

const sha = (text: string) => createHash('sha256').update(text).digest('hex');

// The mirror: InRelease files by path, changed by the tests as an archive publishes.
const files = new Map<string, string>([
  ['/debian/dists/bookworm/InRelease', 'Suite: oldstable\nDate: Sat, 11 Jul 2026 10:16:37 UTC\n'],
  ['/debian-security/dists/bookworm-security/InRelease', 'Suite: oldstable-security\nDate: Thu, 26 Nov 2026 21:03:35 UTC\n'],
]);
const mirror = createServer((req, res) => {
  if (req.url === '/moved/dists/bookworm/InRelease') return res.writeHead(302, { location: '/debian/dists/bookworm/InRelease' }).end();
  if (req.url === '/loop/InRelease') return res.writeHead(301, { location: '/loop/InRelease' }).end();
  const body = files.get(req.url ?? '');
  if (body === undefined) return res.writeHead(404).end();
  if (req.url?.includes('security') && files.has('stall')) return; // never answers
  res.writeHead(200, { 'content-length': Buffer.byteLength(body) }).end(body);
});
await new Promise<void>((resolve) => mirror.listen(0, '127.0.0.1', resolve));
const base = `http://127.0.0.1:${(mirror.address() as { port: number }).port}`;
after(() => new Promise<void>((resolve) => mirror.close(() => resolve())));

const recordNow = () => Object.fromEntries([...files].filter(([p]) => p.startsWith('/')).map(([p, body]) => [`${base}${p}`, sha(body)]));

test("pim-prepare's record lines are read; any other line is not", () => {
  const hash = sha('x');
  assert.deepEqual(releaseRecordLine(`pim-release ${hash} http://deb.debian.org/debian/dists/bookworm/InRelease`), { url: 'http://deb.debian.org/debian/dists/bookworm/InRelease', sha256: hash });
  assert.equal(releaseRecordLine(`Get:1 http://deb.debian.org/debian bookworm InRelease [151 kB]`), undefined);
  assert.equal(releaseRecordLine(`pim-release ${hash.slice(1)} http://x/InRelease`), undefined, 'not a SHA-256');
  assert.equal(releaseRecordLine(`pim-release ${hash} not-a-url`), undefined);
});

test('unchanged release files pass; a published update, a file gone and a mirror that does not answer are each reported', async () => {
  const record = recordNow();
  assert.deepEqual(await checkReleaseFiles(record), { changed: [], unchecked: [] });

  // The security suite publishes: its InRelease changes (new Date, new index hashes).
  files.set('/debian-security/dists/bookworm-security/InRelease', 'Suite: oldstable-security\nDate: Sat, 28 Nov 2026 02:53:00 UTC\n');
  assert.deepEqual(await checkReleaseFiles(record), { changed: [`${base}/debian-security/dists/bookworm-security/InRelease`], unchecked: [] });

  // Redirects are followed (a few: a loop is reported, not followed forever).
  const moved = { [`${base}/moved/dists/bookworm/InRelease`]: record[`${base}/debian/dists/bookworm/InRelease`]!, [`${base}/loop/InRelease`]: sha('x') };
  const redirected = await checkReleaseFiles(moved);
  assert.deepEqual(redirected.changed, []);
  assert.deepEqual(redirected.unchecked, [{ url: `${base}/loop/InRelease`, reason: 'HTTP 301' }]);

  // A suite the mirror no longer has counts as changed.
  const gone = { ...record, [`${base}/debian/dists/buster/InRelease`]: sha('old') };
  assert.ok((await checkReleaseFiles(gone)).changed.includes(`${base}/debian/dists/buster/InRelease`));

  // A mirror that answers nothing, or nothing in time: unknown, not changed.
  const down = await checkReleaseFiles({ 'http://127.0.0.1:1/debian/dists/bookworm/InRelease': sha('x') });
  assert.deepEqual(down.changed, []);
  assert.match(down.unchecked[0]!.reason, /ECONNREFUSED/);
  files.set('stall', '');
  try {
    const slow = await checkReleaseFiles(recordNow(), { timeoutMs: 300 });
    assert.deepEqual(slow.unchecked.map((u) => u.reason), ['no answer within 300 ms']);
    assert.deepEqual(slow.changed, []);
    // Ctrl+C while waiting: the check ends at once, with the interrupt, not after its timeout.
    const interrupt = new AbortController();
    const started = Date.now();
    setTimeout(() => interrupt.abort(), 100);
    await assert.rejects(checkReleaseFiles(recordNow(), { timeoutMs: 60_000, signal: interrupt.signal }), { name: 'AbortError' });
    assert.ok(Date.now() - started < 10_000);
  } finally {
    files.delete('stall');
  }
});

test('through the profile http_proxy, with its credentials, and none of them in what is reported', async () => {
  const proxy = await startAuthProxy('mirror-user', 's3cret-proxy-pw');
  try {
    const record = recordNow();
    assert.deepEqual(await checkReleaseFiles(record, { proxy: proxy.url('mirror-user', 's3cret-proxy-pw') }), { changed: [], unchecked: [] });
    assert.ok(proxy.requests >= 2, `requests through the proxy: ${proxy.requests}`);
    // A wrong password: the proxy refuses (407), and the check reports it without the password.
    const refused = await checkReleaseFiles(record, { proxy: proxy.url('mirror-user', 'wrong-pw') });
    assert.deepEqual(refused.changed, []);
    assert.equal(refused.unchecked.length, 2);
    assert.match(refused.unchecked[0]!.reason, /HTTP 407/);
    assert.doesNotMatch(JSON.stringify(refused), /wrong-pw|s3cret/);
  } finally {
    await proxy.close();
  }
});

test('the upgrade layer keeps its record of release files; a layer without one has none', async () => {
  const box = sandbox('pim-archive-record-');
  try {
    mkdirSync(join(box.root, 'work'), { recursive: true });
    const file = join(box.root, 'work', 'layer.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', file, '16M']);
    const cache = new LayerCache(join(box.root, 'layers'), 1 << 30);
    const record = recordNow();
    await cache.commit('a'.repeat(64), file, undefined, undefined, record);
    await cache.commit('b'.repeat(64), file, undefined);
    assert.deepEqual(cache.releaseFiles('a'.repeat(64)), record);
    assert.equal(cache.releaseFiles('b'.repeat(64)), undefined);
    assert.match(cache.createdAt('a'.repeat(64)) ?? '', /^\d{4}-\d\d-\d\dT/);
  } finally {
    box.cleanup();
  }
});
