#!/usr/bin/env node
// The `pim` executable: compiled JavaScript only, so start-up pays for no TypeScript loader.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const main = new URL('../dist/src/cli/main.js', import.meta.url);
if (!existsSync(fileURLToPath(main))) {
  console.error('pim: not built yet; run `npm install && npm run build` in the package directory');
  process.exit(2);
}
const { run } = await import(main.href);
await run(process.argv);
