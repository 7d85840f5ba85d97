import { cpSync, existsSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { builtinAssetsDir, pimPaths } from '../config/paths.js';
import type { GlobalOptions } from './main.js';
import { println } from './output.js';

/** PIM's own guest scripts (assets/guest) are not configuration: they are never copied or overridden. */
const NOT_CONFIG = new Set(['guest']);

/** Copies the shipped defaults into the global config dir, or into --project DIR; never overwrites. */
export default function init(opts: GlobalOptions): void {
  const target = opts.project ?? pimPaths().configDir;
  const source = builtinAssetsDir();
  let copied = 0;
  let kept = 0;
  const walk = (dir: string) => {
    for (const name of readdirSync(dir)) {
      if (dir === source && NOT_CONFIG.has(name)) continue;
      const from = join(dir, name);
      const rel = relative(source, from);
      const to = join(target, rel);
      if (statSync(from).isDirectory()) {
        mkdirSync(to, { recursive: true });
        walk(from);
      } else if (existsSync(to)) {
        kept++;
        println(`kept     ${to}`);
      } else {
        cpSync(from, to);
        copied++;
        println(`created  ${to}`);
      }
    }
  };
  mkdirSync(target, { recursive: true });
  walk(source);
  println(`${copied} file(s) created, ${kept} existing file(s) left untouched in ${target}`);
}
