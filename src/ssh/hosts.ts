import { homedir } from 'node:os';
import { join } from 'node:path';
import { expandHome } from '../config/project.js';
import { WorkError, errorMessage } from '../errors.js';
import { HostKeyRejected, SshConnection } from './connection.js';
import type { HostKeyPolicy } from './host-keys.js';

/**
 * A real host PIM talks to over SSH (a remote builder, a Proxmox node): unlike a build VM, its
 * host key is checked -- against `host_key` (an OpenSSH SHA256 fingerprint) when pinned, else
 * against ~/.ssh/known_hosts -- and an unknown key is refused, never accepted silently.
 */
export interface HostConnection {
  host: string;
  port?: number;
  user: string;
  identity_file?: string;
  host_key?: string;
  /** Seconds between keepalive probes (default 15; 4 unanswered probes drop the connection). */
  keepalive?: number;
}

export interface HostContext {
  /** What the host is called in messages, e.g. "remote 'lab'". */
  label: string;
  /** Where a user pins the key, e.g. "build.remotes.lab.host_key in pim.yml". */
  pinAt: string;
  knownHosts?: string;
  readyTimeoutMs?: number;
}

export function hostKeyPolicy(
  config: HostConnection,
  knownHosts = join(homedir(), '.ssh', 'known_hosts'),
): Extract<HostKeyPolicy, { kind: 'fingerprint' | 'known_hosts' }> {
  return config.host_key ? { kind: 'fingerprint', sha256: config.host_key } : { kind: 'known_hosts', path: knownHosts };
}

export async function connectToHost(config: HostConnection, context: HostContext): Promise<SshConnection> {
  const port = config.port ?? 22;
  const agent = config.identity_file ? undefined : process.env['SSH_AUTH_SOCK'];
  if (!config.identity_file && !agent) {
    throw new WorkError(`SSH to ${context.label} (${config.user}@${config.host}:${port}): no identity_file is set and no SSH agent is running (SSH_AUTH_SOCK)`);
  }
  const policy = hostKeyPolicy(config, context.knownHosts);
  try {
    return await SshConnection.connect({
      host: config.host,
      port,
      username: config.user,
      privateKeyPath: config.identity_file ? expandHome(config.identity_file) : undefined,
      agent,
      hostKey: policy,
      readyTimeout: context.readyTimeoutMs ?? 20_000,
      keepaliveIntervalMs: (config.keepalive ?? 15) * 1000,
    });
  } catch (err) {
    if (err instanceof HostKeyRejected) {
      const keyscan = `ssh-keyscan ${port === 22 ? '' : `-p ${port} `}${config.host}`;
      throw new WorkError(
        policy.kind === 'fingerprint'
          ? `SSH to ${context.label} (${config.host}:${port}): its host key is ${err.fingerprint}, not the pinned ${config.host_key}; refusing to connect (if the host was reinstalled, check the new key and update ${context.pinAt})`
          : `SSH to ${context.label} (${config.host}:${port}): unknown host key ${err.fingerprint} (not in ${knownHostsPath(policy)}); refusing to connect. ` +
            `If that is the host's key, pin it: ${context.pinAt}: ${err.fingerprint} (or add it to known_hosts: ${keyscan} >> ${knownHostsPath(policy)})`,
      );
    }
    throw new WorkError(`SSH to ${context.label} (${config.user}@${config.host}:${port}): ${errorMessage(err).replace(/^SSH to \S+: /, '')}`);
  }
}

function knownHostsPath(policy: HostKeyPolicy): string {
  return policy.kind === 'known_hosts' ? policy.path : '~/.ssh/known_hosts';
}
