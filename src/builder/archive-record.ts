import { createHash } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { errorMessage } from '../errors.js';
import { maskUrlCredentials } from '../secrets.js';
import { mirrorRequest } from '../server/package-cache.js';

/**
 * The archive an upgrade layer was patched from: the release files (InRelease) the guest's
 * package lists came from, by URL, with the SHA-256 of each. pim-prepare prints one
 * `pim-release <sha256> <url>` line per release file after its upgrade; the layer keeps them.
 *
 * The layer's key cannot hold the archive's state (it is known only once the guest has fetched
 * its lists), so a cached upgrade layer is reused only while the mirror still serves the same
 * release files: once a suite publishes anything (a security update), the upgrade and every
 * layer after it are made again, and a rebuild never ships what the archive has superseded.
 */
export type ReleaseRecord = Record<string, string>;

const RECORD_LINE = /^pim-release ([0-9a-f]{64}) (\S+)$/;

/** One release file named by a line of pim-prepare's output, or undefined for any other line. */
export function releaseRecordLine(line: string): { url: string; sha256: string } | undefined {
  const m = RECORD_LINE.exec(line.trim());
  if (!m) return undefined;
  try {
    return { url: new URL(m[2]!).href, sha256: m[1]! };
  } catch {
    return undefined;
  }
}

export interface ArchiveCheck {
  /** Release files whose content on the mirror is not the recorded one (or that are gone). */
  changed: string[];
  /** Release files that could not be fetched, with why: their state is unknown. */
  unchecked: { url: string; reason: string }[];
}

/**
 * Fetches each recorded release file from the mirror (through `proxy`, the profile's http_proxy,
 * when set) and compares its SHA-256 with the record. Each fetch, connection included, has
 * `timeoutMs`; `signal` (the build's Ctrl+C) ends them all.
 */
export async function checkReleaseFiles(record: ReleaseRecord, options: { proxy?: string; timeoutMs?: number; signal?: AbortSignal } = {}): Promise<ArchiveCheck> {
  const result: ArchiveCheck = { changed: [], unchecked: [] };
  const timeoutMs = options.timeoutMs ?? 20_000;
  await Promise.all(
    Object.entries(record).map(async ([url, sha256]) => {
      const deadline = AbortSignal.timeout(timeoutMs);
      try {
        const now = await fetchSha256(new URL(url), options.proxy, options.signal ? AbortSignal.any([deadline, options.signal]) : deadline);
        if (now !== sha256) result.changed.push(url);
      } catch (err) {
        if (options.signal?.aborted) throw err;
        const reason = deadline.aborted ? `no answer within ${timeoutMs < 1000 ? `${timeoutMs} ms` : `${Math.round(timeoutMs / 1000)} s`}` : errorMessage(err);
        result.unchecked.push({ url, reason: maskUrlCredentials(reason) });
      }
    }),
  );
  result.changed.sort();
  return result;
}

const MAX_REDIRECTS = 5;

/** The SHA-256 of `url`'s body, after redirects; a 404 or 410 reads as a body no record has ('gone'). */
function fetchSha256(url: URL, proxy: string | undefined, signal: AbortSignal, redirects = 0): Promise<string> {
  return new Promise((resolve, reject) => {
    const headers = { 'user-agent': 'pim-archive-check', 'cache-control': 'no-cache' };
    let req;
    if (url.protocol === 'http:') req = httpRequest({ ...mirrorRequest(url, 'GET', headers, proxy), signal });
    else if (url.protocol === 'https:' && !proxy) req = httpsRequest(url, { headers, signal });
    else return reject(new Error(`${url.protocol} ${proxy ? 'through a proxy ' : ''}is not checked`));
    req.on('error', reject);
    req.on('response', (res) => {
      const status = res.statusCode ?? 0;
      if (status === 404 || status === 410) {
        res.resume();
        return resolve('gone');
      }
      if ([301, 302, 303, 307, 308].includes(status) && res.headers.location && redirects < MAX_REDIRECTS) {
        res.resume();
        return fetchSha256(new URL(res.headers.location, url), proxy, signal, redirects + 1).then(resolve, reject);
      }
      if (status !== 200) {
        res.resume();
        return reject(new Error(`HTTP ${status}`));
      }
      const hash = createHash('sha256');
      res.on('data', (chunk: Buffer) => hash.update(chunk));
      res.on('error', reject);
      res.on('end', () => (res.complete ? resolve(hash.digest('hex')) : reject(new Error('the answer was cut short'))));
    });
    req.end();
  });
}
