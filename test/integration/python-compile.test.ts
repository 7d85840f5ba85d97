// pim-prepare's background byte-compiling: the three shell scripts it writes into the guest, run
// here as they are (taken out of assets/guest/prepare.sh) with their paths moved into a temp dir
// and stand-ins for Debian's py3compile and py3clean.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { backgroundCompileFailure } from '../../src/builder/local-steps.js';
import { repoRoot } from '../helpers/env.js';

const PREPARE = readFileSync(join(repoRoot, 'assets', 'guest', 'prepare.sh'), 'utf8');

interface Box {
  dir: string;
  run(script: 'py3compile' | 'py3clean' | 'wait-python-compile', ...args: string[]): { status: number | null; stdout: string; stderr: string };
  /** Lines the stand-ins wrote, in order. */
  events(): string[];
  queue(): string[];
}

/** pim-prepare's scripts in a temp dir: /usr/lib/pim-build → DIR/lib, the queue → DIR/queue, the real commands → stand-ins. */
function box(realCompile: string | undefined): Box {
  const dir = mkdtempSync(join(tmpdir(), 'pim-pycompile-'));
  const lib = join(dir, 'lib');
  mkdirSync(lib);
  for (const name of ['py3compile', 'py3clean', 'wait-python-compile']) {
    const m = new RegExp(`cat > /usr/lib/pim-build/${name} <<'SH'\\n([\\s\\S]*?)\\nSH\\n`).exec(PREPARE);
    assert.ok(m, `prepare.sh writes /usr/lib/pim-build/${name}`);
    const body = m[1]!
      .replaceAll('/usr/bin/py3compile.pim-real', join(dir, 'real-py3compile'))
      .replaceAll('/usr/bin/py3clean.pim-real', join(dir, 'real-py3clean'))
      .replaceAll('/run/pim-python-compile', join(dir, 'queue'))
      .replaceAll('/usr/lib/pim-build/', `${lib}/`);
    assert.doesNotMatch(body, /\/usr\/|\/run\//, `${name}: every path moved into the test's dir`);
    writeFileSync(join(lib, name), `${body}\n`, { mode: 0o755 });
  }
  const events = join(dir, 'events');
  writeFileSync(events, '');
  if (realCompile !== undefined) {
    writeFileSync(join(dir, 'real-py3compile'), `#!/bin/sh\nEVENTS=${events}\nGO=${join(dir, 'go')}\n${realCompile}\n`, { mode: 0o755 });
  }
  writeFileSync(join(dir, 'real-py3clean'), `#!/bin/sh\necho "clean $*" >> ${events}\n`, { mode: 0o755 });
  return {
    dir,
    run: (script, ...args) => {
      const r = spawnSync(join(lib, script), args, { encoding: 'utf8', timeout: 30_000 });
      return { status: r.status, stdout: r.stdout, stderr: r.stderr };
    },
    events: () => readFileSync(events, 'utf8').split('\n').filter(Boolean),
    queue: () => (existsSync(join(dir, 'queue')) ? readdirSync(join(dir, 'queue')).filter((f) => f !== 'lock') : []),
  };
}

// A py3compile that starts, then waits until the test creates the file "go" (a condition, not a
// sleep), then ends.
// (Or until the test's dir is gone: no job outlives a failed test.)
const WAITS_FOR_GO = 'echo "start $*" >> "$EVENTS"\nwhile [ ! -e "$GO" ] && [ -d "${GO%/*}" ]; do sleep 0.05; done\necho "end $*" >> "$EVENTS"';

test('py3compile is queued and returns at once; the jobs run one at a time; the waiter waits for all of them and forgets them', () => {
  const b = box(WAITS_FOR_GO);
  try {
    assert.equal(b.run('py3compile', '-p', 'python3-a').status, 0);
    assert.equal(b.run('py3compile', '-p', 'python3-b', '/usr/share/b').status, 0);
    // Both returned while the first job is still running; the second has not started.
    for (let i = 0; i < 200 && !b.events().includes('start -p python3-a') && !b.events().includes('start -p python3-b /usr/share/b'); i++) spawnSync('sleep', ['0.05']);
    assert.equal(b.events().filter((e) => e.startsWith('start')).length, 1, `one job at a time: ${b.events().join(' | ')}`);
    assert.equal(b.events().some((e) => e.startsWith('end')), false);
    writeFileSync(join(b.dir, 'go'), '');
    const waited = b.run('wait-python-compile', '--report');
    assert.equal(waited.status, 0, waited.stdout);
    assert.equal(waited.stdout, '');
    assert.deepEqual(b.events().filter((e) => e.startsWith('end')).sort(), ['end -p python3-a', 'end -p python3-b /usr/share/b']);
    assert.deepEqual(b.queue(), [], 'finished jobs forgotten');
  } finally {
    rmSync(b.dir, { recursive: true, force: true });
  }
});

test("the queued job keeps none of the postinst's open files: debconf's and dpkg's pipes close when the postinst ends", async () => {
  const b = box(WAITS_FOR_GO);
  try {
    // Extra pipes as a postinst run under debconf (fd 3) and dpkg (its status fd, past 9) has them.
    const child = spawn(join(b.dir, 'lib', 'py3compile'), ['-p', 'python3-a'], { stdio: ['ignore', 'pipe', 'pipe', 'pipe', ...Array<'ignore'>(8).fill('ignore'), 'pipe'] });
    const closed = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), 15_000);
      child.on('close', () => {
        clearTimeout(timer);
        resolve(true);
      });
    });
    // Still running: the job has not been told to go on.
    assert.equal(existsSync(join(b.dir, 'go')), false);
    writeFileSync(join(b.dir, 'go'), '');
    assert.ok(closed, 'every pipe the wrapper was given is closed while its job runs');
    assert.equal(child.exitCode, 0);
    assert.equal(b.run('wait-python-compile', '--report').status, 0);
    assert.deepEqual(b.events(), ['start -p python3-a', 'end -p python3-a']);
  } finally {
    rmSync(b.dir, { recursive: true, force: true });
  }
});

test('a queued py3compile that fails: the waiter names it with its last lines and exits 1, once', () => {
  const b = box('echo "Sorry: IndentationError: unexpected indent (broken.py, line 2)"\nexit 3');
  try {
    assert.equal(b.run('py3compile', '-p', 'python3-broken').status, 0, 'the postinst goes on');
    const waited = b.run('wait-python-compile', '--report');
    assert.equal(waited.status, 1);
    const lines = waited.stdout.trim().split('\n');
    assert.equal(lines[0], 'pim: py3compile -p python3-broken, run in the background, failed (exit 3); its last lines:');
    assert.equal(lines[1], 'Sorry: IndentationError: unexpected indent (broken.py, line 2)');
    assert.equal(backgroundCompileFailure(lines[0]!), 'py3compile -p python3-broken, run in the background, failed (exit 3)');
    assert.equal(backgroundCompileFailure('pim: something else'), undefined);
    // Reported once: the next script's wait starts clean.
    assert.deepEqual(b.run('wait-python-compile', '--report'), { status: 0, stdout: '', stderr: '' });
  } finally {
    rmSync(b.dir, { recursive: true, force: true });
  }
});

test('py3clean waits for the queued compiles before it runs, and leaves a failure for the report', () => {
  const b = box(`${WAITS_FOR_GO}\nexit 2`);
  try {
    assert.equal(b.run('py3compile', '-p', 'python3-a').status, 0);
    // py3clean in the background (it blocks), then "go": the compile ends before the clean starts.
    const clean = spawnSync('sh', ['-c', `${join(b.dir, 'lib', 'py3clean')} -p python3-a & sleep 0.3; touch ${join(b.dir, 'go')}; wait`], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(clean.status, 0, clean.stderr);
    assert.deepEqual(b.events(), ['start -p python3-a', 'end -p python3-a', 'clean -p python3-a']);
    const waited = b.run('wait-python-compile', '--report');
    assert.equal(waited.status, 1, 'the failure is still reported after py3clean waited');
    assert.match(waited.stdout, /py3compile -p python3-a, run in the background, failed \(exit 2\)/);
  } finally {
    rmSync(b.dir, { recursive: true, force: true });
  }
});

test('without a real py3compile (python3-minimal not installed) the wrapper does nothing, as if there were none', () => {
  const b = box(undefined);
  try {
    assert.equal(b.run('py3compile', '-p', 'python3-a').status, 0);
    assert.deepEqual(b.queue(), []);
    assert.deepEqual(b.run('wait-python-compile', '--report'), { status: 0, stdout: '', stderr: '' });
  } finally {
    rmSync(b.dir, { recursive: true, force: true });
  }
});
