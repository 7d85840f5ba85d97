import { IsoCatalog } from '../iso/catalog.js';
import { IsoStore } from '../iso/store.js';
import { WorkError } from '../errors.js';
import { projectFrom } from './context.js';
import type { GlobalOptions } from './main.js';
import { formatBytes, printJson, println, progressReporter, table } from './output.js';

function open(opts: GlobalOptions) {
  const project = projectFrom(opts);
  return { catalog: IsoCatalog.load(project), store: new IsoStore(project.isoDir()) };
}

export function list(opts: GlobalOptions & { json?: boolean }): void {
  const { catalog, store } = open(opts);
  const rows = catalog.list().map((entry) => ({ ...entry, ...store.status(entry) }));
  if (opts.json) {
    printJson(rows);
    return;
  }
  println(`iso_dir: ${store.dir}`);
  println(
    table([
      ['NAME', 'ARCH', 'DISTRO', 'VERSION', 'STATE'],
      ...rows.map((r) => [r.name, r.arch, r.distro, r.version, r.state + (r.bytes !== undefined ? ` (${formatBytes(r.bytes)})` : '')]),
    ]),
  );
}

export async function download(opts: GlobalOptions, name: string): Promise<void> {
  const { catalog, store } = open(opts);
  const entry = catalog.get(name);
  const progress = progressReporter(`downloading ${entry.filename}`);
  const result = await store.download(entry, (received, total) => progress.update(received, total), {
    onWait: (holder) => process.stderr.write(`${name}: another download of it is running (${holder}); waiting for it\n`),
  });
  progress.done();
  println(result.skipped ? `${name}: already downloaded and verified: ${result.path}` : `${name}: downloaded and verified: ${result.path}`);
}

export async function verify(opts: GlobalOptions, name: string): Promise<void> {
  const { catalog, store } = open(opts);
  const entry = catalog.get(name);
  const result = await store.verify(entry);
  if (!result.ok) throw new WorkError(`${name}: checksum mismatch: expected ${result.expected}, got ${result.actual}`);
  println(`${name}: verified (${result.expected})`);
}
