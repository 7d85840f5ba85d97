import { readFileSync } from 'node:fs';
import ejs from 'ejs';
import { ConfigError, errorMessage } from '../errors.js';

/**
 * Renders an ERB-style template (`<%= value %>`, `<% code %>`) with EJS, HTML escaping off.
 * A value the template uses but `values` lacks is an error naming the template, its line
 * and the value, never an empty line in the output.
 */
export function renderTemplate(path: string, values: Record<string, unknown>): string {
  let source: string;
  try {
    source = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`${path}: cannot read template: ${errorMessage(err)}`);
  }
  return renderString(source, values, path);
}

export function renderString(source: string, values: Record<string, unknown>, path = '(template)'): string {
  try {
    return ejs.render(source, values, {
      filename: path,
      escape: (value: unknown) => (value === null || value === undefined ? '' : String(value)),
      async: false,
      cache: false,
    });
  } catch (err) {
    const message = errorMessage(err);
    const line = /^.*?:(\d+)\n/.exec(message)?.[1];
    const where = line ? `${path}:${line}` : path;
    const missing = /(\S+) is not defined\s*$/.exec(message)?.[1];
    if (missing) {
      throw new ConfigError(`${where}: the template uses '${missing}', which the profile does not define`);
    }
    const last = message.trim().split('\n').at(-1) ?? message;
    throw new ConfigError(`${where}: template error: ${last}`);
  }
}
