import type { BuildLog } from './build-log.js';
import type { BuildPlan } from './plan.js';
import type { StepReporter, StepTiming } from './steps.js';

/** One build as the manager hands it to a builder: the plan and where the result must go. */
export interface BuildJob {
  plan: BuildPlan;
  /** Unique per build: names the work dir, the VMs and the image file. */
  buildId: string;
  /** This build's own work dir (the builder makes it; nobody else uses it). */
  workDir: string;
  /** Where the finished qcow2 must be when `build` resolves; the manager registers it from there. */
  outputPath: string;
  keepFailed: boolean;
  verbose: boolean;
  /** --force: rebuild from scratch, reusing no cached layer. */
  force: boolean;
  log: BuildLog;
  /** A line for the user (also logged). */
  say(line: string): void;
  reporter: StepReporter;
  /** A progress bar for long transfers (uploads and downloads of a remote build). */
  progress?: (label: string) => { update(done: number, total: number | undefined): void; done(): void };
  signal: AbortSignal;
}

/** What a builder made: a complete image file at the job's `outputPath`. */
export interface BuiltImage {
  path: string;
  sha256: string;
  virtualSize: number;
  fileSize: number;
  timings: StepTiming[];
  /** The builder's name as the registry records it: `local` or a remote's name. */
  builder: string;
  /** When the packages were brought up to date in the guest, if they were. */
  patchedAt?: string;
  /** Things the user should know about the image (e.g. a kept build user). */
  warnings: string[];
}

/**
 * A builder turns one plan into one image file: the local builder with QEMU on this machine, a
 * remote builder over SSH on another. Registration is not its business: the manager registers
 * every image the same way, whoever built it.
 */
export interface Builder {
  readonly name: string;
  build(job: BuildJob): Promise<BuiltImage>;
}
