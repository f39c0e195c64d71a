/**
 * Units of the etcd store that need no etcd: the `store` config section, and what open refuses before
 * it connects. The store itself is tested against a real etcd in test/e2e/etcd-store.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { loadConfig } from '../config/index.js';
import { EtcdStore } from './etcd.js';

const dir = mkdtempSync(join(tmpdir(), 'ballast-etcd-unit-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
const withStore = (store: unknown) => {
  const f = join(dir, `c${++n}.json`);
  writeFileSync(f, JSON.stringify({ store }));
  return loadConfig({ config: f }, {});
};
const refused = (re: RegExp) => (e: unknown) => (e as { code?: string }).code === 'InvalidArgument' && re.test((e as Error).message);

test('store config: SQLite by default; etcd with its defaults', () => {
  assert.deepEqual(loadConfig({}, {}).store, { type: 'sqlite' });
  assert.deepEqual(withStore({ type: 'sqlite' }).store, { type: 'sqlite' });
  const c = withStore({ type: 'etcd', endpoints: ['http://10.0.0.1:2379', 'http://10.0.0.2:2379'] });
  assert.deepEqual(c.store, { type: 'etcd', endpoints: ['http://10.0.0.1:2379', 'http://10.0.0.2:2379'], prefix: '/ballast/', timeoutSec: 5, staleReadSec: 60, leaseTtlSec: 10, keepaliveSec: 2, selfFenceMarginSec: 3, takeoverGraceSec: 1, peerTimeoutSec: 1, peerListen: 'auto' });
  assert.ok(Object.isFrozen(c.store));
  const t = withStore({ type: 'etcd', endpoints: ['https://e1:2379'], prefix: '/c1/', timeoutSec: 2, tls: { ca: '/etc/ca.pem', cert: '/etc/c.pem', key: '/etc/k.pem' }, auth: { user: 'ballast', passwordFile: '/etc/ballast/etcd.pw' } });
  assert.deepEqual(t.store, { type: 'etcd', endpoints: ['https://e1:2379'], prefix: '/c1/', timeoutSec: 2, staleReadSec: 60, leaseTtlSec: 10, keepaliveSec: 2, selfFenceMarginSec: 3, takeoverGraceSec: 1, peerTimeoutSec: 1, peerListen: 'auto', tls: { ca: '/etc/ca.pem', cert: '/etc/c.pem', key: '/etc/k.pem' }, auth: { user: 'ballast', passwordFile: '/etc/ballast/etcd.pw' } });
});

test('store config: unknown keys are refused with the accepted ones; bad values with a sentence', () => {
  assert.throws(() => withStore({ type: 'etcd', endpoints: ['http://e:2379'], password: 'x' }), refused(/unknown key "password" in store; accepted keys: type, endpoints, prefix, timeoutSec, staleReadSec, leaseTtlSec, keepaliveSec, selfFenceMarginSec, takeoverGraceSec, peerTimeoutSec, peerListen, tls, auth/));
  assert.throws(() => withStore({ type: 'sqlite', endpoints: [] }), refused(/unknown key "endpoints" in store; accepted keys: type/));
  assert.throws(() => withStore({ type: 'etcd', endpoints: ['https://e:2379'], tls: { ca: '/ca', crt: '/c' } }), refused(/unknown key "crt" in store.tls; accepted keys: ca, cert, key/));
  assert.throws(() => withStore({ type: 'etcd', endpoints: ['http://e:2379'], auth: { user: 'u', password: 'p' } }), refused(/unknown key "password" in store.auth; accepted keys: user, passwordFile/));
  assert.throws(() => withStore({ type: 'zookeeper' }), refused(/store.type "zookeeper" is not one of sqlite, etcd/));
  assert.throws(() => withStore({ type: 'etcd' }), refused(/store.endpoints must list at least one etcd client URL/));
  assert.throws(() => withStore({ type: 'etcd', endpoints: ['e1:2379'] }), refused(/"e1:2379" is not an etcd client URL/));
  assert.throws(() => withStore({ type: 'etcd', endpoints: ['http://e:2379'], prefix: 'ballast' }), refused(/store.prefix "ballast" must start and end with \//));
  assert.throws(() => withStore({ type: 'etcd', endpoints: ['http://e:2379'], timeoutSec: 0 }), refused(/store.timeoutSec must be a number of seconds/));
  assert.throws(() => withStore({ type: 'etcd', endpoints: ['http://e:2379'], leaseTtlSec: 1.5 }), refused(/store.leaseTtlSec must be a whole number of seconds between 2 and 600/));
  assert.throws(() => withStore({ type: 'etcd', endpoints: ['https://e:2379'] }), refused(/give store.tls.ca/));
  assert.throws(() => withStore({ type: 'etcd', endpoints: ['http://e:2379'], tls: { ca: '/ca' } }), refused(/must start with https:\/\//));
  assert.throws(() => withStore({ type: 'etcd', endpoints: ['https://e:2379'], tls: { ca: '/ca', cert: '/c' } }), refused(/needs both cert and key/));
  assert.throws(() => withStore({ type: 'etcd', endpoints: ['http://e:2379'], auth: { user: 'u', passwordFile: 'pw' } }), refused(/store.auth.passwordFile must be an absolute file path/));
});

test('open refuses unreadable TLS and password files before it connects, naming the file only', async () => {
  await assert.rejects(EtcdStore.open({ endpoints: ['https://127.0.0.1:1'], tls: { ca: join(dir, 'missing-ca.pem') } }), refused(/cannot read the etcd TLS CA file .*missing-ca\.pem/));
  await assert.rejects(EtcdStore.open({ endpoints: ['http://127.0.0.1:1'], auth: { user: 'u', passwordFile: join(dir, 'missing.pw') } }), refused(/cannot read the etcd password file .*missing\.pw/));
  await assert.rejects(EtcdStore.open({ endpoints: [] }), refused(/at least one endpoint/));
});
