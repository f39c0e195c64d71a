import { test, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import pino from 'pino';
import { Reconciler } from './index.js';
import { VolumeService } from '../core/service.js';
import { MemoryStore } from '../store/memory.js';
import { BackendRegistry } from '../backends/registry.js';
import { FakeBackend, fakeFactory } from '../../test/fakes/backend.js';
import type { BackendContext } from '../backends/types.js';
import type { DockerApi } from '../host/docker-api.js';
import type { MountTable } from '../host/mountinfo.js';

let fake: FakeBackend;
let store: MemoryStore;
let svc: VolumeService;
let now: Date;
let inUse: Set<string> | Error;
let rec: Reconciler;

const docker: DockerApi = {
  volumesInUse: async () => { if (inUse instanceof Error) throw inUse; return new Set(inUse); },
  listVolumes: async () => undefined,
};
const mounts: MountTable = { list: async () => [], at: async () => undefined };

beforeEach(() => {
  fake = new FakeBackend();
  store = new MemoryStore();
  now = new Date('2026-01-01T00:00:00Z');
  inUse = new Set();
  const reg = new BackendRegistry().registerType(fakeFactory(fake)).instantiate({ fake: { type: 'fake' } }, {} as BackendContext);
  const log = pino({ level: 'silent' });
  svc = new VolumeService({ store, backends: reg, log, node: 'n1', defaultBackend: 'fake' });
  rec = new Reconciler({ service: svc, store, backends: reg, mounts, loops: async () => [], docker, driver: 'ballast', log, node: 'n1', leakGraceMs: 60_000, intervalMs: 1000, now: () => now });
});

test('a clean state needs no repair', async () => {
  await svc.create('a', {});
  await svc.mount('a', 'm1');
  inUse = new Set(['a']);
  const r = await rec.runOnce();
  assert.deepEqual(r.repairs, []);
  assert.equal(r.docker, 'ok');
});

test('unmounts what nothing references and mounts what is referenced, unmounts first', async () => {
  await svc.create('idle', {});
  await svc.create('used', {});
  fake.published.add('idle');            // left mounted by a crash
  await store.endOp('n1', (await store.addMountWithUndo('used', 'n1', 'm1')).undo);    // referenced, but not mounted (host reboot)
  inUse = new Set(['used']);
  fake.calls.length = 0;
  const r = await rec.runOnce();
  assert.deepEqual(r.repairs.map((x) => [x.kind, x.volume]), [['unmount-unreferenced', 'idle'], ['remount-referenced', 'used']]);
  assert.deepEqual(fake.calls, ['unpublish:idle', 'publish:used']);
  assert.ok(!fake.published.has('idle') && fake.published.has('used'));
  assert.deepEqual((await rec.runOnce()).repairs, [], 'a second pass finds nothing to do');
  assert.equal(rec.status().counters['unmount-unreferenced'], 1);
});

test('leaked references are dropped after the grace period, only when no running container uses the volume', async () => {
  await svc.create('v', {});
  await svc.mount('v', 'old');
  now = new Date(Date.now() + 61_000);
  let r = await rec.runOnce();
  assert.deepEqual(r.repairs.map((x) => x.kind), ['leaked-reference']);
  assert.equal(await store.mountCount('v', 'n1'), 0);
  assert.ok(!fake.published.has('v'), 'last reference dropped: unmounted');

  await svc.mount('v', 'young');
  now = new Date();
  r = await rec.runOnce();
  assert.deepEqual(r.repairs, [], 'a young reference is protected (its container may be starting)');
  assert.deepEqual(r.leaked.map((l) => [l.id, l.dropped]), [['young', false]]);

  now = new Date(Date.now() + 3600_000);
  inUse = new Set(['v']);
  r = await rec.runOnce();
  assert.deepEqual(r.repairs, [], 'a volume a running container uses keeps every reference');
  assert.equal(await store.mountCount('v', 'n1'), 1);
});

test('without a reachable Docker API no reference is dropped', async () => {
  await svc.create('v', {});
  await svc.mount('v', 'm');
  inUse = new Error('connect ENOENT /var/run/docker.sock');
  now = new Date(Date.now() + 3600_000);
  const r = await rec.runOnce({ repair: true });
  assert.equal(await store.mountCount('v', 'n1'), 1);
  assert.match(r.docker, /ENOENT/);
});

test('repair drops leaked references at once', async () => {
  await svc.create('v', {});
  await svc.mount('v', 'm');
  now = new Date(Date.now() + 5);
  const r = await rec.runOnce({ repair: true });
  assert.deepEqual(r.repairs.map((x) => x.kind), ['leaked-reference']);
});

test('a failing repair makes the volume uncertain, retried with backoff', async () => {
  await svc.create('v', {});
  await store.endOp('n1', (await store.addMountWithUndo('v', 'n1', 'm')).undo);
  inUse = new Set(['v']);
  fake.failNext.publish = new Error('mount: I/O error');
  let r = await rec.runOnce();
  assert.equal(r.uncertain.length, 1);
  assert.match(r.uncertain[0].error, /I\/O error/);
  assert.equal(r.uncertain[0].attempts, 1);
  fake.calls.length = 0;
  r = await rec.runOnce();
  assert.deepEqual(fake.calls, [], 'not retried before its backoff');
  now = new Date(now.getTime() + 2_001);
  r = await rec.runOnce();
  assert.deepEqual(r.uncertain, []);
  assert.ok(fake.published.has('v'));
});

test('recovery and repairs act only on this node\'s rows of the ledger and the journal', async () => {
  await svc.create('theirs', {});
  await svc.create('shared', {});
  // Node n2 holds a reference to each and has an unmount in flight; nothing of it is n1's to repair.
  await store.endOp('n2', (await store.addMountWithUndo('theirs', 'n2', 'r2')).undo);
  await store.endOp('n2', (await store.addMountWithUndo('shared', 'n2', 's2')).undo);
  const theirOp = await store.beginOp({ volume: 'theirs', node: 'n2', op: 'unmount', mountId: 'r2' });
  fake.published.add('shared'); // mounted here, but only n2 references it
  inUse = new Set(['theirs', 'shared']);
  assert.deepEqual(await svc.recover(), []);
  assert.deepEqual((await store.pendingOps('n2')).map((o) => o.id), [theirOp], 'n2\'s journal is left to n2');
  const r = await rec.runOnce({ repair: true });
  assert.deepEqual(r.repairs.map((x) => [x.kind, x.volume]), [['unmount-unreferenced', 'shared']], 'this node unmounts what it does not reference, whatever other nodes hold');
  assert.ok(!fake.published.has('theirs'), 'another node\'s reference mounts nothing here');
  assert.equal(await store.mountCount('theirs', 'n2'), 1, 'and is never dropped as leaked by this node');
  await assert.rejects(svc.remove('theirs'), /in use by 1 mount: r2 \(x1, since .*, on node n2\)/);
});

test('recover rolls back interrupted mounts and rolls forward unmounts, creates and removes', async () => {
  await svc.create('m', {});
  await svc.create('u', {});
  fake.published.add('u');
  await store.beginOp({ volume: 'm', node: 'n1', op: 'mount', mountId: 'x' });
  await store.beginOp({ volume: 'u', node: 'n1', op: 'unmount', mountId: 'y' });
  await store.insertVolume({ name: 'c', backend: 'fake', spec: { color: 'blue' }, mountpoint: '/fake/c', createdAt: '', state: 'creating', details: {} });
  await svc.create('r', {});
  await store.updateVolume({ ...(await store.getVolume('r'))!, state: 'removing' });
  const out = await svc.recover();
  assert.deepEqual(out.map((o) => [o.volume, o.action, o.ok]), [
    ['m', 'roll back interrupted mount', true],
    ['u', 'roll forward interrupted unmount', true],
    ['c', 'roll forward interrupted create', true],
    ['r', 'roll forward interrupted remove', true],
  ]);
  assert.deepEqual(await store.pendingOps('n1'), []);
  assert.equal(await store.mountCount('m', 'n1'), 0);
  assert.ok(!fake.published.has('u'));
  assert.equal((await store.getVolume('c'))?.state, 'ready');
  assert.equal(await store.getVolume('r'), undefined);
  assert.ok(!fake.provisioned.has('r'));
});

/**
 * A crash at each named step of mount and unmount, simulated by a fault that throws (nothing after it
 * runs, as after SIGKILL); then what a new daemon does on the same store before serving: recover, then
 * one reconcile pass. No container uses the volume (dockerd's retry of the interrupted call arrives
 * without its body and fails), except a second, older mount ID that must keep the volume mounted.
 */
for (const [point, other] of [
  ['mount.intent', false], ['mount.published', false], ['mount.ledger', false],
  ['unmount.intent', false], ['unmount.ledger', false], ['unmount.unpublished', false],
  ['mount.ledger', true], ['unmount.intent', true],
] as const) {
  test(`a crash at ${point}${other ? ' with another reference held' : ''}: recovery and the first pass leave ${other ? 'only that reference, mounted' : 'no reference and nothing mounted'}`, async () => {
    const crash = new Error(`crash at ${point}`);
    const reg = new BackendRegistry().registerType(fakeFactory(fake)).instantiate({ fake: { type: 'fake' } }, {} as BackendContext);
    const dying = new VolumeService({ store, backends: reg, log: pino({ level: 'silent' }), node: 'n1', defaultBackend: 'fake', fault: (p) => { if (p === point) throw crash; } });
    await svc.create('v', {});
    if (other) { await svc.mount('v', 'other'); inUse = new Set(['v']); }
    if (point.startsWith('mount.')) {
      await assert.rejects(dying.mount('v', 'c1'), new RegExp(crash.message));
    } else {
      await svc.mount('v', 'c1');
      await assert.rejects(dying.unmount('v', 'c1'), new RegExp(crash.message));
    }
    const out = await svc.recover();
    assert.ok(out.every((o) => o.ok), JSON.stringify(out));
    await rec.runOnce({ checkDocker: true });
    assert.deepEqual(await store.pendingOps('n1'), []);
    assert.deepEqual((await store.mounts('v')).map((m) => [m.id, m.count]), other ? [['other', 1]] : []);
    assert.equal(fake.published.has('v'), other, other ? 'still mounted for the other reference' : 'unmounted');
  });
}

test('a mount answered before the crash keeps its reference; journal entries are all closed', async () => {
  await svc.create('v', {});
  await svc.mount('v', 'c1');
  assert.deepEqual(await store.pendingOps('n1'), []);
  assert.deepEqual(await svc.recover(), []);
  assert.equal(await store.mountCount('v', 'n1'), 1);
});
