import { z } from 'zod';
import type { Project } from '../config/project.js';
import type { KeyedConfig } from '../config/layers.js';
import { checkSafeName, isPlainObject } from '../config/merge.js';
import { ConfigError } from '../errors.js';

const positiveInt = z.coerce.number().int().positive();
const fingerprint = z.string().regex(/^SHA256:[A-Za-z0-9+/]{43}=?$/, 'expected an OpenSSH fingerprint: SHA256: and 43 base64 characters');
/** A name template: {profile}, {arch} and {key} (the image's short cache key) are filled in. */
const nameTemplate = z.string().min(1).regex(/^[A-Za-z0-9{}._-]+$/, 'may hold letters, digits, . _ - and {profile} {arch} {key}');

/** Settings every target type has: cloud-init defaults for the deployed machine. */
const common = {
  /** Public keys for the deployed machine's default user (cloud-init). */
  ssh_authorized_keys: z.array(z.string().min(1)).optional(),
  name: nameTemplate.optional(),
  memory: positiveInt.default(2048),
  cores: positiveInt.default(2),
};

export const proxmoxTargetSchema = z
  .object({
    type: z.literal('proxmox'),
    host: z.string().min(1),
    port: positiveInt.default(22),
    user: z.string().min(1).default('root'),
    identity_file: z.string().optional(),
    host_key: fingerprint.optional(),
    keepalive: positiveInt.optional(),
    /** The node's name; default: ask the node (`hostname -s`). */
    node: z.string().min(1).optional(),
    storage: z.string().regex(/^[a-z][a-z0-9\-_.]*[a-z0-9]$/i, "expected a Proxmox storage id such as 'local-lvm'"),
    bridge: z.string().min(1).default('vmbr0'),
    vmid: z.coerce.number().int().min(100).max(999_999_999).optional(),
    ciuser: z.string().min(1).optional(),
    ipconfig0: z.string().min(1).optional(),
    /** Where the image is copied on the node before the import. */
    tmp_dir: z.string().min(1).default('/var/tmp'),
    ...common,
  })
  .strict();
export type ProxmoxTarget = z.infer<typeof proxmoxTargetSchema>;

export const utmTargetSchema = z
  .object({
    type: z.literal('utm'),
    /** The folder the bundle goes to; on macOS default UTM's documents folder. */
    dir: z.string().min(1).optional(),
    /** A cloud-config file for the NoCloud seed (relative to the project dir). */
    user_data: z.string().min(1).optional(),
    ...common,
  })
  .strict();
export type UtmTarget = z.infer<typeof utmTargetSchema>;

export const awsTargetSchema = z
  .object({
    type: z.literal('aws'),
    region: z.string().min(1).optional(),
    profile: z.string().min(1).optional(),
    endpoint: z.string().url().optional(),
    method: z.enum(['ebs-direct', 'import']).default('ebs-direct'),
    /** PutSnapshotBlock calls in flight. */
    concurrency: positiveInt.max(256).default(32),
    /** S3 bucket and the vmimport role, for `method: import`. */
    bucket: z.string().min(1).optional(),
    role: z.string().min(1).optional(),
    /** Seconds to wait for the snapshot and the AMI. */
    timeout: positiveInt.default(3600),
    ...common,
  })
  .strict();
export type AwsTarget = z.infer<typeof awsTargetSchema>;

export const targetSchema = z.discriminatedUnion('type', [proxmoxTargetSchema, utmTargetSchema, awsTargetSchema]);
export type TargetConfig = z.infer<typeof targetSchema>;
export type TargetType = TargetConfig['type'];

/** Deploy targets: targets.d/*.yml across layers, each entry merged over `default`. */
export class Targets {
  private loaded?: KeyedConfig;

  constructor(private readonly project: Project) {}

  private config(): KeyedConfig {
    this.loaded ??= this.project.layers.loadKeyedDir('targets.d');
    return this.loaded;
  }

  names(): string[] {
    return this.config().names().filter((n) => n !== 'default');
  }

  get(name: string): TargetConfig {
    checkSafeName(name, 'target');
    if (name === 'default') throw new ConfigError("'default' is merged into every target; it is not a target of its own");
    const config = this.config();
    const raw = config.data[name];
    if (raw !== undefined && raw !== null && !isPlainObject(raw)) throw new ConfigError(`${config.locate([name])}: target '${name}' must be a map`);
    const target = config.resolve(targetSchema, name, 'target');
    // Checks across fields, which the discriminated union's object schemas cannot carry.
    if (target.type === 'aws' && target.method === 'import' && !target.bucket) {
      throw new ConfigError(`${config.locate([name])}: target '${name}': method 'import' needs 'bucket' (an S3 bucket the '${target.role ?? 'vmimport'}' role can read)`);
    }
    return target;
  }
}

/** `{profile}`, `{arch}` and `{key}` in a target's name template. */
export function expandName(template: string, values: { profile: string; arch: string; key: string }): string {
  return template.replace(/\{(profile|arch|key)\}/g, (_, k: 'profile' | 'arch' | 'key') => (k === 'key' ? values.key.slice(0, 12) : values[k]));
}
