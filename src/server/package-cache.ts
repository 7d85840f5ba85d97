import { createReadStream, createWriteStream, existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync, utimesSync } from 'node:fs';
import { request as httpRequest, type IncomingMessage, type RequestOptions, type ServerResponse } from 'node:http';
import { connect } from 'node:net';
import type { Duplex } from 'node:stream';
import { dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { errorMessage } from '../errors.js';
import { maskUrlCredentials } from '../secrets.js';

export interface PackageCacheStats {
  hits: number;
  hitBytes: number;
  misses: number;
  missBytes: number;
  passedThrough: number;
}

/**
 * The package cache of every build on this host: PIM's build server, asked as an HTTP proxy by
 * the installer and by apt in the build VM, serves Debian pool files (.deb, .udeb) and by-hash
 * index files -- which never change under their name -- from a directory under the cache dir,
 * and fetches them from the mirror (through the profile's own proxy, if it has one) only once.
 * Other requests (InRelease, Packages by name) pass through. A file appears in the cache only
 * when complete; parallel builds share the directory.
 */
export class PackageCache {
  readonly stats: PackageCacheStats = { hits: 0, hitBytes: 0, misses: 0, missBytes: 0, passedThrough: 0 };

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
    const headers: Record<string, string> = { host: url.host, 'user-agent': String(req.headers['user-agent'] ?? 'pim-package-cache') };
    for (const h of ['if-modified-since', 'if-none-match', 'range', 'accept']) if (req.headers[h]) headers[h] = String(req.headers[h]);
    let options: RequestOptions;
    if (this.upstreamProxy) {
      const proxy = new URL(this.upstreamProxy);
      if (proxy.username) headers['proxy-authorization'] = `Basic ${Buffer.from(`${decodeURIComponent(proxy.username)}:${decodeURIComponent(proxy.password)}`).toString('base64')}`;
      options = { host: proxy.hostname, port: Number(proxy.port || 80), path: url.href, method: req.method, headers };
    } else {
      options = { host: url.hostname, port: Number(url.port || 80), path: `${url.pathname}${url.search}`, method: req.method, headers };
    }
    const up = httpRequest(options, onResponse);
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
