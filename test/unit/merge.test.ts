import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkSafeName, deepMerge, resolveNamed } from '../../src/config/merge.js';
import { ConfigError } from '../../src/errors.js';

test('deepMerge merges maps recursively and replaces scalars and arrays', () => {
  const base = { a: 1, nested: { x: 1, y: { deep: true, keep: 'yes' } }, list: [1, 2, 3] };
  const over = { a: 2, nested: { y: { deep: false } }, list: [9] };
  assert.deepEqual(deepMerge(base, over), { a: 2, nested: { x: 1, y: { deep: false, keep: 'yes' } }, list: [9] });
  assert.deepEqual(base, { a: 1, nested: { x: 1, y: { deep: true, keep: 'yes' } }, list: [1, 2, 3] }, 'base untouched');
});

test('deepMerge: a map replaces a scalar and a scalar replaces a map', () => {
  assert.deepEqual(deepMerge({ a: 1 }, { a: { b: 2 } }), { a: { b: 2 } });
  assert.deepEqual(deepMerge({ a: { b: 2 } }, { a: 'flat' }), { a: 'flat' });
});

test('resolveNamed: NAME is default deep-merged under NAME; default alone for default or empty', () => {
  const entries = { default: { user: 'a', build: { memory: 1, cpus: 2 } }, dev: { build: { memory: 4 } } };
  assert.deepEqual(resolveNamed(entries, 'dev', 'profile'), { user: 'a', build: { memory: 4, cpus: 2 } });
  assert.deepEqual(resolveNamed(entries, 'default', 'profile'), entries.default);
  assert.deepEqual(resolveNamed(entries, '', 'profile'), entries.default);
});

test('resolveNamed: an unknown name is an error listing the known names, not default', () => {
  const entries = { default: { a: 1 }, web: { b: 2 }, db: {} };
  assert.throws(
    () => resolveNamed(entries, 'nope', 'profile'),
    (err: unknown) => err instanceof ConfigError && err.exitCode === 2 && /unknown profile 'nope'; known profiles: db, default, web/.test(err.message),
  );
  assert.throws(() => resolveNamed(entries, 'toString', 'profile'), ConfigError, 'prototype names are not entries');
});

test('resolveNamed works without a default entry', () => {
  assert.deepEqual(resolveNamed({ only: { a: 1 } }, 'only', 'target'), { a: 1 });
});

test('checkSafeName refuses path separators and ..', () => {
  assert.equal(checkSafeName('k8s-node', 'profile'), 'k8s-node');
  for (const bad of ['../etc', 'a/b', '..', '', 'x..y']) assert.throws(() => checkSafeName(bad, 'profile'), ConfigError);
});
