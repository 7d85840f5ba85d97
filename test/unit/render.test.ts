import { test } from 'node:test';
import assert from 'node:assert/strict';
import { renderString } from '../../src/profile/render.js';
import { ConfigError } from '../../src/errors.js';
import { shq } from '../../src/shell.js';

test('ERB-style tags render values unescaped and run code', () => {
  const out = renderString('user=<%= user %>\n<% if (admin) { %>sudo<% } %>\n', { user: 'a<b>&"c"', admin: true });
  assert.equal(out, 'user=a<b>&"c"\nsudo\n');
});

test('a missing value is an error naming the template, its line and the value', () => {
  assert.throws(
    () => renderString('line one\nd-i passwd/username string <%= username %>\n', {}, '/x/preseeds.d/default.cfg.ejs'),
    (err: unknown) =>
      err instanceof ConfigError && err.message === "/x/preseeds.d/default.cfg.ejs:2: the template uses 'username', which the profile does not define",
  );
});

test('a template syntax error names the template', () => {
  assert.throws(() => renderString('<% if (x) { %>', { x: 1 }, '/t.ejs'), (err: unknown) => err instanceof ConfigError && err.message.startsWith('/t.ejs'));
});

test('null values render as empty strings', () => {
  assert.equal(renderString('proxy=<%= http_proxy %>.', { http_proxy: null }), 'proxy=.');
});

test('shq quotes values for a shell command line', () => {
  assert.equal(shq('plain-value_1.2'), 'plain-value_1.2');
  assert.equal(shq("it's; rm -rf /"), `'it'\\''s; rm -rf /'`);
  assert.equal(shq(''), "''");
  assert.equal(shq('$(id)'), "'$(id)'");
});
