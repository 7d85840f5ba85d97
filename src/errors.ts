/**
 * Typed errors. Exactly one place (src/cli/main.ts) turns them into a message and an exit code;
 * everything else throws. Exit codes follow SPEC: 1 the work failed, 2 bad usage or config,
 * 130 interrupted.
 */
export class PimError extends Error {
  constructor(
    message: string,
    readonly exitCode: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** Bad usage or bad configuration: exit 2. */
export class ConfigError extends PimError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 2, options);
  }
}

/** The work itself failed (a download, a build, a deploy): exit 1. */
export class WorkError extends PimError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 1, options);
  }
}

/** Ctrl+C or SIGTERM: exit 130. */
export class InterruptedError extends PimError {
  constructor(message = 'interrupted') {
    super(message, 130);
  }
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
