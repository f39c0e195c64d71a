import Database from 'better-sqlite3';
import type { MetadataStore } from './types.js';
import type { MountRef, VolumeRecord, VolumeSummary, VolumeState } from '../core/types.js';

interface VolumeRow {
  name: string; backend: string; spec: string; mountpoint: string; created_at: string; state: string; details: string;
}
interface MountRow { volume: string; mount_id: string; count: number; since: string }

const SCHEMA = `
CREATE TABLE IF NOT EXISTS volumes (
  name TEXT PRIMARY KEY,
  backend TEXT NOT NULL,
  spec TEXT NOT NULL,
  mountpoint TEXT NOT NULL,
  created_at TEXT NOT NULL,
  state TEXT NOT NULL,
  details TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS mounts (
  volume TEXT NOT NULL,
  mount_id TEXT NOT NULL,
  count INTEGER NOT NULL CHECK (count > 0),
  since TEXT NOT NULL,
  PRIMARY KEY (volume, mount_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
`;
const SCHEMA_VERSION = '1';

/** SQLite in WAL mode with synchronous=FULL: a write that returned survives a crash of the daemon or host. */
export class SqliteStore implements MetadataStore {
  private readonly db: Database.Database;
  private readonly q;

  constructor(file: string) {
    this.db = new Database(file);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = FULL');
    this.db.pragma('busy_timeout = 5000');
    this.db.exec(SCHEMA);
    const v = this.db.prepare('SELECT value FROM meta WHERE key = ?').get('schema') as { value: string } | undefined;
    if (!v) this.db.prepare('INSERT INTO meta (key, value) VALUES (?, ?)').run('schema', SCHEMA_VERSION);
    else if (v.value !== SCHEMA_VERSION) throw new Error(`store ${file} has schema ${v.value}; this Ballast understands ${SCHEMA_VERSION}`);
    const db = this.db;
    this.q = {
      get: db.prepare('SELECT * FROM volumes WHERE name = ?'),
      list: db.prepare('SELECT * FROM volumes ORDER BY name'),
      summaries: db.prepare('SELECT name, mountpoint, created_at FROM volumes ORDER BY name').raw(true),
      insert: db.prepare('INSERT OR IGNORE INTO volumes (name, backend, spec, mountpoint, created_at, state, details) VALUES (@name, @backend, @spec, @mountpoint, @created_at, @state, @details)'),
      update: db.prepare('UPDATE volumes SET backend=@backend, spec=@spec, mountpoint=@mountpoint, created_at=@created_at, state=@state, details=@details WHERE name=@name'),
      del: db.prepare('DELETE FROM volumes WHERE name = ?'),
      delMounts: db.prepare('DELETE FROM mounts WHERE volume = ?'),
      addMount: db.prepare('INSERT INTO mounts (volume, mount_id, count, since) VALUES (?, ?, 1, ?) ON CONFLICT (volume, mount_id) DO UPDATE SET count = count + 1'),
      getMount: db.prepare('SELECT count FROM mounts WHERE volume = ? AND mount_id = ?').pluck(),
      decMount: db.prepare('UPDATE mounts SET count = count - 1 WHERE volume = ? AND mount_id = ?'),
      dropMount: db.prepare('DELETE FROM mounts WHERE volume = ? AND mount_id = ?'),
      total: db.prepare('SELECT COALESCE(SUM(count), 0) FROM mounts WHERE volume = ?').pluck(),
      mounts: db.prepare('SELECT * FROM mounts WHERE volume = ? ORDER BY since, mount_id'),
      allMounts: db.prepare('SELECT * FROM mounts ORDER BY volume, since, mount_id'),
    };
  }

  async getVolume(name: string): Promise<VolumeRecord | undefined> {
    const row = this.q.get.get(name) as VolumeRow | undefined;
    return row && fromRow(row);
  }
  async listVolumes(): Promise<VolumeRecord[]> {
    return (this.q.list.all() as VolumeRow[]).map(fromRow);
  }
  async listSummaries(): Promise<VolumeSummary[]> {
    return (this.q.summaries.all() as [string, string, string][]).map(([name, mountpoint, createdAt]) => ({ name, mountpoint, createdAt }));
  }
  async insertVolume(rec: VolumeRecord): Promise<boolean> {
    return this.q.insert.run(toRow(rec)).changes === 1;
  }
  async updateVolume(rec: VolumeRecord): Promise<void> {
    const r = this.q.update.run(toRow(rec));
    if (r.changes !== 1) throw new Error(`volume ${rec.name} is not in the store`);
  }
  private readonly deleteTx = (name: string) => this.db.transaction(() => {
    this.q.delMounts.run(name);
    this.q.del.run(name);
  })();
  async deleteVolume(name: string): Promise<void> { this.deleteTx(name); }

  private readonly addTx = (volume: string, id: string): number => this.db.transaction(() => {
    this.q.addMount.run(volume, id, new Date().toISOString());
    return this.q.total.get(volume) as number;
  })();
  async addMount(volume: string, id: string): Promise<number> { return this.addTx(volume, id); }

  private readonly removeTx = (volume: string, id: string) => this.db.transaction(() => {
    const c = this.q.getMount.get(volume, id) as number | undefined;
    if (c === undefined) return { removed: false, total: this.q.total.get(volume) as number };
    if (c > 1) this.q.decMount.run(volume, id); else this.q.dropMount.run(volume, id);
    return { removed: true, total: this.q.total.get(volume) as number };
  })();
  async removeMount(volume: string, id: string): Promise<{ removed: boolean; total: number }> { return this.removeTx(volume, id); }

  async mounts(volume: string): Promise<MountRef[]> { return (this.q.mounts.all(volume) as MountRow[]).map(fromMountRow); }
  async allMounts(): Promise<MountRef[]> { return (this.q.allMounts.all() as MountRow[]).map(fromMountRow); }
  async mountCount(volume: string): Promise<number> { return this.q.total.get(volume) as number; }

  async close(): Promise<void> { if (this.db.open) this.db.close(); }
}

function fromRow(r: VolumeRow): VolumeRecord {
  return {
    name: r.name, backend: r.backend, spec: JSON.parse(r.spec), mountpoint: r.mountpoint,
    createdAt: r.created_at, state: r.state as VolumeState, details: JSON.parse(r.details),
  };
}
function toRow(v: VolumeRecord): VolumeRow {
  return {
    name: v.name, backend: v.backend, spec: JSON.stringify(v.spec), mountpoint: v.mountpoint,
    created_at: v.createdAt, state: v.state, details: JSON.stringify(v.details),
  };
}
function fromMountRow(r: MountRow): MountRef {
  return { volume: r.volume, id: r.mount_id, count: r.count, since: r.since };
}
