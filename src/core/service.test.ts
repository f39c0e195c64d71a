import { test, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import pino from 'pino';
import { VolumeService } from './service.js';
import { MemoryStore } from '../store/memory.js';
import { BackendRegistry } from '../backends/registry.js';
import { FakeBackend, fakeFactory } from '../../test/fakes/backend.js';
import { BusyError, ConflictError, InvalidArgumentError, NotFoundError } from './errors.js';
import type { BackendContext } from '../backends/types.js';

let fake: FakeBackend;
let store: MemoryStore;
let svc: VolumeService;
const ctx = {} as BackendContext;

beforeEach(() => {
  fake = new FakeBackend();
  store = new MemoryStore();
  const reg = new BackendRegistry().registerType(fakeFactory(fake)).instantiate({ fake: { type: 'fake' } }, ctx);
  svc = new VolumeService({ store, backends: reg, log: pino({ level: 'silent' }), node: 'n1', defaultBackend: 'fake', now: () => new Date('2026-01-02T03:04:05Z') });
});

const NODE = 'n1';

test('create stores a ready volume and provisions once', async () => {
  const v = await svc.create('db', { color: 'red' });
  assert.equal(v.name, 'db');
  assert.equal(v.state, 'ready');
  assert.equal(v.createdAt, '2026-01-02T03:04:05.000Z');
  assert.deepEqual(v.status, { backend: 'fake', type: 'fake', state: 'ready', mounts: 0, color: 'red' });
  assert.deepEqual(fake.calls, ['provision:db']);
});

test('create is idempotent for the same spec and a Conflict for another', async () => {
  await svc.create('db', { size: '1G' });
  await svc.create('db', { size: '1024M' }); // same bytes, same spec
  assert.deepEqual(fake.calls, ['provision:db']);
  await assert.rejects(svc.create('db', { size: '2G' }), (e) => e instanceof ConflictError && /already exists/.test(e.message));
});

test('unknown options, backends and bad names change nothing', async () => {
  await assert.rejects(svc.create('db', { shape: 'round' }), (e) => e instanceof InvalidArgumentError && /accepted options: backend, size, color/.test(e.message));
  await assert.rejects(svc.create('db', { backend: 'nope' }), /unknown backend "nope"; configured backends: fake/);
  await assert.rejects(svc.create('../x', {}), InvalidArgumentError);
  await assert.rejects(svc.create('db', { color: 'a\u0000b' }), /control characters/);
  await assert.rejects(svc.create('db', 'notamap'), /options must be a map/);
  await assert.rejects(svc.create('db', { 'a b': 'x' }), /option name/);
  assert.deepEqual(await store.listVolumes(), []);
  assert.deepEqual(fake.calls, []);
});

test('a failed provision leaves no record behind', async () => {
  fake.failNext.provision = new Error('disk on fire');
  await assert.rejects(svc.create('db', {}), /disk on fire/);
  assert.equal(await store.getVolume('db'), undefined);
  await svc.create('db', {});
  assert.equal((await svc.get('db')).state, 'ready');
});

test('mount refcounts per (volume, id) as a multiset; real unmount on the last reference', async () => {
  await svc.create('db', {});
  assert.equal(await svc.mount('db', 'id1'), '/fake/db');
  assert.equal(await svc.mount('db', 'id1'), '/fake/db'); // docker cp mounts the same ID again
  await svc.mount('db', 'id2');
  assert.equal((await svc.get('db')).mounts, 3);
  await svc.unmount('db', 'id1');
  await svc.unmount('db', 'id2');
  assert.ok(fake.published.has('db'), 'still one reference');
  assert.ok(!fake.calls.includes('unpublish:db'));
  await svc.unmount('db', 'id1');
  assert.ok(!fake.published.has('db'));
  assert.equal((await svc.get('db')).mounts, 0);
  assert.equal(fake.calls.filter((c) => c === 'unpublish:db').length, 1);
});

test('a failed publish adds no reference', async () => {
  await svc.create('db', {});
  fake.failNext.publish = new Error('mount: wrong fs type');
  await assert.rejects(svc.mount('db', 'id1'), /wrong fs type/);
  assert.equal(await store.mountCount('db', NODE), 0);
});

test('unmount always drops the reference, even when the real unmount fails', async () => {
  await svc.create('db', {});
  await svc.mount('db', 'id1');
  fake.failNext.unpublish = new Error('target is busy');
  await assert.rejects(svc.unmount('db', 'id1'), /target is busy/);
  assert.equal(await store.mountCount('db', NODE), 0);
});

test('unmount of an unknown ID or volume succeeds', async () => {
  await svc.create('db', {});
  await svc.unmount('db', 'never-mounted');
  await svc.unmount('ghost', 'x');
});

test('remove refuses a volume in use, naming the mounts', async () => {
  await svc.create('db', {});
  await svc.mount('db', 'a'.repeat(64));
  await assert.rejects(svc.remove('db'), (e) => e instanceof BusyError && /in use by 1 mount: aaaaaaaaaaaa/.test(e.message));
  assert.ok(fake.provisioned.has('db'));
  await svc.unmount('db', 'a'.repeat(64));
  await svc.remove('db');
  assert.ok(!fake.provisioned.has('db'));
  await assert.rejects(svc.get('db'), NotFoundError);
  await svc.remove('db'); // absent: success
});

test('mount of a missing volume is NotFound', async () => {
  await assert.rejects(svc.mount('nope', 'id'), NotFoundError);
  await assert.rejects(svc.path('nope'), NotFoundError);
});

test('one operation per volume at a time; volumes run in parallel', async () => {
  fake.delayMs = 20;
  await Promise.all([svc.create('a', {}), svc.create('b', {})]);
  fake.maxInFlight = 0; fake.maxInFlightPerVolume.clear();
  await Promise.all([svc.mount('a', '1'), svc.mount('a', '2'), svc.mount('b', '1'), svc.mount('b', '2')]);
  assert.equal(fake.maxInFlightPerVolume.get('a'), 1, 'two mounts of one volume are serialized');
  assert.equal(fake.maxInFlightPerVolume.get('b'), 1);
  assert.equal(fake.maxInFlight, 2, 'the two volumes ran in parallel');
  assert.equal(await store.mountCount('a', NODE), 2);
});

test('concurrent creates of one name provision once', async () => {
  fake.delayMs = 5;
  const rs = await Promise.allSettled(Array.from({ length: 10 }, () => svc.create('db', { color: 'red' })));
  assert.ok(rs.every((r) => r.status === 'fulfilled'));
  assert.deepEqual(fake.calls, ['provision:db']);
});

test('list returns names, mountpoints and creation times', async () => {
  await svc.create('b', {}); await svc.create('a', {});
  assert.deepEqual(await svc.list(), [
    { name: 'a', mountpoint: '/fake/a', createdAt: '2026-01-02T03:04:05.000Z' },
    { name: 'b', mountpoint: '/fake/b', createdAt: '2026-01-02T03:04:05.000Z' },
  ]);
});

test('creates of one backend pass its space check one at a time, each seeing the records made before it', async () => {
  const seen: string[][] = [];
  class Accounting extends FakeBackend {
    async checkCreate(_spec: Readonly<Record<string, unknown>>, others: readonly { name: string }[]): Promise<void> {
      seen.push(others.map((o) => o.name).sort());
      await new Promise((r) => setTimeout(r, 10)); // a statfs, say: long enough for a racing create to get past it
      if (others.length >= 2) throw new ConflictError('no room for a third volume');
    }
  }
  const acc = new Accounting();
  const reg = new BackendRegistry().registerType(fakeFactory(acc)).instantiate({ fake: { type: 'fake' } }, ctx);
  const s = new VolumeService({ store, backends: reg, log: pino({ level: 'silent' }), node: NODE, defaultBackend: 'fake' });
  const rs = await Promise.allSettled(['a', 'b', 'c'].map((n) => s.create(n, {})));
  assert.deepEqual(rs.map((r) => r.status), ['fulfilled', 'fulfilled', 'rejected'], 'the third create saw the other two');
  assert.deepEqual(seen, [[], ['a'], ['a', 'b']]);
  assert.deepEqual((await store.listVolumes()).map((v) => v.name), ['a', 'b']);
});
