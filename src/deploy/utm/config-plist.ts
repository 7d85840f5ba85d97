import { randomBytes, randomUUID } from 'node:crypto';
import { build } from 'plist';
import type { Arch } from '../../arch.js';

export interface UtmVmSpec {
  name: string;
  arch: Arch;
  memoryMb: number;
  cores: number;
  /** File names inside Data/. */
  disk: string;
  seed?: string;
  notes: string;
}

/** A locally administered unicast MAC, uppercase, as UTM writes them. */
function macAddress(): string {
  const bytes = randomBytes(6);
  bytes[0] = (bytes[0]! & 0xfc) | 0x02;
  return [...bytes].map((b) => b.toString(16).padStart(2, '0').toUpperCase()).join(':');
}

const uuid = () => randomUUID().toUpperCase();

/**
 * UTM's config.plist for a QEMU VM (ConfigurationVersion 4), with every key UTM requires when it
 * loads one (utmapp/UTM Configuration/UTMQemuConfiguration*.swift): arm64 is `virt` with UEFI,
 * x86_64 is `q35` booting the image's BIOS GRUB (UEFIBoot false); serial console only (Display
 * empty, one Terminal serial); the disk first (array order is boot order), the NoCloud seed as
 * a read-only CD on VirtIO (virt has no IDE) or IDE (q35).
 */
export function utmConfig(spec: UtmVmSpec): { config: Record<string, unknown>; uuid: string } {
  const id = uuid();
  const drive = (image: string, type: 'Disk' | 'CD', iface: 'VirtIO' | 'IDE') => ({
    Identifier: uuid(),
    ImageName: image,
    ImageType: type,
    Interface: iface,
    InterfaceVersion: 1,
    ReadOnly: type === 'CD',
  });
  const drives = [drive(spec.disk, 'Disk', 'VirtIO')];
  if (spec.seed) drives.push(drive(spec.seed, 'CD', spec.arch === 'arm64' ? 'VirtIO' : 'IDE'));
  const config = {
    Backend: 'QEMU',
    ConfigurationVersion: 4,
    Information: { Name: spec.name, UUID: id, IconCustom: false, Icon: 'linux', Notes: spec.notes },
    System: {
      Architecture: spec.arch === 'arm64' ? 'aarch64' : 'x86_64',
      Target: spec.arch === 'arm64' ? 'virt' : 'q35',
      CPU: 'default',
      CPUFlagsAdd: [],
      CPUFlagsRemove: [],
      CPUCount: spec.cores,
      ForceMulticore: false,
      MemorySize: spec.memoryMb,
      JITCacheSize: 0,
    },
    QEMU: {
      DebugLog: false,
      // The x86_64 image boots with BIOS GRUB; arm64 images boot UEFI.
      UEFIBoot: spec.arch === 'arm64',
      RNGDevice: true,
      BalloonDevice: false,
      TPMDevice: false,
      Hypervisor: true,
      RTCLocalTime: false,
      PS2Controller: false,
      TSO: false,
      AdditionalArguments: [],
    },
    Input: { UsbBusSupport: '3.0', UsbSharing: false, MaximumUsbShare: 3 },
    Sharing: { DirectoryShareMode: 'None', DirectoryShareReadOnly: false, ClipboardSharing: false },
    Display: [],
    Drive: drives,
    Network: [{ Mode: 'Shared', Hardware: 'virtio-net-pci', MacAddress: macAddress(), IsolateFromHost: false, PortForward: [] }],
    Serial: [
      {
        Mode: 'Terminal',
        Target: 'Auto',
        Terminal: { Font: 'Menlo', FontSize: 12, ForegroundColor: '#ffffff', BackgroundColor: '#000000', CursorBlink: true },
      },
    ],
    Sound: [],
  };
  return { config, uuid: id };
}

export function plistText(config: Record<string, unknown>): string {
  return `${build(config as Parameters<typeof build>[0])}\n`;
}
