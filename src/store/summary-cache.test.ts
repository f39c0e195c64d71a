import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import Database from 'better-sqlite3';
import { SqliteStore } from './sqlite.js';
import { contractRecord as rec } from './contract.js';

const dir = mkdtempSync(join(tmpdir(), 'ballast-summary-cache-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** The stored record's current revision, for a compare-and-swap write. */
const rev = async (s: SqliteStore, name: string) => (await s.getVolume(name))?.revision ?? 0;
const names = async (s: SqliteStore) => (await s.listSummaries()).map((v) => v.name);

test('SqliteStore shares frozen summaries until a write through it makes them stale', async () => {
  const s = new SqliteStore(join(dir, 'own.db'));
  await s.insertVolume(rec('a'));
  const first = await s.listSummaries();
  assert.ok(Object.isFrozen(first) && Object.isFrozen(first[0]));
  assert.equal(await s.listSummaries(), first, 'unchanged store: the same array');
  await s.addMountWithUndo('a', 'n1', 'm1'); // the ledger is not part of the summaries
  assert.equal(await s.listSummaries(), first);
  await s.insertVolume(rec('b'));
  assert.deepEqual(await names(s), ['a', 'b']);
  await s.updateVolume({ ...rec('b', { mountpoint: '/y/b' }), revision: await rev(s, 'b') });
  assert.equal((await s.listSummaries())[1].mountpoint, '/y/b');
  await s.deleteVolume('a', await rev(s, 'a'));
  assert.deepEqual(await names(s), ['b']);
  assert.equal(await s.insertVolume(rec('b')), undefined);
  assert.deepEqual(await names(s), ['b']);
  await s.close();
});

test('SqliteStore sees commits by another connection (PRAGMA data_version)', async () => {
  const file = join(dir, 'other.db');
  const s = new SqliteStore(file);
  await s.insertVolume(rec('a'));
  assert.deepEqual(await names(s), ['a']);
  const other = new Database(file);
  other.prepare('INSERT INTO volumes (name, backend, spec, mountpoint, created_at, state, details) VALUES (?, ?, ?, ?, ?, ?, ?)')
    .run('c', 'local', '{}', '/x/c', '2026-01-01T00:00:00.000Z', 'ready', '{}');
  assert.deepEqual(await names(s), ['a', 'c']);
  other.prepare('DELETE FROM volumes WHERE name = ?').run('a');
  assert.deepEqual(await names(s), ['c']);
  other.close();
  await s.close();
});

test('the cache follows this store\'s own writes by splicing, and always equals a fresh read', async () => {
  const file = join(dir, 'splice.db');
  const s = new SqliteStore(file);
  const fresh = new SqliteStore(file);
  let seed = 7;
  const rnd = (n: number) => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n; };
  await s.listSummaries();
  for (let i = 0; i < 400; i++) {
    const n = `v${rnd(60)}`;
    const k = rnd(3);
    if (k === 0) await s.insertVolume(rec(n));
    else if (k === 1) await s.updateVolume({ ...rec(n, { state: 'removing', mountpoint: rnd(2) ? `/x/${n}` : `/z/${n}` }), revision: await rev(s, n) }).catch(() => undefined);
    else await s.deleteVolume(n, await rev(s, n));
    if (i % 25 === 0) assert.deepEqual(await s.listSummaries(), await fresh.listSummaries(), `after step ${i}`);
  }
  assert.deepEqual(await s.listSummaries(), await fresh.listSummaries());
  const before = await s.listSummaries();
  const someone = before[0];
  await s.updateVolume({ ...rec(someone.name, { mountpoint: someone.mountpoint, createdAt: someone.createdAt, state: 'ready', details: { x: 1 } }), revision: await rev(s, someone.name) });
  assert.equal(await s.listSummaries(), before, 'a write List does not show keeps the same array (and its encoding)');
  await s.close();
  await fresh.close();
});
