/** Quotes a value for a POSIX shell command line: every value PIM puts into one goes through here. */
export function shq(value: unknown): string {
  const text = String(value ?? '');
  if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(text)) return text;
  return `'${text.replace(/'/g, `'\\''`)}'`;
}

export function shellJoin(args: readonly unknown[]): string {
  return args.map(shq).join(' ');
}
