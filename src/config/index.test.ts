import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { loadConfig, driverName } from './index.js';

test('defaults need no config file', () => {
  const c = loadConfig({}, {});
  assert.equal(c.root, '/var/lib/ballast');
  assert.equal(c.socket, '/run/docker/plugins/ballast.sock');
  assert.equal(c.adminSocket, '/var/lib/ballast/admin.sock');
  assert.equal(c.defaultBackend, 'local');
  assert.deepEqual(Object.keys(c.backends), ['local', 'block']);
  assert.ok(Object.isFrozen(c) && Object.isFrozen(c.backends));
  assert.equal(driverName(c.socket), 'ballast');
});

test('flags beat env beat file', () => {
  const d = mkdtempSync(join(tmpdir(), 'cfg-'));
  const f = join(d, 'c.json');
  writeFileSync(f, JSON.stringify({ root: '/file/root', logLevel: 'warn', backends: { fast: { type: 'block', defaultFstype: 'xfs' } } }));
  const c = loadConfig({ config: f, root: '/flag/root' }, { BALLAST_LOG_LEVEL: 'debug' });
  assert.equal(c.root, '/flag/root');
  assert.equal(c.logLevel, 'debug');
  assert.equal(c.defaultBackend, 'fast');
});

test('bad config is refused with the accepted keys', () => {
  const d = mkdtempSync(join(tmpdir(), 'cfg-'));
  const f = join(d, 'c.json');
  writeFileSync(f, JSON.stringify({ rooot: '/x' }));
  assert.throws(() => loadConfig({ config: f }, {}), /unknown key "rooot".*accepted keys: root/);
  writeFileSync(f, '{not json');
  assert.throws(() => loadConfig({ config: f }, {}), /not valid JSON/);
  assert.throws(() => loadConfig({ root: 'relative' }, {}), /absolute path/);
  assert.throws(() => loadConfig({ socket: '/run/x.socket' }, {}), /must end in .sock/);
  assert.throws(() => loadConfig({ logLevel: 'loud' }, {}), /log level/);
  assert.throws(() => loadConfig({ dockerHost: 'tcp://1.2.3.4:2375' }, {}), /not supported/);
  assert.throws(() => loadConfig({ config: join(d, 'missing.json') }, {}), /cannot read config file/);
});

test('space: defaults, overrides, and refusals that name the key', () => {
  const d = mkdtempSync(join(tmpdir(), 'cfg-'));
  const f = join(d, 'c.json');
  assert.deepEqual(loadConfig({}, {}).space, { warnFreePercent: 15, criticalFreePercent: 5, criticalMinMiB: 256, resumeMarginPercent: 2, pollMs: 200 });
  writeFileSync(f, JSON.stringify({ space: { criticalFreePercent: 10, pollMs: 100 } }));
  assert.deepEqual(loadConfig({ config: f }, {}).space, { warnFreePercent: 15, criticalFreePercent: 10, criticalMinMiB: 256, resumeMarginPercent: 2, pollMs: 100 });
  for (const [space, re] of [
    [{ critical: 1 }, /unknown key "critical" in space; accepted keys: warnFreePercent, criticalFreePercent, criticalMinMiB, resumeMarginPercent, pollMs/],
    [{ warnFreePercent: 5, criticalFreePercent: 10 }, /criticalFreePercent \(10\) must not be above space.warnFreePercent \(5\)/],
    [{ pollMs: 20_000 }, /space.pollMs \(20000\) must be shorter than the reconcile interval \(15000 ms\)/],
    [{ criticalFreePercent: -1 }, /space.criticalFreePercent must be a number between 0 and 90/],
  ] as const) {
    writeFileSync(f, JSON.stringify({ space }));
    assert.throws(() => loadConfig({ config: f }, {}), re);
  }
});

test('cluster timing: defaults derived from the lease TTL, and a rule that refuses timings under which a node could not self-fence in time', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ballast-cfg-'));
  const f = join(dir, 'c.json');
  const etcd = (extra: Record<string, unknown>) => { writeFileSync(f, JSON.stringify({ store: { type: 'etcd', endpoints: ['http://127.0.0.1:2379'], ...extra } })); return loadConfig({ config: f }, {}); };
  const c = etcd({}).store;
  assert.equal(c.type, 'etcd');
  if (c.type !== 'etcd') return;
  assert.deepEqual([c.leaseTtlSec, c.keepaliveSec, c.selfFenceMarginSec, c.takeoverGraceSec, c.peerTimeoutSec, c.peerListen], [10, 2, 3, 1, 1, 'auto']);
  assert.throws(() => etcd({ leaseTtlSec: 4, keepaliveSec: 2 }), /2 x store.keepaliveSec \(2\) \+ store.peerTimeoutSec \(0.4\) must be shorter than store.leaseTtlSec \(4\) - store.selfFenceMarginSec \(1.2\)/);
  assert.throws(() => etcd({ peerListen: '10.0.0.1' }), /store.peerListen "10.0.0.1" must be "auto", "off", or an IPv4 address and port/);
  assert.equal((etcd({ leaseTtlSec: 30 }).store as { keepaliveSec: number }).keepaliveSec, 6);
});
