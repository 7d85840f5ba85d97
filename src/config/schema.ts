import { z } from 'zod';
import { isArch, normalizeArch, type Arch } from '../arch.js';
import { deepMerge, isSafeName } from './merge.js';

const safeName = z.string().min(1).refine(isSafeName, { message: "may not be '.' or '..' or contain '/'" });

export const archName = z
  .string()
  .refine(isArch, { message: 'unknown architecture (known: arm64/aarch64, x86_64/amd64)' })
  .transform((s) => normalizeArch(s));

/** Sizes as qemu-img takes them: 20G, 512M, 1T, or a plain number of bytes. */
export const diskSize = z
  .union([z.string(), z.number().int().positive()])
  .transform((v) => String(v))
  .refine((s) => /^\d+(\.\d+)?[KMGT]?$/i.test(s), { message: "expected a size such as '20G' or '512M'" });

const positiveInt = z.coerce.number().int().positive();

/** A profile's `build:` section: any key of pim.yml's build section, overriding it for this profile. */
export const buildSettingsSchema = z
  .object({
    disk_size: diskSize.optional(),
    memory: positiveInt.optional(),
    cpus: positiveInt.optional(),
    compress: z.boolean().optional(),
    upgrade: z.boolean().optional(),
    build_user: z.enum(['lock', 'remove', 'keep']).optional(),
    script_timeout: positiveInt.optional(),
    install_timeout: positiveInt.optional(),
    preseed_fetch_timeout: positiveInt.optional(),
    boot_stall_timeout: z.number().int().min(0).optional(),
  })
  .passthrough();

/**
 * A profile. Every preseed field is optional here because a named profile gets the rest from
 * `default`; a template that uses a missing value fails when it is rendered, naming the value.
 * Unknown fields pass through so that users' own templates can use them.
 */
export const profileSchema = z
  .object({
    username: z.string().optional(),
    password: z.string().optional(),
    password_crypted: z.string().optional(),
    fullname: z.string().optional(),
    locale: z.string().optional(),
    keyboard: z.string().optional(),
    hostname: z.string().optional(),
    domain: z.string().optional(),
    mirror_host: z.string().optional(),
    mirror_path: z.string().optional(),
    http_proxy: z.string().nullable().optional(),
    timezone: z.string().optional(),
    partitioning_method: z.string().optional(),
    partitioning_recipe: z.string().optional(),
    tasksel: z.string().optional(),
    packages: z.union([z.string(), z.array(z.string())]).optional(),
    grub_device: z.string().optional(),
    build: buildSettingsSchema.optional(),
    scripts: z.array(safeName).optional(),
    architectures: z.array(archName).optional(),
    iso_pattern: z.string().optional(),
    iso: safeName.optional(),
  })
  .passthrough();
export type Profile = z.infer<typeof profileSchema>;

export const checksumSchema = z
  .string()
  .refine((s) => /^(sha256:[0-9a-fA-F]{64}|sha512:[0-9a-fA-F]{128}|file:\S+)$/.test(s), {
    message: "expected 'sha256:<64 hex>', 'sha512:<128 hex>' or 'file:<URL of a SHA256SUMS/SHA512SUMS>'",
  });

export const isoEntrySchema = z.object({
  url: z.string().url(),
  checksum: checksumSchema,
  arch: archName,
  distro: z.string().min(1),
  version: z.union([z.string(), z.number()]).transform(String),
  filename: safeName.optional(),
  description: z.string().optional(),
});
export type IsoEntry = z.infer<typeof isoEntrySchema> & { name: string; filename: string };

/** A remote builder (build.remotes.NAME, with build.remotes.default merged under it). */
export const remoteSchema = z
  .object({
    type: z.literal('ssh').default('ssh'),
    host: z.string().min(1),
    user: z.string().min(1),
    port: positiveInt.default(22),
    pim_path: z.string().min(1).default('pim'),
    cache_dir: z.string().min(1).optional(),
    identity_file: z.string().optional(),
    host_key: z.string().regex(/^SHA256:[A-Za-z0-9+/]{43}=?$/, 'expected an OpenSSH fingerprint: SHA256: and 43 base64 characters').optional(),
  })
  .passthrough();
export type RemoteConfig = z.infer<typeof remoteSchema>;

const buildSectionSchema = z
  .object({
    disk_size: diskSize.default('20G'),
    memory: positiveInt.default(2048),
    cpus: positiveInt.default(2),
    accelerator: z.enum(['kvm', 'hvf', 'tcg']).optional(),
    install_timeout: positiveInt.default(3600),
    /** The installer must fetch /preseed.cfg within this many seconds of starting. */
    preseed_fetch_timeout: positiveInt.default(600),
    /**
     * Seconds a booting guest kernel has to start the root file system's init before its VM is
     * reset (once); 0 turns this off. Unset: 300 s, or 900 s for an arm64 guest.
     */
    boot_stall_timeout: z.number().int().min(0).optional(),
    /** Seconds one provisioning script may run. */
    script_timeout: positiveInt.default(3600),
    /** zstd-compressed qcow2 clusters in the final image. */
    compress: z.boolean().default(true),
    /** apt-get full-upgrade during the build, so the image ships its suite's security updates. */
    upgrade: z.boolean().default(true),
    /** What becomes of the user the build logs in as: password locked and sudo rule removed, the account removed, or kept. */
    build_user: z.enum(['lock', 'remove', 'keep']).default('lock'),
    /** Run `pim build verify` as the last step of every build. */
    verify: z.boolean().default(false),
    /** The build server is also a caching proxy for the Debian mirror, shared by every build. */
    package_cache: z.boolean().default(true),
    package_cache_size: diskSize.default('10G'),
    /** The size cap of the layer cache (least recently used layers go first). */
    layer_cache_size: diskSize.default('20G'),
    /** How many superseded images of a profile and arch to keep on disk. */
    keep: z.coerce.number().int().min(0).default(0),
    ssh: z
      .object({
        user: z.string().optional(),
        timeout: positiveInt.default(1800),
        poll_interval: positiveInt.default(10),
      })
      .passthrough()
      .default({}),
    builders: z.record(z.string()).default({}),
    remotes: z.record(z.union([z.record(z.unknown()), z.null()])).default({}),
  })
  .passthrough()
  .superRefine((build, ctx) => {
    const remoteNames = Object.keys(build.remotes).filter((n) => n !== 'default');
    const base = build.remotes['default'] ?? {};
    for (const name of remoteNames) {
      const merged = deepMerge(base, build.remotes[name] ?? {});
      const result = remoteSchema.safeParse(merged);
      if (!result.success) {
        for (const issue of result.error.issues) ctx.addIssue({ ...issue, path: ['remotes', name, ...issue.path] });
      }
      if (!isSafeName(name)) ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['remotes', name], message: `invalid remote name '${name}'` });
    }
    const seen = new Map<string, string>();
    for (const [arch, builder] of Object.entries(build.builders)) {
      if (!isArch(arch)) {
        ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['builders', arch], message: `unknown architecture '${arch}' (known: arm64/aarch64, x86_64/amd64)` });
        continue;
      }
      const canonical = normalizeArch(arch);
      const twin = seen.get(canonical);
      if (twin) ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['builders', arch], message: `'${arch}' and '${twin}' both name ${canonical}` });
      seen.set(canonical, arch);
      if (builder !== 'local' && !remoteNames.includes(builder)) {
        ctx.addIssue({
          code: z.ZodIssueCode.custom,
          path: ['builders', arch],
          message: `unknown builder '${builder}': use 'local' or a remote defined in build.remotes (defined: ${remoteNames.join(', ') || 'none'})`,
        });
      }
    }
  })
  .transform((build) => {
    const base = build.remotes['default'] ?? {};
    const remotes: Record<string, RemoteConfig> = {};
    for (const name of Object.keys(build.remotes)) {
      if (name !== 'default') remotes[name] = remoteSchema.parse(deepMerge(base, build.remotes[name] ?? {}));
    }
    const builders: Partial<Record<Arch, string>> = {};
    for (const [arch, builder] of Object.entries(build.builders)) builders[normalizeArch(arch)] = builder;
    return { ...build, remotes, builders };
  });
export type BuildSection = z.infer<typeof buildSectionSchema>;

export const pimConfigSchema = z
  .object({
    iso_dir: z.string().optional(),
    images_dir: z.string().optional(),
    serve: z
      .object({ port: positiveInt.optional(), bind: z.string().optional() })
      .passthrough()
      .optional(),
    build: buildSectionSchema.default({}),
  })
  .passthrough();
export type PimConfig = z.infer<typeof pimConfigSchema>;
