import { Project } from '../config/project.js';
import type { GlobalOptions } from './main.js';

export function projectFrom(opts: GlobalOptions): Project {
  return new Project({ projectDir: opts.project });
}
