import { WorkError, errorMessage } from '../errors.js';
import { Vm } from '../qemu/vm.js';
import { waitForSsh, type SshConnection, type SshTarget, type WaitOptions } from '../ssh/connection.js';
import { FileTail } from './build-log.js';

/** The kernel has started: its banner, the first line it prints. */
const KERNEL_BANNER = /Linux version \d/;
/**
 * The root file system's init has started (systemd, or a SysV init), or a login prompt is up.
 * An initramfs's `/init` does not count: a kernel can stall in it (loading modules, running
 * their crypto self-tests) as well as before it.
 */
export const ROOT_INIT = /systemd\[1\]: |Welcome to |Run \/sbin\/init as init process|INIT: version|login: /;
/** The kernel has handed over to an initramfs's (or the installer's) /init. */
const INITRAMFS_INIT = /Run \/init as init process/;
/** What a kernel prints when one of its CPUs or tasks is stuck: named in the message. */
export const STALL_REPORT = /soft lockup - CPU#\d+ stuck for \d+s|rcu: INFO: \S+ (?:self-)?detected stalls? on CPUs?|task \S+ blocked for more than \d+ seconds|Kernel panic - not syncing: .*/;
/**
 * What a kernel prints when something in it went wrong: a stall report, a warning or an oops (their
 * call trace), a network device whose transmit queue stopped. Under TCG on a loaded host these
 * come from the emulation, not from what the guest was asked to do.
 */
export const KERNEL_TROUBLE = new RegExp(`${STALL_REPORT.source}|Call [Tt]race:|Internal error: Oops|WARNING: CPU: \\d+ PID: \\d+ at \\S+|NETDEV WATCHDOG: .*timed out`);

/** The first console line in `text` where the kernel reported trouble (KERNEL_TROUBLE), trimmed; or undefined. */
export function kernelTrouble(text: string): string | undefined {
  for (const line of text.split('\n')) {
    if (KERNEL_TROUBLE.test(line)) return line.replace(/\r$/, '').trim();
  }
  return undefined;
}

export interface BootWatchOptions {
  /** Seconds a started kernel has to reach the root file system's init; 0 turns the watch off. */
  stallS: number;
  /** How many times a stalled boot is reset before the watch gives up. */
  resets?: number;
  /** A line for the user (a reset). */
  say: (line: string) => void;
  /** A line for the log only. */
  log?: (line: string) => void;
  /** A console line that marks the end of the kernel's boot: ROOT_INIT unless said otherwise; null: none. */
  rootInit?: RegExp | null;
  /** Another sign that the boot got through (the installer fetched its preseed). */
  reached?: () => boolean;
  /**
   * Judge a late boot as hung only on a sign of a hung kernel: a stall report, or no hand-over to
   * the initramfs's /init. Without one (an installer that runs but finds no network) the watch
   * ends, and the caller's own timeout speaks.
   */
  onlyOnKernelStall?: boolean;
  /** What the kernel is waited on to do, for messages: "start the root file system's init" by default. */
  waitingFor?: string;
  /** Called after each reset (the caller restarts its own deadlines). */
  onReset?: () => void;
  pollMs?: number;
}

/** How a watch ended: init started, no banner to judge by, no sign of a hung kernel, the VM gone, stopped, or given up. */
export type BootOutcome = 'init' | 'no banner' | 'not hung' | 'exited' | 'stopped' | 'stalled';

export interface BootWatch {
  /** Rejects (a WorkError) once the boot has stalled more often than it may be reset; never resolves. */
  readonly failed: Promise<never>;
  /** Settles when the watch ends, with why. */
  readonly outcome: Promise<BootOutcome>;
  /** How many times the VM was reset. */
  readonly resets: number;
  stop(): void;
}

/**
 * Watches a VM's serial console while it boots. A kernel that has printed its banner but has not
 * started the root file system's init within `stallS` seconds is taken as hung -- under TCG, a
 * guest kernel now and then stalls for good in early boot (RCU stalls and soft lockups in its
 * crypto self-tests, or silence after its clocksource switch), and would otherwise be waited on
 * for the whole SSH timeout -- and the VM is reset through QMP, at most `resets` times (default
 * 1); then the watch fails. Before init the root file system is still mounted read-only, so a
 * reset costs the guest nothing. A console that never shows the banner (a `quiet` kernel, a
 * console elsewhere) is not judged: the watch then ends.
 */
export function watchBoot(vm: Vm, options: BootWatchOptions): BootWatch {
  const allowed = options.resets ?? 1;
  const rootInit = options.rootInit === undefined ? ROOT_INIT : options.rootInit;
  const waitingFor = options.waitingFor ?? "start the root file system's init";
  const tail = new FileTail(vm.serialLog);
  let resets = 0;
  let attemptStarted = Date.now();
  let kernel = false;
  let initramfs = false;
  let lastReport = '';
  let done = options.stallS <= 0;
  let busy = false;
  let fail: (err: WorkError) => void = () => undefined;
  const failed = new Promise<never>((_, reject) => {
    fail = reject;
  });
  failed.catch(() => undefined);
  let settle: (outcome: BootOutcome) => void = () => undefined;
  const outcome = new Promise<BootOutcome>((resolve) => {
    settle = resolve;
  });
  const endReset = () => void vm.endReset().catch((err: unknown) => options.log?.(`boot watch: ${errorMessage(err)}`));

  /** Reads what the console printed since the last look; true once the root's init has started. */
  const readConsole = (): boolean => {
    for (const line of tail.read()) {
      if (KERNEL_BANNER.test(line)) {
        kernel = true;
        // Past the firmware: a reboot of an installer VM is a shutdown again.
        if (resets) endReset();
      }
      if (!kernel) continue;
      if (INITRAMFS_INIT.test(line)) initramfs = true;
      if (rootInit?.test(line)) return true;
      const report = STALL_REPORT.exec(line);
      if (report) lastReport = report[0];
    }
    // A login prompt ends in no newline.
    return kernel && !!rootInit?.test(tail.partial);
  };

  const check = async () => {
    if (done || busy) return;
    if (vm.hasExited) return finish('exited');
    if (readConsole() || options.reached?.()) {
      options.log?.(`boot watch: the guest kernel managed to ${waitingFor} ${Math.round((Date.now() - attemptStarted) / 1000)} s after ${resets ? 'the reset' : 'power-on'}`);
      return finish('init');
    }
    if (Date.now() - attemptStarted < options.stallS * 1000) return;
    if (!kernel) {
      options.log?.(`boot watch: no kernel banner on the console within ${options.stallS} s; not judging this boot`);
      return finish('no banner');
    }
    if (options.onlyOnKernelStall && initramfs && !lastReport) {
      options.log?.(`boot watch: the kernel has not managed to ${waitingFor} within ${options.stallS} s, but it runs /init and reported no stall; not resetting`);
      return finish('not hung');
    }
    const what = `the guest kernel did not ${waitingFor} within ${options.stallS} s (${lastReport ? `it reported: ${lastReport}` : 'no stall report on the console'})`;
    const lines = () => `; last console lines:\n${Vm.tail(vm.serialLog, 15)}`;
    if (resets >= allowed) {
      finish('stalled');
      const after = resets ? `, after ${resets} reset${resets > 1 ? 's' : ''}` : '';
      fail(new WorkError(`${what}${after} (build.boot_stall_timeout)${lines()}`));
      return;
    }
    busy = true;
    try {
      options.say(`${what}: resetting the VM (${resets + 1} of ${allowed})`);
      // The console was read just above: what follows is the next boot's, which alone counts now.
      await vm.reset();
      resets++;
      attemptStarted = Date.now();
      kernel = false;
      initramfs = false;
      lastReport = '';
      options.onReset?.();
    } catch (err) {
      if (vm.hasExited) return finish('exited');
      finish('stalled');
      fail(new WorkError(`${what} (build.boot_stall_timeout), and resetting the VM failed: ${errorMessage(err)}${lines()}`));
    } finally {
      busy = false;
    }
  };
  const timer = setInterval(() => {
    check().catch((err: unknown) => options.log?.(`boot watch: ${errorMessage(err)}`));
  }, options.pollMs ?? 1_000);
  function finish(why: BootOutcome) {
    // A second finish changes nothing: the outcome is the first reason.
    done = true;
    clearInterval(timer);
    if (resets) endReset();
    settle(why);
  }
  if (done) finish('stopped');
  void vm.exited.then(() => finish('exited'));
  return {
    failed,
    outcome,
    get resets() {
      return resets;
    },
    stop: () => finish('stopped'),
  };
}

/**
 * `waitForSsh` while a boot watch runs on the VM: a boot that stalls for good fails the wait
 * instead of being waited on to its timeout; whichever ends first stops the other.
 */
export async function waitForSshWatchingBoot(vm: Vm, target: SshTarget, wait: WaitOptions, watch: BootWatchOptions): Promise<SshConnection> {
  const watcher = watchBoot(vm, watch);
  const giveUp = new AbortController();
  try {
    return await Promise.race([watcher.failed, waitForSsh(target, { ...wait, signal: wait.signal ? AbortSignal.any([wait.signal, giveUp.signal]) : giveUp.signal })]);
  } finally {
    watcher.stop();
    giveUp.abort();
  }
}
