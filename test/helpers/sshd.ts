// A real OpenSSH server on a loopback port, with its own config, host key and authorized key:
// the same test host the remote-build tests use (remote-host.ts).
import { createTestHost, type TestHost } from './remote-host.js';

export type TestSshd = TestHost;

export function prepareSshd(dir: string): Promise<TestSshd> {
  return createTestHost(dir);
}
