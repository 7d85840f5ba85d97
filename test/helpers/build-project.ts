import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Sandbox } from './env.js';

/** Points a sandbox project's catalog at the test installer ISO and makes `profile` use it. */
export function useTestInstaller(box: Sandbox, iso: string): string {
  const sum = createHash('sha256').update(readFileSync(iso)).digest('hex');
  box.write(
    'isos.d/test-installer.yml',
    `pim-test-installer-amd64:\n  url: file://${iso}\n  checksum: sha256:${sum}\n  arch: x86_64\n  distro: debian\n  version: "12.0-pimtest"\n`,
  );
  return 'pim-test-installer-amd64';
}
