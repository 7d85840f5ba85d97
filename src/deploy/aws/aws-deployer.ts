import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { EBSClient } from '@aws-sdk/client-ebs';
import { S3Client } from '@aws-sdk/client-s3';
import {
  DeleteSnapshotCommand,
  DeregisterImageCommand,
  DescribeImagesCommand,
  DescribeSnapshotsCommand,
  EC2Client,
  RegisterImageCommand,
  type RegisterImageCommandInput,
} from '@aws-sdk/client-ec2';
import { WorkError, errorMessage } from '../../errors.js';
import type { ImageRecord, DeploymentRecord } from '../../registry/registry.js';
import { runSteps, type Step } from '../../builder/steps.js';
import type { DeployContext, Deployer, DeployResult, DeploymentStatus } from '../deployer.js';
import type { AwsTarget } from '../targets.js';
import { uploadSnapshot } from './ebs-upload.js';
import { cancelImport, importSnapshot } from './s3-import.js';
import { awsCall, describeAwsError } from './errors.js';

// The SDK warns on Node 20 that releases after early 2027 need Node 22; PIM pins a release that supports 20.
process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] ??= 'true';

function clients(target: AwsTarget): { ebs: EBSClient; ec2: EC2Client; s3: S3Client } {
  const config = {
    ...(target.region ? { region: target.region } : {}),
    ...(target.profile ? { profile: target.profile } : {}),
    ...(target.endpoint ? { endpoint: target.endpoint } : {}),
    // PIM retries itself (and counts it): the SDK's own retries stay off.
    maxAttempts: 1,
  };
  return {
    ebs: new EBSClient(config),
    ec2: new EC2Client(config),
    // Path-style addressing for a custom endpoint (S3-compatible stores, the tests); the parts go
    // with Content-MD5, so the SDK's own CRC checksums (and aws-chunked bodies) stay off.
    s3: new S3Client({ ...config, forcePathStyle: !!target.endpoint, requestChecksumCalculation: 'WHEN_REQUIRED' }),
  };
}

/**
 * The AMI's settings. The x86_64 image boots with BIOS GRUB, so it registers as legacy-bios;
 * arm64 images boot UEFI.
 */
export function registerImageInput(name: string, snapshotId: string, image: ImageRecord, tags: { Key: string; Value: string }[]): RegisterImageCommandInput {
  return {
    Name: name,
    Description: `PIM image ${image.profile}/${image.arch} ${image.cache_key.slice(0, 12)}`,
    Architecture: image.arch === 'arm64' ? 'arm64' : 'x86_64',
    VirtualizationType: 'hvm',
    EnaSupport: true,
    RootDeviceName: '/dev/xvda',
    BlockDeviceMappings: [{ DeviceName: '/dev/xvda', Ebs: { SnapshotId: snapshotId, VolumeType: 'gp3', DeleteOnTermination: true } }],
    BootMode: image.arch === 'arm64' ? 'uefi' : 'legacy-bios',
    ImdsSupport: 'v2.0',
    TagSpecifications: [{ ResourceType: 'image', Tags: tags }],
  };
}

function tagsFor(ctx: DeployContext<AwsTarget>): { Key: string; Value: string }[] {
  return [
    { Key: 'Name', Value: ctx.name },
    { Key: 'pim:profile', Value: ctx.image.profile },
    { Key: 'pim:arch', Value: ctx.image.arch },
    { Key: 'pim:cache-key', Value: ctx.image.cache_key },
    { Key: 'created-by', Value: 'pim' },
  ];
}

interface AwsState {
  ctx: DeployContext<AwsTarget>;
  ebs: EBSClient;
  ec2: EC2Client;
  s3: S3Client;
  snapshotId?: string;
  importTaskId?: string;
  /** method import: where the upload goes, named when a failed deploy keeps it for a rerun. */
  importUpload?: string;
  imageId?: string;
  region?: string;
  done: boolean;
}

async function waitFor(what: string, timeoutS: number, signal: AbortSignal, check: () => Promise<'done' | 'pending' | string>, say: (line: string) => void): Promise<void> {
  const started = Date.now();
  let delay = 500;
  let lastSaid = 0;
  for (;;) {
    if (signal.aborted) throw new WorkError('interrupted');
    const state = await check();
    if (state === 'done') return;
    if (state !== 'pending') throw new WorkError(`${what} failed: ${state}`);
    if (Date.now() - started > timeoutS * 1000) throw new WorkError(`${what} did not finish within ${timeoutS} s (the target's timeout)`);
    if (Date.now() - lastSaid > 30_000) {
      say(`waiting for ${what} (${Math.round((Date.now() - started) / 1000)} s)`);
      lastSaid = Date.now();
    }
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 10_000);
  }
}

async function snapshotState(ec2: EC2Client, snapshotId: string): Promise<{ state?: string; progress?: string }> {
  const out = await awsCall('ec2:DescribeSnapshots', () => ec2.send(new DescribeSnapshotsCommand({ SnapshotIds: [snapshotId] })));
  const s = out.Snapshots?.[0];
  return { state: s?.State, progress: s?.Progress };
}

const steps: Step<AwsState>[] = [
  {
    name: 'snapshot',
    async run(state) {
      const { ctx } = state;
      state.region = await state.ebs.config.region();
      if (ctx.target.method === 'import') return importThroughS3(state);
      ctx.say(`uploading ${ctx.image.path} as an EBS snapshot in ${state.region} (EBS direct APIs)`);
      const bar = ctx.progress?.('uploading the data blocks');
      const result = await uploadSnapshot(state.ebs, {
        image: ctx.image.path,
        // Idempotent: a retried StartSnapshot with the same token is the same snapshot.
        clientToken: createHash('sha256').update(`${ctx.image.cache_key}:${ctx.targetName}:${randomBytes(8).toString('hex')}`).digest('hex').slice(0, 64),
        tags: tagsFor(ctx),
        description: `PIM image ${ctx.image.profile}/${ctx.image.arch} ${ctx.image.cache_key.slice(0, 12)}`,
        concurrency: ctx.target.concurrency,
        signal: ctx.signal,
        log: (line) => ctx.log.line(line),
        onStarted: (id) => (state.snapshotId = id),
        progress: (done, total) => bar?.update(done, total),
      });
      bar?.done();
      ctx.say(`snapshot ${result.snapshotId}: ${result.blocksSent} blocks sent, ${result.blocksSkipped} all-zero blocks skipped, ${result.retries} retries`);
      await waitFor(`snapshot ${result.snapshotId}`, ctx.target.timeout, ctx.signal, async () => {
        const s = await snapshotState(state.ec2, result.snapshotId);
        return s.state === 'completed' ? 'done' : s.state === 'pending' ? 'pending' : `state ${s.state ?? 'unknown'}`;
      }, ctx.say);
    },
    async cleanup(state, ctx, outcome) {
      if (outcome === 'success') return;
      if (state.importTaskId && !state.snapshotId) {
        await cancelImport(state.ec2, state.importTaskId).then(
          () => ctx.say(`cancelled the import task ${state.importTaskId}`),
          (err: unknown) => ctx.say(`warning: could not cancel the import task ${state.importTaskId} (${errorMessage(err)}); cancel it yourself: aws ec2 cancel-import-task --import-task-id ${state.importTaskId}`),
        );
      }
      if (state.importUpload && !state.snapshotId) {
        ctx.say(`kept for the next run, which resumes it: the upload to ${state.importUpload} (S3 keeps an unfinished upload's parts until then)`);
      }
      if (!state.snapshotId) return;
      // A snapshot of an unfinished deploy is deleted (or named, so the user can).
      await state.ec2.send(new DeleteSnapshotCommand({ SnapshotId: state.snapshotId })).then(
        () => ctx.say(`deleted the unfinished snapshot ${state.snapshotId}`),
        (err: unknown) => ctx.say(`warning: could not delete the unfinished snapshot ${state.snapshotId} (${errorMessage(err)}); delete it yourself: aws ec2 delete-snapshot --snapshot-id ${state.snapshotId}`),
      );
    },
  },
  {
    name: 'register',
    async run(state) {
      const { ctx } = state;
      const input = registerImageInput(ctx.name, state.snapshotId!, ctx.image, tagsFor(ctx));
      const out = await awsCall('ec2:RegisterImage', () => state.ec2.send(new RegisterImageCommand(input)));
      state.imageId = out.ImageId!;
      ctx.say(`registered ${state.imageId} (${input.Architecture}, boot mode ${input.BootMode}); waiting for it to be available`);
      await waitFor(`AMI ${state.imageId}`, ctx.target.timeout, ctx.signal, async () => {
        const images = await awsCall('ec2:DescribeImages', () => state.ec2.send(new DescribeImagesCommand({ ImageIds: [state.imageId!] })));
        const image = images.Images?.[0];
        return image?.State === 'available' ? 'done' : !image || image.State === 'pending' ? 'pending' : `state ${image.State}: ${image.StateReason?.Message ?? ''}`;
      }, ctx.say);
      state.done = true;
    },
    async cleanup(state, ctx, outcome) {
      if (outcome === 'success' || !state.imageId) return;
      await state.ec2.send(new DeregisterImageCommand({ ImageId: state.imageId })).then(
        () => ctx.say(`deregistered the unfinished AMI ${state.imageId}`),
        (err: unknown) => ctx.say(`warning: could not deregister the unfinished AMI ${state.imageId} (${errorMessage(err)}); deregister it yourself`),
      );
    },
  },
];

/** `method: import`: the snapshot made by VM Import from the image uploaded to S3. */
async function importThroughS3(state: AwsState): Promise<void> {
  const { ctx } = state;
  // Targets.get() refuses `method: import` without a bucket when pim.yml is read.
  const bucket = ctx.target.bucket!;
  const role = ctx.target.role ?? 'vmimport';
  const short = ctx.image.cache_key.slice(0, 12);
  // Per target: two targets importing through one bucket never share (or delete) an object.
  const key = `pim/${ctx.targetName}/${ctx.image.profile}-${ctx.image.arch}-${short}.vmdk`;
  ctx.say(`importing ${ctx.image.path} through s3://${bucket}/${key} in ${state.region} (S3 + ImportSnapshot, role ${role})`);
  state.importUpload = `s3://${bucket}/${key}`;
  const bar = ctx.progress?.('uploading to S3');
  const result = await importSnapshot({
    s3: state.s3,
    ec2: state.ec2,
    image: ctx.image.path,
    bucket,
    key,
    role,
    workDir: join(ctx.project.paths.cacheDir, 'aws-uploads', `${ctx.targetName}-${short}`),
    clientToken: createHash('sha256').update(`${ctx.image.cache_key}:${ctx.targetName}:${randomBytes(8).toString('hex')}`).digest('hex').slice(0, 64),
    tags: tagsFor(ctx),
    description: `PIM image ${ctx.image.profile}/${ctx.image.arch} ${short}`,
    timeoutS: ctx.target.timeout,
    signal: ctx.signal,
    log: (line) => ctx.log.line(line),
    say: ctx.say,
    progress: (done, total) => bar?.update(done, total),
    onTask: (id) => (state.importTaskId = id),
    onSnapshot: (id) => (state.snapshotId = id),
  });
  bar?.done();
  ctx.say(`snapshot ${result.snapshotId} imported: ${result.partsSent} part(s) sent, ${result.partsReused} reused, ${result.retries} retries`);
}

/** Deploys to AWS: an EBS snapshot through the EBS direct APIs (no S3 bucket, no vmimport role), registered as an AMI. */
export class AwsDeployer implements Deployer<AwsTarget> {
  async deploy(ctx: DeployContext<AwsTarget>): Promise<DeployResult> {
    const { ebs, ec2, s3 } = clients(ctx.target);
    const state: AwsState = { ctx, ebs, ec2, s3, done: false };
    const reporter = { start: (name: string) => ctx.log.line(`== ${name}`), end: () => undefined };
    try {
      await runSteps(steps, state, { signal: ctx.signal, log: ctx.log, say: ctx.say, verbose: false }, reporter);
    } finally {
      ebs.destroy();
      ec2.destroy();
      s3.destroy();
    }
    return {
      ids: { ami: state.imageId!, snapshot: state.snapshotId!, region: state.region ?? '' },
      summary: `AMI ${state.imageId} from snapshot ${state.snapshotId} in ${state.region}`,
    };
  }

  async status(record: DeploymentRecord, ctx: Omit<DeployContext<AwsTarget>, 'image' | 'name' | 'force'>): Promise<DeploymentStatus> {
    const { ebs, ec2, s3 } = clients({ ...ctx.target, region: record.ids['region'] || ctx.target.region });
    try {
      const images = await ec2.send(new DescribeImagesCommand({ ImageIds: [record.ids['ami']!] })).catch((err: unknown) => {
        if ((err as { name?: string }).name === 'InvalidAMIID.NotFound') return { Images: [] };
        throw describeAwsError('ec2:DescribeImages', err);
      });
      const snapshots = await ec2.send(new DescribeSnapshotsCommand({ SnapshotIds: [record.ids['snapshot']!] })).catch((err: unknown) => {
        if ((err as { name?: string }).name === 'InvalidSnapshot.NotFound') return { Snapshots: [] };
        throw describeAwsError('ec2:DescribeSnapshots', err);
      });
      const image = images.Images?.[0];
      const snapshot = snapshots.Snapshots?.[0];
      const exists = !!image && image.State !== 'deregistered';
      return {
        exists,
        detail: `AMI ${record.ids['ami']}: ${image?.State ?? 'not found'}; snapshot ${record.ids['snapshot']}: ${snapshot?.State ?? 'not found'}`,
      };
    } finally {
      ebs.destroy();
      ec2.destroy();
      s3.destroy();
    }
  }

  async remove(record: DeploymentRecord, ctx: Omit<DeployContext<AwsTarget>, 'image' | 'name' | 'force'>): Promise<void> {
    const { ebs, ec2, s3 } = clients({ ...ctx.target, region: record.ids['region'] || ctx.target.region });
    try {
      await ec2.send(new DeregisterImageCommand({ ImageId: record.ids['ami']! })).catch((err: unknown) => {
        if ((err as { name?: string }).name !== 'InvalidAMIID.NotFound' && (err as { name?: string }).name !== 'InvalidAMIID.Unavailable') throw describeAwsError('ec2:DeregisterImage', err);
      });
      ctx.say(`deregistered ${record.ids['ami']}`);
      await ec2.send(new DeleteSnapshotCommand({ SnapshotId: record.ids['snapshot']! })).catch((err: unknown) => {
        if ((err as { name?: string }).name !== 'InvalidSnapshot.NotFound') throw describeAwsError('ec2:DeleteSnapshot', err);
      });
      ctx.say(`deleted ${record.ids['snapshot']}`);
    } finally {
      ebs.destroy();
      ec2.destroy();
      s3.destroy();
    }
  }
}
