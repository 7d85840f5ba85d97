import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { LayerCache, valuesUsedBy } from '../../src/builder/layers.js';
import { sandbox } from '../helpers/env.js';

const box = sandbox('pim-layercache-');
after(() => box.cleanup());
const key = (c: string) => c.repeat(64);

/** A work dir's two-layer chain: layer-0 (0x41 at 0) and on it `topName` (0x42 at 8M). */
function layerChain(work: string, topName: string): { base: string; top: string } {
  mkdirSync(work, { recursive: true });
  const base = join(work, 'layer-0.qcow2');
  const top = join(work, topName);
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', base, '64M']);
  execFileSync('qemu-io', ['-c', 'write -P 0x41 0 4M', base]);
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top]);
  execFileSync('qemu-io', ['-c', 'write -P 0x42 8M 4M', top]);
  return { base, top };
}

test('the install layer key follows only the profile values the templates read (and their absence)', () => {
  const source = 'd-i x string <%= hostname %>\n<% if (typeof password_crypted !== "undefined" && password_crypted) { %>crypted<% } %>';
  const used = valuesUsedBy([source], { hostname: 'web', password: 'p', scripts: ['base'] });
  assert.equal(used['hostname'], 'web');
  assert.equal(used['password_crypted'], '(absent)');
  assert.equal('scripts' in used, false);
  assert.equal('password' in used, false);
});

test('layers are committed with a copy and a rename, re-pointed at their cached parent; reused; evicted leaves first, never in use', async () => {
  const work = join(box.root, 'work');
  const { base, top } = layerChain(work, 'disk-1.qcow2');
  writeFileSync(join(work, 'id_ed25519'), 'private key');
  const cache = new LayerCache(join(box.root, 'layers'), 1);
  await cache.commit(key('a'), base, undefined, join(work, 'id_ed25519'));
  await cache.commit(key('b'), top, key('a'));
  assert.ok(existsSync(cache.keyPath(key('a'))), 'the install layer keeps its key');
  const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', cache.path(key('b'))], { encoding: 'utf8' }));
  assert.equal(info['backing-filename'], cache.path(key('a')));
  execFileSync('qemu-img', ['check', '-q', cache.path(key('b'))]);
  // The chain reads back as written: 0x41 from the parent, 0x42 from the child.
  const read = execFileSync('qemu-io', ['-r', '-c', 'read -P 0x41 0 4M', '-c', 'read -P 0x42 8M 4M', cache.path(key('b'))], { encoding: 'utf8' });
  assert.doesNotMatch(read, /Pattern verification failed/);
  const chain = [{ key: key('a'), name: 'install', scripts: [] }, { key: key('b'), name: 'base', scripts: [0] }, { key: key('c'), name: 'tools', scripts: [1] }];
  assert.equal(cache.cachedPrefix(chain), 2);
  // Over the (1-byte) cap, but in use: nothing goes.
  const release = cache.use([key('a'), key('b')]);
  assert.deepEqual(await cache.evict(), []);
  release();
  // Released: the leaf first, then its parent.
  assert.deepEqual(await cache.evict(), [key('b'), key('a')]);
  assert.equal(cache.cachedPrefix(chain), 0);
});

test('with move, the layer files themselves go into the cache (the work dir is about to go): nothing left behind, the chain reads back as written', async () => {
  const { base, top } = layerChain(join(box.root, 'moved'), 'layer-1.qcow2');
  const inode = (path: string) => Number(execFileSync('stat', ['-c', '%i', path], { encoding: 'utf8' }));
  const inodes = [inode(base), inode(top)];
  const cache = new LayerCache(join(box.root, 'moved-layers'), 1 << 30);
  assert.equal(await cache.commit(key('a'), base, undefined, undefined, undefined, { move: true }), 'stored');
  assert.equal(await cache.commit(key('b'), top, key('a'), undefined, undefined, { move: true }), 'stored');
  assert.equal(existsSync(base) || existsSync(top), false, 'moved, not copied');
  assert.deepEqual([inode(cache.path(key('a'))), inode(cache.path(key('b')))], inodes, 'the same files');
  const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', cache.path(key('b'))], { encoding: 'utf8' }));
  assert.equal(info['backing-filename'], cache.path(key('a')));
  const read = execFileSync('qemu-io', ['-r', '-c', 'read -P 0x41 0 4M', '-c', 'read -P 0x42 8M 4M', cache.path(key('b'))], { encoding: 'utf8' });
  assert.doesNotMatch(read, /Pattern verification failed/);
});

test('a layer made again goes with every layer made on it, except one a running build uses and what it stands on; its siblings stay', async () => {
  const work = join(box.root, 'tree');
  mkdirSync(work, { recursive: true });
  const cache = new LayerCache(join(box.root, 'tree-layers'), 1 << 30);
  // install (a) <- upgrade (b) <- record (c) <- extra (d); b <- other (f); a <- other upgrade (e)
  const file = (name: string, parent?: string) => {
    const path = join(work, `${name}.qcow2`);
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', ...(parent ? ['-b', parent, '-F', 'qcow2'] : []), path, '16M']);
    return path;
  };
  await cache.commit(key('a'), file('a'), undefined, undefined);
  await cache.commit(key('b'), file('b', cache.path(key('a'))), key('a'));
  await cache.commit(key('c'), file('c', cache.path(key('b'))), key('b'));
  await cache.commit(key('d'), file('d', cache.path(key('c'))), key('c'));
  await cache.commit(key('e'), file('e', cache.path(key('a'))), key('a'));
  await cache.commit(key('f'), file('f', cache.path(key('b'))), key('b'));
  // Another build's layer of a key already cached is kept, and the caller told so.
  assert.equal(await cache.commit(key('e'), file('e2', cache.path(key('a'))), key('a')), 'kept');
  const release = cache.use([key('d')]);
  try {
    const { removed, inUse } = await cache.removeWithDescendants(key('b'));
    assert.deepEqual(removed, [key('f')]);
    assert.deepEqual(inUse, [key('d')]);
  } finally {
    release();
  }
  assert.deepEqual(['a', 'b', 'c', 'd', 'e', 'f'].filter((c) => cache.has(key(c))), ['a', 'b', 'c', 'd', 'e']);
  // Nothing in use: the whole tree from b goes, records included; a and e stay.
  const { removed } = await cache.removeWithDescendants(key('b'));
  assert.deepEqual(removed.sort(), [key('b'), key('c'), key('d')]);
  assert.deepEqual(['a', 'b', 'c', 'd', 'e', 'f'].filter((c) => cache.has(key(c))), ['a', 'e']);
  assert.equal(existsSync(join(cache.dir, `${key('c')}.json`)), false, 'its record goes with it');
});
