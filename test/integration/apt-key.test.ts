// pim-prepare's apt-key for the build: the script it writes into the guest, taken out of
// assets/guest/prepare.sh and run here as it is, against Debian's own apt-key and gpgv on keys
// and signed release files made for the test. It must come to the same verdict, with the same
// status lines, as Debian's apt-key, and apt must accept it in its place.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../helpers/env.js';

const PREPARE = readFileSync(join(repoRoot, 'assets', 'guest', 'prepare.sh'), 'utf8');
const haveTools = ['/usr/bin/apt-key', '/usr/bin/gpg', '/usr/bin/gpgv', '/usr/bin/apt-config'].every((f) => existsSync(f));

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env, input?: string) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', env, input, timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

interface Keys {
  dir: string;
  /** apt's configuration pointing at the test's keyrings (APT_CONFIG). */
  env: NodeJS.ProcessEnv;
  wrapper: string;
  /** A release file clear-signed by key `who`. */
  signed(who: string, text?: string): string;
}

/**
 * Four throw-away keys: a (an armored .asc in the trusted parts), b (a binary .gpg there), c (the
 * trusted.gpg file) and d (trusted nowhere: its armored export sits under a .gpg name, which
 * apt-key's rules ignore).
 */
function keys(): Keys {
  const dir = mkdtempSync(join(tmpdir(), 'pim-apt-key-'));
  const gnupg = join(dir, 'gnupg');
  const parts = join(dir, 'trusted.gpg.d');
  mkdirSync(gnupg, { mode: 0o700 });
  mkdirSync(parts);
  const gpg = (...args: string[]) => {
    const r = run('gpg', ['--homedir', gnupg, '--batch', '--quiet', ...args]);
    assert.equal(r.status, 0, `gpg ${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };
  for (const who of ['a', 'b', 'c', 'd']) gpg('--passphrase', '', '--quick-gen-key', `PIM test ${who} <${who}@pim.test>`, 'ed25519', 'sign', 'never');
  writeFileSync(join(parts, 'a.asc'), gpg('--armor', '--export', 'a@pim.test'));
  writeFileSync(join(parts, 'd-armored.gpg'), gpg('--armor', '--export', 'd@pim.test'));
  const binary = (who: string, file: string) => {
    const r = spawnSync('gpg', ['--homedir', gnupg, '--batch', '--export', `${who}@pim.test`]);
    assert.equal(r.status, 0);
    writeFileSync(file, r.stdout);
  };
  binary('b', join(parts, 'b.gpg'));
  binary('c', join(dir, 'trusted.gpg'));
  const conf = join(dir, 'apt.conf');
  writeFileSync(conf, `Dir::Etc::Trusted "${join(dir, 'trusted.gpg')}";\nDir::Etc::TrustedParts "${parts}/";\n`);

  const m = /cat > \/usr\/lib\/pim-build\/apt-key <<'SH'\n([\s\S]*?)\nSH\n/.exec(PREPARE);
  assert.ok(m, 'prepare.sh writes /usr/lib/pim-build/apt-key');
  const wrapper = join(dir, 'apt-key');
  writeFileSync(wrapper, `${m[1]}\n`, { mode: 0o755 });
  let n = 0;
  return {
    dir,
    env: { ...process.env, APT_CONFIG: conf, TMPDIR: dir },
    wrapper,
    signed(who, text = `Origin: pim-test\nSuite: pim\nCodename: pim\nDate: ${new Date().toUTCString()}\n`) {
      const plain = join(dir, `release-${++n}`);
      writeFileSync(plain, text);
      gpg('--yes', '--local-user', `${who}@pim.test`, '--clearsign', '--output', `${plain}.signed`, plain);
      return `${plain}.signed`;
    },
  };
}

/** apt-key's verify as apt calls it; the status lines it wrote on fd 3. */
function verify(apt_key: string, k: Keys, file: string, before: string[] = []) {
  const statusFile = join(k.dir, 'status');
  const r = run('bash', ['-c', '"$@" 3> "$STATUS"', 'verify', apt_key, ...before, '--quiet', '--readonly', 'verify', '--status-fd', '3', file], {
    ...k.env,
    STATUS: statusFile,
  });
  const status = readFileSync(statusFile, 'utf8');
  return { status: r.status, lines: status };
}

test("pim-prepare's apt-key comes to Debian's verdict, with the same status lines, for every trusted keyring kind, an untrusted key and a changed file", { skip: !haveTools && 'needs apt-key, apt-config, gpg and gpgv' }, () => {
  const k = keys();
  try {
    const tampered = k.signed('a');
    writeFileSync(tampered, readFileSync(tampered, 'utf8').replace('Suite: pim', 'Suite: evil'));
    const cases: [string, string, RegExp][] = [
      ['a, an .asc in the trusted parts', k.signed('a'), /^\[GNUPG:\] GOODSIG \S+ PIM test a/m],
      ['b, a .gpg in the trusted parts', k.signed('b'), /^\[GNUPG:\] GOODSIG \S+ PIM test b/m],
      ['c, in trusted.gpg', k.signed('c'), /^\[GNUPG:\] GOODSIG \S+ PIM test c/m],
      ['d, only in a .gpg that is not a keyring', k.signed('d'), /^\[GNUPG:\] NO_PUBKEY /m],
      ['a, the file changed after signing', tampered, /^\[GNUPG:\] BADSIG \S+ PIM test a/m],
    ];
    for (const [what, file, expected] of cases) {
      const debian = verify('/usr/bin/apt-key', k, file);
      const ours = verify(k.wrapper, k, file);
      assert.match(debian.lines, expected, `${what}: Debian's apt-key`);
      assert.match(debian.lines, /^\[APTKEY:\] WARNING The key\(s\) in the keyring \S+\/d-armored\.gpg are ignored as the file has an unsupported filetype\.$/m);
      assert.equal(ours.status, debian.status, `${what}: exit code`);
      assert.equal(ours.lines, debian.lines, `${what}: status lines`);
      assert.equal(ours.status === 0, /GOODSIG/.test(expected.source), `${what}: exit ${ours.status}`);
    }
    // With Signed-By, apt names the keyring: that goes to Debian's apt-key (b's key alone).
    const forced = verify(k.wrapper, k, k.signed('a'), ['--keyring', join(k.dir, 'trusted.gpg.d', 'b.gpg')]);
    assert.notEqual(forced.status, 0);
    assert.match(forced.lines, /NO_PUBKEY/);
    // It leaves no temp dir behind.
    const left = run('bash', ['-c', 'ls -d "$1"/apt-key-gpghome.* 2>/dev/null || true', 'ls', k.dir]).stdout.trim();
    assert.equal(left, '');
  } finally {
    rmSync(k.dir, { recursive: true, force: true });
  }
});

test('apt takes it in apt-key\'s place (Dir::Bin::apt-key): a repository signed by a trusted key updates, one signed by an unknown key is refused', { skip: (!haveTools || process.getuid?.() !== 0 || !existsSync('/usr/bin/apt-get')) && 'needs root, apt-get, gpg' }, () => {
  const k = keys();
  try {
    // A shim that notes each call, then runs pim-prepare's apt-key.
    const calls = join(k.dir, 'calls');
    const shim = join(k.dir, 'apt-key-shim');
    writeFileSync(shim, `#!/bin/sh\necho "$*" >> ${calls}\nexec ${k.wrapper} "$@"\n`, { mode: 0o755 });
    const update = (who: string) => {
      const repo = join(k.dir, `repo-${who}`);
      const dist = join(repo, 'dists', 'pim');
      mkdirSync(join(dist, 'main', 'binary-amd64'), { recursive: true });
      writeFileSync(join(dist, 'main', 'binary-amd64', 'Packages'), '');
      const empty = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';
      const release = `Origin: pim-test\nSuite: pim\nCodename: pim\nDate: ${new Date().toUTCString()}\nArchitectures: amd64\nComponents: main\nSHA256:\n ${empty} 0 main/binary-amd64/Packages\n`;
      writeFileSync(join(dist, 'InRelease'), readFileSync(k.signed(who, release), 'utf8'));
      const state = join(k.dir, `state-${who}`);
      for (const d of ['lists/partial', 'cache/archives/partial', 'parts']) mkdirSync(join(state, d), { recursive: true });
      writeFileSync(join(state, 'sources.list'), `deb file:${repo} pim main\n`);
      return run('apt-get', ['update', '-o', `Dir::Etc::SourceList=${join(state, 'sources.list')}`, '-o', `Dir::Etc::SourceParts=${join(state, 'parts')}`,
        '-o', `Dir::State::Lists=${join(state, 'lists')}`, '-o', `Dir::Cache=${join(state, 'cache')}`, '-o', `Dir::Bin::apt-key=${shim}`,
        '-o', 'APT::Sandbox::User=root', '-o', 'Acquire::Languages=none'], k.env);
    };
    const good = update('a');
    assert.equal(good.status, 0, good.stdout + good.stderr);
    assert.match(good.stdout, /Get:1 file:\S+ pim InRelease/);
    const bad = update('d');
    assert.notEqual(bad.status, 0, bad.stdout);
    assert.match(bad.stdout + bad.stderr, /NO_PUBKEY/);
    // One call per update in the form PIM's apt-key takes (after the refusal apt asks Debian's
    // again, with the legacy trusted.gpg alone, for its hint about that file).
    const noted = readFileSync(calls, 'utf8').trim().split('\n');
    assert.equal(noted.filter((c) => /^--quiet --readonly verify --status-fd 3 \S+ \S+$/.test(c)).length, 2, noted.join('\n'));
  } finally {
    rmSync(k.dir, { recursive: true, force: true });
  }
});
