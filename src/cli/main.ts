import { Command, CommanderError, Option } from 'commander';
import { pimVersion } from '../version.js';
import { PimError } from '../errors.js';
import { installSignalHandlers } from '../lifecycle.js';
import { maskUrlCredentials } from '../secrets.js';

export interface GlobalOptions {
  project?: string;
  debug?: boolean;
}

type Loader = () => Promise<{ default: (opts: GlobalOptions & Record<string, unknown>, ...args: string[]) => Promise<void> | void }>;

/**
 * Wires a command to a module loaded only when the command runs, so that `pim --help` does not
 * load QEMU, SSH or template code.
 */
function lazy(load: Loader) {
  return async (...args: unknown[]) => {
    const command = args.at(-1) as Command;
    const positional = args.slice(0, -2) as string[];
    const { default: action } = await load();
    await action(command.optsWithGlobals(), ...positional);
  };
}

export function buildProgram(): Command {
  const version = pimVersion();
  const program = new Command('pim')
    .description('Build virtual-machine images without Packer: QEMU, a served preseed, SSH provisioning, cloud-init ready qcow2.')
    .version(version, '-V, --version')
    .option('-p, --project <dir>', 'project directory (default: the current directory)')
    .option('--debug', 'print stack traces on errors')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();

  const profile = program.command('profile').description('list and inspect profiles');
  profile.command('list').description('list the profiles defined in profiles.d').option('--json', 'print JSON')
    .action(lazy(() => import('./profile.js').then((m) => ({ default: m.list }))));
  profile.command('show <name>').description('print the merged profile (default deep-merged under NAME)')
    .option('--json', 'print JSON').option('--reveal', 'show passwords instead of masking them')
    .action(lazy(() => import('./profile.js').then((m) => ({ default: m.show }))));

  program.command('serve <profile>').description("serve a profile's preseed and install script over HTTP")
    .option('--port <n>', 'port to listen on (default: pim.yml serve.port, else 8080)')
    .option('--bind <addr>', "address to listen on (default: this machine's LAN address)")
    .action(lazy(() => import('./serve.js')));

  const iso = program.command('iso').description('the ISO catalog and downloaded media');
  iso.command('list').description('list catalog entries and whether each is downloaded and verified').option('--json', 'print JSON')
    .action(lazy(() => import('./iso.js').then((m) => ({ default: m.list }))));
  iso.command('download <name>').description('download an ISO (resumable), verify it, then move it into iso_dir')
    .action(lazy(() => import('./iso.js').then((m) => ({ default: m.download }))));
  iso.command('verify <name>').description('rehash a downloaded ISO against the catalog')
    .action(lazy(() => import('./iso.js').then((m) => ({ default: m.verify }))));

  program.command('init').description('copy the shipped defaults into the global config dir (or --project DIR) without overwriting')
    .action(lazy(() => import('./init.js')));

  const build = program.command('build').description('build images, and list, show and clean what was built');
  build.command('run <profile>').description('build PROFILE into a qcow2 (answers from the cache when nothing changed)')
    .option('-a, --arch <arch>', "target architecture (arm64/aarch64, x86_64/amd64, or all; default: this host's)")
    .option('-f, --force', 'rebuild even when the cache has an image with the same key')
    .option('--local', 'build on this machine even if build.builders routes the arch to a remote')
    .option('-v, --verbose', 'stream the serial console and script output; say what changed on a cache miss')
    .option('-n, --dry-run', 'print the plan (ISO, cache key, scripts, QEMU command lines) and change nothing')
    .option('--keep-failed', 'keep the work dir of a failed or interrupted build for debugging')
    .addOption(new Option('--expect-key <key>', 'fail unless the plan computes this cache key (used by remote builds)').hideHelp())
    .action(lazy(() => import('./build.js').then((m) => ({ default: m.runBuild }))));
  build.command('list').description('list built images').option('--json', 'print JSON').option('--all', 'include deployments')
    .action(lazy(() => import('./build.js').then((m) => ({ default: m.list }))));
  build.command('show <profile>').description("show a profile's registered image(s)").option('-a, --arch <arch>', 'only this arch').option('--json', 'print JSON')
    .action(lazy(() => import('./build.js').then((m) => ({ default: m.show }))));
  build.command('clean').description('remove images and their registry entries (always: entries whose file is gone)')
    .option('--profile <name>', 'only this profile').option('-a, --arch <arch>', 'only this arch').option('--all', 'every image, and leftover work dirs')
    .option('--layers', 'empty the layer cache (layers no running build uses)').option('--packages', 'empty the package cache')
    .action(lazy(() => import('./build.js').then((m) => ({ default: m.clean }))));
  build.command('verify <profile>').description("boot a throw-away clone of PROFILE's image with a NoCloud seed and check what a finished image promises, plus verify.d/PROFILE.sh")
    .option('-a, --arch <arch>', "the image's architecture (default: this host's)").option('--json', 'print JSON')
    .action(lazy(() => import('./build.js').then((m) => ({ default: m.verify }))));
  build.command('status').description('host arch, accelerators, the builder of each arch, and whether each remote answers').option('--json', 'print JSON')
    .addOption(new Option('--local-only', 'do not contact the remotes').hideHelp())
    .action(lazy(() => import('./build.js').then((m) => ({ default: m.status }))));

  const deploy = program.command('deploy').description('put built images on Proxmox, UTM and AWS targets (targets.d)');
  deploy.command('run <profile> <target>').description("deploy PROFILE's registered image to TARGET (a no-op if that image is deployed there already)")
    .option('-a, --arch <arch>', "the image's architecture (default: this host's)").option('-f, --force', 'deploy again even if this image is deployed there')
    .option('--json', 'print JSON')
    .action(lazy(() => import('./deploy.js').then((m) => ({ default: m.run }))));
  deploy.command('list').description('recorded deployments').option('--json', 'print JSON')
    .action(lazy(() => import('./deploy.js').then((m) => ({ default: m.list }))));
  deploy.command('status <target>').description('each deployment recorded for TARGET: is it still there, and does it hold the current image')
    .option('--json', 'print JSON')
    .action(lazy(() => import('./deploy.js').then((m) => ({ default: m.status }))));
  deploy.command('remove <profile> <target>').description('remove the deployment from TARGET, then its record')
    .option('-a, --arch <arch>', "the image's architecture (default: this host's)")
    .action(lazy(() => import('./deploy.js').then((m) => ({ default: m.remove }))));

  program.command('doctor').description('what this host has and lacks for building, and which accelerators work')
    .option('--json', 'print JSON').addOption(new Option('--no-cache', 'probe accelerators again instead of using the cached verdict'))
    .action(lazy(() => import('./doctor.js')));

  return program;
}

/** The one place that turns errors into messages and exit codes. */
export async function run(argv: string[]): Promise<void> {
  // A reader that went away (`pim … | head`, a closed terminal) must not crash PIM in the middle
  // of a build's cleanup: output to a broken pipe is dropped.
  for (const stream of [process.stdout, process.stderr]) stream.on('error', () => undefined);
  const program = buildProgram();
  const debug = argv.includes('--debug');
  const lifeline = process.env['PIM_STDIN_LIFELINE'] === '1';
  if (lifeline) installSignalHandlers();
  try {
    await program.parseAsync(argv);
  } catch (err) {
    process.exitCode = exitCodeFor(err, debug);
  } finally {
    // The lifeline keeps stdin open; the command is done, so let the process end.
    if (lifeline) process.stdin.destroy();
  }
}

function exitCodeFor(err: unknown, debug: boolean): number {
  if (err instanceof CommanderError) {
    // help and version are "errors" to commander; usage errors were printed by commander.
    return err.exitCode === 0 ? 0 : 2;
  }
  if (err instanceof PimError) {
    process.stderr.write(`pim: ${maskUrlCredentials(err.message)}\n`);
    if (debug && err.stack) process.stderr.write(`${err.stack}\n`);
    return err.exitCode;
  }
  const message = err instanceof Error ? err.message : String(err);
  process.stderr.write(`pim: internal error: ${maskUrlCredentials(message)}${debug ? '' : ' (run with --debug for the stack trace)'}\n`);
  if (debug && err instanceof Error && err.stack) process.stderr.write(`${err.stack}\n`);
  return 1;
}
