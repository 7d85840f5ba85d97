import type { StepReporter } from '../builder/steps.js';

/**
 * Step progress: one line when a step starts and one when it ends, with its elapsed time. On a
 * terminal a spinner shows that a long step is alive; elsewhere a plain "still running" line
 * every minute.
 */
export function stepReporter(stream: NodeJS.WriteStream = process.stderr): StepReporter & { note(line: string): void } {
  const frames = ['|', '/', '-', '\\'];
  let timer: NodeJS.Timeout | undefined;
  let current: { name: string; t0: number } | undefined;
  let spinnerShown = false;
  const clearSpinner = () => {
    if (spinnerShown) stream.write('\r\x1b[K');
    spinnerShown = false;
  };
  return {
    start(name) {
      current = { name, t0: Date.now() };
      stream.write(`==> ${name}\n`);
      let tick = 0;
      timer = setInterval(
        () => {
          if (!current) return;
          const elapsed = Math.round((Date.now() - current.t0) / 1000);
          if (stream.isTTY) {
            stream.write(`\r    ${frames[tick++ % frames.length]} ${current.name} ${elapsed} s\x1b[K`);
            spinnerShown = true;
          } else {
            stream.write(`    ${current.name}: still running (${elapsed} s)\n`);
          }
        },
        stream.isTTY ? 250 : 60_000,
      );
    },
    end(name, seconds, ok) {
      clearInterval(timer);
      clearSpinner();
      current = undefined;
      stream.write(`<== ${name} ${ok ? 'done' : 'FAILED'} in ${seconds.toFixed(1)} s\n`);
    },
    note(line) {
      clearSpinner();
      stream.write(`    ${line}\n`);
    },
  };
}

/** Step progress for one of several builds running at once: plain lines, each with `prefix`. */
export function prefixedReporter(prefix: string, stream: NodeJS.WriteStream = process.stderr): StepReporter & { note(line: string): void } {
  return {
    start(name) {
      stream.write(`${prefix}==> ${name}\n`);
    },
    end(name, seconds, ok) {
      stream.write(`${prefix}<== ${name} ${ok ? 'done' : 'FAILED'} in ${seconds.toFixed(1)} s\n`);
    },
    note(line) {
      stream.write(`${prefix}    ${line}\n`);
    },
  };
}
