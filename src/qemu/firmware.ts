import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { WorkError } from '../errors.js';

/** UEFI firmware for aarch64 guests: a read-only code image and, when there is one, a vars template. */
export interface Aarch64Firmware {
  code: string;
  vars?: string;
  /** pflash needs the padded 64 MiB images; QEMU_EFI.fd alone goes through -bios. */
  mode: 'pflash' | 'bios';
}

const HOMEBREW_PREFIXES = ['/opt/homebrew', '/usr/local', '/home/linuxbrew/.linuxbrew'];

export function aarch64FirmwareCandidates(): Aarch64Firmware[] {
  const candidates: Aarch64Firmware[] = [
    // Debian/Ubuntu: qemu-efi-aarch64
    { code: '/usr/share/AAVMF/AAVMF_CODE.fd', vars: '/usr/share/AAVMF/AAVMF_VARS.fd', mode: 'pflash' },
    { code: '/usr/share/qemu-efi-aarch64/QEMU_EFI.fd', mode: 'bios' },
    // Fedora: edk2-aarch64
    { code: '/usr/share/edk2/aarch64/QEMU_EFI-pflash.raw', vars: '/usr/share/edk2/aarch64/vars-template-pflash.raw', mode: 'pflash' },
  ];
  for (const prefix of HOMEBREW_PREFIXES) {
    const share = join(prefix, 'share/qemu');
    candidates.push({ code: join(share, 'edk2-aarch64-code.fd'), vars: join(share, 'edk2-arm-vars.fd'), mode: 'pflash' });
  }
  return candidates;
}

export function findAarch64Firmware(exists: (path: string) => boolean = existsSync): Aarch64Firmware | undefined {
  for (const candidate of aarch64FirmwareCandidates()) {
    if (!exists(candidate.code)) continue;
    return candidate.vars && exists(candidate.vars) ? candidate : { code: candidate.code, mode: candidate.mode === 'pflash' ? 'pflash' : 'bios' };
  }
  return undefined;
}

export function requireAarch64Firmware(): Aarch64Firmware {
  const found = findAarch64Firmware();
  if (!found) {
    throw new WorkError(
      `no UEFI firmware for aarch64 guests found (looked for ${aarch64FirmwareCandidates().map((c) => c.code).join(', ')}); ` +
        `install it: ${process.platform === 'darwin' ? 'brew install qemu' : 'apt-get install qemu-efi-aarch64'}`,
    );
  }
  return found;
}
