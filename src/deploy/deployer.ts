import type { Project } from '../config/project.js';
import type { BuildLog } from '../builder/build-log.js';
import type { DeploymentRecord, ImageRecord } from '../registry/registry.js';
import type { TargetConfig } from './targets.js';

/** What a deployer needs to deploy one image to one target. */
export interface DeployContext<T extends TargetConfig = TargetConfig> {
  project: Project;
  targetName: string;
  target: T;
  image: ImageRecord;
  /** The name the deployed thing gets (the target's name template, filled in). */
  name: string;
  force: boolean;
  log: BuildLog;
  say(line: string): void;
  progress?: (label: string) => { update(done: number, total: number | undefined): void; done(): void };
  signal: AbortSignal;
}

export interface DeployResult {
  /** What identifies the deployment on the target (a VM id, a bundle path, an AMI id). */
  ids: Record<string, string>;
  /** One line for the user: what now exists where. */
  summary: string;
}

export interface DeploymentStatus {
  exists: boolean;
  detail: string;
}

/**
 * One implementation per target type (deploy/proxmox, deploy/utm, deploy/aws). A deploy either
 * completes or leaves nothing behind on the target (its cleanups undo what it started); the
 * manager records only what completed.
 */
export interface Deployer<T extends TargetConfig = TargetConfig> {
  deploy(ctx: DeployContext<T>): Promise<DeployResult>;
  status(record: DeploymentRecord, ctx: Omit<DeployContext<T>, 'image' | 'name' | 'force'>): Promise<DeploymentStatus>;
  remove(record: DeploymentRecord, ctx: Omit<DeployContext<T>, 'image' | 'name' | 'force'>): Promise<void>;
}
