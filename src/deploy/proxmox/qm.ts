import type { Arch } from '../../arch.js';
import { WorkError } from '../../errors.js';
import type { ProxmoxTarget } from '../targets.js';

/**
 * `qm` command lines and output parsing, pure (tests compare them argument by argument). The
 * formats follow qemu-server's and pve-manager's sources: see docs in README ("Proxmox").
 */
export function createArgs(vmid: number, name: string, target: ProxmoxTarget, arch: Arch): (string | number)[] {
  const args: (string | number)[] = [
    'create', vmid,
    '--name', name,
    '--memory', target.memory,
    '--cores', target.cores,
    '--net0', `virtio,bridge=${target.bridge}`,
    '--scsihw', 'virtio-scsi-pci',
    '--ostype', 'l26',
    '--agent', 'enabled=1',
    '--serial0', 'socket',
    '--vga', 'serial0',
  ];
  // arm64 guests boot UEFI (AAVMF) with their own EFI vars disk.
  if (arch === 'arm64') args.push('--arch', 'aarch64', '--bios', 'ovmf', '--efidisk0', `${target.storage}:1,efitype=4m`);
  return args;
}

/** The imported disk as scsi0, a cloud-init drive, boot order, cloud-init defaults. */
export function setArgs(vmid: number, volume: string, target: ProxmoxTarget, arch: Arch, sshKeysFile?: string): (string | number)[] {
  // The aarch64 virt machine has no IDE bus: `qm` accepts ide2 there, but the VM then fails to
  // start ("Bus 'ide.1' not found"), so the cloud-init drive goes on SCSI.
  const cloudinitSlot = arch === 'arm64' ? '--scsi1' : '--ide2';
  const args: (string | number)[] = ['set', vmid, '--scsi0', volume, cloudinitSlot, `${target.storage}:cloudinit`, '--boot', 'order=scsi0'];
  if (target.ciuser) args.push('--ciuser', target.ciuser);
  if (sshKeysFile) args.push('--sshkeys', sshKeysFile);
  if (target.ipconfig0) args.push('--ipconfig0', target.ipconfig0);
  return args;
}

/** `qm config ID`: one `key: value` line per setting. */
export function parseConfig(text: string): Record<string, string> {
  const config: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^([a-z][a-z0-9_-]*): ?(.*)$/i.exec(line.trim());
    if (m) config[m[1]!] = m[2]!;
  }
  return config;
}

/** The volume an import left as `unusedN` (reading the config is the same on every qemu-server version). */
export function importedVolume(config: Record<string, string>): string | undefined {
  const unused = Object.keys(config).filter((k) => /^unused\d+$/.test(k)).sort((a, b) => Number(b.slice(6)) - Number(a.slice(6)));
  return unused.length ? config[unused[0]!]!.split(',')[0] : undefined;
}

/** `pvesh get /cluster/nextid --output-format json` prints `"100"` (a JSON string); a number is accepted too. */
export function parseNextId(output: string): number {
  let value: unknown;
  try {
    value = JSON.parse(output.trim());
  } catch {
    value = output.trim();
  }
  const id = Number(value);
  if (!Number.isInteger(id) || id < 100) throw new WorkError(`pvesh get /cluster/nextid printed '${output.trim()}', not a VM id`);
  return id;
}

/**
 * A VM name Proxmox takes: it must be a DNS name (pve-common's `dns-name` format), so the arch's
 * underscore (x86_64) and anything else outside [A-Za-z0-9.-] become '-'.
 */
export function dnsName(name: string): string {
  return name.replace(/[^A-Za-z0-9.-]+/g, '-').replace(/^[-.]+|[-.]+$/g, '').slice(0, 63) || 'pim';
}
