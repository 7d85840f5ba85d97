import { WorkError, errorMessage } from '../../errors.js';
import type { DeploymentRecord } from '../../registry/registry.js';
import { shq } from '../../shell.js';
import type { SshConnection } from '../../ssh/connection.js';
import { connectToHost } from '../../ssh/hosts.js';
import { runSteps, type Step } from '../../builder/steps.js';
import type { DeployContext, Deployer, DeployResult, DeploymentStatus } from '../deployer.js';
import type { ProxmoxTarget } from '../targets.js';
import { createArgs, dnsName, importedVolume, parseConfig, parseNextId, setArgs } from './qm.js';

interface ProxmoxState {
  ctx: DeployContext<ProxmoxTarget>;
  ssh?: SshConnection;
  node?: string;
  tmp?: string;
  vmid?: number;
  created: boolean;
  volume?: string;
}

async function connect(target: ProxmoxTarget, targetName: string, readyTimeoutMs?: number): Promise<SshConnection> {
  return connectToHost(target, { label: `Proxmox node '${targetName}'`, pinAt: `host_key of target '${targetName}' in targets.d`, readyTimeoutMs });
}

/** Runs a command on the node; a non-zero exit is an error carrying the node's own message. */
async function onNode(ssh: SshConnection, command: string, what: string, onLine?: (line: string) => void): Promise<string> {
  let stdout = '';
  let stderr = '';
  const result = await ssh.exec(command, (line, stream) => {
    if (stream === 'stdout') stdout += `${line}\n`;
    else stderr += `${line}\n`;
    onLine?.(line);
  });
  if (result.code !== 0) {
    const message = (stderr.trim() || stdout.trim()).split('\n').filter((l) => l.trim()).slice(0, 4).join(' / ');
    throw new WorkError(`${what} failed on the node (exit ${result.code}): ${message || 'no output'}`);
  }
  return stdout;
}

const qm = (args: (string | number)[]) => `qm ${args.map(shq).join(' ')}`;

const steps: Step<ProxmoxState>[] = [
  {
    name: 'connect',
    async run(state) {
      const { target, targetName } = state.ctx;
      state.ssh = await connect(target, targetName);
      await onNode(state.ssh, 'command -v qm >/dev/null && command -v pvesh >/dev/null', "looking for 'qm' and 'pvesh' (is this a Proxmox VE node?)");
      state.node = target.node ?? (await onNode(state.ssh, 'hostname -s', 'hostname -s')).trim();
      state.ctx.say(`connected to Proxmox node ${state.node} (${target.user}@${target.host}:${target.port})`);
    },
    cleanup(state) {
      state.ssh?.end();
    },
  },
  {
    name: 'upload',
    async run(state) {
      const { ctx } = state;
      const ssh = state.ssh!;
      state.tmp = (await onNode(ssh, `mktemp -d ${shq(`${ctx.target.tmp_dir}/pim-deploy.XXXXXXXX`)}`, 'mktemp')).trim();
      const remote = `${state.tmp}/image.qcow2`;
      const bar = ctx.progress?.(`copying ${ctx.image.path} to ${state.node}`);
      await ssh.upload(ctx.image.path, remote, (done, total) => bar?.update(done, total));
      bar?.done();
      const sum = (await onNode(ssh, `sha256sum ${shq(remote)}`, 'sha256sum')).split(/\s+/)[0];
      if (sum !== ctx.image.sha256) throw new WorkError(`the copy on ${state.node} has SHA-256 ${sum}, but the image's is ${ctx.image.sha256}`);
      ctx.say(`copied the image to ${state.node}:${remote} (SHA-256 checked)`);
    },
    async cleanup(state) {
      if (state.tmp && state.ssh && !state.ssh.lost) await onNode(state.ssh, `rm -rf -- ${shq(state.tmp)}`, 'removing the copied image').catch(() => undefined);
    },
  },
  {
    name: 'create',
    async run(state) {
      const { ctx } = state;
      const ssh = state.ssh!;
      state.vmid = ctx.target.vmid ?? parseNextId(await onNode(ssh, 'pvesh get /cluster/nextid --output-format json', 'pvesh get /cluster/nextid'));
      const name = dnsName(ctx.name);
      await onNode(ssh, qm(createArgs(state.vmid, name, ctx.target, ctx.image.arch)), `qm create ${state.vmid}`, (l) => ctx.log.line(`qm| ${l}`));
      state.created = true;
      ctx.say(`created VM ${state.vmid} (${name}) on ${state.node}`);
    },
    async cleanup(state, ctx, outcome) {
      // A deploy that did not finish leaves no VM behind.
      if (outcome === 'success' || !state.created || !state.ssh || state.ssh.lost) return;
      await onNode(state.ssh, qm(['destroy', state.vmid!, '--purge', 1, '--destroy-unreferenced-disks', 1]), `qm destroy ${state.vmid}`).then(
        () => ctx.say(`removed the unfinished VM ${state.vmid}`),
        (err: unknown) => ctx.say(`warning: could not remove the unfinished VM ${state.vmid}: ${errorMessage(err)}`),
      );
    },
  },
  {
    name: 'import',
    async run(state) {
      const { ctx } = state;
      const ssh = state.ssh!;
      const source = `${state.tmp}/image.qcow2`;
      const onLine = (l: string) => ctx.log.line(`qm| ${l}`);
      try {
        await onNode(ssh, qm(['disk', 'import', state.vmid!, source, ctx.target.storage]), `qm disk import ${state.vmid}`, onLine);
      } catch (err) {
        // qemu-server before 7.2-5 has only the older spelling.
        if (!/unknown command 'qm disk/.test(errorMessage(err))) throw err;
        await onNode(ssh, qm(['importdisk', state.vmid!, source, ctx.target.storage]), `qm importdisk ${state.vmid}`, onLine);
      }
      // The success line changed between qemu-server versions; the config says it the same way in all.
      state.volume = importedVolume(parseConfig(await onNode(ssh, qm(['config', state.vmid!]), `qm config ${state.vmid}`)));
      if (!state.volume) throw new WorkError(`qm config ${state.vmid} shows no imported disk after the import`);
      ctx.say(`imported the disk as ${state.volume}`);
    },
  },
  {
    name: 'template',
    async run(state) {
      const { ctx } = state;
      const ssh = state.ssh!;
      let keysFile: string | undefined;
      if (ctx.target.ssh_authorized_keys?.length) {
        keysFile = `${state.tmp}/sshkeys.pub`;
        await ssh.uploadContent(`${ctx.target.ssh_authorized_keys.join('\n')}\n`, keysFile);
      }
      await onNode(ssh, qm(setArgs(state.vmid!, state.volume!, ctx.target, ctx.image.arch, keysFile)), `qm set ${state.vmid}`, (l) => ctx.log.line(`qm| ${l}`));
      await onNode(ssh, qm(['template', state.vmid!]), `qm template ${state.vmid}`, (l) => ctx.log.line(`qm| ${l}`));
      // `qm template` can exit 0 although its task failed: the config is the proof.
      const config = parseConfig(await onNode(ssh, qm(['config', state.vmid!]), `qm config ${state.vmid}`));
      if (config['template'] !== '1') throw new WorkError(`qm template ${state.vmid} did not make a template (qm config has no 'template: 1')`);
    },
  },
];

/** Deploys to a Proxmox VE node over SSH, as `qm` commands there: the image becomes a cloud-init template. */
export class ProxmoxDeployer implements Deployer<ProxmoxTarget> {
  async deploy(ctx: DeployContext<ProxmoxTarget>): Promise<DeployResult> {
    const state: ProxmoxState = { ctx, created: false };
    const reporter = { start: (name: string) => ctx.log.line(`== ${name}`), end: () => undefined };
    await runSteps(steps, state, { signal: ctx.signal, log: ctx.log, say: ctx.say, verbose: false }, reporter);
    return {
      ids: { vmid: String(state.vmid), node: state.node! },
      summary: `template ${state.vmid} (${ctx.name}) on Proxmox node ${state.node}, disk ${state.volume}`,
    };
  }

  async status(record: DeploymentRecord, ctx: Omit<DeployContext<ProxmoxTarget>, 'image' | 'name' | 'force'>): Promise<DeploymentStatus> {
    const ssh = await connect(ctx.target, ctx.targetName, 10_000);
    try {
      const result = await ssh.exec(qm(['config', record.ids['vmid']!]));
      if (result.code !== 0) return { exists: false, detail: `VM ${record.ids['vmid']} does not exist on ${record.ids['node']}` };
      const config = parseConfig(await ssh.capture(qm(['config', record.ids['vmid']!])));
      return { exists: true, detail: `VM ${record.ids['vmid']} (${config['name'] ?? '?'})${config['template'] === '1' ? ', a template' : ', not a template'}` };
    } finally {
      ssh.end();
    }
  }

  async remove(record: DeploymentRecord, ctx: Omit<DeployContext<ProxmoxTarget>, 'image' | 'name' | 'force'>): Promise<void> {
    const ssh = await connect(ctx.target, ctx.targetName);
    const vmid = record.ids['vmid']!;
    try {
      const exists = await ssh.exec(qm(['config', vmid]));
      if (exists.code !== 0) {
        ctx.say(`VM ${vmid} is already gone from ${record.ids['node']}`);
        return;
      }
      try {
        await onNode(ssh, qm(['destroy', vmid, '--purge', 1, '--destroy-unreferenced-disks', 1]), `qm destroy ${vmid}`, (l) => ctx.log.line(`qm| ${l}`));
      } catch (err) {
        if (/still in use by linked clone/.test(errorMessage(err))) {
          throw new WorkError(`template ${vmid} has linked clones, so Proxmox will not destroy it; remove the clones first (${errorMessage(err)})`);
        }
        throw err;
      }
      ctx.say(`destroyed VM ${vmid} on ${record.ids['node']}`);
    } finally {
      ssh.end();
    }
  }
}
