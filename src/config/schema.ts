import { z } from 'zod';
import { isArch, normalizeArch } from '../arch.js';

const safeName = z
  .string()
  .min(1)
  .refine((s) => !s.includes('/') && !s.includes('..'), { message: "may not contain '/' or '..'" });

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

export const buildSettingsSchema = z
  .object({
    disk_size: diskSize.optional(),
    memory: positiveInt.optional(),
    cpus: positiveInt.optional(),
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

export const remoteSchema = z
  .object({
    type: z.literal('ssh').default('ssh'),
    host: z.string().min(1),
    user: z.string().default('root'),
    port: positiveInt.default(22),
    pim_path: z.string().default('pim'),
    cache_dir: z.string().optional(),
    identity_file: z.string().optional(),
    host_key: z.string().optional(),
  })
  .passthrough();

export const pimConfigSchema = z
  .object({
    iso_dir: z.string().optional(),
    images_dir: z.string().optional(),
    serve: z
      .object({ port: positiveInt.optional(), bind: z.string().optional() })
      .passthrough()
      .optional(),
    build: z
      .object({
        disk_size: diskSize.default('20G'),
        memory: positiveInt.default(2048),
        cpus: positiveInt.default(2),
        accelerator: z.enum(['kvm', 'hvf', 'tcg']).optional(),
        install_timeout: positiveInt.default(3600),
        compress: z.boolean().default(false),
        ssh: z
          .object({
            user: z.string().optional(),
            timeout: positiveInt.default(1800),
            poll_interval: positiveInt.default(10),
          })
          .passthrough()
          .default({}),
        builders: z.record(z.string()).default({}),
        remotes: z.record(z.record(z.unknown())).default({}),
      })
      .passthrough()
      .default({}),
  })
  .passthrough();
export type PimConfig = z.infer<typeof pimConfigSchema>;
