import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { hostArch, normalizeArch, type Arch } from '../arch.js';
import type { Project } from '../config/project.js';
import { ConfigError, WorkError, errorMessage } from '../errors.js';
import { tryLock } from '../files/lock.js';
import { makeSeedIso } from '../deploy/seed.js';
import { Profiles } from '../profile/profiles.js';
import { requireAarch64Firmware } from '../qemu/firmware.js';
import { Vm } from '../qemu/vm.js';
import { Registry, imageKey, imageState, type ImageRecord } from '../registry/registry.js';
import { SshConnection } from '../ssh/connection.js';
import { createBuildKeyPair } from '../ssh/keys.js';
import { runChecked } from '../process.js';
import { selectedAccelerator } from './accelerator.js';
import { workRoot } from './manager.js';
import { waitForSshWatchingBoot } from './boot-watch.js';
import { bootStallTimeoutS } from './plan.js';

export interface VerifyCheck {
  name: string;
  ok: boolean;
  detail: string;
}

export interface VerifyResult {
  record: ImageRecord;
  checks: VerifyCheck[];
  ok: boolean;
  seconds: number;
  consoleTail?: string;
}

const VERIFIER = 'pim-verify';

/**
 * `pim build verify`: boots a throw-away overlay of the registered image with a NoCloud seed of
 * PIM's own (a verifier user and a throw-away key), the way a cloud boots a clone, and checks
 * over SSH what a finished image promises -- then the profile's own checks (verify.d/NAME.sh,
 * else verify.d/default.sh). The verdict and its time go into the registry record.
 */
export async function verifyImage(project: Project, request: { profileName: string; arch?: string }, say: (line: string) => void): Promise<VerifyResult> {
  const arch: Arch = normalizeArch(request.arch ?? hostArch());
  const registry = new Registry(project.registryPath());
  const record = registry.getImage(request.profileName, arch);
  if (!record) throw new ConfigError(`no image of ${request.profileName}/${arch} is registered; build it with 'pim build run ${request.profileName} --arch ${arch}'`);
  if (imageState(record) !== 'ok') throw new WorkError(`the image ${record.path} is ${imageState(record)}; rebuild it`);
  const profiles = new Profiles(project);
  const profile = profiles.get(request.profileName);
  const buildUser = profile.username ?? project.pimConfig().build.ssh.user ?? 'root';
  const verifyScript = profiles.findTemplate('verify', request.profileName, true);
  const started = Date.now();
  const dir = join(workRoot(project), `verify-${request.profileName}-${arch}-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const lock = tryLock(dir);
  let vm: Vm | undefined;
  let tail: string | undefined;
  const checks: VerifyCheck[] = [];
  const check = (name: string, ok: boolean, detail: string) => {
    checks.push({ name, ok, detail });
    say(`${ok ? 'ok  ' : 'FAIL'} ${name}: ${detail}`);
  };
  try {
    const overlay = join(dir, 'clone.qcow2');
    await runChecked('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', record.path, '-F', 'qcow2', overlay]);
    const key = createBuildKeyPair(join(dir, 'key'), 'pim-verify');
    const seed = join(dir, 'seed.iso');
    await makeSeedIso(
      seed,
      {
        userData: `#cloud-config\nusers:\n  - name: ${VERIFIER}\n    shell: /bin/bash\n    sudo: ALL=(ALL) NOPASSWD:ALL\n    ssh_authorized_keys:\n      - ${key.publicKey}\n`,
        metaData: `instance-id: pim-verify-${randomBytes(6).toString('hex')}\nlocal-hostname: pim-verify\n`,
      },
      dir,
    );
    const firmware = arch === 'arm64' ? requireAarch64Firmware() : undefined;
    vm = await Vm.start({
      spec: {
        name: `pim-verify-${request.profileName}`, arch, accel: await selectedAccelerator(project, arch), memoryMb: 1024, cpus: 2,
        disk: { path: overlay, format: 'qcow2', cache: 'unsafe' }, cdrom: seed, serialLog: join(dir, 'console.log'),
        firmware, efiVars: firmware?.vars ? join(dir, 'efivars.fd') : undefined,
      },
      forwardSsh: true,
    });
    say(`booted a clone of ${record.path} with a NoCloud seed; waiting for SSH`);
    const stallS = bootStallTimeoutS(project, profile, arch);
    const ssh = await waitForSshWatchingBoot(
      vm,
      { host: '127.0.0.1', port: vm.sshPort!, username: VERIFIER, privateKeyPath: key.privateKeyPath, hostKey: { kind: 'any' } },
      // 15 minutes, and the time a reset by the watch takes from them.
      { timeoutMs: (15 * 60 + stallS) * 1000, intervalMs: 2_000, maxIntervalMs: 5_000, bannerProbeMs: 3_000 },
      { stallS, say },
    );
    try {
      const run = async (command: string) => {
        let out = '';
        const r = await ssh.execAsRoot(command, (line) => (out += `${line}\n`));
        return { code: r.code, out: out.trim() };
      };
      const ci = await run('cloud-init status --wait --long');
      // `--wait` prints a dot per second of waiting before the status: report the status line.
      const status = ci.out.split('\n').map((l) => l.replace(/^\.+/, '').trim()).find((l) => l.startsWith('status:')) ?? ci.out.trim().split('\n').at(-1) ?? '';
      check('cloud-init', ci.code === 0 && /status: done/.test(ci.out), status);
      const failed = await run('systemctl --failed --no-legend --plain | cut -d" " -f1');
      check('no failed units', failed.code === 0 && failed.out === '', failed.out ? failed.out.replace(/\n/g, ', ') : 'none');
      const password = profile.password;
      if (password) {
        const refused = await SshConnection.connect({ host: '127.0.0.1', port: vm.sshPort!, username: buildUser, password, hostKey: { kind: 'any' }, readyTimeout: 30_000 }).then(
          (c) => {
            c.end();
            return false;
          },
          (err: Error) => /authentication methods failed|All configured/i.test(err.message),
        );
        check('no password login as the build user', refused, refused ? `${buildUser} with the profile's password is refused` : `${buildUser} can log in with the profile's password`);
      }
      const sshd = await run('sshd -T | grep -i "^passwordauthentication"');
      check('sshd refuses passwords', /passwordauthentication no/i.test(sshd.out), sshd.out);
      const sudo = await run(`if id ${buildUser} >/dev/null 2>&1; then sudo -l -U ${buildUser}; passwd -S ${buildUser}; else echo "${buildUser}: no such user"; fi`);
      const noSudo = /is not allowed to run sudo|no such user/.test(sudo.out) && !/NOPASSWD/.test(sudo.out);
      const locked = /no such user/.test(sudo.out) || new RegExp(`^${buildUser} L `, 'm').test(sudo.out);
      check('build user has no sudo and a locked password', noSudo && locked, sudo.out.split('\n').at(-1) ?? '');
      const machineId = await run('cat /etc/machine-id');
      check('machine-id made at first boot', /^[0-9a-f]{32}$/.test(machineId.out), machineId.out || 'empty');
      const keys = await run('grep -rl "pim-build-" /root/.ssh /home/*/.ssh 2>/dev/null || true');
      check('no build key', keys.out === '', keys.out || 'none found');
      // `apt-get -s upgrade` prints `Inst <package> [<installed>] (<candidate> <origin> [<arch>])`.
      const updates = await run('if apt-get update -qq >/dev/null 2>&1; then apt-get -s upgrade | grep "^Inst" | grep -i security || true; else echo "apt-get update failed"; fi');
      const pending = updates.out.split('\n').filter((l) => l.startsWith('Inst '));
      const unknown = updates.code !== 0 || updates.out.includes('apt-get update failed');
      check(
        'no pending security updates',
        !unknown && pending.length === 0,
        unknown ? 'unknown: apt-get update failed in the clone (does it reach the mirror?)' : pending.length === 0 ? 'none' : `${pending.length} pending: ${pending.map((l) => l.replace(/^Inst /, '')).join('; ')}`,
      );
      if (verifyScript) {
        await ssh.uploadContent(readFileSync(verifyScript), '/tmp/pim-verify.sh', 0o700);
        const own = await run(`bash /tmp/pim-verify.sh; code=$?; rm -f /tmp/pim-verify.sh; exit $code`);
        check(`profile checks (${verifyScript})`, own.code === 0, own.code === 0 ? 'passed' : `exited ${own.code}: ${own.out.split('\n').slice(-3).join(' / ')}`);
      }
    } finally {
      ssh.end();
    }
  } catch (err) {
    // The console's last lines are reported once, below the verdict.
    check('boot and log in', false, errorMessage(err).split(/;? ?\n?last console lines:/)[0]!);
  } finally {
    tail = vm ? Vm.tail(vm.serialLog, 15) : undefined;
    if (vm) await vm.stop({ timeoutMs: 30_000 });
    rmSync(dir, { recursive: true, force: true });
    lock?.release();
  }
  const ok = checks.length > 0 && checks.every((c) => c.ok);
  const seconds = Math.round((Date.now() - started) / 1000);
  await registry.update((data) => {
    const current = data.images[imageKey(record.profile, record.arch)];
    if (current && current.path === record.path) {
      current['verify'] = { verdict: ok ? 'pass' : 'fail', at: new Date().toISOString(), seconds, failed: checks.filter((c) => !c.ok).map((c) => c.name) };
    }
  });
  return { record, checks, ok, seconds, consoleTail: ok ? undefined : tail };
}
