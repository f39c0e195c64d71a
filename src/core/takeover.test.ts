/**
 * Takeover of a dead node's exclusive volume (cluster mode), with two services on one shared store and
 * a fake node registry: only once the holder's lease is gone (plus the grace) and the holder is fenced
 * at the storage (before the attachments change); never for a backend that cannot fence; a live holder
 * that is releasing is waited for; the fenced node tears its stale staging down without a flush.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import pino from 'pino';
import { VolumeService } from './service.js';
import { MemoryStore } from '../store/memory.js';
import { BackendRegistry } from '../backends/registry.js';
import { MULTI_NODE_SINGLE_WRITER, type BackendContext, type Fencer } from '../backends/types.js';
import type { VolumeRecord } from './types.js';
import { FakeBackend, fakeFactory } from '../../test/fakes/backend.js';
import { FailedPreconditionError } from './errors.js';

class FencingFake extends FakeBackend implements Fencer {
  readonly fences: { node: string; claim?: Readonly<Record<string, string>>; keep: string[]; attachmentsThen: string[] }[] = [];
  readonly fencedUnstages: string[] = [];
  store?: MemoryStore;
  constructor(private readonly client: string) { super(); this.access = MULTI_NODE_SINGLE_WRITER; }
  async claim() { return { clients: this.client }; }
  async fence(vol: VolumeRecord, holder: { node: string; claim?: Readonly<Record<string, string>> }, keep: readonly { node: string }[]) {
    // What the store says at the moment of the fence: the holder must still be there (fence first, then hand over).
    const then = (await this.store!.getAttachments(vol.name)).holders.map((h) => h.node);
    this.fences.push({ node: holder.node, claim: holder.claim, keep: keep.map((k) => k.node), attachmentsThen: then });
    return `fenced ${holder.node}`;
  }
  async unstageFenced(vol: VolumeRecord) { this.fencedUnstages.push(vol.name); this.published.delete(vol.name); }
}

function cluster(opts: { fencing: boolean; graceMs?: number; waitMs?: number }) {
  const store = new MemoryStore();
  const alive = new Map<string, number | undefined>([['n1', 10], ['n2', 10]]);
  const liveness = { isAlive: async (n: string) => alive.get(n) !== undefined, leaseLeft: async (n: string) => alive.get(n) };
  const node = (name: string) => {
    const fake = opts.fencing ? new FencingFake(`10.0.0.${name.slice(1)}:0/${name}`) : new FakeBackend();
    if (fake instanceof FencingFake) fake.store = store;
    fake.access = MULTI_NODE_SINGLE_WRITER;
    const backends = new BackendRegistry().registerType(fakeFactory(fake)).instantiate({ fake: { type: 'fake' } }, {} as BackendContext);
    const svc = new VolumeService({
      store, backends, log: pino({ level: 'silent' }), node: name, defaultBackend: 'fake', cluster: true, liveness,
      timing: { takeoverGraceMs: opts.graceMs ?? 0, takeoverWaitMs: opts.waitMs ?? 2000, suspectBelowSec: 5 },
    });
    return { fake, svc };
  };
  const n1 = node('n1');
  const n2 = node('n2');
  return { store, alive, n1, n2 };
}

test('a dead holder of a fencing backend is fenced with its claim, then taken over: epoch + 1, its references dropped', async () => {
  const c = cluster({ fencing: true });
  await c.n1.svc.create('db', {});
  c.n2.fake.provisioned.add('db');
  await c.n1.svc.mount('db', 'a');
  const before = await c.store.getAttachments('db');
  assert.deepEqual(before.holders.map((h) => [h.node, h.claim]), [['n1', { clients: '10.0.0.1:0/n1' }]], 'the stage recorded n1\'s storage client');
  // n1 alive: refused at once (it has a reference: not releasing).
  await assert.rejects(c.n2.svc.mount('db', 'b'), FailedPreconditionError);
  assert.equal((c.n2.fake as FencingFake).fences.length, 0, 'a live holder is never fenced');
  // n1's lease expires: n2 fences it (with n1's claim, while n1 still holds the volume), then takes over.
  c.alive.set('n1', undefined);
  assert.equal(await c.n2.svc.mount('db', 'b'), '/fake/db');
  const f = (c.n2.fake as FencingFake).fences;
  assert.deepEqual(f, [{ node: 'n1', claim: { clients: '10.0.0.1:0/n1' }, keep: [], attachmentsThen: ['n1'] }]);
  const after = await c.store.getAttachments('db');
  assert.equal(after.epoch, before.epoch + 1);
  assert.deepEqual(after.holders.map((h) => [h.node, h.claim]), [['n2', { clients: '10.0.0.2:0/n2' }]]);
  assert.equal(await c.store.mountCount('db', 'n1'), 0, 'the dead node\'s reference is dropped');
  // n1 comes back: its Unmount (its container stopped) tears the stale staging down without a flush.
  c.alive.set('n1', 10);
  await c.n1.svc.unmount('db', 'a');
  assert.deepEqual((c.n1.fake as FencingFake).fencedUnstages, ['db']);
  assert.ok(!c.n1.fake.calls.includes('unpublish:db'), 'no normal (flushing) unstage on the fenced node');
  assert.deepEqual((await c.store.getAttachments('db')).holders.map((h) => h.node), ['n2'], 'n2 keeps it');
});

test('the takeover waits for the grace after the lease is seen gone', async () => {
  const c = cluster({ fencing: true, graceMs: 600 });
  await c.n1.svc.create('db', {});
  c.n2.fake.provisioned.add('db');
  await c.n1.svc.mount('db', 'a');
  c.alive.set('n1', undefined);
  const t0 = Date.now();
  await c.n2.svc.mount('db', 'b');
  assert.ok(Date.now() - t0 >= 600, `took over after ${Date.now() - t0} ms`);
});

test('a backend that cannot fence is never taken over: the sentence names the node and ballast node fence', async () => {
  const c = cluster({ fencing: false, waitMs: 300 });
  await c.n1.svc.create('db', {});
  c.n2.fake.provisioned.add('db');
  await c.n1.svc.mount('db', 'a');
  c.alive.set('n1', undefined);
  await assert.rejects(c.n2.svc.mount('db', 'b'), (e) => e instanceof FailedPreconditionError
    && /attached to node n1 \(read-write since .*\), whose lease expired.*cannot cut a node off at the storage.*ballast node fence n1/.test(e.message));
  assert.deepEqual((await c.store.getAttachments('db')).holders.map((h) => h.node), ['n1']);
  assert.ok(!c.n2.fake.published.has('db'));
});

test('a suspect holder (lease well below its TTL) is waited for, not refused at once', async () => {
  const c = cluster({ fencing: true, waitMs: 3000 });
  await c.n1.svc.create('db', {});
  c.n2.fake.provisioned.add('db');
  await c.n1.svc.mount('db', 'a');
  c.alive.set('n1', 3);
  setTimeout(() => c.alive.set('n1', undefined), 400);
  await c.n2.svc.mount('db', 'b');
  assert.deepEqual((await c.store.getAttachments('db')).holders.map((h) => h.node), ['n2']);
});

test('a live holder that is releasing (attached, no reference) is waited for, and then the attach succeeds without a fence', async () => {
  const c = cluster({ fencing: true, waitMs: 3000 });
  await c.n1.svc.create('db', {});
  c.n2.fake.provisioned.add('db');
  await c.n1.svc.mount('db', 'a');
  c.n1.fake.delayMs = 500; // n1's unstage takes a while: attached, no reference meanwhile
  const unmounting = c.n1.svc.unmount('db', 'a');
  await new Promise((r) => setTimeout(r, 100));
  await c.n2.svc.mount('db', 'b');
  await unmounting;
  assert.equal((c.n2.fake as FencingFake).fences.length, 0);
  assert.deepEqual((await c.store.getAttachments('db')).holders.map((h) => h.node), ['n2']);
});

test('ballast node fence cuts a fencing backend\'s holder off at the storage before releasing it', async () => {
  const c = cluster({ fencing: true });
  await c.n1.svc.create('db', {});
  await c.n1.svc.mount('db', 'a');
  c.alive.set('n1', undefined);
  const r = await c.n2.svc.fenceNode('n1', async () => false);
  assert.equal(r.length, 1);
  assert.deepEqual((c.n2.fake as FencingFake).fences.map((f) => [f.node, f.attachmentsThen]), [['n1', ['n1']]]);
  assert.deepEqual((await c.store.getAttachments('db')).holders, []);
});
