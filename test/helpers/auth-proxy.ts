// A forward HTTP proxy that wants credentials (Basic auth), for builds whose profile has an
// `http_proxy` with a user and password: PIM's package cache must reach the mirror through it,
// and its password must show up in no log.
import { createServer, request, type Server } from 'node:http';

export interface AuthProxy {
  url: (user: string, password: string) => string;
  requests: number;
  refused: number;
  close(): Promise<void>;
}

export async function startAuthProxy(user: string, password: string): Promise<AuthProxy> {
  const expected = `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
  const state = { requests: 0, refused: 0 };
  const server: Server = createServer((req, res) => {
    if (req.headers['proxy-authorization'] !== expected) {
      state.refused++;
      res.writeHead(407, { 'proxy-authenticate': 'Basic realm="pim-test"' }).end();
      return;
    }
    state.requests++;
    const target = new URL(req.url ?? '');
    const headers = { ...req.headers };
    delete headers['proxy-authorization'];
    const up = request({ host: target.hostname, port: Number(target.port || 80), path: `${target.pathname}${target.search}`, method: req.method, headers }, (upRes) => {
      res.writeHead(upRes.statusCode ?? 502, upRes.headers);
      upRes.pipe(res);
    });
    up.on('error', () => res.headersSent ? res.destroy() : res.writeHead(502).end());
    req.pipe(up);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  return {
    url: (u, p) => `http://${u}:${p}@127.0.0.1:${port}/`,
    get requests() {
      return state.requests;
    },
    get refused() {
      return state.refused;
    },
    async close() {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  } as AuthProxy;
}
