import { constants, existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { copyFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { parse } from 'plist';
import { expandHome } from '../../config/project.js';
import { ConfigError, InterruptedError, WorkError } from '../../errors.js';
import { fsyncDir, writeFileAtomic } from '../../files/atomic-write.js';
import type { DeploymentRecord } from '../../registry/registry.js';
import { runSteps, type Step } from '../../builder/steps.js';
import type { DeployContext, Deployer, DeployResult, DeploymentStatus } from '../deployer.js';
import { makeSeedIso, userData } from '../seed.js';
import type { UtmTarget } from '../targets.js';
import { plistText, utmConfig } from './config-plist.js';

/** UTM's documents folder on macOS, where it looks for bundles. */
const MAC_UTM_DIR = '~/Library/Containers/com.utmapp.UTM/Data/Documents';

export function bundleDir(target: UtmTarget): string {
  if (target.dir) return resolve(expandHome(target.dir));
  if (process.platform === 'darwin') return expandHome(MAC_UTM_DIR).replace(/^~/, homedir());
  throw new ConfigError("a utm target needs 'dir' (the folder the bundle goes to) on this system; on macOS it defaults to UTM's documents folder");
}

interface UtmState {
  ctx: DeployContext<UtmTarget>;
  dir: string;
  final: string;
  temp?: string;
  uuid?: string;
}

/** What PIM writes in a bundle's notes: how it recognises a bundle of its own. */
function notesFor(ctx: DeployContext<UtmTarget>): string {
  return `Deployed by PIM: profile ${ctx.image.profile}, arch ${ctx.image.arch}, image ${ctx.image.cache_key.slice(0, 12)} (${ctx.image.path})`;
}

function readBundle(path: string): { uuid?: string; notes?: string } | undefined {
  try {
    const config = parse(readFileSync(join(path, 'config.plist'), 'utf8')) as { Information?: { UUID?: string; Notes?: string } };
    return { uuid: config.Information?.UUID, notes: config.Information?.Notes };
  } catch {
    return undefined;
  }
}

const steps: Step<UtmState>[] = [
  {
    name: 'bundle',
    async run(state) {
      const { ctx } = state;
      mkdirSync(state.dir, { recursive: true });
      if (existsSync(state.final)) {
        const existing = readBundle(state.final);
        const ours = existing?.notes?.startsWith(`Deployed by PIM: profile ${ctx.image.profile}, arch ${ctx.image.arch},`);
        if (!ours && !ctx.force) throw new WorkError(`${state.final} exists and PIM did not deploy it there; remove it, pick another name, or use --force to replace it`);
      }
      // Assembled under a temporary name beside the final one; it appears only when complete.
      state.temp = join(state.dir, `.${ctx.name}.utm.pim-${randomBytes(4).toString('hex')}`);
      mkdirSync(join(state.temp, 'Data'), { recursive: true });
      ctx.say(`copying the image into ${state.final}/Data (a clone where the file system can)`);
      // A reflink/clone where the file system offers one, else a copy.
      await copyFile(ctx.image.path, join(state.temp, 'Data', 'disk.qcow2'), constants.COPYFILE_FICLONE);
      // Interrupted meanwhile: the cleanup has removed the temp bundle; write nothing more.
      if (ctx.signal.aborted) throw new InterruptedError();
      let seed: string | undefined;
      if (ctx.target.user_data || ctx.target.ssh_authorized_keys?.length) {
        seed = 'seed.iso';
        const scratch = join(state.temp, '.seed');
        await makeSeedIso(
          join(state.temp, 'Data', seed),
          {
            userData: userData({ file: ctx.target.user_data ? resolve(ctx.project.dir, expandHome(ctx.target.user_data)) : undefined, sshAuthorizedKeys: ctx.target.ssh_authorized_keys }),
            metaData: `instance-id: pim-${randomBytes(8).toString('hex')}\nlocal-hostname: ${ctx.name}\n`,
          },
          scratch,
          (l) => ctx.log.line(l),
        );
        if (ctx.signal.aborted) throw new InterruptedError();
        // UTM deletes whatever in Data/ no drive names: only the images go there.
        rmSync(scratch, { recursive: true, force: true });
      }
      const { config, uuid } = utmConfig({ name: ctx.name, arch: ctx.image.arch, memoryMb: ctx.target.memory, cores: ctx.target.cores, disk: 'disk.qcow2', seed, notes: notesFor(ctx) });
      writeFileAtomic(join(state.temp, 'config.plist'), plistText(config));
      state.uuid = uuid;
      // Interrupted meanwhile: the cleanup removes the temp bundle; never put it in place.
      if (ctx.signal.aborted) throw new InterruptedError();
      if (existsSync(state.final)) {
        const old = join(state.dir, `.${ctx.name}.utm.pim-old-${randomBytes(4).toString('hex')}`);
        renameSync(state.final, old);
        renameSync(state.temp, state.final);
        rmSync(old, { recursive: true, force: true });
      } else {
        renameSync(state.temp, state.final);
      }
      state.temp = undefined;
      fsyncDir(state.dir);
    },
    cleanup(state) {
      if (state.temp) rmSync(state.temp, { recursive: true, force: true });
    },
  },
];

/** Writes a UTM bundle (NAME.utm: config.plist and Data/) into the target's folder. */
export class UtmDeployer implements Deployer<UtmTarget> {
  async deploy(ctx: DeployContext<UtmTarget>): Promise<DeployResult> {
    const dir = bundleDir(ctx.target);
    const state: UtmState = { ctx, dir, final: join(dir, `${ctx.name}.utm`) };
    const reporter = { start: (name: string) => ctx.log.line(`== ${name}`), end: () => undefined };
    await runSteps(steps, state, { signal: ctx.signal, log: ctx.log, say: ctx.say, verbose: false }, reporter);
    const size = statSync(join(state.final, 'Data', 'disk.qcow2')).size;
    return { ids: { bundle: state.final, uuid: state.uuid! }, summary: `UTM bundle ${state.final} (${Math.round(size / 1048576)} MiB)` };
  }

  async status(record: DeploymentRecord): Promise<DeploymentStatus> {
    const bundle = record.ids['bundle']!;
    const found = readBundle(bundle);
    if (!found) return { exists: false, detail: `${bundle} does not exist (or has no readable config.plist)` };
    if (found.uuid !== record.ids['uuid']) return { exists: false, detail: `${bundle} is another VM now (UUID ${found.uuid})` };
    return { exists: true, detail: `${bundle} (UUID ${found.uuid})` };
  }

  async remove(record: DeploymentRecord, ctx: { say(line: string): void }): Promise<void> {
    const status = await this.status(record);
    if (!status.exists) {
      ctx.say(`nothing to remove: ${status.detail}`);
      return;
    }
    rmSync(record.ids['bundle']!, { recursive: true, force: true });
    ctx.say(`removed ${record.ids['bundle']}`);
  }
}
