import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import Database from 'better-sqlite3';
import { MemoryStore } from './memory.js';
import { SqliteStore } from './sqlite.js';
import { contractRecord, runStoreContract } from './contract.js';

const dir = mkdtempSync(join(tmpdir(), 'ballast-store-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const rec = contractRecord;

runStoreContract('memory', () => new MemoryStore());
runStoreContract('sqlite', () => new SqliteStore(join(dir, `s${Math.random()}.db`)));

test('sqlite: ledger and journal commit with synchronous=NORMAL, volume records with FULL', async () => {
  const s = new SqliteStore(join(dir, `sync${Math.random()}.db`));
  const db = (s as unknown as { db: import('better-sqlite3').Database }).db;
  const seen: number[] = [];
  const realExec = db.exec.bind(db);
  (db as { exec: (sql: string) => unknown }).exec = (sql: string) => { const r = realExec(sql); seen.push(db.pragma('synchronous', { simple: true }) as number); return r; };
  await s.insertVolume(rec('v'));
  assert.deepEqual(seen, [2, 1], 'FULL for the record write, NORMAL again after it');
  seen.length = 0;
  await s.addMountWithUndo('v', 'n1', 'x');
  await s.endOp('n1', await s.beginOp({ volume: 'v', node: 'n1', op: 'unmount', mountId: 'x' }));
  assert.deepEqual(seen, [], 'no switch for ledger and journal writes');
  assert.equal(db.pragma('synchronous', { simple: true }), 1);
  // A create's record is inserted as `creating` (fsynced above); its `ready` ends the create and is
  // re-derived by recovery, so it needs no fsync. `removing` starts a remove: fsynced; the delete that
  // ends it is re-derived too. A delete that rolls back a failed create is fsynced.
  const c = (await s.insertVolume(rec('c', { state: 'creating' })))!;
  seen.length = 0;
  const ready = await s.updateVolume({ ...c, state: 'ready' });
  assert.deepEqual(seen, [], 'creating -> ready: no fsync');
  const removing = await s.updateVolume({ ...ready, state: 'removing' });
  assert.deepEqual(seen, [2, 1], 'ready -> removing: fsynced');
  seen.length = 0;
  await s.deleteVolume('c', removing.revision);
  assert.deepEqual(seen, [], 'the delete of a removing record: no fsync');
  const failed = (await s.insertVolume(rec('f', { state: 'creating' })))!;
  seen.length = 0;
  await s.deleteVolume('f', failed.revision);
  assert.deepEqual(seen, [2, 1], 'the rollback of a failed create: fsynced');
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
  const v = await s1.insertVolume(rec('db'));
  await s1.addMountWithUndo('db', 'n1', 'id1');
  await s1.addMountWithUndo('db', 'n1', 'id1');
  await s1.close();
  const s2 = new SqliteStore(file);
  assert.equal((await s2.getVolume('db'))?.revision, v?.revision);
  assert.equal(await s2.mountCount('db', 'n1'), 2);
  assert.equal((await s2.pendingOps('n1')).length, 2);
  await s2.close();
});

test("sqlite migrates a schema-1 store: its ledger and journal become this node's, records start at revision 1", async () => {
  const file = join(dir, 'v1.db');
  const db = new Database(file);
  db.exec(`CREATE TABLE volumes (name TEXT PRIMARY KEY, backend TEXT NOT NULL, spec TEXT NOT NULL, mountpoint TEXT NOT NULL, created_at TEXT NOT NULL, state TEXT NOT NULL, details TEXT NOT NULL) WITHOUT ROWID;
    CREATE TABLE mounts (volume TEXT NOT NULL, mount_id TEXT NOT NULL, count INTEGER NOT NULL CHECK (count > 0), since TEXT NOT NULL, PRIMARY KEY (volume, mount_id)) WITHOUT ROWID;
    CREATE TABLE ops (id INTEGER PRIMARY KEY AUTOINCREMENT, volume TEXT NOT NULL, op TEXT NOT NULL, mount_id TEXT NOT NULL, started_at TEXT NOT NULL);
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
    INSERT INTO meta VALUES ('schema', '1');
    INSERT INTO volumes VALUES ('old', 'block', '{"size":1}', '/m/old', '2026-01-01T00:00:00.000Z', 'ready', '{"image":"/i/old.img"}');
    INSERT INTO mounts VALUES ('old', 'abc', 2, '2026-01-01T00:00:00.000Z');
    INSERT INTO ops (volume, op, mount_id, started_at) VALUES ('old', 'unmount', 'abc', '2026-01-01T00:00:00.000Z');`);
  db.close();
  const s = new SqliteStore(file, { node: 'here' });
  const v = await s.getVolume('old');
  assert.equal(v?.revision, 1);
  assert.deepEqual(v?.details, { image: '/i/old.img' });
  assert.deepEqual((await s.mounts('old')).map((m) => [m.node, m.id, m.count]), [['here', 'abc', 2]]);
  assert.deepEqual((await s.pendingOps('here')).map((o) => [o.node, o.volume, o.mountId]), [['here', 'old', 'abc']]);
  const u = await s.updateVolume({ ...v!, state: 'removing' });
  assert.equal(u.revision, 2);
  await s.close();
  const again = new SqliteStore(file, { node: 'elsewhere' });
  assert.equal((await again.mounts('old'))[0].node, 'here', 'migrated once only');
  await again.close();
});
