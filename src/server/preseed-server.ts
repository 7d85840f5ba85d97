import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { networkInterfaces } from 'node:os';
import type { AddressInfo } from 'node:net';
import type { Profile } from '../config/schema.js';
import type { Profiles } from '../profile/profiles.js';
import { renderString, renderTemplate } from '../profile/render.js';
import { errorMessage, WorkError } from '../errors.js';
import { shq } from '../shell.js';
import type { PackageCache } from './package-cache.js';

/** A template's path (for messages) and the exact bytes to render. */
export interface TemplateSnapshot {
  path: string;
  content: string;
}

export interface PreseedServerOptions {
  profiles: Profiles;
  profileName: string;
  /**
   * A build serves exactly what its plan hashed: this profile and these template bytes. Without
   * it (`pim serve`), the profile and templates are looked up again on every request, so that
   * edits show up without a restart.
   */
  snapshot?: { profile: Profile; preseed: TemplateSnapshot; install: TemplateSnapshot };
  /** Address to listen on. Builds use 127.0.0.1; `pim serve` a LAN address. */
  bind: string;
  /** 0 or absent: a free port chosen by the OS when listening. */
  port?: number;
  /** The host the client uses in URLs (10.0.2.2 for a VM on user-mode networking). */
  urlHost?: string;
  /** The build's throw-away public key, served at /authorized_keys and given to install.sh. */
  publicKey?: string;
  /** The arch being installed (a template value; builds set it). */
  arch?: string;
  /**
   * Builds: also be the caching HTTP proxy for the Debian mirror. The preseed's `http_proxy`
   * then points at this server (the profile's own proxy becomes the cache's upstream).
   */
  packageCache?: PackageCache;
  log?: (line: string) => void;
}

/**
 * The one HTTP server of SPEC convention 4: `pim serve` runs it in the foreground, a build
 * starts it on a free loopback port and stops it when the build ends. It serves a handful of
 * paths, rendered per request so that edits show up without a restart; everything else is 404.
 */
export class PreseedServer {
  private server?: Server;
  private boundPort = 0;
  /** Set when the installer fetched /installed: the preseed's late_command got to its end. */
  installReported = false;
  /** Set when /preseed.cfg was served (a build fails when the installer never asks for it). */
  preseedFetched = false;

  constructor(private readonly options: PreseedServerOptions) {}

  get port(): number {
    return this.boundPort;
  }

  get baseUrl(): string {
    const host = this.options.urlHost ?? urlHostFor(this.options.bind);
    return `http://${host.includes(':') ? `[${host}]` : host}:${this.boundPort}`;
  }
  get preseedUrl(): string {
    return `${this.baseUrl}/preseed.cfg`;
  }
  get installUrl(): string {
    return `${this.baseUrl}/install.sh`;
  }
  get authorizedKeysUrl(): string {
    return `${this.baseUrl}/authorized_keys`;
  }
  get installedUrl(): string {
    return `${this.baseUrl}/installed`;
  }
  /** The package cache as the VM's HTTP proxy. */
  get proxyUrl(): string {
    return `${this.baseUrl}/`;
  }

  /** Another install begins (the first failed): nothing fetched or reported yet. */
  newInstall(): void {
    this.preseedFetched = false;
    this.installReported = false;
  }

  /** Whether the rendered preseed calls back /installed, so that a build can require it. */
  expectsInstallReport(): boolean {
    return this.renderPreseed().includes(this.installedUrl);
  }

  /** Template values: the profile, plus what only the server knows. */
  values(): Record<string, unknown> {
    const { profiles, profileName, publicKey, snapshot } = this.options;
    const profile = snapshot?.profile ?? profiles.get(profileName);
    return {
      ...profile,
      ...(this.options.packageCache ? { http_proxy: this.proxyUrl } : {}),
      packages: Array.isArray(profile.packages) ? profile.packages.join(' ') : profile.packages,
      profile_name: profileName,
      preseed_url: this.preseedUrl,
      install_url: this.installUrl,
      installed_url: this.installedUrl,
      arch: this.options.arch ?? '',
      authorized_keys_url: publicKey ? this.authorizedKeysUrl : '',
      ssh_public_key: publicKey?.trim() ?? '',
      shq,
    };
  }

  renderPreseed(): string {
    return this.render('preseed');
  }

  renderInstall(): string {
    return this.render('install');
  }

  private render(kind: 'preseed' | 'install'): string {
    const { profiles, profileName, snapshot } = this.options;
    const fixed = snapshot?.[kind];
    if (fixed) return renderString(fixed.content, this.values(), fixed.path);
    return renderTemplate(profiles.requireTemplate(kind, profileName), this.values());
  }

  async start(): Promise<void> {
    // Render once up front: a broken template fails here, not in the installer.
    this.renderPreseed();
    this.renderInstall();
    const server = createServer((req, res) => this.handle(req, res));
    const cache = this.options.packageCache;
    if (cache) server.on('connect', (req, socket, head) => cache.tunnel(req, socket, head));
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err) =>
        reject(new WorkError(`preseed server: cannot listen on ${this.options.bind}:${this.options.port ?? 0}: ${errorMessage(err)}`)),
      );
      server.listen(this.options.port ?? 0, this.options.bind, () => resolve());
    });
    this.server = server;
    this.boundPort = (server.address() as AddressInfo).port;
  }

  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    if (this.options.packageCache && /^http:\/\//i.test(req.url ?? '')) {
      this.options.packageCache.handle(req, res);
      return;
    }
    const path = (req.url ?? '/').split('?')[0];
    let status = 200;
    let body: string;
    let type = 'text/plain; charset=utf-8';
    try {
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        status = 405;
        body = 'method not allowed\n';
      } else if (path === '/preseed.cfg') {
        body = this.renderPreseed();
        this.preseedFetched = true;
      } else if (path === '/install.sh') {
        body = this.renderInstall();
        type = 'text/x-shellscript; charset=utf-8';
      } else if (path === '/installed') {
        this.installReported = true;
        body = 'ok\n';
      } else if (path === '/authorized_keys' && this.options.publicKey) {
        body = `${this.options.publicKey.trim()}\n`;
      } else {
        status = 404;
        body = 'not found\n';
      }
    } catch (err) {
      status = 500;
      body = `${errorMessage(err)}\n`;
    }
    const bytes = Buffer.byteLength(body);
    res.writeHead(status, { 'content-type': type, 'content-length': bytes, 'cache-control': 'no-store' });
    res.end(req.method === 'HEAD' ? undefined : body);
    this.options.log?.(`${req.socket.remoteAddress ?? '?'} ${req.method} ${req.url} ${status} ${bytes}B`);
  }
}

/** The machine's first non-internal IPv4 address: what `pim serve` binds to by default. */
export function lanAddress(): string {
  for (const addresses of Object.values(networkInterfaces())) {
    for (const address of addresses ?? []) {
      if (address.family === 'IPv4' && !address.internal) return address.address;
    }
  }
  return '127.0.0.1';
}

function urlHostFor(bind: string): string {
  return bind === '0.0.0.0' || bind === '::' ? lanAddress() : bind;
}
