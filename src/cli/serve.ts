import { Profiles } from '../profile/profiles.js';
import { PreseedServer, lanAddress } from '../server/preseed-server.js';
import { ConfigError, InterruptedError } from '../errors.js';
import { projectFrom } from './context.js';
import type { GlobalOptions } from './main.js';
import { println } from './output.js';

export default async function serve(opts: GlobalOptions & { port?: string; bind?: string }, profileName: string): Promise<void> {
  const project = projectFrom(opts);
  const profiles = new Profiles(project);
  profiles.get(profileName); // unknown profile: exit 2 before anything listens
  const settings = project.pimConfig().serve ?? {};
  const port = opts.port !== undefined ? Number(opts.port) : settings.port ?? 8080;
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new ConfigError(`invalid port '${opts.port}'`);
  const bind = opts.bind ?? settings.bind ?? lanAddress();
  const server = new PreseedServer({ profiles, profileName, bind, port, log: (line) => println(line) });
  await server.start();
  println(`Serving profile '${profileName}' on ${bind}:${server.port}`);
  println(`  preseed: ${server.preseedUrl}`);
  println(`  install: ${server.installUrl}`);
  println('  Note: the preseed carries credentials (user password or its hash); anyone who can reach this address can read them.');
  println(`  Boot the installer with: auto=true priority=critical preseed/url=${server.preseedUrl}`);
  println('Press Ctrl+C to stop.');
  await new Promise<void>((_, reject) => {
    const stop = () => {
      void server.stop().then(() => reject(new InterruptedError('stopped')));
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
}
