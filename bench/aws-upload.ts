// The AWS upload of an image, measured: bytes of data read, blocks sent and skipped, seconds,
// and the ratio of that time to one `sha256sum` pass over the same number of bytes here.
//   node dist/bench/aws-upload.js IMAGE [RUNS]
// Each of RUNS runs (default 5) is a fresh PIM process and a fresh endpoint, as one `pim deploy`
// is, and times one sha256sum pass right after its upload; the medians are the figures (two runs
// of the same upload here differ by up to 0.7 s).
// The test endpoint checks every block as AWS does (size, index, SHA-256) and keeps its digest,
// not its data: keeping 880 MiB cost it about 1 CPU-s of page faults on the two cores the upload
// is measured on, work AWS does on its own machines. PIM_BENCH_KEEP_BLOCKS=1 keeps the data.
import { execFileSync, spawn } from 'node:child_process';
import { readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EBSClient } from '@aws-sdk/client-ebs';
import { dataExtents } from '../src/qemu/image-reader.js';
import { uploadSnapshot } from '../src/deploy/aws/ebs-upload.js';

process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] = 'true';
const image = process.argv[2];
const runs = Number(process.argv[3] ?? 5);
if (!image || !Number.isInteger(runs) || runs < 1) {
  console.error('usage: aws-upload IMAGE [RUNS]');
  process.exit(2);
}

/** What one run measured. */
interface Run {
  allocated: number;
  extents: number;
  bytesRead: number;
  blocksSent: number;
  blocksSkipped: number;
  retries: number;
  seconds: number;
  shaSeconds: number;
  cpu: { pim: number; reader: number; readerName: string; endpoint: number };
}
/** CPU seconds (user + system) a process has used so far, from /proc. */
function cpuSeconds(pid: number): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /, '').split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return NaN;
  }
}
/** The reader this process started (qemu-nbd, or zstd for PIM's own qcow2 reader), found in /proc (no process spawned to look). */
function readerProcess(): { pid: number; name: string } | undefined {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const name = /\((qemu-nbd|zstd)\)/.exec(stat)?.[1];
      if (name && stat.replace(/^.*\) /, '').split(' ')[1] === String(process.pid)) return { pid: Number(entry), name };
    } catch {
      /* gone */
    }
  }
  return undefined;
}

const keepBlocks = process.env['PIM_BENCH_KEEP_BLOCKS'] === '1';

async function oneRun(): Promise<void> {
  const server = spawn(process.execPath, [join(import.meta.dirname, '../test/fixtures/aws/serve-fake-aws.js'), ...(keepBlocks ? [] : ['--digests-only'])], { stdio: ['ignore', 'pipe', 'inherit'] });
  const url = await new Promise<string>((resolve) => server.stdout.once('data', (c: Buffer) => resolve(c.toString().trim())));
  try {
    const { extents } = await dataExtents(image);
    const allocated = extents.reduce((sum, e) => sum + e.length, 0);
    const ebs = new EBSClient({ region: 'eu-central-1', endpoint: url, credentials: { accessKeyId: 'bench', secretAccessKey: 'bench' }, maxAttempts: 1 });
    const started = process.hrtime.bigint();
    const ownCpu = process.cpuUsage();
    const serverCpu = cpuSeconds(server.pid!);
    let readerCpu = 0;
    let reader: { pid: number; name: string } | undefined;
    const sampler = setInterval(() => {
      reader ??= readerProcess();
      if (reader) readerCpu = Math.max(readerCpu, cpuSeconds(reader.pid) || 0);
    }, 200);
    const result = await uploadSnapshot(ebs, {
      image, clientToken: `bench-${Date.now()}`, tags: [{ Key: 'Name', Value: 'pim-bench' }], description: 'pim bench', concurrency: 32,
      signal: new AbortController().signal, log: () => undefined, onStarted: () => undefined,
    });
    clearInterval(sampler);
    const own = process.cpuUsage(ownCpu);
    const serverUsed = cpuSeconds(server.pid!) - serverCpu;
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    ebs.destroy();
    // One sha256sum pass over as many bytes (from the page cache: written, then read once to warm it).
    const file = join(tmpdir(), `pim-bench-sha-${process.pid}`);
    execFileSync('dd', ['if=/dev/zero', `of=${file}`, 'bs=1M', `count=${Math.ceil(allocated / 1048576)}`], { stdio: 'ignore' });
    execFileSync('sha256sum', [file]);
    const t0 = process.hrtime.bigint();
    execFileSync('sha256sum', [file]);
    const shaSeconds = Number(process.hrtime.bigint() - t0) / 1e9;
    rmSync(file, { force: true });
    const run: Run = {
      allocated, extents: extents.length, bytesRead: result.bytesRead, blocksSent: result.blocksSent, blocksSkipped: result.blocksSkipped, retries: result.retries, seconds, shaSeconds,
      cpu: { pim: (own.user + own.system) / 1e6, reader: readerCpu, readerName: reader?.name ?? 'reader', endpoint: serverUsed },
    };
    process.stdout.write(`${JSON.stringify(run)}\n`);
  } finally {
    server.kill('SIGTERM');
  }
}

if (process.env['PIM_BENCH_ONE_RUN'] === '1') {
  await oneRun();
} else {
  // The image read once first, as the sha256sum passes read their file from the page cache:
  // the first run after a test suite here took 7.4 s instead of 3.6 s, reading from the disk.
  execFileSync('cat', [image], { stdio: ['ignore', 'ignore', 'inherit'] });
  const results: Run[] = [];
  for (let i = 1; i <= runs; i++) {
    const out = execFileSync(process.execPath, [import.meta.filename, image], { env: { ...process.env, PIM_BENCH_ONE_RUN: '1' }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
    const run = JSON.parse(out.trim().split('\n').at(-1)!) as Run;
    results.push(run);
    const { cpu } = run;
    console.log(`run ${i}: upload ${run.seconds.toFixed(2)} s, sha256sum ${run.shaSeconds.toFixed(2)} s, ratio ${(run.seconds / run.shaSeconds).toFixed(2)}x; CPU PIM ${cpu.pim.toFixed(2)} s, ${cpu.readerName} ${cpu.reader.toFixed(2)} s (or more), test endpoint ${cpu.endpoint.toFixed(2)} s`);
  }
  const median = (values: number[]) => {
    const sorted = [...values].sort((a, b) => a - b);
    const mid = Math.floor(sorted.length / 2);
    return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  };
  const range = (values: number[], digits = 2) => `${Math.min(...values).toFixed(digits)}-${Math.max(...values).toFixed(digits)}`;
  const last = results.at(-1)!;
  const mib = (b: number) => `${(b / 1048576).toFixed(1)} MiB`;
  const seconds = results.map((r) => r.seconds);
  const shas = results.map((r) => r.shaSeconds);
  const ratios = results.map((r) => r.seconds / r.shaSeconds);
  console.log(`image            ${image}`);
  console.log(`allocated data   ${mib(last.allocated)} in ${last.extents} extents`);
  console.log(`data read        ${mib(last.bytesRead)} (${(last.bytesRead / last.allocated).toFixed(3)}x the allocated bytes)`);
  console.log(`blocks sent      ${last.blocksSent} of 524288 bytes (${mib(last.blocksSent * 524288)})`);
  console.log(`blocks skipped   ${last.blocksSkipped} (all zero)`);
  console.log(`test endpoint    checks every block, keeps ${keepBlocks ? 'its data' : 'its digest only'} (PIM_BENCH_KEEP_BLOCKS=${keepBlocks ? 1 : 0})`);
  console.log(`upload           median ${median(seconds).toFixed(2)} s (${range(seconds)} s in ${runs} runs, ${mib(last.bytesRead / median(seconds))}/s), ${results.reduce((n, r) => n + r.retries, 0)} retries`);
  console.log(`CPU              PIM ${range(results.map((r) => r.cpu.pim))} s, ${last.cpu.readerName} ${range(results.map((r) => r.cpu.reader))} s (or more), test endpoint ${range(results.map((r) => r.cpu.endpoint))} s`);
  console.log(`sha256sum pass   median ${median(shas).toFixed(2)} s (${range(shas)} s) over ${mib(Math.ceil(last.allocated / 1048576) * 1048576)}`);
  console.log(`ratio            median ${median(ratios).toFixed(2)}x one sha256sum pass (${range(ratios)}x)`);
}
