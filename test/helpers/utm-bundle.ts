// UTM cannot run here: a bundle is checked against what UTM's loader requires (utmapp/UTM,
// Configuration/UTMQemuConfiguration*.swift: required keys, plist types, enum values), and booted
// with QEMU the way it describes.
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'plist';
import type { VmSpecInput } from '../../src/qemu/vm.js';

type Kind = 'string' | 'integer' | 'bool' | 'array' | 'dict';
type Rule = [key: string, kind: Kind, required: boolean, values?: string[]];

const SECTIONS: Record<string, Rule[]> = {
  Information: [['Name', 'string', true], ['IconCustom', 'bool', true], ['Icon', 'string', false], ['Notes', 'string', false], ['UUID', 'string', true]],
  System: [
    ['Architecture', 'string', true, ['aarch64', 'x86_64']], ['Target', 'string', true], ['CPU', 'string', true], ['CPUFlagsAdd', 'array', true], ['CPUFlagsRemove', 'array', true],
    ['CPUCount', 'integer', true], ['ForceMulticore', 'bool', true], ['MemorySize', 'integer', true], ['JITCacheSize', 'integer', true],
  ],
  QEMU: [
    ['DebugLog', 'bool', true], ['UEFIBoot', 'bool', true], ['RNGDevice', 'bool', true], ['BalloonDevice', 'bool', true], ['TPMDevice', 'bool', true], ['Hypervisor', 'bool', true],
    ['RTCLocalTime', 'bool', true], ['PS2Controller', 'bool', true], ['TSO', 'bool', false], ['MachinePropertyOverride', 'string', false], ['AdditionalArguments', 'array', true],
  ],
  Input: [['UsbBusSupport', 'string', true, ['Disabled', '2.0', '3.0']], ['UsbSharing', 'bool', true], ['MaximumUsbShare', 'integer', true]],
  Sharing: [['DirectoryShareMode', 'string', true, ['None', 'WebDAV', 'VirtFS']], ['DirectoryShareReadOnly', 'bool', true], ['ClipboardSharing', 'bool', true]],
};
const DRIVE: Rule[] = [
  ['ImageName', 'string', false], ['ReadOnly', 'bool', false], ['ImageType', 'string', true, ['None', 'Disk', 'CD', 'BIOS', 'LinuxKernel', 'LinuxInitrd', 'LinuxDTB']],
  ['Interface', 'string', true, ['None', 'IDE', 'SCSI', 'SD', 'MTD', 'Floppy', 'PFlash', 'VirtIO', 'NVMe', 'USB']], ['InterfaceVersion', 'integer', false], ['Identifier', 'string', true],
];
const NETWORK: Rule[] = [['Mode', 'string', true, ['Emulated', 'Shared', 'Host', 'Bridged']], ['Hardware', 'string', true], ['MacAddress', 'string', true], ['IsolateFromHost', 'bool', true], ['PortForward', 'array', true]];
const SERIAL: Rule[] = [['Mode', 'string', true, ['Terminal', 'TcpClient', 'TcpServer', 'Ptty']], ['Target', 'string', true, ['Auto', 'Manual', 'GDB', 'Monitor']], ['Terminal', 'dict', false]];
const TARGETS: Record<string, string> = { aarch64: 'virt', x86_64: 'q35' };

function kindOf(value: unknown): Kind | 'other' {
  if (typeof value === 'string') return 'string';
  if (typeof value === 'boolean') return 'bool';
  if (typeof value === 'number' && Number.isInteger(value)) return 'integer';
  if (Array.isArray(value)) return 'array';
  if (value && typeof value === 'object') return 'dict';
  return 'other';
}

function check(where: string, dict: Record<string, unknown>, rules: Rule[], problems: string[]): void {
  for (const [key, kind, required, values] of rules) {
    if (!(key in dict)) {
      if (required) problems.push(`${where}.${key} is missing`);
      continue;
    }
    if (kindOf(dict[key]) !== kind) problems.push(`${where}.${key} is a ${kindOf(dict[key])}, not a ${kind}`);
    else if (values && !values.includes(dict[key] as string)) problems.push(`${where}.${key} '${String(dict[key])}' is not one of ${values.join(', ')}`);
  }
}

/** Every problem UTM's loader would have with the bundle (empty: it loads). */
export function utmBundleProblems(bundle: string): string[] {
  const problems: string[] = [];
  if (!existsSync(join(bundle, 'config.plist'))) return ['config.plist is missing'];
  const text = readFileSync(join(bundle, 'config.plist'), 'utf8');
  if (!text.includes('<!DOCTYPE plist')) problems.push('config.plist is not an XML property list');
  const config = parse(text) as Record<string, unknown>;
  if (config['Backend'] !== 'QEMU') problems.push(`Backend is ${String(config['Backend'])}, not QEMU`);
  if (config['ConfigurationVersion'] !== 4) problems.push(`ConfigurationVersion is ${String(config['ConfigurationVersion'])}, not 4`);
  for (const [section, rules] of Object.entries(SECTIONS)) {
    if (kindOf(config[section]) !== 'dict') problems.push(`${section} is missing or not a dict`);
    else check(section, config[section] as Record<string, unknown>, rules, problems);
  }
  for (const list of ['Display', 'Drive', 'Network', 'Serial', 'Sound']) if (!Array.isArray(config[list])) problems.push(`${list} is missing or not an array`);
  const info = config['Information'] as Record<string, unknown> | undefined;
  if (info && !/^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$/i.test(String(info['UUID']))) problems.push('Information.UUID is not a UUID');
  const system = config['System'] as Record<string, unknown> | undefined;
  if (system && TARGETS[String(system['Architecture'])] !== system['Target']) problems.push(`System.Target ${String(system['Target'])} is not a target of ${String(system['Architecture'])}`);
  const drives = (config['Drive'] as Record<string, unknown>[] | undefined) ?? [];
  const ids = new Set<string>();
  drives.forEach((d, i) => {
    check(`Drive[${i}]`, d, DRIVE, problems);
    if (!/^[A-Za-z0-9._-]+$/.test(String(d['Identifier']))) problems.push(`Drive[${i}].Identifier is not usable in QEMU ids`);
    if (ids.has(String(d['Identifier']))) problems.push(`Drive[${i}].Identifier is not unique`);
    ids.add(String(d['Identifier']));
    if (d['ImageName'] !== undefined && !existsSync(join(bundle, 'Data', String(d['ImageName'])))) problems.push(`Drive[${i}] names Data/${String(d['ImageName'])}, which does not exist`);
    if (d['Interface'] === 'USB' && (config['Input'] as Record<string, unknown>)?.['UsbBusSupport'] === 'Disabled') problems.push(`Drive[${i}] is on USB, but the USB bus is disabled`);
    if (d['Interface'] === 'IDE' && system?.['Target'] === 'virt') problems.push(`Drive[${i}] is on IDE, which the virt machine does not have`);
  });
  ((config['Network'] as Record<string, unknown>[] | undefined) ?? []).forEach((n, i) => check(`Network[${i}]`, n, NETWORK, problems));
  ((config['Serial'] as Record<string, unknown>[] | undefined) ?? []).forEach((s, i) => {
    check(`Serial[${i}]`, s, SERIAL, problems);
    const terminal = s['Terminal'] as Record<string, unknown> | undefined;
    if (terminal && (typeof terminal['Font'] !== 'string' || kindOf(terminal['FontSize']) !== 'integer')) problems.push(`Serial[${i}].Terminal needs Font and FontSize`);
  });
  // UTM deletes on save whatever in Data/ no drive names: nothing else may be there.
  const named = new Set(drives.map((d) => String(d['ImageName'])));
  for (const file of readdirSync(join(bundle, 'Data'))) if (!named.has(file)) problems.push(`Data/${file} is named by no drive (UTM would delete it)`);
  return problems;
}

/** The QEMU machine a bundle describes, as UTM would start it (its drives from Data/, in order). */
export function vmSpecOfBundle(bundle: string, serialLog: string, firmware?: VmSpecInput['firmware']): { spec: VmSpecInput; seed?: string; disk: string } {
  const config = parse(readFileSync(join(bundle, 'config.plist'), 'utf8')) as Record<string, Record<string, unknown>>;
  const system = config['System']!;
  const drives = config['Drive'] as unknown as Record<string, unknown>[];
  const disk = join(bundle, 'Data', String(drives.find((d) => d['ImageType'] === 'Disk')!['ImageName']));
  const cd = drives.find((d) => d['ImageType'] === 'CD');
  const arch = system['Architecture'] === 'aarch64' ? 'arm64' : 'x86_64';
  return {
    disk,
    seed: cd ? join(bundle, 'Data', String(cd['ImageName'])) : undefined,
    spec: {
      name: String((config['Information'] as Record<string, unknown>)['Name']),
      arch,
      accel: 'tcg',
      memoryMb: Number(system['MemorySize']),
      cpus: Number(system['CPUCount']),
      disk: { path: disk, format: 'qcow2' },
      cdrom: cd ? join(bundle, 'Data', String(cd['ImageName'])) : undefined,
      serialLog,
      firmware: arch === 'arm64' ? firmware : undefined,
    },
  };
}
