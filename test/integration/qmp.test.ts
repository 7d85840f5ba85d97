import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { QmpClient } from '../../src/qemu/qmp.js';
import { sandbox } from '../helpers/env.js';

const box = sandbox('pim-qmp-');
after(() => box.cleanup());

test('a QMP command that QEMU never answers fails after its timeout instead of hanging', async () => {
  const path = join(box.root, 'qmp.sock');
  // A monitor that greets and negotiates, then goes silent (a hung QEMU).
  const server = createServer((socket) => {
    socket.write('{"QMP": {"version": {}, "capabilities": []}}\n');
    socket.on('data', (chunk) => {
      const message = JSON.parse(chunk.toString().trim().split('\n')[0]!) as { execute: string; id: string };
      if (message.execute === 'qmp_capabilities') socket.write(`{"return": {}, "id": "${message.id}"}\n`);
    });
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  try {
    const qmp = await QmpClient.connect(path, 5_000);
    const started = Date.now();
    await assert.rejects(qmp.execute('system_powerdown', undefined, 500), /QMP: system_powerdown got no answer within 0\.5 s/);
    assert.ok(Date.now() - started < 2_000);
    qmp.close();
  } finally {
    server.close();
  }
});
