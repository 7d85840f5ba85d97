import { readFileSync } from 'node:fs';
import { LineCounter, parseDocument, isNode, type Document } from 'yaml';
import { ConfigError, errorMessage } from '../errors.js';
import { isPlainObject, type PlainObject } from './merge.js';

/** A parsed YAML file that can still say on which line any value stands. */
export interface SourcedYaml {
  file: string;
  data: PlainObject;
  /** 1-based line of the value at `path`, or of its nearest parent that exists. */
  lineOf(path: readonly (string | number)[]): number | undefined;
  has(path: readonly (string | number)[]): boolean;
}

export function parseYaml(text: string, file: string): SourcedYaml {
  const lineCounter = new LineCounter();
  const doc: Document = parseDocument(text, { lineCounter, prettyErrors: true, uniqueKeys: true });
  const first = doc.errors[0];
  if (first) {
    const line = first.linePos?.[0]?.line;
    const reason = first.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '');
    throw new ConfigError(`${file}${line ? `:${line}` : ''}: malformed YAML: ${reason}`);
  }
  const data: unknown = doc.toJS({ maxAliasCount: 100 }) ?? {};
  if (!isPlainObject(data)) {
    throw new ConfigError(`${file}:1: expected a map of names to entries at the top level`);
  }
  const lineAt = (path: readonly (string | number)[]): number | undefined => {
    const node = doc.getIn(path, true);
    if (isNode(node) && node.range) return lineCounter.linePos(node.range[0]).line;
    return undefined;
  };
  return {
    file,
    data,
    has: (path) => doc.hasIn(path),
    lineOf(path) {
      for (let n = path.length; n > 0; n--) {
        const sub = path.slice(0, n);
        if (!doc.hasIn(sub)) continue;
        // A key's own line reads better than the line its (block) value starts on.
        const parent = n > 1 ? doc.getIn(sub.slice(0, -1), true) : doc.contents;
        if (parent && typeof parent === 'object' && 'items' in parent && Array.isArray(parent.items)) {
          for (const item of parent.items) {
            const key = (item as { key?: unknown }).key;
            if (isNode(key) && key.range && String((key as { value?: unknown }).value) === String(sub[n - 1])) {
              return lineCounter.linePos(key.range[0]).line;
            }
          }
        }
        return lineAt(sub);
      }
      return undefined;
    },
  };
}

export function loadYamlFile(file: string): SourcedYaml {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`${file}: cannot read: ${errorMessage(err)}`);
  }
  return parseYaml(text, file);
}
