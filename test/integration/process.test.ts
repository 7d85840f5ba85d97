// withPipeSize: a child's pipes enlarged before it runs, or the command left as it is.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, openSync, closeSync, readFileSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { withPipeSize } from '../../src/process.js';
import { shellJoin } from '../../src/shell.js';

/** Prints the sizes of its stdin and stdout pipes (F_GETPIPE_SZ; 0 where they are not pipes). */
const REPORT = ['-e', 'print STDERR fcntl(STDIN, 1032, 0) + 0, " ", fcntl(STDOUT, 1032, 0) + 0, "\\n"'];

test('withPipeSize enlarges a child\'s stdin and stdout pipes to the size asked, within the system\'s limit', { skip: process.platform !== 'linux' }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'pim-pipes-'));
  try {
    const fifo = join(dir, 'out');
    execFileSync('mkfifo', [fifo]);
    const out = openSync(fifo, 'r+');
    const inner = openSync(fifo, 'r+');
    try {
      const max = Number(readFileSync('/proc/sys/fs/pipe-max-size', 'utf8'));
      const want = Math.min(1024 * 1024, max);
      assert.ok(want > 65536, `this machine lets a pipe grow past 64 KiB (pipe-max-size ${max})`);
      // stdin a real pipe too (Node's 'pipe' is a socket pair): the shell's.
      const [command, args] = withPipeSize(1024 * 1024, 'perl', REPORT);
      assert.equal(command, 'perl');
      const shell = `echo | ${shellJoin([command, ...args])}`;
      const run = spawnSync('sh', ['-c', shell], { stdio: ['ignore', out, 'pipe'], encoding: 'utf8' });
      assert.equal(run.status, 0, run.stderr);
      assert.equal(run.stderr.trim(), `${want} ${want}`);
      // Unwrapped, the same pipes keep Linux's default.
      const plain = spawnSync('sh', ['-c', `echo | ${shellJoin(['perl', ...REPORT])}`], { stdio: ['ignore', out, 'pipe'], encoding: 'utf8' });
      assert.equal(plain.stderr.trim(), `65536 ${want}`, 'the FIFO keeps its size once set; a new pipe has 64 KiB');
    } finally {
      closeSync(out);
      closeSync(inner);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('withPipeSize runs the command itself, arguments untouched, and passes its failure on', { skip: process.platform !== 'linux' }, () => {
  const [command, args] = withPipeSize(1024 * 1024, 'printf', ['%s|', "it's", '$HOME', 'a b']);
  const run = spawnSync(command, args, { encoding: 'utf8' });
  assert.equal(run.stdout, "it's|$HOME|a b|");
  const [gone, goneArgs] = withPipeSize(1024 * 1024, 'pim-no-such-program', []);
  const failed = spawnSync(gone, goneArgs, { encoding: 'utf8' });
  assert.notEqual(failed.status, 0);
  assert.match(failed.stderr, /^pim-no-such-program: No such file or directory$/m);
});

test('without perl the command is left as it is', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pim-pipes-'));
  const path = process.env['PATH'];
  try {
    const bin = join(dir, 'bin');
    mkdirSync(bin);
    process.env['PATH'] = bin;
    assert.deepEqual(withPipeSize(1024 * 1024, 'zstd', ['-d', '-c']), ['zstd', ['-d', '-c']]);
  } finally {
    process.env['PATH'] = path;
    rmSync(dir, { recursive: true, force: true });
  }
});
