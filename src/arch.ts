import { ConfigError } from './errors.js';

/** PIM's canonical architecture names; `aarch64` and `amd64` are accepted as aliases. */
export type Arch = 'arm64' | 'x86_64';
export const ARCHES: readonly Arch[] = ['arm64', 'x86_64'];

const ALIASES: Record<string, Arch> = {
  arm64: 'arm64',
  aarch64: 'arm64',
  x86_64: 'x86_64',
  amd64: 'x86_64',
  x64: 'x86_64',
};

export function isArch(value: string): boolean {
  return value.toLowerCase() in ALIASES;
}

export function normalizeArch(value: string): Arch {
  const arch = ALIASES[value.toLowerCase()];
  if (!arch) {
    throw new ConfigError(`unknown architecture '${value}' (known: arm64/aarch64, x86_64/amd64)`);
  }
  return arch;
}

/** Debian's name for an arch: what its ISO file names and installer paths use. */
export function debianArch(arch: Arch): 'arm64' | 'amd64' {
  return arch === 'arm64' ? 'arm64' : 'amd64';
}

export function hostArch(): Arch {
  return normalizeArch(process.arch);
}
