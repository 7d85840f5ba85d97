// pim deploy to AWS against a local endpoint that speaks the EBS direct and EC2 Query protocols
// strictly (test/fixtures/aws/fake-aws.ts): AWS itself cannot be reached from here.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, openSync, readSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Registry, type ImageRecord } from '../../src/registry/registry.js';
import { hashFile } from '../../src/iso/checksum.js';
import { pim, pimAsync, sandbox, type Sandbox } from '../helpers/env.js';
import { until } from '../helpers/fixtures.js';
import { rootSkip } from '../helpers/installer.js';
import { SHARED_PROFILE, sharedImage } from '../helpers/shared-image.js';
import { BLOCK, FakeAws } from '../fixtures/aws/fake-aws.js';

let box: Sandbox;
let image: ImageRecord;
const fakes: FakeAws[] = [];
const AWS_ENV = { AWS_ACCESS_KEY_ID: 'AKIDPIMTEST', AWS_SECRET_ACCESS_KEY: 'pim-test-secret', AWS_REGION: 'eu-central-1' };

async function fake(options: ConstructorParameters<typeof FakeAws>[0] = {}): Promise<FakeAws> {
  const f = new FakeAws(options);
  await f.start();
  fakes.push(f);
  return f;
}

function target(name: string, f: FakeAws, extra = ''): void {
  box.write(`targets.d/${name}.yml`, `${name}:\n  type: aws\n  region: eu-central-1\n  endpoint: ${f.url}\n  timeout: 120\n${extra}`);
}

before(async () => {
  if (rootSkip) return;
  box = sandbox('pim-aws-');
  image = (await sharedImage()).record;
  await new Registry(join(box.root, 'data', 'pim', 'registry.yml')).registerImage(image);
});
after(async () => {
  for (const f of fakes) await f.stop();
  box?.cleanup();
});

const records = async () => JSON.parse((await pim(box, ['deploy', 'list', '--json'], { env: AWS_ENV })).stdout) as { target: string; ids: Record<string, string> }[];

test('deploy to AWS: the snapshot reads back as the image\'s guest-visible bytes, no zero block sent; the AMI registered as asked; status; remove', { skip: rootSkip, timeout: 30 * 60_000 }, async () => {
  const f = await fake();
  target('aws-lab', f);
  const r = await pim(box, ['deploy', 'run', SHARED_PROFILE, 'aws-lab', '--arch', 'x86_64', '--json'], { env: AWS_ENV, timeoutMs: 20 * 60_000 });
  assert.equal(r.status, 0, r.stderr);
  const record = JSON.parse(r.stdout);
  const { ami, snapshot, region } = record.ids;
  assert.match(ami, /^ami-[0-9a-f]+$/);
  assert.match(snapshot, /^snap-[0-9a-f]+$/);
  assert.equal(region, 'eu-central-1');
  assert.equal(f.zeroBlocksReceived, 0, 'no all-zero block was sent');
  const snap = f.snapshots.get(snapshot)!;
  assert.equal(snap.state, 'completed');
  assert.equal(snap.volumeSize, Math.ceil(image.virtual_size / 1024 ** 3));
  assert.ok(snap.tags.some((t) => t.Key === 'pim:cache-key' && t.Value === image.cache_key));
  // Reassemble: every block equals the raw image there, and every block not sent is zero in it.
  const raw = join(box.root, 'image.raw');
  execFileSync('qemu-img', ['convert', '-O', 'raw', image.path, raw]);
  const fd = openSync(raw, 'r');
  const chunk = Buffer.alloc(BLOCK);
  let compared = 0;
  try {
    for (let index = 0; index < snap.volumeSize * 2048; index++) {
      const n = readSync(fd, chunk, 0, BLOCK, index * BLOCK);
      if (n < BLOCK) chunk.fill(0, n);
      const sent = snap.blocks.get(index);
      if (sent) {
        assert.ok(sent.equals(chunk), `block ${index} differs from the image`);
        compared++;
      } else if (!chunk.every((b) => b === 0)) {
        assert.fail(`block ${index} holds data but was not sent`);
      }
    }
  } finally {
    closeSync(fd);
  }
  assert.equal(compared, snap.blocks.size);
  const ami_ = f.images.get(ami)!;
  assert.equal(ami_.state, 'available');
  const p = ami_.params;
  assert.deepEqual(
    [p['Architecture'], p['VirtualizationType'], p['EnaSupport'], p['RootDeviceName'], p['BlockDeviceMapping.1.DeviceName'], p['BlockDeviceMapping.1.Ebs.SnapshotId'], p['BlockDeviceMapping.1.Ebs.VolumeType'], p['BlockDeviceMapping.1.Ebs.DeleteOnTermination'], p['BootMode'], p['ImdsSupport']],
    ['x86_64', 'hvm', 'true', '/dev/xvda', '/dev/xvda', snapshot, 'gp3', 'true', 'legacy-bios', 'v2.0'],
  );
  assert.match(p['Name']!, /^pim-small-x86_64-[0-9a-f]{12}$/);
  assert.equal(p['TagSpecification.1.ResourceType'], 'image');
  assert.deepEqual((await records()).find((d) => d.target === 'aws-lab')!.ids, { ami, snapshot, region: 'eu-central-1' });
  const status = JSON.parse((await pim(box, ['deploy', 'status', 'aws-lab', '--json'], { env: AWS_ENV })).stdout);
  assert.equal(status[0].exists, true);
  assert.match(status[0].detail, /AMI ami-\w+: available; snapshot snap-\w+: completed/);
  const removed = await pim(box, ['deploy', 'remove', SHARED_PROFILE, 'aws-lab', '--arch', 'x86_64'], { env: AWS_ENV });
  assert.equal(removed.status, 0, removed.stderr);
  assert.equal(f.images.size, 0);
  assert.equal(f.snapshots.size, 0);
  assert.deepEqual((await records()).filter((d) => d.target === 'aws-lab'), []);
});

test('an arm64 image registers with BootMode uefi and Architecture arm64', { skip: rootSkip, timeout: 10 * 60_000 }, async () => {
  const f = await fake();
  target('aws-arm', f);
  const file = join(box.root, 'arm64.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', file, '2G']);
  execFileSync('qemu-io', ['-c', 'write -P 0x5a 0 1M', file]);
  await new Registry(join(box.root, 'data', 'pim', 'registry.yml')).registerImage({ ...image, arch: 'arm64', path: file, sha256: await hashFile(file), file_size: readFileSync(file).length, virtual_size: 2 * 1024 ** 3 });
  const r = await pim(box, ['deploy', 'run', SHARED_PROFILE, 'aws-arm', '--arch', 'arm64', '--json'], { env: AWS_ENV });
  assert.equal(r.status, 0, r.stderr);
  const params = f.images.get(JSON.parse(r.stdout).ids.ami)!.params;
  assert.equal(params['Architecture'], 'arm64');
  assert.equal(params['BootMode'], 'uefi');
  const snap = f.snapshots.get(JSON.parse(r.stdout).ids.snapshot)!;
  assert.deepEqual([...snap.blocks.keys()].sort((a, b) => a - b), [0, 1], '1 MiB of data: two blocks');
});

test('throttled every third PutSnapshotBlock: the upload completes, the retries counted in the log', { skip: rootSkip, timeout: 20 * 60_000 }, async () => {
  const f = await fake({ throttleEvery: 3 });
  target('aws-throttle', f);
  const r = await pim(box, ['deploy', 'run', SHARED_PROFILE, 'aws-throttle', '--arch', 'x86_64'], { env: AWS_ENV, timeoutMs: 20 * 60_000 });
  assert.equal(r.status, 0, r.stderr);
  assert.ok(f.throttled > 10, `throttled ${f.throttled} times`);
  const m = /(\d+) retries/.exec(r.stderr);
  assert.ok(m && Number(m[1]) === f.throttled, `retries reported: ${m?.[1]}, throttled: ${f.throttled}`);
  const logs = execFileSync('sh', ['-c', `cat ${join(box.root, 'state', 'pim', 'logs')}/deploy-small-x86_64-aws-throttle-*.log`], { encoding: 'utf8' });
  assert.match(logs, /ebs:PutSnapshotBlock: RequestThrottledException \(throttled 1 of 20\); retrying/);
});

test('AccessDenied on StartSnapshot: exit 1 naming ebs:StartSnapshot, nothing recorded', { skip: rootSkip, timeout: 5 * 60_000 }, async () => {
  const f = await fake({ denyStartSnapshot: true });
  target('aws-denied', f);
  const r = await pim(box, ['deploy', 'run', SHARED_PROFILE, 'aws-denied', '--arch', 'x86_64'], { env: AWS_ENV });
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /AWS refused ebs:StartSnapshot: the credentials lack the IAM permission 'ebs:StartSnapshot'/);
  assert.ok(r.stderr.trim().split('\n').length <= 3, r.stderr);
  assert.deepEqual((await records()).filter((d) => d.target === 'aws-denied'), []);
});

test('interrupted during the upload: exit 130, nothing recorded, the started snapshot deleted', { skip: rootSkip, timeout: 10 * 60_000 }, async () => {
  const f = await fake({ putDelayMs: 300 });
  target('aws-slow', f);
  const child = pimAsync(box, ['deploy', 'run', SHARED_PROFILE, 'aws-slow', '--arch', 'x86_64'], AWS_ENV);
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  child.stdout.resume();
  const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
  await until(() => f.putCount > 5, 120_000, 'the upload to be under way');
  child.kill('SIGINT');
  assert.equal(await exited, 130, stderr);
  assert.match(stderr, /deleted the unfinished snapshot snap-/);
  assert.equal(f.snapshots.size, 0, 'the snapshot is gone');
  assert.deepEqual((await records()).filter((d) => d.target === 'aws-slow'), []);
});

test('method import: the AMI is registered from the snapshot VM Import made out of the S3 upload, the S3 object deleted; without a bucket, exit 2 naming the target', { skip: rootSkip, timeout: 10 * 60_000 }, async () => {
  const f = await fake();
  const file = join(box.root, 'import.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', file, '2G']);
  execFileSync('qemu-io', ['-c', 'write -P 0x6b 3M 1M', file]);
  await new Registry(join(box.root, 'data', 'pim', 'registry.yml')).registerImage({ ...image, arch: 'arm64', path: file, sha256: await hashFile(file), file_size: readFileSync(file).length, virtual_size: 2 * 1024 ** 3 });

  target('aws-import-nobucket', f, '  method: import\n');
  const refused = await pim(box, ['deploy', 'run', SHARED_PROFILE, 'aws-import-nobucket', '--arch', 'arm64'], { env: AWS_ENV });
  assert.equal(refused.status, 2, refused.stderr);
  assert.match(refused.stderr, /aws-import-nobucket\.yml.*: target 'aws-import-nobucket': method 'import' needs 'bucket'/);
  assert.equal(f.calls.length, 0, 'nothing was called');

  target('aws-import', f, '  method: import\n  bucket: pim-imports\n');
  const r = await pim(box, ['deploy', 'run', SHARED_PROFILE, 'aws-import', '--arch', 'arm64', '--json'], { env: AWS_ENV });
  assert.equal(r.status, 0, r.stderr);
  const { ami, snapshot } = JSON.parse(r.stdout).ids;
  assert.ok(f.calls.includes('ImportSnapshot') && !f.calls.includes('StartSnapshot'), f.calls.join(' '));
  const snap = f.snapshots.get(snapshot)!;
  assert.deepEqual([...snap.blocks.keys()].sort((a, b) => a - b), [6, 7], 'the 1 MiB written at 3 MiB, as two blocks');
  assert.ok(snap.blocks.get(6)!.every((b) => b === 0x6b) && snap.blocks.get(7)!.every((b) => b === 0x6b));
  assert.equal(f.images.get(ami)!.params['BlockDeviceMapping.1.Ebs.SnapshotId'], snapshot);
  assert.equal(f.objects.size, 0, 'the S3 object is deleted after the import');
  assert.deepEqual((await records()).find((d) => d.target === 'aws-import')!.ids, { ami, snapshot, region: 'eu-central-1' });
});
