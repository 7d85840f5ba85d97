/**
 * Secrets never reach a log, an error or a dry run: fields whose name says password, secret,
 * token or key material, and credentials inside URLs (`http://user:pass@proxy:3128`).
 */
export const MASK = '********';

const SECRET_FIELD = /(pass(word|wd)?|secret|token|private_?key|credentials?|api_?key)(_crypted|_hash)?$/i;
/** `scheme://user:password@` — the password part. */
const URL_CREDENTIALS = /([a-z][a-z0-9+.-]*:\/\/[^\s:/@]*:)([^\s@/]+)(@)/gi;

export function isSecretField(name: string): boolean {
  return SECRET_FIELD.test(name);
}

/** `text` with every URL's password replaced by the mask. */
export function maskUrlCredentials(text: string): string {
  return text.replace(URL_CREDENTIALS, `$1${MASK}$3`);
}

/** A copy of `value` with secret fields masked and URL credentials masked in every string. */
export function maskSecrets<T>(value: T): T {
  if (typeof value === 'string') return maskUrlCredentials(value) as T;
  if (Array.isArray(value)) return value.map((v) => maskSecrets(v)) as T;
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [key, v] of Object.entries(value)) {
      out[key] = isSecretField(key) && v !== '' && v !== null && v !== undefined ? MASK : maskSecrets(v);
    }
    return out as T;
  }
  return value;
}

/** Every secret string inside `value` (secret fields, URL passwords), for masking free text such as logs. */
export function secretsOf(value: unknown): string[] {
  const found = new Set<string>();
  const walk = (v: unknown, key?: string) => {
    if (typeof v === 'string') {
      if (key && isSecretField(key) && v.length >= 3) found.add(v);
      for (const m of v.matchAll(URL_CREDENTIALS)) if (m[2]!.length >= 3) found.add(m[2]!);
      return;
    }
    if (typeof v === 'number' && key && isSecretField(key)) found.add(String(v));
    if (Array.isArray(v)) v.forEach((item) => walk(item, key));
    else if (v && typeof v === 'object') for (const [k, item] of Object.entries(v)) walk(item, k);
  };
  walk(value);
  // Longest first, so that a secret containing another is masked whole.
  return [...found].sort((a, b) => b.length - a.length);
}

/** `text` with each of `secrets` and every URL password masked. */
export function maskText(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const secret of secrets) out = out.split(secret).join(MASK);
  return maskUrlCredentials(out);
}
