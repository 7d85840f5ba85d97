import { createHash, createHmac } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';

/**
 * How a connection decides whether to trust the server's host key. Throw-away build VMs get a
 * new host key every build, so `any` is right for them; real hosts (remote builders, Proxmox
 * nodes) are checked against a pinned fingerprint or a known_hosts file.
 */
export type HostKeyPolicy =
  | { kind: 'any' }
  | { kind: 'fingerprint'; sha256: string }
  | { kind: 'known_hosts'; path: string };

/** OpenSSH's fingerprint format: `SHA256:` + unpadded base64 of the SHA-256 of the key blob. */
export function fingerprintOf(keyBlob: Buffer): string {
  return `SHA256:${createHash('sha256').update(keyBlob).digest('base64').replace(/=+$/, '')}`;
}

function hostMatches(pattern: string, names: string[]): boolean {
  if (pattern.startsWith('|1|')) {
    const [, , salt, hash] = pattern.split('|');
    if (!salt || !hash) return false;
    return names.some((name) => createHmac('sha1', Buffer.from(salt, 'base64')).update(name).digest('base64') === hash);
  }
  return pattern.split(',').some((p) => {
    const regex = new RegExp(`^${p.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`, 'i');
    return names.some((name) => regex.test(name));
  });
}

/** Whether `keyBlob` is listed for host:port in an OpenSSH known_hosts file. */
export function knownHostsAccepts(path: string, host: string, port: number, keyBlob: Buffer): boolean {
  if (!existsSync(path)) return false;
  const names = port === 22 ? [host, `[${host}]:22`] : [`[${host}]:${port}`];
  const key = keyBlob.toString('base64');
  for (const raw of readFileSync(path, 'utf8').split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const fields = line.split(/\s+/);
    if (fields[0]?.startsWith('@')) {
      if (fields[0] === '@revoked' && fields[3] === key && hostMatches(fields[1]!, names)) return false;
      continue;
    }
    if (fields.length >= 3 && fields[2] === key && hostMatches(fields[0]!, names)) return true;
  }
  return false;
}

export function verifyHostKey(policy: HostKeyPolicy, host: string, port: number, keyBlob: Buffer): boolean {
  switch (policy.kind) {
    case 'any':
      return true;
    case 'fingerprint':
      return fingerprintOf(keyBlob) === (policy.sha256.startsWith('SHA256:') ? policy.sha256 : `SHA256:${policy.sha256}`).replace(/=+$/, '');
    case 'known_hosts':
      return knownHostsAccepts(policy.path, host, port, keyBlob);
  }
}
