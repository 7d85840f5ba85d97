import type { RemoteConfig } from '../config/schema.js';
import { errorMessage } from '../errors.js';
import { shq } from '../shell.js';
import { connectToHost } from '../ssh/hosts.js';

export interface RemoteStatus {
  name: string;
  host: string;
  reachable: boolean;
  version?: string;
  /** The remote's selected accelerator per arch. */
  accelerators?: Record<string, string>;
  reason?: string;
}

/** Whether a remote builder answers, which PIM it runs and what it can accelerate: within `timeoutMs`. */
export async function remoteStatus(name: string, remote: RemoteConfig, timeoutMs = 10_000): Promise<RemoteStatus> {
  const base = { name, host: `${remote.user}@${remote.host}:${remote.port}` };
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<RemoteStatus>((resolve) => {
    timer = setTimeout(() => resolve({ ...base, reachable: false, reason: `no answer within ${timeoutMs / 1000} s` }), timeoutMs);
  });
  const probe = (async (): Promise<RemoteStatus> => {
    const ssh = await connectToHost(remote, { label: `remote '${name}'`, pinAt: `build.remotes.${name}.host_key in pim.yml`, readyTimeoutMs: Math.min(timeoutMs, 8_000) });
    try {
      const version = (await ssh.capture(`${shq(remote.pim_path)} --version`).catch((err: unknown) => {
        throw new Error(`PIM does not answer at ${remote.pim_path}: ${errorMessage(err)}`);
      })).trim();
      const cache = remote.cache_dir ?? '~/.cache/pim/remote';
      const cacheWord = cache.startsWith('~/') ? `"$HOME"/${shq(cache.slice(2))}` : shq(cache);
      const status = JSON.parse(await ssh.capture(`XDG_CACHE_HOME=${cacheWord}/cache ${shq(remote.pim_path)} build status --json --local-only`)) as {
        arches: Record<string, { accelerator: string }>;
      };
      const accelerators = Object.fromEntries(Object.entries(status.arches).map(([arch, s]) => [arch, s.accelerator]));
      return { ...base, reachable: true, version, accelerators };
    } finally {
      ssh.end();
    }
  })().catch((err: unknown) => ({ ...base, reachable: false, reason: errorMessage(err) }));
  try {
    return await Promise.race([probe, deadline]);
  } finally {
    clearTimeout(timer);
  }
}
