import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { MemoryStore } from './memory.js';
import { SqliteStore } from './sqlite.js';
import type { MetadataStore } from './types.js';
import type { VolumeRecord } from '../core/types.js';

const dir = mkdtempSync(join(tmpdir(), 'ballast-store-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const rec = (name: string, extra: Partial<VolumeRecord> = {}): VolumeRecord => ({
  name, backend: 'local', spec: { mode: 493 }, mountpoint: `/x/${name}`, createdAt: '2026-01-01T00:00:00.000Z', state: 'ready', details: {}, ...extra,
});

const impls: [string, () => MetadataStore][] = [
  ['memory', () => new MemoryStore()],
  ['sqlite', () => new SqliteStore(join(dir, `s${Math.random()}.db`))],
];

for (const [kind, make] of impls) {
  describe(`${kind} store contract`, () => {
    test('insert refuses duplicates; get, update, list, delete', async () => {
      const s = make();
      assert.equal(await s.insertVolume(rec('b')), true);
      assert.equal(await s.insertVolume(rec('a')), true);
      assert.equal(await s.insertVolume(rec('a', { backend: 'other' })), false);
      assert.equal((await s.getVolume('a'))?.backend, 'local');
      await s.updateVolume(rec('a', { state: 'removing', details: { k: [1, 2] } }));
      assert.deepEqual((await s.getVolume('a'))?.details, { k: [1, 2] });
      assert.deepEqual((await s.listVolumes()).map((v) => v.name), ['a', 'b']);
      assert.deepEqual(await s.listSummaries(), [
        { name: 'a', mountpoint: '/x/a', createdAt: '2026-01-01T00:00:00.000Z' },
        { name: 'b', mountpoint: '/x/b', createdAt: '2026-01-01T00:00:00.000Z' },
      ]);
      await assert.rejects(s.updateVolume(rec('zzz')), /not in the store/);
      await s.deleteVolume('a');
      await s.deleteVolume('a');
      assert.equal(await s.getVolume('a'), undefined);
      await s.close();
    });

    test('the ledger is a multiset of (volume, id)', async () => {
      const s = make();
      await s.insertVolume(rec('v'));
      assert.equal(await s.addMount('v', 'x'), 1);
      assert.equal(await s.addMount('v', 'x'), 2);
      assert.equal(await s.addMount('v', 'y'), 3);
      assert.deepEqual((await s.mounts('v')).map((m) => [m.id, m.count]).sort(), [['x', 2], ['y', 1]]);
      assert.deepEqual(await s.removeMount('v', 'x'), { removed: true, total: 2 });
      assert.deepEqual(await s.removeMount('v', 'nope'), { removed: false, total: 2 });
      assert.deepEqual(await s.removeMount('v', 'x'), { removed: true, total: 1 });
      assert.deepEqual(await s.removeMount('v', 'x'), { removed: false, total: 1 });
      assert.equal((await s.allMounts()).length, 1);
      await s.deleteVolume('v');
      assert.equal(await s.mountCount('v'), 0, 'deleting a volume drops its ledger');
      await s.close();
    });

    test('journal: commitMount turns the mount entry into its undo; removeMount can end an entry', async () => {
      const s = make();
      await s.insertVolume(rec('v'));
      const m = await s.beginOp({ volume: 'v', op: 'mount', mountId: 'x' });
      assert.equal(await s.commitMount('v', 'x', m), 1);
      assert.deepEqual((await s.pendingOps()).map((o) => [o.id, o.op, o.volume, o.mountId]), [[m, 'unmount', 'v', 'x']]);
      await assert.rejects(s.commitMount('v', 'x', m), /not an open mount/, 'only an open mount entry can be committed');
      assert.equal(await s.mountCount('v'), 1, 'a refused commit adds nothing');
      assert.deepEqual(await s.removeMount('v', 'x', m), { removed: true, total: 0 });
      assert.deepEqual(await s.pendingOps(), []);
      const u = await s.beginOp({ volume: 'v', op: 'unmount', mountId: 'nope' });
      assert.deepEqual(await s.removeMount('v', 'nope', u), { removed: false, total: 0 });
      assert.deepEqual(await s.pendingOps(), [], 'the entry ends even when the reference was not there');
      await s.close();
    });

    test('journal: addMountWithUndo adds the reference and its undo in one step', async () => {
      const s = make();
      await s.insertVolume(rec('v'));
      await s.addMount('v', 'y');
      const { total, undo } = await s.addMountWithUndo('v', 'x');
      assert.equal(total, 2);
      assert.deepEqual((await s.pendingOps()).map((o) => [o.id, o.op, o.volume, o.mountId]), [[undo, 'unmount', 'v', 'x']]);
      await s.endOp(undo);
      assert.deepEqual(await s.pendingOps(), []);
      assert.equal(await s.mountCount('v'), 2, 'ending the undo keeps the reference');
      await s.close();
    });
  });
}

test('sqlite: ledger and journal commit with synchronous=NORMAL, volume records with FULL', async () => {
  const s = new SqliteStore(join(dir, `sync${Math.random()}.db`));
  const db = (s as unknown as { db: import('better-sqlite3').Database }).db;
  const seen: number[] = [];
  const realExec = db.exec.bind(db);
  (db as { exec: (sql: string) => unknown }).exec = (sql: string) => { const r = realExec(sql); seen.push(db.pragma('synchronous', { simple: true }) as number); return r; };
  await s.insertVolume(rec('v'));
  assert.deepEqual(seen, [2, 1], 'FULL for the record write, NORMAL again after it');
  seen.length = 0;
  await s.addMount('v', 'x');
  await s.endOp(await s.beginOp({ volume: 'v', op: 'unmount', mountId: 'x' }));
  assert.deepEqual(seen, [], 'no switch for ledger and journal writes');
  assert.equal(db.pragma('synchronous', { simple: true }), 1);
  await s.close();
});

test('reserve: made when there is room, refused new state while short, given back once, re-made', async () => {
  const { StoreReserve } = await import('./reserve.js');
  const d = mkdtempSync(join(dir, 'reserve-'));
  const r = new StoreReserve(d, { size: 64 * 1024, headroom: 4096, retryMs: 0 });
  assert.equal(r.intact, true);
  assert.equal(statSync(join(d, 'ballast.reserve')).size, 64 * 1024);
  assert.doesNotThrow(() => r.assertRoom('mounting volume v'));
  assert.equal(r.check().ok, true);
  assert.equal(r.release('test'), true);
  assert.equal(r.release('again'), false, 'there is nothing left to give');
  assert.match(r.check().detail, /was used at .*\(test\)/);
  r.assertRoom('mounting volume v'); // room enough on the test filesystem: re-created here
  assert.equal(r.intact, true);
  const tight = new StoreReserve(d, { size: 64 * 1024, headroom: Number.MAX_SAFE_INTEGER / 4, retryMs: 0 });
  assert.throws(() => tight.assertRoom('mounting volume v'), (e: Error & { code?: string }) => e.code === 'ResourceExhausted' && /mounting volume v is refused: the filesystem of Ballast's state directory .* is full/.test(e.message));
  r.close(); tight.close();
});

test('sqlite keeps volumes and the ledger across reopen', async () => {
  const file = join(dir, 'persist.db');
  const s1 = new SqliteStore(file);
  await s1.insertVolume(rec('db'));
  await s1.addMount('db', 'id1');
  await s1.addMount('db', 'id1');
  await s1.close();
  const s2 = new SqliteStore(file);
  assert.equal((await s2.getVolume('db'))?.name, 'db');
  assert.equal(await s2.mountCount('db'), 2);
  await s2.close();
});
