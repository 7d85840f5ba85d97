import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { repoRoot } from './env.js';

let iso: string | undefined;

/** The test installer ISO of test/fixtures/test-installer (built once, cached on disk). */
export function testInstallerIso(): string {
  iso ??= execFileSync('bash', [join(repoRoot, 'test/fixtures/test-installer/build.sh')], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
    maxBuffer: 64 * 1024 * 1024,
  })
    .trim()
    .split('\n')
    .at(-1)!;
  return iso;
}

/** The media need root (debootstrap, chroot): elsewhere the end-to-end tests are skipped, saying why. */
export const rootSkip: false | string = process.getuid?.() === 0 ? false : 'needs root to build the test installer media (debootstrap)';
