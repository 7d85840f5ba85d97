// Renders a profile's preseed and install script as PIM serves them, with PIM's server at
// http://10.0.2.2:PORT (the address a user-mode-networked VM sees), for another tool's HTTP
// server to serve at that port: bench/vs-packer.sh gives them to Packer.
//   node dist/bench/render-preseed.js PROJECT_DIR PROFILE PORT OUT_DIR
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Project } from '../src/config/project.js';
import { Profiles } from '../src/profile/profiles.js';
import { PreseedServer } from '../src/server/preseed-server.js';

const [projectDir, profileName, port, out] = process.argv.slice(2) as [string, string, string, string];
const profiles = new Profiles(new Project({ projectDir }));
const server = new PreseedServer({ profiles, profileName, bind: '127.0.0.1', urlHost: '10.0.2.2' });
await server.start();
const local = `http://10.0.2.2:${server.port}`;
const there = `http://10.0.2.2:${port}`;
mkdirSync(out, { recursive: true });
writeFileSync(join(out, 'preseed.cfg'), server.renderPreseed().split(local).join(there));
writeFileSync(join(out, 'install.sh'), server.renderInstall().split(local).join(there));
writeFileSync(join(out, 'installed'), 'ok\n');
await server.stop();
