import Database from 'better-sqlite3';
import { dirname } from 'node:path';
import { lostAttachRace, lostRace, lostSnapshotRace, noAttachments, type MetadataStore } from './types.js';
import type { StoreReserve } from './reserve.js';
import { fullSentence } from './reserve.js';
import { ResourceExhaustedError } from '../core/errors.js';
import { hostname } from 'node:os';
import { ConflictError } from '../core/errors.js';
import type { Attachment, AttachmentSet, MountRef, NewSnapshotRecord, NewVolumeRecord, OpRecord, SnapshotRecord, SnapshotState, VolumeRecord, VolumeSummary, VolumeState } from '../core/types.js';

interface VolumeRow {
  name: string; backend: string; spec: string; mountpoint: string; created_at: string; state: string; details: string; revision: number; home: string | null;
}
interface MountRow { volume: string; node: string; mount_id: string; count: number; since: string }
interface SnapshotRow {
  name: string; volume: string; backend: string; spec: string; size: number; created_at: string; state: string; node: string; details: string; home: string | null; revision: number;
}

/** Snapshot records (schema 3): their own namespace, so a volume's delete leaves them (the service refuses such removals). */
const SNAPSHOTS = `
CREATE TABLE IF NOT EXISTS snapshots (
  name TEXT PRIMARY KEY,
  volume TEXT NOT NULL,
  backend TEXT NOT NULL,
  spec TEXT NOT NULL,
  size INTEGER NOT NULL,
  created_at TEXT NOT NULL,
  state TEXT NOT NULL,
  node TEXT NOT NULL,
  details TEXT NOT NULL,
  home TEXT,
  revision INTEGER NOT NULL DEFAULT 1
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS snapshots_volume ON snapshots (volume);
`;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS volumes (
  name TEXT PRIMARY KEY,
  backend TEXT NOT NULL,
  spec TEXT NOT NULL,
  mountpoint TEXT NOT NULL,
  created_at TEXT NOT NULL,
  state TEXT NOT NULL,
  details TEXT NOT NULL,
  revision INTEGER NOT NULL DEFAULT 1,
  home TEXT
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS mounts (
  volume TEXT NOT NULL,
  node TEXT NOT NULL,
  mount_id TEXT NOT NULL,
  count INTEGER NOT NULL CHECK (count > 0),
  since TEXT NOT NULL,
  PRIMARY KEY (volume, node, mount_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ops (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  volume TEXT NOT NULL,
  node TEXT NOT NULL,
  op TEXT NOT NULL,
  mount_id TEXT NOT NULL,
  started_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS attachments (
  volume TEXT PRIMARY KEY,
  epoch INTEGER NOT NULL,
  holders TEXT NOT NULL,
  revision INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
${SNAPSHOTS}`;
const SCHEMA_VERSION = '3';

/**
 * Schema 1 (before nodes and revisions): no revision column, and a ledger and journal without a node.
 * Its rows were all this host's, so they become `node`'s; every record starts at revision 1.
 */
function migrateFrom1(db: Database.Database, node: string): void {
  db.transaction(() => {
    db.exec('ALTER TABLE volumes ADD COLUMN revision INTEGER NOT NULL DEFAULT 1');
    db.exec('ALTER TABLE volumes ADD COLUMN home TEXT');
    db.exec(`CREATE TABLE mounts_v2 (
      volume TEXT NOT NULL, node TEXT NOT NULL, mount_id TEXT NOT NULL, count INTEGER NOT NULL CHECK (count > 0), since TEXT NOT NULL,
      PRIMARY KEY (volume, node, mount_id)) WITHOUT ROWID`);
    db.prepare('INSERT INTO mounts_v2 (volume, node, mount_id, count, since) SELECT volume, ?, mount_id, count, since FROM mounts').run(node);
    db.exec('DROP TABLE mounts');
    db.exec('ALTER TABLE mounts_v2 RENAME TO mounts');
    db.exec("ALTER TABLE ops ADD COLUMN node TEXT NOT NULL DEFAULT ''");
    db.prepare('UPDATE ops SET node = ?').run(node);
    db.prepare("UPDATE meta SET value = '2' WHERE key = 'schema'").run();
  })();
}

/** Schema 2 (before snapshots): the snapshots table is added, empty. */
function migrateFrom2(db: Database.Database): void {
  db.transaction(() => {
    db.exec(SNAPSHOTS);
    db.prepare("UPDATE meta SET value = '3' WHERE key = 'schema'").run();
  })();
}

export interface SqliteStoreOptions {
  /** Space kept for the store's own writes on a full disk (see StoreReserve). */
  readonly reserve?: StoreReserve;
  /** This host's node name: the rows of a schema-1 store (which had no node) become its own. */
  readonly node?: string;
}

/**
 * SQLite in WAL mode, with two durabilities on the one connection:
 * - volume records (create, remove: insertVolume, updateVolume, deleteVolume), snapshot records (every
 *   write) and attachments commit with synchronous=FULL: the WAL is fsynced before the call returns, so
 *   they survive a power loss;
 * - the mount ledger and the journal commit with synchronous=NORMAL: the commit is written to the WAL
 *   (in the OS page cache) before the call returns, so it survives a crash of the daemon, but a power
 *   loss may take back the last of them. That is safe because a power loss also takes every mount and
 *   stops every container: dockerd sends Mount again for the containers it restarts, and the reconciler
 *   drops references no running container owns. The WAL is one sequence, so a power loss only ever
 *   loses a suffix of ledger and journal commits made after the last FULL commit (which fsyncs
 *   everything before it): the store comes back as it was at an earlier moment, which is what a
 *   daemon crash at that moment leaves, and recovery is the same.
 * Every write that fails for lack of space gives the reserve back to the filesystem and is retried once.
 */
export class SqliteStore implements MetadataStore {
  private readonly db: Database.Database;
  private readonly dir: string;
  private readonly reserve?: StoreReserve;
  private readonly q;
  /** Writes to `volumes` through this connection; with PRAGMA data_version it dates the summary cache. */
  private volumeWrites = 0;
  private summaryCache?: { writes: number; dataVersion: number; list: VolumeSummary[] };

  constructor(file: string, o: SqliteStoreOptions = {}) {
    this.dir = dirname(file);
    this.reserve = o.reserve;
    this.db = new Database(file);
    this.db.pragma('journal_mode = WAL');
    this.db.exec('PRAGMA synchronous = NORMAL');
    this.db.pragma('busy_timeout = 5000');
    const hasMeta = this.db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").get() !== undefined;
    const v = hasMeta ? this.db.prepare('SELECT value FROM meta WHERE key = ?').get('schema') as { value: string } | undefined : undefined;
    let version = v?.value;
    if (version === '1') { migrateFrom1(this.db, o.node ?? hostname()); version = '2'; }
    if (version === '2') { migrateFrom2(this.db); version = '3'; }
    if (version !== undefined && version !== SCHEMA_VERSION) throw new Error(`store ${file} has schema ${version}; this Ballast understands ${SCHEMA_VERSION} (and migrates 1 and 2)`);
    this.db.exec(SCHEMA);
    if (!v) this.db.prepare('INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)').run('schema', SCHEMA_VERSION);
    const db = this.db;
    this.q = {
      get: db.prepare('SELECT * FROM volumes WHERE name = ?'),
      list: db.prepare('SELECT * FROM volumes ORDER BY name'),
      listOf: db.prepare('SELECT * FROM volumes WHERE backend = ? ORDER BY name'),
      summaries: db.prepare('SELECT name, mountpoint, created_at FROM volumes ORDER BY name').raw(true),
      dataVersion: db.prepare('PRAGMA data_version').pluck(),
      insert: db.prepare('INSERT OR IGNORE INTO volumes (name, backend, spec, mountpoint, created_at, state, details, revision, home) VALUES (@name, @backend, @spec, @mountpoint, @created_at, @state, @details, 1, @home)'),
      update: db.prepare('UPDATE volumes SET backend=@backend, spec=@spec, mountpoint=@mountpoint, created_at=@created_at, state=@state, details=@details, home=@home, revision = revision + 1 WHERE name=@name AND revision=@revision'),
      getAtt: db.prepare('SELECT epoch, holders, revision FROM attachments WHERE volume = ?'),
      attRevision: db.prepare('SELECT revision FROM attachments WHERE volume = ?').pluck(),
      putAtt: db.prepare('INSERT INTO attachments (volume, epoch, holders, revision) VALUES (?, ?, ?, ?) ON CONFLICT (volume) DO UPDATE SET epoch = excluded.epoch, holders = excluded.holders, revision = excluded.revision'),
      delAtt: db.prepare('DELETE FROM attachments WHERE volume = ?'),
      maxAttRevision: db.prepare('SELECT COALESCE(MAX(revision), 0) FROM attachments').pluck(),
      revisionOf: db.prepare('SELECT revision FROM volumes WHERE name = ?').pluck(),
      stateOf: db.prepare('SELECT state FROM volumes WHERE name = ?').pluck(),
      del: db.prepare('DELETE FROM volumes WHERE name = ? AND revision = ?'),
      delMounts: db.prepare('DELETE FROM mounts WHERE volume = ?'),
      addMount: db.prepare('INSERT INTO mounts (volume, node, mount_id, count, since) VALUES (?, ?, ?, 1, ?) ON CONFLICT (volume, node, mount_id) DO UPDATE SET count = count + 1'),
      getMount: db.prepare('SELECT count FROM mounts WHERE volume = ? AND node = ? AND mount_id = ?').pluck(),
      decMount: db.prepare('UPDATE mounts SET count = count - 1 WHERE volume = ? AND node = ? AND mount_id = ?'),
      dropMount: db.prepare('DELETE FROM mounts WHERE volume = ? AND node = ? AND mount_id = ?'),
      total: db.prepare('SELECT COALESCE(SUM(count), 0) FROM mounts WHERE volume = ? AND node = ?').pluck(),
      mounts: db.prepare('SELECT * FROM mounts WHERE volume = ? ORDER BY since, node, mount_id'),
      nodeMounts: db.prepare('SELECT * FROM mounts WHERE node = ? ORDER BY volume, since, mount_id'),
      beginOp: db.prepare('INSERT INTO ops (volume, node, op, mount_id, started_at) VALUES (?, ?, ?, ?, ?)'),
      endOp: db.prepare('DELETE FROM ops WHERE id = ? AND node = ?'),
      pendingOps: db.prepare('SELECT * FROM ops WHERE node = ? ORDER BY id'),
      getSnap: db.prepare('SELECT * FROM snapshots WHERE name = ?'),
      listSnaps: db.prepare('SELECT * FROM snapshots ORDER BY name'),
      listSnapsOf: db.prepare('SELECT * FROM snapshots WHERE volume = ? ORDER BY name'),
      insertSnap: db.prepare('INSERT OR IGNORE INTO snapshots (name, volume, backend, spec, size, created_at, state, node, details, home, revision) VALUES (@name, @volume, @backend, @spec, @size, @created_at, @state, @node, @details, @home, 1)'),
      updateSnap: db.prepare('UPDATE snapshots SET volume=@volume, backend=@backend, spec=@spec, size=@size, created_at=@created_at, state=@state, node=@node, details=@details, home=@home, revision = revision + 1 WHERE name=@name AND revision=@revision'),
      snapRevisionOf: db.prepare('SELECT revision FROM snapshots WHERE name = ?').pluck(),
      delSnap: db.prepare('DELETE FROM snapshots WHERE name = ? AND revision = ?'),
    };
  }

  async getVolume(name: string): Promise<VolumeRecord | undefined> {
    const row = this.q.get.get(name) as VolumeRow | undefined;
    return row && fromRow(row);
  }
  /** With `backend`, SQLite selects the rows: only that backend's records are decoded. */
  async listVolumes(backend?: string): Promise<VolumeRecord[]> {
    return ((backend === undefined ? this.q.list.all() : this.q.listOf.all(backend)) as VolumeRow[]).map(fromRow);
  }
  /**
   * dockerd calls List often, and with 10,000 volumes decoding the rows is most of its cost, while
   * the rows change only on create and remove. The decoded summaries are kept until a write to
   * `volumes` through this connection, or a commit by any other connection (PRAGMA data_version),
   * makes them stale. The array and its elements are frozen and shared between callers, and stay
   * the same object while nothing changed (the plugin frontend reuses its encoded List for it).
   */
  async listSummaries(): Promise<VolumeSummary[]> {
    const dataVersion = this.q.dataVersion.get() as number;
    const c = this.summaryCache;
    if (c && c.writes === this.volumeWrites && c.dataVersion === dataVersion) return c.list;
    const list = (this.q.summaries.all() as [string, string, string][])
      .map(([name, mountpoint, createdAt]) => Object.freeze({ name, mountpoint, createdAt }));
    this.summaryCache = { writes: this.volumeWrites, dataVersion, list: Object.freeze(list) as VolumeSummary[] };
    return this.summaryCache.list;
  }
  async insertVolume(rec: NewVolumeRecord): Promise<VolumeRecord | undefined> {
    const row = toRow({ ...rec, revision: 1 });
    const ok = this.durable(() => this.q.insert.run(row)).changes === 1;
    this.patchSummaries(ok ? (l) => {
      const i = indexByName(l, rec.name);
      return [...l.slice(0, i), summaryOf(rec), ...l.slice(i)];
    } : undefined);
    return ok ? { ...rec, revision: 1 } : undefined;
  }
  /** Compare-and-swap on the revision: `WHERE revision = ?` in the UPDATE, so a lost race changes nothing. */
  async updateVolume(rec: VolumeRecord): Promise<VolumeRecord> {
    const row = toRow(rec);
    const r = this.durable(() => this.q.update.run(row), this.needsFsync(rec.name, rec.state));
    if (r.changes !== 1) {
      this.patchSummaries();
      if (this.q.revisionOf.get(rec.name) === undefined) throw new ConflictError(`volume ${rec.name} was removed while this change was made; nothing was changed`);
      throw lostRace(rec.name);
    }
    this.patchSummaries((l) => {
      const i = indexByName(l, rec.name);
      const cur = l[i];
      if (cur?.name === rec.name && cur.mountpoint === rec.mountpoint && cur.createdAt === rec.createdAt) return l; // unchanged
      return cur?.name === rec.name ? [...l.slice(0, i), summaryOf(rec), ...l.slice(i + 1)] : undefined;
    });
    return { ...rec, revision: rec.revision + 1 };
  }
  private readonly deleteTx = (name: string, revision: number) => this.db.transaction(() => {
    const cur = this.q.revisionOf.get(name) as number | undefined;
    if (cur === undefined) return;
    if (cur !== revision) throw lostRace(name);
    this.q.delMounts.run(name);
    this.q.delAtt.run(name);
    const gone = this.q.del.run(name, revision).changes === 1;
    this.patchSummaries((l) => {
      if (!gone) return l;
      const i = indexByName(l, name);
      return l[i]?.name === name ? [...l.slice(0, i), ...l.slice(i + 1)] : undefined;
    });
  })();

  /**
   * Keeps the cached summaries in step with this connection's own writes, so a List right after a
   * create or remove costs a splice, not a re-read of every row. `patch` returns the new list, the same
   * list when nothing List shows changed, or undefined to drop the cache (it is then read afresh).
   */
  private patchSummaries(patch?: (l: readonly VolumeSummary[]) => readonly VolumeSummary[] | undefined): void {
    const c = this.summaryCache;
    const fresh = c !== undefined && c.writes === this.volumeWrites;
    this.volumeWrites++;
    if (!fresh || !patch) return;
    const next = patch(c.list);
    if (next === undefined) return;
    this.summaryCache = { writes: this.volumeWrites, dataVersion: c.dataVersion, list: (next === c.list ? c.list : Object.freeze([...next])) as VolumeSummary[] };
  }
  async deleteVolume(name: string, revision: number): Promise<void> { this.durable(() => this.deleteTx(name, revision), this.needsFsync(name, 'deleted')); }

  private readonly undoTx = (volume: string, node: string, id: string): { total: number; undo: number } => this.db.transaction(() => {
    const now = new Date().toISOString();
    const undo = Number(this.q.beginOp.run(volume, node, 'unmount', id, now).lastInsertRowid);
    this.q.addMount.run(volume, node, id, now);
    return { total: this.q.total.get(volume, node) as number, undo };
  })();
  async addMountWithUndo(volume: string, node: string, id: string): Promise<{ total: number; undo: number }> { return this.write(() => this.undoTx(volume, node, id)); }

  private readonly removeTx = (volume: string, node: string, id: string, endOp?: number) => this.db.transaction(() => {
    if (endOp !== undefined) this.q.endOp.run(endOp, node);
    const c = this.q.getMount.get(volume, node, id) as number | undefined;
    if (c === undefined) return { removed: false, total: this.q.total.get(volume, node) as number };
    if (c > 1) this.q.decMount.run(volume, node, id); else this.q.dropMount.run(volume, node, id);
    return { removed: true, total: this.q.total.get(volume, node) as number };
  })();
  async removeMount(volume: string, node: string, id: string, endOp?: number): Promise<{ removed: boolean; total: number }> { return this.write(() => this.removeTx(volume, node, id, endOp)); }

  async mounts(volume: string): Promise<MountRef[]> { return (this.q.mounts.all(volume) as MountRow[]).map(fromMountRow); }
  async nodeMounts(node: string): Promise<MountRef[]> { return (this.q.nodeMounts.all(node) as MountRow[]).map(fromMountRow); }
  async mountCount(volume: string, node: string): Promise<number> { return this.q.total.get(volume, node) as number; }

  async beginOp(op: Omit<OpRecord, 'id' | 'startedAt'>): Promise<number> {
    const startedAt = new Date().toISOString();
    return Number(this.write(() => this.q.beginOp.run(op.volume, op.node, op.op, op.mountId, startedAt)).lastInsertRowid);
  }
  async endOp(node: string, id: number): Promise<void> { this.write(() => this.q.endOp.run(id, node)); }
  async pendingOps(node: string): Promise<OpRecord[]> {
    return (this.q.pendingOps.all(node) as { id: number; volume: string; node: string; op: string; mount_id: string; started_at: string }[])
      .map((r) => ({ id: r.id, volume: r.volume, node: r.node, op: r.op as OpRecord['op'], mountId: r.mount_id, startedAt: r.started_at }));
  }

  async getAttachments(volume: string): Promise<AttachmentSet> {
    const r = this.q.getAtt.get(volume) as { epoch: number; holders: string; revision: number } | undefined;
    return r ? { volume, epoch: r.epoch, holders: JSON.parse(r.holders) as Attachment[], revision: r.revision } : noAttachments(volume);
  }
  /**
   * Compare-and-swap on the set's revision. Attachments are what keeps a second node from writing, so
   * they commit with synchronous=FULL like volume records. Revisions grow over the whole table, so a set
   * that was deleted and made again never reuses a revision a stale reader holds.
   */
  private readonly putAttTx = (set: AttachmentSet): AttachmentSet => this.db.transaction(() => {
    const cur = (this.q.attRevision.get(set.volume) as number | undefined) ?? 0;
    if (cur !== set.revision) throw lostAttachRace(set.volume);
    const revision = (this.q.maxAttRevision.get() as number) + 1;
    this.q.putAtt.run(set.volume, set.epoch, JSON.stringify(set.holders), revision);
    return { ...set, revision };
  })();
  async putAttachments(set: AttachmentSet): Promise<AttachmentSet> { return this.durable(() => this.putAttTx(set)); }

  /**
   * A row that does not decode (damaged by hand or by a disk) is neither an exception nor a record:
   * getSnapshot answers undefined and listSnapshots leaves it out. (SnapshotState has no `damaged`, and
   * any state given to it would invite an action on a snapshot nobody can read: a clone, a delete.)
   * Its name stays taken: insertSnapshot of it answers undefined.
   */
  async getSnapshot(name: string): Promise<SnapshotRecord | undefined> {
    const row = this.q.getSnap.get(name) as SnapshotRow | undefined;
    return row && fromSnapshotRow(row);
  }
  /** With `volume`, SQLite selects the rows (index on volume). Rows that do not decode are left out (see getSnapshot). */
  async listSnapshots(volume?: string): Promise<SnapshotRecord[]> {
    const rows = (volume === undefined ? this.q.listSnaps.all() : this.q.listSnapsOf.all(volume)) as SnapshotRow[];
    const out: SnapshotRecord[] = [];
    for (const r of rows) { const s = fromSnapshotRow(r); if (s) out.push(s); }
    return out;
  }
  /** Snapshot records commit with synchronous=FULL, every one of them (a snapshot's record is what finds its data again). */
  async insertSnapshot(rec: NewSnapshotRecord): Promise<SnapshotRecord | undefined> {
    const ok = this.durable(() => this.q.insertSnap.run(toSnapshotRow({ ...rec, revision: 1 }))).changes === 1;
    return ok ? { ...rec, revision: 1 } : undefined;
  }
  /** Compare-and-swap on the revision, as updateVolume. */
  async updateSnapshot(rec: SnapshotRecord): Promise<SnapshotRecord> {
    const r = this.durable(() => this.q.updateSnap.run(toSnapshotRow(rec)));
    if (r.changes !== 1) {
      if (this.q.snapRevisionOf.get(rec.name) === undefined) throw new ConflictError(`snapshot ${rec.name} was removed while this change was made; nothing was changed`);
      throw lostSnapshotRace(rec.name);
    }
    return { ...rec, revision: rec.revision + 1 };
  }
  private readonly deleteSnapTx = (name: string, revision: number) => this.db.transaction(() => {
    const cur = this.q.snapRevisionOf.get(name) as number | undefined;
    if (cur === undefined) return;
    if (cur !== revision) throw lostSnapshotRace(name);
    this.q.delSnap.run(name, revision);
  })();
  async deleteSnapshot(name: string, revision: number): Promise<void> { this.durable(() => this.deleteSnapTx(name, revision)); }

  /** Refuses new state (a Mount) before its first write while the state directory's filesystem is full. */
  assertRoom(action: string): void { this.reserve?.assertRoom(action); }

  async close(): Promise<void> { this.reserve?.close(); if (this.db.open) this.db.close(); }

  private freeOrUndefined(): number | undefined { try { return this.reserve?.freeBytes(); } catch { return undefined; } }

  /** A write of a volume or snapshot record: committed with synchronous=FULL (fsynced: it survives a power loss). */
  private durable<T>(fn: () => T, fsync = true): T {
    if (fsync) this.db.exec('PRAGMA synchronous = FULL');
    try {
      return this.write(fn);
    } catch (e) {
      this.summaryCache = undefined; // a patch may have run for a write that did not land
      throw e;
    } finally {
      if (fsync) this.db.exec('PRAGMA synchronous = NORMAL');
    }
  }

  /**
   * Whether a record write must survive a power loss. Not the two that end an operation whose start is
   * durable, because recovery re-derives them: a create's `creating` -> `ready` (lost, the record is
   * `creating` again and recovery finishes the create: provision is idempotent) and the delete of a
   * `removing` record (lost, recovery finishes the remove: deprovision of what is gone succeeds). Every
   * write that starts an operation or changes what a volume is (insert, `removing`, a delete that rolls
   * back a failed create) is fsynced before the call returns.
   */
  private needsFsync(name: string, next: VolumeRecord['state'] | 'deleted'): boolean {
    const prev = this.q.stateOf.get(name) as string | undefined;
    if (next === 'ready' && prev === 'creating') return false;
    if (next === 'deleted' && prev === 'removing') return false;
    return true;
  }

  /**
   * Runs one write (a statement or a transaction; SQLite rolls it back when it fails). When it fails for
   * lack of space, the reserve is given back to the filesystem and the write is tried once more; a write
   * that still fails is a ResourceExhaustedError naming the directory.
   */
  private write<T>(fn: () => T): T {
    try {
      return fn();
    } catch (e) {
      if (!isFull(e)) throw e;
      if (this.reserve?.release(`a store write failed: ${(e as Error).message}`)) {
        try { return fn(); } catch (e2) { if (!isFull(e2)) throw e2; e = e2; }
      }
      throw new ResourceExhaustedError(`${fullSentence(this.dir, this.freeOrUndefined())}${this.reserve ? ` (Ballast's ${Math.round(this.reserve.size / 1048576)} MiB reserve there is used up)` : ''}; Ballast could not write its state (${(e as Error).message})`, { cause: e });
    }
  }
}

function isFull(e: unknown): boolean {
  const code = (e as { code?: unknown })?.code;
  return code === 'SQLITE_FULL' || (e as NodeJS.ErrnoException)?.code === 'ENOSPC';
}

const STATES: readonly string[] = ['creating', 'ready', 'removing'];

/** A row that does not decode (damaged by hand or by a disk) becomes a `damaged` record, never an exception. */
function fromRow(r: VolumeRow): VolumeRecord {
  try {
    const spec = JSON.parse(r.spec);
    const details = JSON.parse(r.details);
    if (!spec || typeof spec !== 'object' || !details || typeof details !== 'object' || !STATES.includes(r.state)) throw new Error('bad shape');
    return { name: r.name, backend: r.backend, spec, mountpoint: r.mountpoint, createdAt: r.created_at, state: r.state as VolumeState, details, revision: r.revision, ...(r.home ? { home: r.home } : {}) };
  } catch (e) {
    return {
      name: r.name, backend: r.backend, spec: {}, mountpoint: r.mountpoint, createdAt: r.created_at, state: 'damaged', revision: r.revision,
      details: { damage: `the stored record does not decode (${(e as Error).message}): state=${JSON.stringify(r.state)}` },
    };
  }
}
function toRow(v: VolumeRecord): VolumeRow {
  return {
    name: v.name, backend: v.backend, spec: JSON.stringify(v.spec), mountpoint: v.mountpoint,
    created_at: v.createdAt, state: v.state, details: JSON.stringify(v.details), revision: v.revision, home: v.home ?? null,
  };
}
const SNAPSHOT_STATES: readonly string[] = ['creating', 'ready', 'removing'];

/** A snapshot row that does not decode is undefined, never an exception (see SqliteStore.getSnapshot). */
function fromSnapshotRow(r: SnapshotRow): SnapshotRecord | undefined {
  try {
    const spec = JSON.parse(r.spec);
    const details = JSON.parse(r.details);
    if (!spec || typeof spec !== 'object' || Array.isArray(spec) || !details || typeof details !== 'object' || Array.isArray(details)
      || !SNAPSHOT_STATES.includes(r.state) || typeof r.size !== 'number' || !Number.isFinite(r.size)) return undefined;
    return {
      name: r.name, volume: r.volume, backend: r.backend, spec, size: r.size, createdAt: r.created_at, state: r.state as SnapshotState,
      node: r.node, details, ...(r.home ? { home: r.home } : {}), revision: r.revision,
    };
  } catch {
    return undefined;
  }
}
function toSnapshotRow(s: SnapshotRecord): SnapshotRow {
  return {
    name: s.name, volume: s.volume, backend: s.backend, spec: JSON.stringify(s.spec), size: s.size, created_at: s.createdAt,
    state: s.state, node: s.node, details: JSON.stringify(s.details), home: s.home ?? null, revision: s.revision,
  };
}

function summaryOf(v: NewVolumeRecord): VolumeSummary {
  return Object.freeze({ name: v.name, mountpoint: v.mountpoint, createdAt: v.createdAt });
}

/** First index whose name is not below `name` (the list is in SQLite's BINARY order; names are ASCII). */
function indexByName(l: readonly VolumeSummary[], name: string): number {
  let lo = 0; let hi = l.length;
  while (lo < hi) { const mid = (lo + hi) >>> 1; if (l[mid].name < name) lo = mid + 1; else hi = mid; }
  return lo;
}

function fromMountRow(r: MountRow): MountRef {
  return { volume: r.volume, node: r.node, id: r.mount_id, count: r.count, since: r.since };
}
