import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import Database from 'better-sqlite3';
import { MemoryStore } from './memory.js';
import { SqliteStore } from './sqlite.js';
import { contractRecord, contractSnapshot, runStoreContract } from './contract.js';

const dir = mkdtempSync(join(tmpdir(), 'ballast-store-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const rec = contractRecord;
const snap = contractSnapshot;

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

test('sqlite keeps volumes, the ledger and snapshots across reopen', async () => {
  const file = join(dir, 'persist.db');
  const s1 = new SqliteStore(file);
  const v = await s1.insertVolume(rec('db'));
  await s1.addMountWithUndo('db', 'n1', 'id1');
  await s1.addMountWithUndo('db', 'n1', 'id1');
  const sn = await s1.updateSnapshot((await s1.insertSnapshot(snap('db-1', 'db', { home: 'n1' })))!);
  const gone = (await s1.insertSnapshot(snap('db-2', 'db')))!;
  await s1.deleteSnapshot('db-2', gone.revision);
  await s1.close();
  const s2 = new SqliteStore(file);
  assert.equal((await s2.getVolume('db'))?.revision, v?.revision);
  assert.equal(await s2.mountCount('db', 'n1'), 2);
  assert.equal((await s2.pendingOps('n1')).length, 2);
  assert.deepEqual(await s2.getSnapshot('db-1'), sn);
  assert.deepEqual((await s2.listSnapshots('db')).map((x) => x.name), ['db-1']);
  const after = await s2.updateSnapshot({ ...sn, state: 'removing' });
  assert.equal(after.revision, sn.revision + 1, 'revisions go on after a reopen');
  await s2.close();
});

test('sqlite: every snapshot record write commits with synchronous=FULL', async () => {
  const s = new SqliteStore(join(dir, `snapsync${Math.random()}.db`));
  const db = (s as unknown as { db: import('better-sqlite3').Database }).db;
  const seen: number[] = [];
  const realExec = db.exec.bind(db);
  (db as { exec: (sql: string) => unknown }).exec = (sql: string) => { const r = realExec(sql); seen.push(db.pragma('synchronous', { simple: true }) as number); return r; };
  const c = (await s.insertSnapshot(snap('s', 'v', { state: 'creating' })))!;
  assert.deepEqual(seen, [2, 1], 'insert: FULL, NORMAL again after it');
  seen.length = 0;
  const ready = await s.updateSnapshot({ ...c, state: 'ready' });
  assert.deepEqual(seen, [2, 1], 'creating -> ready: fsynced too');
  seen.length = 0;
  const removing = await s.updateSnapshot({ ...ready, state: 'removing' });
  assert.deepEqual(seen, [2, 1]);
  seen.length = 0;
  await s.deleteSnapshot('s', removing.revision);
  assert.deepEqual(seen, [2, 1], 'delete: fsynced');
  seen.length = 0;
  await assert.rejects(s.updateSnapshot(removing));
  assert.deepEqual(seen, [2, 1], 'NORMAL again after a write that lost');
  assert.equal(db.pragma('synchronous', { simple: true }), 1);
  await s.close();
});

test('sqlite: a snapshot row that does not decode is no record and no exception; its name stays taken', async () => {
  const file = join(dir, `snapbad${Math.random()}.db`);
  const s = new SqliteStore(file);
  await s.insertSnapshot(snap('good', 'v'));
  await s.insertSnapshot(snap('bad-json', 'v'));
  await s.insertSnapshot(snap('bad-state', 'v'));
  await s.insertSnapshot(snap('bad-details', 'w'));
  const raw = new Database(file);
  raw.prepare("UPDATE snapshots SET spec = '{not json' WHERE name = 'bad-json'").run();
  raw.prepare("UPDATE snapshots SET state = 'frozen' WHERE name = 'bad-state'").run();
  raw.prepare("UPDATE snapshots SET details = 'null' WHERE name = 'bad-details'").run();
  raw.close();
  for (const n of ['bad-json', 'bad-state', 'bad-details']) assert.equal(await s.getSnapshot(n), undefined, n);
  assert.deepEqual((await s.listSnapshots()).map((x) => x.name), ['good']);
  assert.deepEqual((await s.listSnapshots('v')).map((x) => x.name), ['good']);
  assert.deepEqual(await s.listSnapshots('w'), []);
  assert.equal(await s.insertSnapshot(snap('bad-json', 'v')), undefined, 'the name of an undecodable row is not reused');
  await s.close();
});

test('sqlite migrates a schema-2 store: volumes, ledger, journal and attachments are kept; snapshots are added', async () => {
  const file = join(dir, 'v2.db');
  const s0 = new SqliteStore(file);
  const v = (await s0.insertVolume(rec('old', { home: 'n1' })))!;
  await s0.addMountWithUndo('old', 'n1', 'abc');
  const att = await s0.putAttachments({ volume: 'old', epoch: 3, holders: [{ node: 'n1', mode: 'rw', since: '2026-01-01T00:00:00.000Z' }], revision: 0 });
  await s0.close();
  // Make it a schema-2 store: no snapshots table, schema 2.
  const db = new Database(file);
  db.exec("DROP INDEX snapshots_volume; DROP TABLE snapshots; UPDATE meta SET value = '2' WHERE key = 'schema'");
  db.close();
  const s = new SqliteStore(file);
  assert.deepEqual(await s.getVolume('old'), v);
  assert.equal(await s.mountCount('old', 'n1'), 1);
  assert.equal((await s.pendingOps('n1')).length, 1);
  assert.deepEqual(await s.getAttachments('old'), att);
  assert.deepEqual(await s.listSnapshots(), []);
  assert.ok(await s.insertSnapshot(snap('old-1', 'old')));
  await s.close();
  const check = new Database(file, { readonly: true });
  assert.equal((check.prepare("SELECT value FROM meta WHERE key = 'schema'").get() as { value: string }).value, '3');
  assert.ok(check.prepare("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'snapshots_volume'").get(), 'the volume index is made');
  check.close();
  const again = new SqliteStore(file);
  assert.deepEqual((await again.listSnapshots('old')).map((x) => x.name), ['old-1']);
  await again.close();
});

test('sqlite refuses a store of a newer schema, naming it', () => {
  const file = join(dir, 'v9.db');
  const db = new Database(file);
  db.exec("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID; INSERT INTO meta VALUES ('schema', '9')");
  db.close();
  assert.throws(() => new SqliteStore(file), /store .*v9\.db has schema 9; this Ballast understands 3 \(and migrates 1 and 2\)/);
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
  // 1 -> 2 -> 3: the snapshots table was made too.
  const sn = (await again.insertSnapshot(snap('old-1', 'old')))!;
  assert.deepEqual(await again.getSnapshot('old-1'), sn);
  await again.close();
  const check = new Database(file, { readonly: true });
  assert.equal((check.prepare("SELECT value FROM meta WHERE key = 'schema'").get() as { value: string }).value, '3');
  check.close();
});
