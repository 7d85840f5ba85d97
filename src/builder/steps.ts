import { InterruptedError, errorMessage } from '../errors.js';
import type { BuildLog } from './build-log.js';

export type Outcome = 'success' | 'failure' | 'interrupted';

export interface StepContext {
  signal: AbortSignal;
  log: BuildLog;
  /** Prints a line for the user (and logs it). */
  say(line: string): void;
  verbose: boolean;
}

/**
 * One phase of a build, as in Packer's steps: `run` does the work; `cleanup` undoes what `run`
 * started and is called -- in reverse order, for every step that started -- whether the build
 * succeeded, failed or was interrupted.
 */
export interface Step<S> {
  name: string;
  run(state: S, ctx: StepContext): Promise<void>;
  cleanup?(state: S, ctx: StepContext, outcome: Outcome): Promise<void> | void;
}

export interface StepTiming {
  name: string;
  seconds: number;
}

export interface StepReporter {
  start(name: string): void;
  end(name: string, seconds: number, ok: boolean): void;
}

function abortPromise(signal: AbortSignal): Promise<never> {
  return new Promise((_, reject) => {
    const fail = () => reject(new InterruptedError());
    if (signal.aborted) fail();
    else signal.addEventListener('abort', fail, { once: true });
  });
}

export async function runSteps<S>(steps: Step<S>[], state: S, ctx: StepContext, reporter: StepReporter): Promise<StepTiming[]> {
  const started: Step<S>[] = [];
  const timings: StepTiming[] = [];
  let outcome: Outcome = 'success';
  let failure: unknown;
  const interrupted = abortPromise(ctx.signal);
  interrupted.catch(() => undefined);
  try {
    for (const step of steps) {
      if (ctx.signal.aborted) throw new InterruptedError();
      started.push(step);
      reporter.start(step.name);
      ctx.log.line(`== step ${step.name}: start`);
      const t0 = Date.now();
      try {
        await Promise.race([step.run(state, ctx), interrupted]);
      } catch (err) {
        const seconds = (Date.now() - t0) / 1000;
        reporter.end(step.name, seconds, false);
        ctx.log.line(`== step ${step.name}: ${err instanceof InterruptedError ? 'interrupted' : `failed: ${errorMessage(err)}`} after ${seconds.toFixed(1)} s`);
        throw err;
      }
      const seconds = (Date.now() - t0) / 1000;
      timings.push({ name: step.name, seconds });
      reporter.end(step.name, seconds, true);
      ctx.log.line(`== step ${step.name}: done in ${seconds.toFixed(1)} s`);
    }
  } catch (err) {
    outcome = err instanceof InterruptedError ? 'interrupted' : 'failure';
    failure = err;
  }
  for (const step of started.reverse()) {
    if (!step.cleanup) continue;
    try {
      await step.cleanup(state, ctx, outcome);
    } catch (err) {
      ctx.log.line(`== cleanup of ${step.name} failed: ${errorMessage(err)}`);
    }
  }
  if (failure) throw failure;
  return timings;
}
