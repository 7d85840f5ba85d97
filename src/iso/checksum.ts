import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { WorkError, errorMessage } from '../errors.js';

export type HashAlgorithm = 'sha256' | 'sha512';

export interface Checksum {
  algorithm: HashAlgorithm;
  hex: string;
}

export async function hashFile(path: string, algorithm: HashAlgorithm = 'sha256'): Promise<string> {
  const hash = createHash(algorithm);
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

export function parseChecksum(text: string): Checksum | undefined {
  const m = /^(sha256|sha512):([0-9a-fA-F]+)$/.exec(text);
  return m ? { algorithm: m[1] as HashAlgorithm, hex: m[2]!.toLowerCase() } : undefined;
}

/**
 * Reads the checksum of `filename` from a SHA256SUMS/SHA512SUMS file at `url` (the `file:URL`
 * form of a catalog checksum). The algorithm comes from the digest's length.
 */
export async function checksumFromSumsFile(url: string, filename: string): Promise<Checksum> {
  let text: string;
  try {
    const res = await fetch(url);
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    text = await res.text();
  } catch (err) {
    throw new WorkError(`cannot fetch checksum list ${url}: ${errorMessage(err)}`);
  }
  for (const line of text.split('\n')) {
    const m = /^([0-9a-fA-F]{64}|[0-9a-fA-F]{128})\s+\*?(\S+)$/.exec(line.trim());
    if (m && (m[2] === filename || m[2]!.endsWith(`/${filename}`))) {
      return { algorithm: m[1]!.length === 64 ? 'sha256' : 'sha512', hex: m[1]!.toLowerCase() };
    }
  }
  throw new WorkError(`checksum list ${url} has no line for ${filename}`);
}
