import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { readFileSync } from 'node:fs';
import { maskSecrets, maskUrlCredentials, secretsOf } from '../../src/secrets.js';
import { BuildLog } from '../../src/builder/build-log.js';

test('secret fields and URL credentials are masked at every depth', () => {
  const masked = maskSecrets({
    password: 'pw1',
    password_crypted: '$6$x',
    http_proxy: 'http://bob:hunter22@proxy:3128/',
    nested: { aws_secret: 's', token: 't', list: ['https://u:p4ss@host/x', 'plain'] },
    username: 'bob',
  });
  assert.deepEqual(masked, {
    password: '********',
    password_crypted: '********',
    http_proxy: 'http://bob:********@proxy:3128/',
    nested: { aws_secret: '********', token: '********', list: ['https://u:********@host/x', 'plain'] },
    username: 'bob',
  });
  assert.equal(maskUrlCredentials('cannot download http://a:b@c/d and ftp://x@y/'), 'cannot download http://a:********@c/d and ftp://x@y/');
});

test('a build log masks every secret of the profile, URL credentials included', () => {
  const profile = { password: 'build-pw-1', http_proxy: 'http://user:s3cret@proxy:3128', api_key: 'k-987654' };
  const log = new BuildLog(join(tmpdir(), `pim-secrets-${process.pid}.log`), secretsOf(profile));
  log.line('d-i passwd/user-password password build-pw-1');
  log.line('d-i mirror/http/proxy string http://user:s3cret@proxy:3128');
  log.line('Acquire::http::Proxy "http://user:s3cret@proxy:3128"; key k-987654');
  log.line('some other url http://x:another-pw@h/ in console output');
  const text = readFileSync(log.path, 'utf8');
  assert.doesNotMatch(text, /build-pw-1|s3cret|k-987654|another-pw/);
  assert.equal((text.match(/\*{8}/g) ?? []).length, 5);
});
