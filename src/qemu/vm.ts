import type { ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WorkError } from '../errors.js';
import { installSignalHandlers } from '../lifecycle.js';
import { spawnManaged, type LogFn } from '../process.js';
import { qemuCommand, type QemuCommand, type VmSpec } from './command.js';
import type { DiskImages } from './disk.js';
import { leasePort, type PortLease } from './ports.js';
import { QmpClient } from './qmp.js';

export type VmSpecInput = Omit<VmSpec, 'sshPort' | 'qmpSocket' | 'guestAgentSocket'>;

export interface VmStartOptions {
  spec: VmSpecInput;
  /** Forward a free 127.0.0.1 port to the guest's port 22. */
  forwardSsh?: boolean;
  /** Give the guest a virtio-serial port for the QEMU guest agent (see `guestAgentSocket`). */
  guestAgent?: boolean;
  log?: LogFn;
  /** Lines of QEMU's own stderr. */
  onStderr?: (line: string) => void;
}

export interface VmExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export type StopOutcome = 'already-exited' | 'acpi' | 'quit' | 'killed';

/** Run dirs (QMP sockets) of live VMs, removed on exit even when PIM exits on a signal. */
const liveRunDirs = new Set<string>();
process.on('exit', () => {
  for (const dir of liveRunDirs) rmSync(dir, { recursive: true, force: true });
});

/**
 * One running QEMU: started through the process registry (so it dies with PIM), with a QMP
 * connection, a serial console written to a file, and optionally SSH forwarded from loopback.
 */
export class Vm {
  readonly exited: Promise<VmExit>;
  private exitInfo?: VmExit;
  private resetting = false;

  private constructor(
    readonly child: ChildProcess,
    readonly command: QemuCommand,
    readonly qmp: QmpClient,
    readonly sshPort: number | undefined,
    readonly qmpSocket: string,
    private readonly runDir: string,
    private readonly lease: PortLease | undefined,
    private readonly spec: VmSpecInput,
    exited: Promise<VmExit>,
  ) {
    this.exited = exited.then((info) => {
      this.exitInfo = info;
      this.dispose();
      return info;
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** The file the serial console is written to. */
  get serialLog(): string {
    return this.spec.serialLog;
  }

  /** The unix socket of the guest agent's port, when the VM has one. */
  get guestAgentSocket(): string | undefined {
    return this.command.args.includes('virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0') ? join(this.runDir, 'qga.sock') : undefined;
  }

  /**
   * Takes a layer of the disk while the VM runs: QEMU writes from now on to a new overlay at
   * `overlay` (created here, backed by the file written so far), which stays untouched from
   * then on. The caller makes the guest's file systems consistent first (a freeze, or a sync).
   */
  /**
   * Switches disk0 from `current`, the file it writes to, to a new overlay on top of it. The
   * overlay is created first (qemu-img, with PIM's work-disk options, `current` as its backing
   * file), then QEMU takes it over as it is (mode existing).
   */
  async snapshotDisk(current: string, overlay: string, disks: DiskImages): Promise<void> {
    await disks.overlay(current, overlay);
    await this.qmp.execute('blockdev-snapshot-sync', { device: 'disk0', 'snapshot-file': overlay, format: 'qcow2', mode: 'existing' }, 60_000);
  }

  get hasExited(): boolean {
    return this.exitInfo !== undefined;
  }

  static async start(options: VmStartOptions): Promise<Vm> {
    installSignalHandlers();
    const { spec } = options;
    if (spec.efiVars && spec.firmware?.vars && !existsSync(spec.efiVars)) copyFileSync(spec.firmware.vars, spec.efiVars);
    // A port can be taken between choosing and QEMU binding it (by a program that is not PIM):
    // QEMU then refuses to start, and we try again with another port.
    for (let attempt = 1; ; attempt++) {
      const lease = options.forwardSsh ? await leasePort() : undefined;
      // unix socket paths are limited to ~100 bytes: keep the QMP socket in a short temp dir.
      const runDir = mkdtempSync(join(tmpdir(), 'pim-vm-'));
      liveRunDirs.add(runDir);
      const qmpSocket = join(runDir, 'qmp.sock');
      const guestAgentSocket = options.guestAgent ? join(runDir, 'qga.sock') : undefined;
      const command = qemuCommand({ ...spec, sshPort: lease?.port, qmpSocket, guestAgentSocket });
      const child = spawnManaged(command.binary, command.args, { stdio: ['ignore', 'ignore', 'pipe'], log: options.log });
      let stderr = '';
      child.stderr?.setEncoding('utf8');
      child.stderr?.on('data', (chunk: string) => {
        stderr += chunk;
        for (const line of chunk.split('\n')) if (line.trim()) options.onStderr?.(line);
      });
      const exited = new Promise<VmExit>((resolve) => {
        child.once('exit', (code, signal) => resolve({ code, signal }));
        child.once('error', () => resolve({ code: 127, signal: null }));
      });
      const earlyExit = exited.then((info) => ({ kind: 'exit' as const, info }));
      const connected = QmpClient.connect(qmpSocket, 30_000).then(
        (qmp) => ({ kind: 'qmp' as const, qmp }),
        (err: unknown) => ({ kind: 'error' as const, err }),
      );
      const first = await Promise.race([connected, earlyExit]);
      if (first.kind === 'qmp') return new Vm(child, command, first.qmp, lease?.port, qmpSocket, runDir, lease, spec, exited);
      child.kill('SIGKILL');
      await exited;
      lease?.release();
      rmSync(runDir, { recursive: true, force: true });
      liveRunDirs.delete(runDir);
      const detail = stderr.trim().split('\n').slice(-2).join(' / ');
      if (/host forwarding|Address already in use/i.test(stderr) && attempt < 3) continue;
      if (first.kind === 'error') throw new WorkError(`QEMU started but its QMP socket never answered: ${detail || String(first.err)}`);
      throw new WorkError(`QEMU exited at start (code ${first.info.code ?? first.info.signal}): ${detail || 'no output'}`);
    }
  }

  /** Waits for QEMU to exit on its own; a WorkError after `timeoutMs` (QEMU keeps running). */
  async waitForExit(timeoutMs: number): Promise<VmExit> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new WorkError(`VM did not exit within ${Math.round(timeoutMs / 1000)} s`)), timeoutMs);
    });
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * ACPI power-down through QMP; if the guest has not powered off within `timeoutMs`, QMP
   * `quit`; if QEMU is still there after `quitTimeoutMs`, SIGKILL.
   */
  async stop(options: { timeoutMs?: number; quitTimeoutMs?: number } = {}): Promise<StopOutcome> {
    if (this.hasExited) return 'already-exited';
    const timeoutMs = options.timeoutMs ?? 60_000;
    try {
      await this.qmp.execute('system_powerdown');
      await this.waitForExit(timeoutMs);
      return 'acpi';
    } catch {
      if (this.hasExited) return 'acpi';
    }
    try {
      await Promise.race([this.qmp.execute('quit').catch(() => undefined), this.exited]);
      await this.waitForExit(options.quitTimeoutMs ?? 5_000);
      return 'quit';
    } catch {
      this.kill();
      await this.exited;
      return 'killed';
    }
  }

  /**
   * A hard reset, as the reset button does. A VM started with `noReboot` turns a reset into a
   * shutdown, and its firmware may reset the machine once more as it starts again (SeaBIOS
   * does, after a reset with -kernel): its reboot action stays `reset` until `endReset`, which
   * the caller calls once the guest's kernel is running again.
   */
  async reset(): Promise<void> {
    if (this.spec.noReboot) {
      // Marked first: a caller that gives up meanwhile still restores the action (endReset).
      this.resetting = true;
      await this.qmp.execute('set-action', { reboot: 'reset' });
    }
    await this.qmp.execute('system_reset');
  }

  /** After `reset`: a reboot of a `noReboot` VM is a shutdown again. */
  async endReset(): Promise<void> {
    if (!this.resetting || this.hasExited) return;
    this.resetting = false;
    await this.qmp.execute('set-action', { reboot: 'shutdown' });
  }

  kill(): void {
    if (!this.hasExited) this.child.kill('SIGKILL');
  }

  /** The serial console so far (for error messages: the last lines of an install). */
  static tail(path: string, lines = 20): string {
    if (!existsSync(path)) return '';
    return readFileSync(path, 'utf8').split('\n').slice(-lines - 1).join('\n').trimEnd();
  }

  private dispose(): void {
    this.qmp.close();
    this.lease?.release();
    rmSync(this.runDir, { recursive: true, force: true });
    liveRunDirs.delete(this.runDir);
  }
}
