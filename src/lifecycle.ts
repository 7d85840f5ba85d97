import { killAllChildren } from './process.js';

/**
 * Ctrl+C and SIGTERM. The first signal aborts `interruptSignal`: code that can clean up
 * gracefully (a build runs its steps' cleanups) listens to it and exits 130 itself. If nobody
 * listens, or a second signal arrives, every child process is killed and PIM exits 130 at once.
 * Either way no QEMU outlives PIM.
 */
const controller = new AbortController();
export const interruptSignal: AbortSignal = controller.signal;
let graceful = 0;
let installed = false;

export function installSignalHandlers(): void {
  if (installed) return;
  installed = true;
  const onSignal = (signal: NodeJS.Signals) => {
    if (controller.signal.aborted || graceful === 0) {
      killAllChildren();
      process.exit(130);
    }
    controller.abort(new Error(`interrupted by ${signal}`));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('SIGHUP', onSignal);
  // A PIM started by another PIM over SSH (a remote build) has no terminal to lose: its
  // lifeline is its stdin. When the SSH channel closes -- the caller pressed Ctrl+C, or the
  // connection dropped -- stdin ends, and that counts as an interrupt.
  if (process.env['PIM_STDIN_LIFELINE'] === '1') {
    process.stdin.on('end', () => onSignal('SIGHUP'));
    process.stdin.on('error', () => onSignal('SIGHUP'));
    process.stdin.resume();
  }
}

/** Declares that the caller handles interrupts itself while `fn` runs. */
export async function withGracefulInterrupts<T>(fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  installSignalHandlers();
  graceful++;
  try {
    return await fn(interruptSignal);
  } finally {
    graceful--;
  }
}
