/**
 * The MetadataStore contract as tests, run against every implementation: MemoryStore and SqliteStore
 * in store.test.ts, EtcdStore against a real 3-member etcd in test/e2e/etcd-store.test.ts. Each test
 * gets a fresh, empty store from `make` and closes it.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { MetadataStore } from './types.js';
import type { NewSnapshotRecord, NewVolumeRecord, SnapshotRecord, VolumeRecord } from '../core/types.js';

export const contractRecord = (name: string, extra: Partial<NewVolumeRecord> = {}): NewVolumeRecord => ({
  name, backend: 'local', spec: { mode: 493 }, mountpoint: `/x/${name}`, createdAt: '2026-01-01T00:00:00.000Z', state: 'ready', details: {}, ...extra,
});

export const contractSnapshot = (name: string, volume: string, extra: Partial<NewSnapshotRecord> = {}): NewSnapshotRecord => ({
  name, volume, backend: 'local', spec: { mode: 493, size: '1G' }, size: 1073741824, createdAt: '2026-01-02T00:00:00.000Z', state: 'ready', node: 'n1',
  details: { path: `/s/${name}` }, ...extra,
});

const conflict = (re: RegExp) => (e: unknown) => (e as { code?: string }).code === 'Conflict' && re.test((e as Error).message);

export function runStoreContract(kind: string, make: () => Promise<MetadataStore> | MetadataStore): void {
  const rec = contractRecord;
  const snap = contractSnapshot;
  const use = async (fn: (s: MetadataStore) => Promise<void>) => {
    const s = await make();
    try { await fn(s); } finally { await s.close(); }
  };

  describe(`${kind} store contract`, () => {
    test('insert refuses duplicates and assigns a revision; get, list, summaries', () => use(async (s) => {
      const b = await s.insertVolume(rec('b'));
      const a = await s.insertVolume(rec('a'));
      assert.ok(a && b, 'new names are inserted');
      assert.equal(typeof a.revision, 'number');
      assert.equal(await s.insertVolume(rec('a', { backend: 'other' })), undefined, 'a taken name is refused');
      const got = await s.getVolume('a');
      assert.equal(got?.backend, 'local', 'the refused insert changed nothing');
      assert.equal(got?.revision, a.revision);
      assert.deepEqual((await s.listVolumes()).map((v) => v.name), ['a', 'b']);
      await s.insertVolume(rec('c', { backend: 'other' }));
      assert.deepEqual((await s.listVolumes('other')).map((v) => v.name), ['c'], 'one backend\'s records');
      assert.deepEqual((await s.listVolumes('local')).map((v) => v.name), ['a', 'b']);
      assert.deepEqual(await s.listVolumes('none'), []);
      assert.deepEqual(await s.listSummaries(), [
        { name: 'a', mountpoint: '/x/a', createdAt: '2026-01-01T00:00:00.000Z' },
        { name: 'b', mountpoint: '/x/b', createdAt: '2026-01-01T00:00:00.000Z' },
        { name: 'c', mountpoint: '/x/c', createdAt: '2026-01-01T00:00:00.000Z' },
      ]);
      assert.equal(await s.getVolume('zzz'), undefined);
    }));

    test('update is a compare-and-swap on the revision: a stale writer loses and changes nothing', () => use(async (s) => {
      const v1 = (await s.insertVolume(rec('a')))!;
      const v2 = await s.updateVolume({ ...v1, state: 'removing', details: { k: [1, 2] } });
      assert.notEqual(v2.revision, v1.revision, 'every write gets a new revision');
      assert.deepEqual((await s.getVolume('a'))?.details, { k: [1, 2] });
      assert.equal((await s.getVolume('a'))?.revision, v2.revision);
      // A second writer that read v1 lost the race.
      await assert.rejects(s.updateVolume({ ...v1, details: { stale: true } }), conflict(/volume a was changed by another operation/));
      assert.deepEqual((await s.getVolume('a'))?.details, { k: [1, 2] }, 'the stale update changed nothing');
      const v3 = await s.updateVolume({ ...v2, state: 'ready' });
      assert.equal((await s.getVolume('a'))?.state, 'ready');
      assert.ok(v3.revision !== v2.revision);
      await assert.rejects(s.updateVolume({ ...rec('zzz'), revision: 1 } as VolumeRecord), conflict(/volume zzz was removed/));
      assert.equal(await s.getVolume('zzz'), undefined, 'updating an absent record creates nothing');
    }));

    test('delete is a compare-and-swap too, drops every node\'s ledger entries, and absent is fine', () => use(async (s) => {
      const v1 = (await s.insertVolume(rec('a')))!;
      const v2 = await s.updateVolume({ ...v1, state: 'removing' });
      await assert.rejects(s.deleteVolume('a', v1.revision), conflict(/volume a was changed/));
      assert.ok(await s.getVolume('a'), 'a stale delete deletes nothing');
      await s.addMountWithUndo('a', 'n1', 'x');
      await s.addMountWithUndo('a', 'n2', 'y');
      await s.deleteVolume('a', v2.revision);
      assert.equal(await s.getVolume('a'), undefined);
      assert.deepEqual(await s.mounts('a'), []);
      assert.equal(await s.mountCount('a', 'n1'), 0);
      assert.equal(await s.mountCount('a', 'n2'), 0);
      await s.deleteVolume('a', v2.revision);
      assert.deepEqual((await s.listSummaries()).map((x) => x.name), []);
    }));

    test('the ledger is a multiset of (volume, node, mount ID); totals are per node', () => use(async (s) => {
      await s.insertVolume(rec('v'));
      await s.insertVolume(rec('w'));
      assert.equal((await s.addMountWithUndo('v', 'n1', 'x')).total, 1);
      assert.equal((await s.addMountWithUndo('v', 'n1', 'x')).total, 2);
      assert.equal((await s.addMountWithUndo('v', 'n1', 'y')).total, 3);
      assert.equal((await s.addMountWithUndo('v', 'n2', 'x')).total, 1, 'the same mount ID on another node is another entry');
      assert.equal((await s.addMountWithUndo('w', 'n1', 'z')).total, 1);
      assert.deepEqual((await s.mounts('v')).map((m) => [m.node, m.id, m.count]).sort(), [['n1', 'x', 2], ['n1', 'y', 1], ['n2', 'x', 1]]);
      assert.deepEqual((await s.nodeMounts('n1')).map((m) => [m.volume, m.id, m.count]).sort(), [['v', 'x', 2], ['v', 'y', 1], ['w', 'z', 1]]);
      assert.deepEqual((await s.nodeMounts('n2')).map((m) => [m.volume, m.id]), [['v', 'x']]);
      assert.equal(await s.mountCount('v', 'n1'), 3);
      assert.equal(await s.mountCount('v', 'n2'), 1);
      assert.deepEqual(await s.removeMount('v', 'n1', 'x'), { removed: true, total: 2 });
      assert.deepEqual(await s.removeMount('v', 'n1', 'nope'), { removed: false, total: 2 });
      assert.deepEqual(await s.removeMount('v', 'n3', 'x'), { removed: false, total: 0 }, 'another node\'s reference is not this node\'s');
      assert.deepEqual(await s.removeMount('v', 'n1', 'x'), { removed: true, total: 1 });
      assert.deepEqual(await s.removeMount('v', 'n1', 'x'), { removed: false, total: 1 });
      assert.equal(await s.mountCount('v', 'n2'), 1, 'node n2 kept its reference');
      const r = (await s.mounts('v')).find((m) => m.node === 'n2');
      assert.ok(r && !Number.isNaN(Date.parse(r.since)), 'a reference knows since when');
    }));

    test('journal: per node; addMountWithUndo journals the undo with the reference; removeMount can end an entry', () => use(async (s) => {
      await s.insertVolume(rec('v'));
      const { total, undo } = await s.addMountWithUndo('v', 'n1', 'x');
      assert.equal(total, 1);
      assert.deepEqual((await s.pendingOps('n1')).map((o) => [o.id, o.node, o.op, o.volume, o.mountId]), [[undo, 'n1', 'unmount', 'v', 'x']]);
      assert.deepEqual(await s.pendingOps('n2'), [], 'another node sees none of it');
      await s.endOp('n2', undo);
      assert.equal((await s.pendingOps('n1')).length, 1, 'another node cannot end it');
      await s.endOp('n1', undo);
      assert.deepEqual(await s.pendingOps('n1'), []);
      assert.equal(await s.mountCount('v', 'n1'), 1, 'ending the undo keeps the reference');
      const u = await s.beginOp({ volume: 'v', node: 'n1', op: 'unmount', mountId: 'x' });
      const o2 = await s.beginOp({ volume: 'v', node: 'n2', op: 'unmount', mountId: 'q' });
      assert.notEqual(u, o2);
      assert.deepEqual(await s.removeMount('v', 'n1', 'x', u), { removed: true, total: 0 });
      assert.deepEqual(await s.pendingOps('n1'), [], 'the ledger change ended the entry');
      assert.deepEqual(await s.removeMount('v', 'n2', 'q', o2), { removed: false, total: 0 });
      assert.deepEqual(await s.pendingOps('n2'), [], 'the entry ends even when the reference was not there');
      const started = await s.beginOp({ volume: 'v', node: 'n1', op: 'mount', mountId: 'm' });
      const [p] = await s.pendingOps('n1');
      assert.equal(p.id, started);
      assert.ok(!Number.isNaN(Date.parse(p.startedAt)));
    }));

    test('attachments: none at first; compare-and-swap on their revision; two racing attaches, one wins; gone with the volume', () => use(async (s) => {
      const v = (await s.insertVolume(rec('v', { home: 'n1' })))!;
      assert.equal((await s.getVolume('v'))?.home, 'n1', 'the home node of a node-local volume is kept');
      const none = await s.getAttachments('v');
      assert.deepEqual(none, { volume: 'v', epoch: 0, holders: [], revision: 0 });
      const at = '2026-01-01T00:00:00.000Z';
      const [a, b] = await Promise.allSettled([
        s.putAttachments({ ...none, holders: [{ node: 'n1', mode: 'rw', since: at }] }),
        s.putAttachments({ ...none, holders: [{ node: 'n2', mode: 'rw', since: at }] }),
      ]);
      assert.equal([a, b].filter((r) => r.status === 'fulfilled').length, 1, 'exactly one of two racing attaches wins');
      const lost = [a, b].find((r) => r.status === 'rejected') as PromiseRejectedResult;
      assert.ok(conflict(/attachments of volume v were changed by another node/)(lost.reason));
      const won = ([a, b].find((r) => r.status === 'fulfilled') as PromiseFulfilledResult<Awaited<ReturnType<MetadataStore['putAttachments']>>>).value;
      assert.ok(won.revision > 0);
      assert.deepEqual(await s.getAttachments('v'), won);
      await assert.rejects(s.putAttachments({ ...none, holders: [] }), conflict(/attachments of volume v/), 'a stale writer loses');
      const next = await s.putAttachments({ ...won, epoch: 1, holders: [...won.holders, { node: 'n3', mode: 'ro', since: at }] });
      assert.equal((await s.getAttachments('v')).epoch, 1);
      assert.deepEqual((await s.getAttachments('v')).holders.map((h) => [h.node, h.mode]), [[won.holders[0].node, 'rw'], ['n3', 'ro']]);
      assert.deepEqual((await s.getAttachments('other')).holders, [], 'per volume');
      await s.deleteVolume('v', v.revision);
      const after = await s.getAttachments('v');
      assert.deepEqual(after.holders, [], 'deleting the volume drops its attachments');
      assert.equal(after.revision, 0);
      await assert.rejects(s.putAttachments(next), conflict(/attachments of volume v/), 'a set read before the delete cannot come back');
    }));

    test('concurrent writers: counts stay exact and exactly one of two racing updates wins', () => use(async (s) => {
      const v = (await s.insertVolume(rec('v')))!;
      await Promise.all(Array.from({ length: 50 }, (_, i) => s.addMountWithUndo('v', i % 2 ? 'n1' : 'n2', `id${i % 5}`)));
      assert.equal(await s.mountCount('v', 'n1') + await s.mountCount('v', 'n2'), 50);
      const results = await Promise.allSettled([s.updateVolume({ ...v, details: { w: 1 } }), s.updateVolume({ ...v, details: { w: 2 } })]);
      assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1, 'one wins');
      const lost = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
      assert.equal((lost.reason as { code?: string }).code, 'Conflict');
      const winner = (results.find((r) => r.status === 'fulfilled') as PromiseFulfilledResult<VolumeRecord>).value;
      assert.deepEqual((await s.getVolume('v'))?.details, winner.details);
    }));

    test('snapshots: insert refuses duplicates and assigns a revision; get, list, list of one volume, by name; their own namespace', () => use(async (s) => {
      const b = await s.insertSnapshot(snap('b', 'v'));
      const a = await s.insertSnapshot(snap('a', 'w', { state: 'creating', home: 'n2', node: 'n2', size: 0, details: { id: 7, temporary: true } }));
      const c = await s.insertSnapshot(snap('c', 'v'));
      assert.ok(a && b && c, 'new names are inserted');
      assert.equal(typeof a.revision, 'number');
      assert.deepEqual(a, { ...snap('a', 'w', { state: 'creating', home: 'n2', node: 'n2', size: 0, details: { id: 7, temporary: true } }), revision: a.revision });
      assert.equal(await s.insertSnapshot(snap('a', 'v', { backend: 'other' })), undefined, 'a taken name is refused');
      const got = await s.getSnapshot('a');
      assert.deepEqual(got, a, 'every field is kept, and the refused insert changed nothing');
      const gotB = await s.getSnapshot('b');
      assert.deepEqual(gotB, { ...snap('b', 'v'), revision: b.revision });
      assert.equal(gotB && 'home' in gotB, false, 'no home when none was given');
      assert.deepEqual((await s.listSnapshots()).map((x) => x.name), ['a', 'b', 'c']);
      assert.deepEqual((await s.listSnapshots('v')).map((x) => x.name), ['b', 'c'], 'one volume\'s snapshots, by name');
      assert.deepEqual((await s.listSnapshots('w')).map((x) => [x.name, x.volume, x.revision]), [['a', 'w', a.revision]]);
      assert.deepEqual(await s.listSnapshots('none'), []);
      assert.equal(await s.getSnapshot('zzz'), undefined);
      // A volume may have a snapshot's name: separate namespaces.
      assert.ok(await s.insertVolume(rec('a')), 'a volume named as a snapshot is inserted');
      assert.deepEqual((await s.listVolumes()).map((v) => v.name), ['a']);
      assert.deepEqual(await s.getSnapshot('a'), a, 'the volume insert changed no snapshot');
      assert.ok(await s.insertSnapshot(snap('only-snap', 'v')));
      assert.equal(await s.getVolume('only-snap'), undefined, 'a snapshot is not a volume');
      assert.deepEqual((await s.listSummaries()).map((v) => v.name), ['a']);
    }));

    test('snapshots: update is a compare-and-swap on the revision: a stale writer loses and changes nothing; a gone record is a Conflict', () => use(async (s) => {
      const s1 = (await s.insertSnapshot(snap('a', 'v', { state: 'creating' })))!;
      const s2 = await s.updateSnapshot({ ...s1, state: 'ready', details: { k: [1, 2] }, size: 5 });
      assert.notEqual(s2.revision, s1.revision, 'every write gets a new revision');
      assert.deepEqual(await s.getSnapshot('a'), s2);
      assert.equal((await s.getSnapshot('a'))?.state, 'ready');
      await assert.rejects(s.updateSnapshot({ ...s1, details: { stale: true } }), conflict(/snapshot a was changed by another operation/));
      assert.deepEqual(await s.getSnapshot('a'), s2, 'the stale update changed nothing');
      const s3 = await s.updateSnapshot({ ...s2, state: 'removing' });
      assert.ok(s3.revision !== s2.revision);
      assert.deepEqual((await s.listSnapshots('v')).map((x) => [x.name, x.state, x.revision]), [['a', 'removing', s3.revision]]);
      await assert.rejects(s.updateSnapshot({ ...snap('zzz', 'v'), revision: 1 } as SnapshotRecord), conflict(/snapshot zzz was removed/));
      assert.equal(await s.getSnapshot('zzz'), undefined, 'updating an absent record creates nothing');
      await s.deleteSnapshot('a', s3.revision);
      await assert.rejects(s.updateSnapshot(s3), conflict(/snapshot a was removed/), 'an update of a deleted record is a Conflict');
      assert.equal(await s.getSnapshot('a'), undefined);
    }));

    test('snapshots: delete is a compare-and-swap too, and absent is fine', () => use(async (s) => {
      const s1 = (await s.insertSnapshot(snap('a', 'v')))!;
      await s.insertSnapshot(snap('b', 'v'));
      const s2 = await s.updateSnapshot({ ...s1, state: 'removing' });
      await assert.rejects(s.deleteSnapshot('a', s1.revision), conflict(/snapshot a was changed/));
      assert.deepEqual(await s.getSnapshot('a'), s2, 'a stale delete deletes nothing');
      await s.deleteSnapshot('a', s2.revision);
      assert.equal(await s.getSnapshot('a'), undefined);
      assert.deepEqual((await s.listSnapshots()).map((x) => x.name), ['b']);
      assert.deepEqual((await s.listSnapshots('v')).map((x) => x.name), ['b']);
      await s.deleteSnapshot('a', s2.revision);
      await s.deleteSnapshot('never', 1);
      assert.deepEqual((await s.listSnapshots()).map((x) => x.name), ['b']);
    }));

    test('snapshots survive deleting their volume\'s record (the store does not cascade), and a volume delete touches no snapshot', () => use(async (s) => {
      const v = (await s.insertVolume(rec('v')))!;
      const sv = (await s.insertSnapshot(snap('sv', 'v')))!;
      const same = (await s.insertSnapshot(snap('v', 'v')))!; // named as its volume
      await s.addMountWithUndo('v', 'n1', 'x');
      await s.deleteVolume('v', v.revision);
      assert.equal(await s.getVolume('v'), undefined);
      assert.deepEqual(await s.getSnapshot('sv'), sv);
      assert.deepEqual(await s.getSnapshot('v'), same, 'a snapshot named as the deleted volume is kept');
      assert.deepEqual((await s.listSnapshots('v')).map((x) => x.name), ['sv', 'v']);
      const again = (await s.insertVolume(rec('v')))!;
      assert.ok(again, 'the volume name is free again');
      assert.deepEqual((await s.listSnapshots('v')).map((x) => x.revision), [sv.revision, same.revision], 'and its snapshots are unchanged');
      await s.deleteSnapshot('v', same.revision);
      assert.ok(await s.getVolume('v'), 'deleting a snapshot named as a volume leaves the volume');
    }));

    test('snapshots: exactly one of two racing updates wins', () => use(async (s) => {
      const x = (await s.insertSnapshot(snap('x', 'v')))!;
      const results = await Promise.allSettled([s.updateSnapshot({ ...x, details: { w: 1 } }), s.updateSnapshot({ ...x, details: { w: 2 } })]);
      assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1, 'one wins');
      const lost = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
      assert.ok(conflict(/snapshot x was changed by another operation/)(lost.reason), String(lost.reason));
      assert.equal((lost.reason as { retryable?: boolean }).retryable, true, 'a lost race is retryable');
      const winner = (results.find((r) => r.status === 'fulfilled') as PromiseFulfilledResult<SnapshotRecord>).value;
      assert.deepEqual(await s.getSnapshot('x'), winner);
      const [d1, d2] = await Promise.allSettled([s.deleteSnapshot('x', winner.revision), s.updateSnapshot({ ...winner, state: 'removing' })]);
      assert.equal([d1, d2].filter((r) => r.status === 'fulfilled').length, 1, 'a delete racing an update: one wins');
      const left = await s.getSnapshot('x');
      if (d1.status === 'fulfilled') assert.equal(left, undefined); else assert.equal(left?.state, 'removing');
    }));
  });
}
