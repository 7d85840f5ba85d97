import { mkdirSync, readFileSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import ssh2 from 'ssh2';

/** A throw-away ed25519 key pair in OpenSSH format, written with mode 0600 into a work dir. */
export interface BuildKeyPair {
  privateKeyPath: string;
  publicKeyPath: string;
  privateKey: string;
  publicKey: string;
  /** The comment that marks this key in authorized_keys (finalize removes lines carrying it). */
  comment: string;
  remove(): void;
}

export function createBuildKeyPair(dir: string, comment: string): BuildKeyPair {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const pair = generateEd25519(comment);
  const privateKeyPath = join(dir, 'id_ed25519');
  const publicKeyPath = `${privateKeyPath}.pub`;
  writeFileSync(privateKeyPath, pair.private, { mode: 0o600 });
  chmodSync(privateKeyPath, 0o600);
  writeFileSync(publicKeyPath, `${pair.public.trim()}\n`, { mode: 0o600 });
  chmodSync(publicKeyPath, 0o600);
  return {
    privateKeyPath,
    publicKeyPath,
    privateKey: pair.private,
    publicKey: pair.public.trim(),
    comment,
    remove() {
      rmSync(privateKeyPath, { force: true });
      rmSync(publicKeyPath, { force: true });
    },
  };
}

/** A key pair kept from an earlier build (a cached install layer's): the private key copied into `dir`. */
export function loadBuildKeyPair(privateKeyFile: string, dir: string): BuildKeyPair {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const privateKey = readFileSync(privateKeyFile, 'utf8');
  const parsed = ssh2.utils.parseKey(privateKey);
  if (parsed instanceof Error) throw parsed;
  const key = Array.isArray(parsed) ? parsed[0]! : parsed;
  const publicKey = `${key.type} ${key.getPublicSSH().toString('base64')} ${key.comment}`;
  const privateKeyPath = join(dir, 'id_ed25519');
  const publicKeyPath = `${privateKeyPath}.pub`;
  writeFileSync(privateKeyPath, privateKey, { mode: 0o600 });
  writeFileSync(publicKeyPath, `${publicKey}\n`, { mode: 0o600 });
  return {
    privateKeyPath,
    publicKeyPath,
    privateKey,
    publicKey,
    comment: key.comment,
    remove() {
      rmSync(privateKeyPath, { force: true });
      rmSync(publicKeyPath, { force: true });
    },
  };
}

/**
 * An ed25519 pair that ssh2 itself can read back. ssh2 1.17.0's generator strips leading zero
 * bytes from the public key, so about 1 pair in 256 is malformed (mscdex/ssh2#1390, #1513):
 * a build with such a key never logs in ("Cannot parse privateKey: Malformed OpenSSH private
 * key", seen twice in one CI run). Such a pair is thrown away and another made.
 */
export function generateEd25519(comment: string): { private: string; public: string } {
  for (let attempt = 0; ; attempt++) {
    const pair = ssh2.utils.generateKeyPairSync('ed25519', { comment });
    const readable = !(ssh2.utils.parseKey(pair.private) instanceof Error) && !(ssh2.utils.parseKey(pair.public) instanceof Error);
    if (readable || attempt >= 50) return pair;
  }
}
