/**
 * The attach state machine of cluster mode, with two nodes (two services, each with its own backend
 * instance standing for its host) on one shared store: not attached / attached here / attached
 * elsewhere, under each backend's access modes; node-local volumes; release after the last unmount.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import pino from 'pino';
import { VolumeService } from './service.js';
import { MemoryStore } from '../store/memory.js';
import { BackendRegistry } from '../backends/registry.js';
import { MULTI_NODE_MULTI_WRITER, MULTI_NODE_SINGLE_WRITER, SINGLE_NODE_WRITER, type AccessModes, type BackendContext } from '../backends/types.js';
import { FakeBackend, fakeFactory } from '../../test/fakes/backend.js';
import { FailedPreconditionError } from './errors.js';

function cluster(access: AccessModes) {
  const store = new MemoryStore();
  const node = (name: string) => {
    const fake = new FakeBackend();
    fake.access = access;
    const backends = new BackendRegistry().registerType(fakeFactory(fake)).instantiate({ fake: { type: 'fake' } }, {} as BackendContext);
    return { fake, svc: new VolumeService({ store, backends, log: pino({ level: 'silent' }), node: name, defaultBackend: 'fake', cluster: true }) };
  };
  const n1 = node('n1');
  const n2 = node('n2');
  return { store, n1, n2, shareProvisioned: (v: string) => n2.fake.provisioned.add(v) };
}

test('an exclusive volume: attached on n1, refused on n2 naming n1, free for n2 after n1\'s last unmount', async () => {
  const c = cluster(MULTI_NODE_SINGLE_WRITER);
  await c.n1.svc.create('db', {});
  c.shareProvisioned('db');
  await c.n1.svc.mount('db', 'a');
  await c.n1.svc.mount('db', 'b'); // attached here: a second reference writes no attachment
  const set = await c.store.getAttachments('db');
  assert.deepEqual(set.holders.map((h) => [h.node, h.mode]), [['n1', 'rw']]);
  await assert.rejects(c.n2.svc.mount('db', 'x'), (e) => e instanceof FailedPreconditionError
    && /^volume db is attached read-write to node n1 since \S+; backend fake allows one read-write node at a time/.test(e.message));
  assert.ok(!c.n2.fake.published.has('db'), 'the refused node staged nothing');
  assert.equal(await c.store.mountCount('db', 'n2'), 0);
  await c.n1.svc.unmount('db', 'a');
  assert.equal((await c.store.getAttachments('db')).holders.length, 1, 'still attached while a reference is left');
  await c.n1.svc.unmount('db', 'b');
  assert.deepEqual((await c.store.getAttachments('db')).holders, [], 'the last unmount released it');
  await c.n2.svc.mount('db', 'x');
  assert.deepEqual((await c.store.getAttachments('db')).holders.map((h) => h.node), ['n2']);
  assert.deepEqual((await c.n1.svc.get('db')).status.attachments, [{ node: 'n2', mode: 'rw', since: (await c.store.getAttachments('db')).holders[0].since }]);
  await assert.rejects(c.n1.svc.remove('db'), /is in use by 1 mount: x \(x1, since .*, on node n2\)/);
});

test('two nodes mounting one exclusive volume at the same instant: exactly one wins, 100 times', async () => {
  for (let i = 0; i < 100; i++) {
    const c = cluster(MULTI_NODE_SINGLE_WRITER);
    await c.n1.svc.create('db', {});
    c.shareProvisioned('db');
    const rs = await Promise.allSettled([c.n1.svc.mount('db', 'a'), c.n2.svc.mount('db', 'b')]);
    assert.equal(rs.filter((r) => r.status === 'fulfilled').length, 1, `run ${i}: one winner`);
    const lost = rs.find((r) => r.status === 'rejected') as PromiseRejectedResult;
    assert.match((lost.reason as Error).message, /is attached read-write to node n[12]/, `run ${i}: the loser is told who holds it`);
    const holders = (await c.store.getAttachments('db')).holders;
    assert.equal(holders.length, 1);
    assert.equal(c.n1.fake.published.has('db') ? 'n1' : c.n2.fake.published.has('db') ? 'n2' : 'none', holders[0].node, `run ${i}: only the winner staged it`);
    assert.ok(!(c.n1.fake.published.has('db') && c.n2.fake.published.has('db')));
  }
});

test('a shared filesystem: both nodes attach and write', async () => {
  const c = cluster(MULTI_NODE_MULTI_WRITER);
  await c.n1.svc.create('shared', {});
  c.shareProvisioned('shared');
  await c.n1.svc.mount('shared', 'a');
  await c.n2.svc.mount('shared', 'b');
  assert.deepEqual((await c.store.getAttachments('shared')).holders.map((h) => h.node).sort(), ['n1', 'n2']);
  await assert.rejects(c.n1.svc.remove('shared'), /in use by 2 mounts/);
  await c.n2.svc.unmount('shared', 'b');
  await c.n1.svc.unmount('shared', 'a');
  await c.n1.svc.remove('shared');
});

test('a node-local volume lives on the node that made it: listed everywhere with its node, refused elsewhere with where and how', async () => {
  const c = cluster(SINGLE_NODE_WRITER);
  await c.n1.svc.create('scratch', {});
  c.shareProvisioned('scratch');
  assert.equal((await c.n2.svc.get('scratch')).status.node, 'n1', 'listed on n2 with its node named');
  assert.deepEqual((await c.n2.svc.list()).map((v) => v.name), ['scratch']);
  await assert.rejects(c.n2.svc.mount('scratch', 'x'), (e) => e instanceof FailedPreconditionError
    && /^volume scratch lives on node n1 .*cannot be mounted on node n2; run its containers on n1, e\.g\. docker service create --constraint node\.hostname==/.test(e.message));
  await assert.rejects(c.n2.svc.remove('scratch'), /lives on node n1 .*remove it on node n1/);
  await c.n1.svc.mount('scratch', 'a');
  await c.n1.svc.unmount('scratch', 'a');
  await c.n1.svc.remove('scratch');
});

test('a failed stage lets go of the attachment it took; the reconciler hook releases an idle one', async () => {
  const c = cluster(MULTI_NODE_SINGLE_WRITER);
  await c.n1.svc.create('db', {});
  c.shareProvisioned('db');
  c.n1.fake.failNext.publish = new Error('mount: wrong fs type');
  await assert.rejects(c.n1.svc.mount('db', 'a'), /wrong fs type/);
  assert.deepEqual((await c.store.getAttachments('db')).holders, [], 'released');
  // What a crash between attach and the ledger leaves: attached to n1, no reference, nothing staged.
  const set = await c.store.getAttachments('db');
  await c.store.putAttachments({ ...set, holders: [{ node: 'n1', mode: 'rw', since: '2026-01-01T00:00:00.000Z' }] });
  const rec = (await c.store.getVolume('db'))!;
  assert.equal(await c.n2.svc.releaseIfIdle(rec, false), false, 'another node never releases n1\'s hold');
  assert.equal(await c.n1.svc.releaseIfIdle(rec, true), false, 'not while something is staged');
  assert.equal(await c.n1.svc.releaseIfIdle(rec, false), true);
  assert.deepEqual((await c.store.getAttachments('db')).holders, []);
});

test('fence: refused while the node holds its lease; then its holds go, the epoch goes up, its references are dropped, and another node may mount', async () => {
  const c = cluster(MULTI_NODE_SINGLE_WRITER);
  await c.n1.svc.create('db', {});
  c.shareProvisioned('db');
  await c.n1.svc.mount('db', 'a');
  await c.n1.svc.mount('db', 'a');
  await assert.rejects(c.n2.svc.mount('db', 'x'), /attached read-write to node n1 .*If node n1 is down for good \(powered off\), release its volumes with: ballast node fence n1/);
  await assert.rejects(c.n2.svc.fenceNode('n1', async () => true), (e) => e instanceof FailedPreconditionError && /node n1 still holds its lease/.test(e.message));
  await assert.rejects(c.n1.svc.fenceNode('n1', async () => false), /is this node/);
  assert.equal((await c.store.getAttachments('db')).holders.length, 1, 'a refused fence changed nothing');
  const out = await c.n2.svc.fenceNode('n1', async () => false);
  assert.deepEqual(out, [{ volume: 'db', epoch: 1, referencesDropped: 2 }]);
  assert.deepEqual((await c.store.getAttachments('db')).holders, []);
  assert.equal(await c.store.mountCount('db', 'n1'), 0);
  await c.n2.svc.mount('db', 'x');
  const set = await c.store.getAttachments('db');
  assert.deepEqual([set.epoch, set.holders.map((h) => h.node)], [1, ['n2']]);
  // n1 comes back with the volume still mounted there: stale, and left alone.
  const rec = (await c.store.getVolume('db'))!;
  assert.deepEqual(await c.n1.svc.staleHere(rec), { holders: `node n2 (rw since ${set.holders[0].since})`, epoch: 1 });
  assert.equal(await c.n2.svc.staleHere(rec), undefined);
  assert.deepEqual(await c.n2.svc.fenceNode('n1', async () => false), [], 'fencing again finds nothing');
});
