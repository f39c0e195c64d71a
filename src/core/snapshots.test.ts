/**
 * Snapshots and clones in the core, over a fake backend with in-memory snapshots and the memory store:
 * what the records say after each call, what the backend was asked, and what recovery does with
 * snapshots a crash left half-made. The real backends are exercised in test/e2e/snapshots.test.ts.
 */
import { test, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import pino from 'pino';
import { VolumeService, cloneSnapshotName } from './service.js';
import { MemoryStore } from '../store/memory.js';
import { BackendRegistry } from '../backends/registry.js';
import { FakeBackend, fakeFactory } from '../../test/fakes/backend.js';
import { AlreadyExistsError, BusyError, FailedPreconditionError, InvalidArgumentError, NotFoundError } from './errors.js';
import type { BackendContext, ProvisionContext, Snapshotter } from '../backends/types.js';
import type { SnapshotRecord, VolumeRecord } from './types.js';

/** A fake whose snapshots are names in a set; clones record the snapshot they came from. */
class SnapFake extends FakeBackend implements Snapshotter {
  readonly freezeForSnapshot = false;
  readonly snaps = new Set<string>();
  readonly clonedFrom = new Map<string, string>();
  readonly deletedWithClones: string[][] = [];
  failSnapshot?: Error;
  snapshotMethod() { return 'fake'; }
  placeSnapshot(name: string, vol: VolumeRecord) { return { where: `${vol.name}@${name}` }; }
  async createSnapshot(vol: VolumeRecord, snap: SnapshotRecord) {
    this.calls.push(`snapshot:${vol.name}@${snap.name}`);
    this.snaps.add(snap.name);
    if (this.failSnapshot) { const e = this.failSnapshot; this.failSnapshot = undefined; throw e; }
    return { method: 'fake' };
  }
  async deleteSnapshot(snap: SnapshotRecord, clones: readonly VolumeRecord[]) {
    this.calls.push(`snapshot-rm:${snap.name}`);
    this.deletedWithClones.push(clones.map((c) => c.name));
    this.snaps.delete(snap.name);
    return clones.length ? `flattened ${clones.map((c) => c.name).join(', ')}` : undefined;
  }
  cloneSpec(spec: Readonly<Record<string, unknown>>) { return { ...spec }; }
  override async provision(v: VolumeRecord, pc?: ProvisionContext) {
    if (pc?.source) {
      if (!this.snaps.has(pc.source.name)) throw new Error(`fake: snapshot ${pc.source.name} is gone`);
      this.clonedFrom.set(v.name, pc.source.name);
    }
    return super.provision(v);
  }
}

let snapFake: SnapFake;
let plain: FakeBackend;
let store: MemoryStore;
let svc: VolumeService;

beforeEach(() => {
  snapFake = new SnapFake('snappy');
  plain = new FakeBackend('plain');
  store = new MemoryStore();
  const reg = new BackendRegistry()
    .registerType({ ...fakeFactory(snapFake), type: 'snapfake' })
    .registerType(fakeFactory(plain))
    .instantiate({ snappy: { type: 'snapfake' }, plain: { type: 'fake' } }, {} as BackendContext);
  svc = new VolumeService({ store, backends: reg, log: pino({ level: 'silent' }), node: 'n1', defaultBackend: 'snappy', now: () => new Date('2026-01-02T03:04:05Z') });
});

test('a snapshot is recorded ready with its source, size and method; a repeat of the same name answers it; another volume\'s name is AlreadyExists', async () => {
  await svc.create('db', { size: '1G' });
  const s = await svc.createSnapshot('db', 'before');
  assert.deepEqual({ name: s.name, volume: s.volume, size: s.size, state: s.state, method: s.method, clones: s.clones }, { name: 'before', volume: 'db', size: 1024 ** 3, state: 'ready', method: 'fake', clones: [] });
  assert.deepEqual(await svc.createSnapshot('db', 'before'), s, 'idempotent');
  assert.equal(snapFake.calls.filter((c) => c.startsWith('snapshot:')).length, 1, 'taken once');
  await svc.create('other', {});
  await assert.rejects(svc.createSnapshot('other', 'before'), (e) => e instanceof AlreadyExistsError && /snapshot before exists already, of volume db/.test(e.message));
  const auto = await svc.createSnapshot('db');
  assert.equal(auto.name, 'db-20260102T030405Z', 'the default name is <volume>-<UTC time>');
});

test('a backend without snapshots says so, and nothing is recorded', async () => {
  await svc.create('p', { backend: 'plain' });
  await assert.rejects(svc.createSnapshot('p', 's'), (e) => e instanceof FailedPreconditionError && /backend plain \(type fake\) does not support snapshots; nothing was changed/.test(e.message));
  await assert.rejects(svc.create('pc', { 'from-volume': 'p' }), (e) => e instanceof FailedPreconditionError && /backend plain \(type fake\) does not support snapshots or clones/.test(e.message));
  assert.deepEqual(await store.listSnapshots(), []);
  assert.equal(await store.getVolume('pc'), undefined);
});

test('a snapshot that fails at the backend leaves no record and asks the backend to delete what it made', async () => {
  await svc.create('db', {});
  snapFake.failSnapshot = new Error('disk on fire');
  await assert.rejects(svc.createSnapshot('db', 's1'), /disk on fire/);
  assert.deepEqual(await store.listSnapshots(), []);
  assert.ok(snapFake.calls.includes('snapshot-rm:s1'));
  assert.ok(!snapFake.snaps.has('s1'));
});

test('clones: from a snapshot with its source\'s spec; a clone of a volume takes a snapshot for itself and removes it after', async () => {
  await svc.create('db', { size: '2G', color: 'red' });
  await svc.createSnapshot('db', 's1');
  const c = await svc.create('c1', { 'from-snapshot': 's1' });
  assert.equal(c.backend, 'snappy');
  assert.equal(c.spec.color, 'red');
  assert.equal(c.spec.size, 2 * 1024 ** 3);
  assert.equal(snapFake.clonedFrom.get('c1'), 's1');
  assert.deepEqual((await svc.getSnapshot('s1')).clones, ['c1']);
  // Idempotent: the same request answers the clone.
  assert.equal((await svc.create('c1', { 'from-snapshot': 's1' })).name, 'c1');
  const c2 = await svc.create('c2', { 'from-volume': 'db' });
  assert.equal(snapFake.clonedFrom.get('c2'), cloneSnapshotName('c2'));
  assert.equal(await store.getSnapshot(cloneSnapshotName('c2')), undefined, 'the temporary snapshot is gone');
  assert.equal(c2.spec.fromVolume, 'db');
});

test('clone requests that cannot be honoured are refused and change nothing', async () => {
  await svc.create('db', { size: '1G' });
  await svc.create('p', { backend: 'plain' });
  await svc.createSnapshot('db', 's1');
  await assert.rejects(svc.create('x', { 'from-snapshot': 'nope' }), (e) => e instanceof NotFoundError && /snapshot nope does not exist/.test(e.message));
  await assert.rejects(svc.create('x', { 'from-snapshot': 's1', color: 'green' }), (e) => e instanceof InvalidArgumentError && /option color cannot be given with from-snapshot/.test(e.message));
  await assert.rejects(svc.create('x', { 'from-snapshot': 's1', size: '2G' }), (e) => e instanceof InvalidArgumentError && /a clone has the size of its source \(1 ?GiB\)/.test(e.message));
  await assert.rejects(svc.create('x', { 'from-snapshot': 's1', backend: 'plain' }), (e) => e instanceof InvalidArgumentError && /is on backend snappy, not plain/.test(e.message));
  await assert.rejects(svc.create('x', { 'from-snapshot': '../s1' }), InvalidArgumentError);
  await assert.rejects(svc.create('x', { 'from-volume': 'x' }), (e) => e instanceof InvalidArgumentError && /cannot be a clone of itself/.test(e.message));
  assert.ok((await svc.create('x', { 'from-snapshot': 's1', size: '1G' })).name === 'x', 'the source\'s own size may be given');
  assert.deepEqual((await store.listVolumes()).map((v) => v.name), ['db', 'p', 'x']);
});

test('a volume with snapshots is not removed; removing a snapshot tells the backend its clones', async () => {
  await svc.create('db', {});
  await svc.createSnapshot('db', 's1');
  await svc.create('c1', { 'from-snapshot': 's1' });
  await assert.rejects(svc.remove('db'), (e) => e instanceof FailedPreconditionError && /volume db has 1 snapshot \(s1\); remove it first with ballast snapshot rm/.test(e.message));
  assert.equal((await store.getVolume('db'))?.state, 'ready', 'nothing changed');
  const r = await svc.removeSnapshot('s1');
  assert.deepEqual(r, { name: 's1', note: 'flattened c1' });
  assert.deepEqual(snapFake.deletedWithClones.at(-1), ['c1']);
  assert.deepEqual(await svc.removeSnapshot('s1'), { name: 's1' }, 'gone is success');
  await svc.remove('db');
  await assert.rejects(svc.getSnapshot('s1'), NotFoundError);
});

test('recovery rolls back a snapshot being taken, finishes one being removed, and drops temporary ones whose work is over', async () => {
  await svc.create('db', {});
  await svc.createSnapshot('db', 'kept');
  const base = { volume: 'db', backend: 'snappy', spec: {}, size: 0, createdAt: '2026-01-01T00:00:00Z', node: 'n1' } as const;
  await store.insertSnapshot({ ...base, name: 'half', state: 'creating', details: {} });
  await store.insertSnapshot({ ...base, name: 'going', state: 'removing', details: {} });
  await store.insertSnapshot({ ...base, name: '_backup.db.1', state: 'ready', details: { temporary: true, purpose: 'backup' } });
  await store.insertSnapshot({ ...base, name: 'other-node', state: 'creating', node: 'n2', details: {} });
  const out = await svc.recover();
  assert.deepEqual((await store.listSnapshots()).map((s) => s.name).sort(), ['kept', 'other-node'], 'only this node\'s are acted on');
  assert.deepEqual(out.filter((o) => /snapshot/.test(o.action)).map((o) => [o.action, o.ok]).sort(), [
    ['remove temporary snapshot _backup.db.1 (backup)', true],
    ['roll back interrupted snapshot half', true],
    ['roll forward interrupted removal of snapshot going', true],
  ]);
  for (const n of ['half', 'going', '_backup.db.1']) assert.ok(snapFake.calls.includes(`snapshot-rm:${n}`), `the backend deleted ${n}`);
});

test('snapshot names: a user name may not start with "_" (Ballast\'s own), traverse or be empty', async () => {
  await svc.create('db', {});
  for (const bad of ['_x', '../x', 'a/b', ' ']) await assert.rejects(svc.createSnapshot('db', bad), InvalidArgumentError, bad);
  await assert.rejects(svc.createSnapshot('nope', 's'), NotFoundError);
  await assert.rejects(svc.removeSnapshot('a/b'), InvalidArgumentError);
  assert.deepEqual(await store.listSnapshots(), []);
  // A snapshot being taken is Busy for a removal.
  await store.insertSnapshot({ name: 'mid', volume: 'db', backend: 'snappy', spec: {}, size: 0, createdAt: '2026-01-01T00:00:00Z', node: 'n1', state: 'creating', details: {} });
  await assert.rejects(svc.removeSnapshot('mid'), BusyError);
});
