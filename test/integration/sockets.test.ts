/**
 * One purpose per socket, over the real unix sockets of a daemon process: the plugin socket serves the
 * Docker volume plugin protocol and nothing else, the admin socket serves /v1/... and nothing else. A
 * path of the other socket answers 404 in the socket's own error form and changes nothing.
 */
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { startBallast, type BallastProc } from '../helpers/ballast.js';
import { unixRequest } from '../../src/host/unix-http.js';

const parent = mkdtempSync(join(tmpdir(), 'ballast-sockets-'));
let b: BallastProc;
before(async () => { b = await startBallast({ root: join(parent, 'root'), socket: join(parent, 'plugin.sock'), extraArgs: ['--docker-host', `unix://${join(parent, 'nodocker.sock')}`] }); });
after(async () => { await b?.stop(); rmSync(parent, { recursive: true, force: true }); });

const on = (socket: string, method: string, path: string, body?: unknown) => unixRequest(socket, method, path, body, { timeoutMs: 10_000 });

test('admin routes on the plugin socket answer 404 in the plugin form and do nothing', async () => {
  for (const [method, path, body] of [
    ['POST', '/v1/repair', undefined], ['POST', '/v1/volumes', { name: 'sneaky' }], ['GET', '/v1/volumes', undefined],
    ['GET', '/v1/health', undefined], ['GET', '/v1/doctor', undefined], ['DELETE', '/v1/volumes/x', undefined],
    ['POST', '/%761/repair', undefined], ['POST', '/v1/repair?x=1', undefined],
  ] as const) {
    const r = await on(b.socket, method, path, body);
    assert.equal(r.status, 404, `${method} ${path} on the plugin socket`);
    const parsed = JSON.parse(r.text) as { Err?: string };
    assert.match(String(parsed.Err), /unknown endpoint .*this is a Docker volume plugin/, `${method} ${path}`);
  }
  const g = await on(b.socket, 'POST', '/VolumeDriver.Get', { Name: 'sneaky' });
  assert.match(String((g.body as { Err?: string }).Err), /volume sneaky does not exist/, 'POST /v1/volumes on the plugin socket created nothing');
});

test('plugin routes on the admin socket answer 404 in the admin form and do nothing', async () => {
  for (const path of ['/Plugin.Activate', '/VolumeDriver.Create', '/VolumeDriver.List', '/VolumeDriver.Get', '/v1/../VolumeDriver.Create']) {
    const r = await on(b.adminSocket, 'POST', path, { Name: 'sneaky2' });
    assert.equal(r.status, 404, `POST ${path} on the admin socket`);
    assert.deepEqual(Object.keys(r.body as object).sort(), ['code', 'error']);
    assert.equal((r.body as { code: string }).code, 'NotFound');
  }
  const r = await on(b.adminSocket, 'GET', '/v1/volumes/sneaky2');
  assert.equal(r.status, 404);
  assert.match((r.body as { error: string }).error, /volume sneaky2 does not exist/);
});

test('each socket still serves its own protocol', async () => {
  assert.deepEqual((await on(b.socket, 'POST', '/Plugin.Activate')).body, { Implements: ['VolumeDriver'] });
  const c = await on(b.adminSocket, 'POST', '/v1/volumes', { name: 'both1' });
  assert.equal(c.status, 201, c.text);
  const g = await on(b.socket, 'POST', '/VolumeDriver.Get', { Name: 'both1' });
  assert.equal((g.body as { Volume: { Name: string } }).Volume.Name, 'both1');
  const h = await on(b.adminSocket, 'GET', '/v1/health');
  assert.equal((h.body as { pid: number }).pid, b.pid());
  const rm = await on(b.adminSocket, 'DELETE', '/v1/volumes/both1');
  assert.equal(rm.status, 204);
  const l = await on(b.socket, 'POST', '/VolumeDriver.List', {});
  assert.deepEqual(l.body, { Volumes: [] });
});
