// The package cache as apt meets it: a real HTTP proxy in front of a real (local) mirror. Pool
// files are fetched once; release files, from a mirror that sends no validators, are answered 304
// while their content stays the same, and in full as soon as it changes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, request, type IncomingHttpHeaders, type Server } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PackageCache } from '../../src/server/package-cache.js';

interface Mirror {
  port: number;
  files: Map<string, string>;
  requests: { path: string; ifModifiedSince?: string }[];
  server: Server;
}

/** A mirror that sends neither Last-Modified nor ETag, as the test machines' does, except under /dated/. */
async function startMirror(): Promise<Mirror> {
  const mirror: Mirror = { port: 0, files: new Map(), requests: [], server: undefined as unknown as Server };
  const dated = new Date('2026-01-02T03:04:05Z');
  mirror.server = createServer((req, res) => {
    const path = req.url ?? '';
    mirror.requests.push({ path, ifModifiedSince: req.headers['if-modified-since'] });
    const body = mirror.files.get(path);
    if (body === undefined) return void res.writeHead(404).end();
    if (path.startsWith('/dated/')) {
      const since = Date.parse(String(req.headers['if-modified-since'] ?? ''));
      if (since >= dated.getTime()) return void res.writeHead(304).end();
      return void res.writeHead(200, { 'last-modified': dated.toUTCString(), 'content-length': Buffer.byteLength(body) }).end(body);
    }
    res.writeHead(200, { 'content-length': Buffer.byteLength(body) }).end(body);
  });
  await new Promise<void>((resolve) => mirror.server.listen(0, '127.0.0.1', resolve));
  mirror.port = (mirror.server.address() as { port: number }).port;
  return mirror;
}

async function withCache(fn: (get: (path: string, headers?: Record<string, string>) => Promise<{ status: number; headers: IncomingHttpHeaders; body: string }>, mirror: Mirror, cache: PackageCache) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'pim-pkgcache-'));
  const mirror = await startMirror();
  const cache = new PackageCache(join(dir, 'packages'), 1024 ** 3);
  const proxy = createServer((req, res) => cache.handle(req, res));
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  const proxyPort = (proxy.address() as { port: number }).port;
  // As apt asks a proxy: the absolute URL as the request target.
  const get = (path: string, headers: Record<string, string> = {}) =>
    new Promise<{ status: number; headers: IncomingHttpHeaders; body: string }>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port: proxyPort, path: `http://127.0.0.1:${mirror.port}${path}`, headers }, (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      });
      req.on('error', reject);
      req.end();
    });
  try {
    await fn(get, mirror, cache);
  } finally {
    proxy.closeAllConnections();
    mirror.server.closeAllConnections();
    await new Promise((r) => proxy.close(r));
    await new Promise((r) => mirror.server.close(r));
    rmSync(dir, { recursive: true, force: true });
  }
}

test('a release file keeps the Last-Modified the cache gave it, and is answered 304 until its content changes', async () => {
  await withCache(async (get, mirror, cache) => {
    const path = '/debian/dists/bookworm/InRelease';
    mirror.files.set(path, 'release one\n');
    const first = await get(path);
    assert.equal(first.status, 200);
    assert.equal(first.body, 'release one\n');
    const lastModified = first.headers['last-modified']!;
    assert.ok(Number.isFinite(Date.parse(lastModified)), `Last-Modified: ${lastModified}`);

    const again = await get(path, { 'if-modified-since': lastModified });
    assert.equal(again.status, 304);
    assert.equal(again.body, '');
    assert.equal(again.headers['last-modified'], lastModified);
    // The mirror was asked each time: the 304 is a statement about its content now.
    assert.equal(mirror.requests.filter((r) => r.path === path).length, 2);
    assert.equal(cache.stats.notModified, 1);

    // Without a condition the client gets the content, whatever the cache knows.
    const unconditional = await get(path);
    assert.equal(unconditional.status, 200);
    assert.equal(unconditional.body, 'release one\n');

    // The mirror publishes a new release: a client that has the old one gets the new one, dated later.
    mirror.files.set(path, 'release two\n');
    const changed = await get(path, { 'if-modified-since': lastModified });
    assert.equal(changed.status, 200);
    assert.equal(changed.body, 'release two\n');
    const newer = changed.headers['last-modified']!;
    assert.ok(Date.parse(newer) > Date.parse(lastModified), `${newer} is later than ${lastModified}`);
    assert.equal((await get(path, { 'if-modified-since': lastModified })).status, 200, 'the old date is not enough for the new content');
    assert.equal((await get(path, { 'if-modified-since': newer })).status, 304);
    assert.equal((await get(path, { 'if-modified-since': 'not a date' })).status, 200);
    assert.equal(cache.stats.notModified, 2);
  });
});

test('a mirror with validators of its own answers conditions itself; other files pass through untouched', async () => {
  await withCache(async (get, mirror, cache) => {
    mirror.files.set('/dated/dists/bookworm/InRelease', 'dated release\n');
    const first = await get('/dated/dists/bookworm/InRelease');
    assert.equal(first.headers['last-modified'], 'Fri, 02 Jan 2026 03:04:05 GMT', "the mirror's own date, not the cache's");
    const again = await get('/dated/dists/bookworm/InRelease', { 'if-modified-since': first.headers['last-modified']! });
    assert.equal(again.status, 304);
    assert.equal(mirror.requests.at(-1)!.ifModifiedSince, first.headers['last-modified'], 'the condition went to the mirror');
    assert.equal(cache.stats.notModified, 0);

    mirror.files.set('/debian/dists/bookworm/main/binary-amd64/Packages', 'Package: hello\n');
    const packages = await get('/debian/dists/bookworm/main/binary-amd64/Packages');
    assert.equal(packages.body, 'Package: hello\n');
    assert.equal(packages.headers['last-modified'], undefined, 'only release files are dated by the cache');
    assert.equal((await get('/debian/dists/bookworm/Missing/InRelease')).status, 404);
  });
});

test('a pool file is fetched from the mirror once and then served from the cache', async () => {
  await withCache(async (get, mirror, cache) => {
    const path = '/debian/pool/main/h/hello/hello_2.10-3_amd64.deb';
    mirror.files.set(path, 'a package');
    assert.equal((await get(path)).body, 'a package');
    // The file is in the cache once the mirror's answer is complete (renamed from its .part).
    for (let i = 0; i < 100 && cache.stats.misses === 0; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(cache.stats.misses, 1);
    mirror.files.delete(path);
    const second = await get(path);
    assert.equal(second.status, 200);
    assert.equal(second.body, 'a package');
    assert.equal(cache.stats.hits, 1);
    assert.equal(mirror.requests.filter((r) => r.path === path).length, 1);
  });
});
