import { WorkError, errorMessage } from '../../errors.js';

export interface RetryCounter {
  retries: number;
}

interface AwsError {
  name?: string;
  message?: string;
  code?: string;
  $metadata?: { httpStatusCode?: number };
}

const THROTTLING = new Set(['RequestThrottledException', 'ThrottlingException', 'Throttling', 'RequestLimitExceeded', 'TooManyRequestsException', 'SlowDown']);
const TRANSIENT = new Set(['InternalServerException', 'InternalError', 'ServiceUnavailable', 'TimeoutError', 'RequestTimeout']);

function retryable(err: unknown): boolean {
  const e = err as AwsError;
  if (e.name && (THROTTLING.has(e.name) || TRANSIENT.has(e.name))) return true;
  if ((e.$metadata?.httpStatusCode ?? 0) >= 500) return true;
  return /ECONNRESET|ECONNREFUSED|EPIPE|socket hang up/.test(e.code ?? e.message ?? '');
}

/** One or two lines for an AWS error, naming the IAM action where a permission is missing. */
export function describeAwsError(action: string, err: unknown): WorkError {
  const e = err as AwsError;
  const name = e.name ?? 'Error';
  // EC2 appends an "Encoded authorization failure message" blob to UnauthorizedOperation: not for a terminal.
  const message = (e.message ?? errorMessage(err)).split('\n')[0]!.replace(/\s*Encoded authorization failure message:.*$/, '');
  if (/AccessDenied|UnauthorizedOperation|Forbidden/.test(name)) {
    return new WorkError(`AWS refused ${action}: the credentials lack the IAM permission '${action}' (${name}: ${message})`);
  }
  if (name === 'CredentialsProviderError' || /Could not load credentials/i.test(message)) {
    return new WorkError(`no AWS credentials for ${action}: set the target's 'profile', AWS_PROFILE, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (${message})`);
  }
  if (/Expired(Token)?|RequestExpired/.test(name)) return new WorkError(`the AWS credentials have expired (${action}: ${message}); renew them (e.g. aws sso login) and run again`);
  if (/QuotaExceeded|LimitExceeded/.test(name) && !THROTTLING.has(name)) return new WorkError(`an AWS quota stops ${action}: ${name}: ${message}`);
  if (/ENOTFOUND|getaddrinfo/.test(message)) {
    const hint = action.startsWith('ebs:') ? 'is the region right, and does it offer the EBS direct APIs?' : 'is the region (or the endpoint) right?';
    return new WorkError(`cannot reach the AWS endpoint for ${action} (${message}): ${hint}`);
  }
  return new WorkError(`${action} failed: ${name}: ${message}`);
}

/**
 * Runs an AWS call, retrying throttling and server errors with exponential back-off and jitter
 * (the SDK's own retries are off, so every retry is counted and logged); other errors become a
 * WorkError that names the IAM action. Throttling has a budget of its own, larger than that of
 * server errors: it says "slower", not "broken", and `onThrottled` lets the caller slow down.
 */
export async function withRetries<T>(
  action: string,
  call: () => Promise<T>,
  counter: RetryCounter,
  options: { signal: AbortSignal; log: (line: string) => void; attempts?: number; throttledAttempts?: number; onThrottled?: () => void },
): Promise<T> {
  const attempts = options.attempts ?? 8;
  const throttledAttempts = options.throttledAttempts ?? 20;
  let failures = 0;
  let throttles = 0;
  for (let attempt = 1; ; attempt++) {
    try {
      return await call();
    } catch (err) {
      if (options.signal.aborted) throw err;
      if (!retryable(err)) throw describeAwsError(action, err);
      const throttled = isThrottling(err);
      if (throttled) throttles++;
      else failures++;
      if (failures >= attempts || throttles >= throttledAttempts) throw describeAwsError(action, err);
      if (throttled) options.onThrottled?.();
      counter.retries++;
      const delay = Math.min(5_000, 100 * 2 ** (Math.min(attempt, 16) - 1)) * (0.5 + Math.random() / 2);
      const budget = throttled ? `throttled ${throttles} of ${throttledAttempts}` : `attempt ${failures} of ${attempts}`;
      options.log(`${action}: ${(err as AwsError).name ?? 'error'} (${budget}); retrying in ${Math.round(delay)} ms`);
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}

function isThrottling(err: unknown): boolean {
  return THROTTLING.has((err as AwsError).name ?? '');
}

/** A single AWS call with PIM's error message (no retries). */
export async function awsCall<T>(action: string, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (err) {
    throw describeAwsError(action, err);
  }
}
