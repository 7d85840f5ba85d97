import { createReadStream, createWriteStream, existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync, utimesSync } from 'node:fs';
import { request as httpRequest, type IncomingMessage, type RequestOptions, type ServerResponse } from 'node:http';
import { connect } from 'node:net';
import type { Duplex } from 'node:stream';
import { dirname, join } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { errorMessage } from '../errors.js';
import { maskUrlCredentials } from '../secrets.js';

export interface PackageCacheStats {
  hits: number;
  hitBytes: number;
  misses: number;
  missBytes: number;
  passedThrough: number;
  /** Conditional requests for a release file answered 304 because its content had not changed. */
  notModified: number;
}

/** The release files apt fetches by name at every `apt-get update` (everything else by hash). */
const RELEASE_FILE = /\/dists\/.+\/(InRelease|Release|Release\.gpg)$/;
/** A release file larger than this is passed through without revalidation (InRelease is ~150 KB). */
const REVALIDATE_MAX_BYTES = 8 * 1024 * 1024;

/** An HTTP request to the mirror for `url`: direct, or through `proxy` (`http://[user:pass@]host:port`). */
export function mirrorRequest(url: URL, method: string, headers: Record<string, string>, proxy?: string): RequestOptions {
  const all: Record<string, string> = { host: url.host, ...headers };
  if (!proxy) return { host: url.hostname, port: Number(url.port || 80), path: `${url.pathname}${url.search}`, method, headers: all };
  const via = new URL(proxy);
  if (via.username) all['proxy-authorization'] = `Basic ${Buffer.from(`${decodeURIComponent(via.username)}:${decodeURIComponent(via.password)}`).toString('base64')}`;
  return { host: via.hostname, port: Number(via.port || 80), path: url.href, method, headers: all };
}

/**
 * The package cache of every build on this host: PIM's build server, asked as an HTTP proxy by
 * the installer and by apt in the build VM, serves Debian pool files (.deb, .udeb) and by-hash
 * index files -- which never change under their name -- from a directory under the cache dir,
 * and fetches them from the mirror (through the profile's own proxy, if it has one) only once.
 * Other requests (InRelease, Packages by name) pass through. A file appears in the cache only
 * when complete; parallel builds share the directory.
 *
 * Release files are revalidated for the mirror when it cannot: a mirror that sends neither
 * Last-Modified nor ETag (as the test machines' does) makes apt fetch, verify and re-read every
 * InRelease at each `apt-get update`, 8-24 s under TCG, and a build runs three (the installer's,
 * pim-prepare's, the profile's). The cache gives each content of a release file the time it first
 * saw it as Last-Modified, and answers apt's If-Modified-Since with 304 when the mirror's
 * content, fetched again in full, is still the one apt has.
 */
export class PackageCache {
  readonly stats: PackageCacheStats = { hits: 0, hitBytes: 0, misses: 0, missBytes: 0, passedThrough: 0, notModified: 0 };
  /** Each release file's current content (by URL): its SHA-256 and the time it was first seen (whole seconds). */
  private readonly releaseVersions = new Map<string, { sha256: string; since: number }>();

  constructor(
    readonly dir: string,
    readonly capBytes: number,
    private readonly upstreamProxy?: string,
    private readonly log?: (line: string) => void,
  ) {}

  static cacheable(url: URL): boolean {
    return /\/pool\/.+\.u?deb$/.test(url.pathname) || /\/by-hash\/SHA256\/[0-9a-f]{64}$/.test(url.pathname);
  }

  pathFor(url: URL): string {
    const parts = [url.host, ...url.pathname.split('/')].filter((p) => p && p !== '.' && p !== '..').map((p) => decodeURIComponent(p).replace(/[^A-Za-z0-9._+~:-]/g, '_'));
    return join(this.dir, ...parts);
  }

  /** Handles one proxy request (`GET http://host/path HTTP/1.1`). */
  handle(req: IncomingMessage, res: ServerResponse): void {
    let url: URL;
    try {
      url = new URL(req.url ?? '');
    } catch {
      res.writeHead(400).end('bad proxy request\n');
      return;
    }
    if (url.protocol !== 'http:' || (req.method !== 'GET' && req.method !== 'HEAD')) {
      res.writeHead(405).end('only http GET and HEAD\n');
      return;
    }
    if (!PackageCache.cacheable(url)) {
      this.stats.passedThrough++;
      if (req.method === 'GET' && RELEASE_FILE.test(url.pathname)) {
        this.revalidated(url, req, res);
        return;
      }
      this.upstream(url, req, (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      }, res);
      return;
    }
    const path = this.pathFor(url);
    if (existsSync(path)) {
      const size = statSync(path).size;
      this.stats.hits++;
      this.stats.hitBytes += size;
      const now = new Date();
      utimesSync(path, now, now);
      this.log?.(`HIT ${url.pathname} (${size} bytes)`);
      res.writeHead(200, { 'content-length': size, 'content-type': 'application/octet-stream' });
      if (req.method === 'HEAD') res.end();
      else createReadStream(path).pipe(res);
      return;
    }
    this.upstream(url, req, (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers);
      if (up.statusCode !== 200 || req.method === 'HEAD') {
        up.pipe(res);
        return;
      }
      mkdirSync(dirname(path), { recursive: true });
      const temp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.part`;
      const file = createWriteStream(temp);
      let bytes = 0;
      up.on('data', (chunk: Buffer) => {
        bytes += chunk.length;
        file.write(chunk);
        res.write(chunk);
      });
      up.on('end', () => {
        res.end();
        file.end(() => {
          const expected = Number(up.headers['content-length'] ?? NaN);
          if (Number.isFinite(expected) && expected !== bytes) {
            rmSync(temp, { force: true });
            return;
          }
          renameSync(temp, path);
          this.stats.misses++;
          this.stats.missBytes += bytes;
          this.log?.(`MISS ${url.pathname} (${bytes} bytes from the mirror)`);
        });
      });
      up.on('error', () => {
        file.destroy();
        rmSync(temp, { force: true });
        res.destroy();
      });
    }, res);
  }

  /**
   * A release file, fetched from the mirror in full every time (it is small), and answered 304
   * when the client's copy -- as old as the Last-Modified the cache gave it -- has the content the
   * mirror has now. A mirror with validators of its own gets the client's conditions and answers
   * for itself (a mirror without them ignores them).
   */
  private revalidated(url: URL, req: IncomingMessage, res: ServerResponse): void {
    this.upstream(url, req, (up) => {
      const size = Number(up.headers['content-length'] ?? 0);
      if (up.statusCode !== 200 || up.headers['last-modified'] || up.headers.etag || size > REVALIDATE_MAX_BYTES) {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
        return;
      }
      const chunks: Buffer[] = [];
      up.on('data', (chunk: Buffer) => chunks.push(chunk));
      up.on('error', () => res.destroy());
      up.on('end', () => {
        const body = Buffer.concat(chunks);
        if (Number.isFinite(Number(up.headers['content-length'])) && body.length !== size) return res.destroy();
        const sha256 = createHash('sha256').update(body).digest('hex');
        let version = this.releaseVersions.get(url.href);
        if (version?.sha256 !== sha256) {
          // A new content gets a later time than the one it replaces, even within the same second.
          version = { sha256, since: Math.max(Math.floor(Date.now() / 1000) * 1000, (version?.since ?? 0) + 1000) };
          this.releaseVersions.set(url.href, version);
        }
        const lastModified = new Date(version.since).toUTCString();
        const clientHas = Date.parse(String(req.headers['if-modified-since'] ?? ''));
        if (Number.isFinite(clientHas) && clientHas >= version.since) {
          this.stats.notModified++;
          this.log?.(`NOT MODIFIED ${url.pathname}`);
          res.writeHead(304, { 'last-modified': lastModified, ...(up.headers.date ? { date: up.headers.date } : {}) }).end();
          return;
        }
        const headers = { ...up.headers, 'last-modified': lastModified, 'content-length': String(body.length) };
        delete headers['transfer-encoding'];
        res.writeHead(200, headers).end(body);
      });
    }, res);
  }

  /** HTTPS through the proxy: a plain tunnel (nothing to cache in it). */
  tunnel(req: IncomingMessage, client: Duplex, head: Buffer): void {
    const [host, port] = (req.url ?? '').split(':');
    const server = connect(Number(port ?? 443), host ?? '', () => {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      server.write(head);
      server.pipe(client);
      client.pipe(server);
    });
    server.on('error', () => client.end('HTTP/1.1 502 Bad Gateway\r\n\r\n'));
    client.on('error', () => server.destroy());
  }

  private upstream(url: URL, req: IncomingMessage, onResponse: (res: IncomingMessage) => void, res: ServerResponse): void {
    const headers: Record<string, string> = { 'user-agent': String(req.headers['user-agent'] ?? 'pim-package-cache') };
    for (const h of ['if-modified-since', 'if-none-match', 'range', 'accept']) if (req.headers[h]) headers[h] = String(req.headers[h]);
    const up = httpRequest(mirrorRequest(url, req.method ?? 'GET', headers, this.upstreamProxy), onResponse);
    up.setTimeout(120_000, () => up.destroy(new Error('no answer within 120 s')));
    up.on('error', (err) => {
      this.log?.(`upstream error for ${url.href}: ${maskUrlCredentials(errorMessage(err))}`);
      if (!res.headersSent) res.writeHead(502).end(`upstream: ${errorMessage(err)}\n`);
      else res.destroy();
    });
    up.end();
  }

  /** Least recently used files go first while the cache is over its cap; returns bytes freed. */
  evict(): number {
    if (!existsSync(this.dir)) return 0;
    const files: { path: string; size: number; mtime: number }[] = [];
    const walk = (dir: string) => {
      for (const entry of readdirSync(dir, { withFileTypes: true })) {
        const path = join(dir, entry.name);
        if (entry.isDirectory()) walk(path);
        else if (!entry.name.endsWith('.part')) {
          const st = statSync(path);
          files.push({ path, size: st.size, mtime: st.mtimeMs });
        }
      }
    };
    walk(this.dir);
    let total = files.reduce((sum, f) => sum + f.size, 0);
    let freed = 0;
    for (const file of files.sort((a, b) => a.mtime - b.mtime)) {
      if (total <= this.capBytes) break;
      rmSync(file.path, { force: true });
      total -= file.size;
      freed += file.size;
    }
    return freed;
  }

  /** `pim build clean --packages`. */
  clean(): number {
    if (!existsSync(this.dir)) return 0;
    let bytes = 0;
    const walk = (dir: string) => {
      for (const entry of readdirSync(dir, { withFileTypes: true })) {
        const path = join(dir, entry.name);
        if (entry.isDirectory()) walk(path);
        else bytes += statSync(path).size;
      }
    };
    walk(this.dir);
    rmSync(this.dir, { recursive: true, force: true });
    return bytes;
  }
}
