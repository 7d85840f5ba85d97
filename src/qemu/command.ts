import type { Arch } from '../arch.js';
import type { Aarch64Firmware } from './firmware.js';

export type Accelerator = 'kvm' | 'hvf' | 'tcg';

/** Everything that decides a QEMU command line. Pure data: tests compare the result argument by argument. */
export interface VmSpec {
  name: string;
  arch: Arch;
  accel: Accelerator;
  memoryMb: number;
  cpus: number;
  /**
   * `unsafe` ignores the guest's flushes (QEMU still writes everything out when it exits): right
   * for a build disk, which is either finished with a clean power-off or thrown away.
   */
  disk?: { path: string; format: 'qcow2' | 'raw'; cache?: 'writeback' | 'unsafe' };
  cdrom?: string;
  kernel?: { path: string; initrd?: string; append?: string };
  /** `-boot order=…` / `-boot once=…` (BIOS letters: c disk, d CD-ROM). */
  boot?: { order?: string; once?: string };
  /** Guest port 22 forwarded from 127.0.0.1:sshPort on the host. */
  sshPort?: number;
  serialLog: string;
  /** Also make the serial console interactive on this unix socket (typing at a boot prompt). */
  serialSocket?: string;
  qmpSocket: string;
  /** A virtio-serial port for the QEMU guest agent, exposed on this unix socket. */
  guestAgentSocket?: string;
  noReboot?: boolean;
  /** arm64 only: UEFI firmware and this VM's writable copy of the vars store. */
  firmware?: Aarch64Firmware;
  efiVars?: string;
}

export interface QemuCommand {
  binary: string;
  args: string[];
}

/** QEMU's -drive/-chardev option syntax doubles a comma inside a value. */
function opt(value: string): string {
  return value.replace(/,/g, ',,');
}

export function qemuBinary(arch: Arch): string {
  return arch === 'arm64' ? 'qemu-system-aarch64' : 'qemu-system-x86_64';
}

export function qemuCommand(spec: VmSpec): QemuCommand {
  const args: string[] = ['-name', spec.name, '-nodefaults', '-no-user-config'];
  if (spec.arch === 'arm64') args.push('-machine', 'virt');
  else args.push('-machine', 'q35');
  args.push('-accel', spec.accel === 'tcg' ? 'tcg,thread=multi' : spec.accel);
  args.push('-cpu', spec.accel === 'tcg' ? 'max' : 'host');
  args.push('-m', String(spec.memoryMb), '-smp', String(spec.cpus));

  if (spec.arch === 'arm64') {
    const fw = spec.firmware;
    if (!fw) throw new Error('arm64 VMs need UEFI firmware (spec.firmware)');
    if (fw.mode === 'pflash') {
      args.push('-drive', `if=pflash,format=raw,readonly=on,file=${opt(fw.code)}`);
      if (spec.efiVars) args.push('-drive', `if=pflash,format=raw,file=${opt(spec.efiVars)}`);
    } else {
      args.push('-bios', fw.code);
    }
  }

  if (spec.disk) {
    // id=disk0: what QMP names when it takes a layer of the disk (blockdev-snapshot-sync).
    args.push('-drive', `id=disk0,file=${opt(spec.disk.path)},format=${spec.disk.format},if=virtio,discard=unmap,detect-zeroes=unmap,cache=${spec.disk.cache ?? 'writeback'}`);
  }
  if (spec.cdrom) {
    if (spec.arch === 'arm64') {
      // The virt machine has no IDE: the CD-ROM hangs off virtio-scsi.
      args.push('-device', 'virtio-scsi-pci,id=scsi0');
      args.push('-drive', `file=${opt(spec.cdrom)},media=cdrom,readonly=on,if=none,id=cd0`);
      args.push('-device', 'scsi-cd,drive=cd0,bus=scsi0.0');
    } else {
      args.push('-drive', `file=${opt(spec.cdrom)},media=cdrom,readonly=on,if=ide,index=2`);
    }
  }
  if (spec.kernel) {
    args.push('-kernel', spec.kernel.path);
    if (spec.kernel.initrd) args.push('-initrd', spec.kernel.initrd);
    if (spec.kernel.append) args.push('-append', spec.kernel.append);
  }
  if (spec.boot?.order || spec.boot?.once) {
    const parts = [];
    if (spec.boot.order) parts.push(`order=${spec.boot.order}`);
    if (spec.boot.once) parts.push(`once=${spec.boot.once}`);
    args.push('-boot', parts.join(','));
  }

  const forward = spec.sshPort ? `,hostfwd=tcp:127.0.0.1:${spec.sshPort}-:22` : '';
  args.push('-netdev', `user,id=net0${forward}`, '-device', 'virtio-net-pci,netdev=net0');
  args.push('-device', 'virtio-rng-pci');
  // A PC without a graphics card never gets past GRUB (SeaBIOS boots it, GRUB's console then
  // hangs); the arm64 virt machine boots through UEFI's serial console and needs none.
  if (spec.arch === 'x86_64') args.push('-device', 'VGA');
  args.push('-display', 'none');
  if (spec.serialSocket) {
    args.push('-chardev', `socket,id=serial0,path=${opt(spec.serialSocket)},server=on,wait=off,logfile=${opt(spec.serialLog)}`);
  } else {
    args.push('-chardev', `file,id=serial0,path=${opt(spec.serialLog)}`);
  }
  args.push('-serial', 'chardev:serial0');
  args.push('-qmp', `unix:${opt(spec.qmpSocket)},server=on,wait=off`);
  if (spec.guestAgentSocket) {
    args.push('-device', 'virtio-serial-pci,id=vser0');
    args.push('-chardev', `socket,id=qga0,path=${opt(spec.guestAgentSocket)},server=on,wait=off`);
    args.push('-device', 'virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0');
  }
  if (spec.noReboot) args.push('-no-reboot');
  return { binary: qemuBinary(spec.arch), args };
}
