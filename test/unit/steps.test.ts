import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { runSteps, type Step } from '../../src/builder/steps.js';
import { BuildLog } from '../../src/builder/build-log.js';
import { InterruptedError } from '../../src/errors.js';
import { canonicalJson, changedInputs, computeCacheKey } from '../../src/builder/cache-key.js';

function recorder() {
  const events: string[] = [];
  const step = (name: string, run: () => Promise<void> = async () => undefined): Step<unknown> => ({
    name,
    run: async () => {
      events.push(`run ${name}`);
      await run();
    },
    cleanup: (_s, _c, outcome) => {
      events.push(`cleanup ${name} ${outcome}`);
    },
  });
  const ctx = (signal = new AbortController().signal) => ({ signal, log: new BuildLog(join(tmpdir(), `pim-steps-${process.pid}.log`)), say: () => undefined, verbose: false });
  const reporter = { start: () => undefined, end: () => undefined };
  return { events, step, ctx, reporter };
}

test('cleanups run in reverse order after success', async () => {
  const { events, step, ctx, reporter } = recorder();
  const timings = await runSteps([step('a'), step('b'), step('c')], {}, ctx(), reporter);
  assert.deepEqual(timings.map((t) => t.name), ['a', 'b', 'c']);
  assert.deepEqual(events, ['run a', 'run b', 'run c', 'cleanup c success', 'cleanup b success', 'cleanup a success']);
});

test('a failing step stops the build; only started steps are cleaned up, in reverse, and the error is rethrown', async () => {
  const { events, step, ctx, reporter } = recorder();
  await assert.rejects(
    runSteps([step('a'), step('b', async () => { throw new Error('boom'); }), step('c')], {}, ctx(), reporter),
    /boom/,
  );
  assert.deepEqual(events, ['run a', 'run b', 'cleanup b failure', 'cleanup a failure']);
});

test('an interrupt during a step that never returns runs the cleanups and throws InterruptedError', async () => {
  const { events, step, ctx, reporter } = recorder();
  const controller = new AbortController();
  setTimeout(() => controller.abort(), 50);
  await assert.rejects(
    runSteps([step('a'), step('b', () => new Promise(() => undefined)), step('c')], {}, ctx(controller.signal), reporter),
    InterruptedError,
  );
  assert.deepEqual(events, ['run a', 'run b', 'cleanup b interrupted', 'cleanup a interrupted']);
});

test('canonical JSON ignores key order; the cache key follows every input', () => {
  assert.equal(canonicalJson({ b: 1, a: { d: [1, 2], c: null } }), canonicalJson({ a: { c: null, d: [1, 2] }, b: 1 }));
  const base = { profile: { a: 1 }, preseedTemplate: 'p', installTemplate: 'i', scripts: [{ name: 'base', content: 'x' }], isoChecksum: 'sha256:1', arch: 'x86_64' };
  const k0 = computeCacheKey(base);
  assert.equal(computeCacheKey({ ...base, profile: { a: 1 } }).key, k0.key);
  const variants = [
    { ...base, profile: { a: 2 } },
    { ...base, preseedTemplate: 'p2' },
    { ...base, installTemplate: 'i2' },
    { ...base, scripts: [{ name: 'base', content: 'y' }] },
    { ...base, scripts: [{ name: 'base', content: 'x' }, { name: 'extra', content: '' }] },
    { ...base, isoChecksum: 'sha256:2' },
    { ...base, arch: 'arm64' },
    { ...base, formatVersion: 99 },
  ];
  const keys = new Set(variants.map((v) => computeCacheKey(v).key));
  assert.equal(keys.size, variants.length);
  assert.ok(!keys.has(k0.key));
  assert.deepEqual(changedInputs(k0.inputs, computeCacheKey(variants[3]!).inputs), ['script:base']);
  assert.deepEqual(changedInputs(k0.inputs, computeCacheKey(variants[0]!).inputs), ['profile']);
});
