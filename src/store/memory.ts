import { lostAttachRace, lostRace, lostSnapshotRace, noAttachments, type MetadataStore } from './types.js';
import type { AttachmentSet, MountRef, NewSnapshotRecord, NewVolumeRecord, OpRecord, SnapshotRecord, VolumeRecord, VolumeSummary } from '../core/types.js';
import { ConflictError } from '../core/errors.js';

/** In-memory store for unit tests of the layers above; same contract as SqliteStore and EtcdStore. */
export class MemoryStore implements MetadataStore {
  private readonly volumes = new Map<string, VolumeRecord>();
  /** volume -> "node\0id" -> entry */
  private readonly ledger = new Map<string, Map<string, { node: string; id: string; count: number; since: string }>>();
  private readonly ops = new Map<number, OpRecord>();
  private readonly attachments = new Map<string, AttachmentSet>();
  private readonly snapshots = new Map<string, SnapshotRecord>();
  private nextOp = 1;
  private revision = 0;

  async getVolume(name: string) { const v = this.volumes.get(name); return v && structuredClone(v); }
  async listVolumes(backend?: string) { return [...this.volumes.values()].filter((v) => backend === undefined || v.backend === backend).sort(byName).map((v) => structuredClone(v)); }
  async listSummaries(): Promise<VolumeSummary[]> {
    return [...this.volumes.values()].sort(byName).map((v) => ({ name: v.name, mountpoint: v.mountpoint, createdAt: v.createdAt }));
  }
  async insertVolume(rec: NewVolumeRecord) {
    if (this.volumes.has(rec.name)) return undefined;
    const stored: VolumeRecord = { ...structuredClone(rec), revision: ++this.revision };
    this.volumes.set(rec.name, stored);
    return structuredClone(stored);
  }
  async updateVolume(rec: VolumeRecord) {
    const cur = this.volumes.get(rec.name);
    if (!cur) throw new ConflictError(`volume ${rec.name} was removed while this change was made; nothing was changed`);
    if (cur.revision !== rec.revision) throw lostRace(rec.name);
    const stored: VolumeRecord = { ...structuredClone(rec), revision: ++this.revision };
    this.volumes.set(rec.name, stored);
    return structuredClone(stored);
  }
  async deleteVolume(name: string, revision: number) {
    const cur = this.volumes.get(name);
    if (!cur) return;
    if (cur.revision !== revision) throw lostRace(name);
    this.volumes.delete(name);
    this.ledger.delete(name);
    this.attachments.delete(name);
  }
  async getSnapshot(name: string) { const s = this.snapshots.get(name); return s && structuredClone(s); }
  async listSnapshots(volume?: string) { return [...this.snapshots.values()].filter((s) => volume === undefined || s.volume === volume).sort(byName).map((s) => structuredClone(s)); }
  async insertSnapshot(rec: NewSnapshotRecord) {
    if (this.snapshots.has(rec.name)) return undefined;
    const stored: SnapshotRecord = { ...structuredClone(rec), revision: ++this.revision };
    this.snapshots.set(rec.name, stored);
    return structuredClone(stored);
  }
  async updateSnapshot(rec: SnapshotRecord) {
    const cur = this.snapshots.get(rec.name);
    if (!cur) throw new ConflictError(`snapshot ${rec.name} was removed while this change was made; nothing was changed`);
    if (cur.revision !== rec.revision) throw lostSnapshotRace(rec.name);
    const stored: SnapshotRecord = { ...structuredClone(rec), revision: ++this.revision };
    this.snapshots.set(rec.name, stored);
    return structuredClone(stored);
  }
  /** Snapshots are their own namespace: deleteVolume leaves them. */
  async deleteSnapshot(name: string, revision: number) {
    const cur = this.snapshots.get(name);
    if (!cur) return;
    if (cur.revision !== revision) throw lostSnapshotRace(name);
    this.snapshots.delete(name);
  }
  async getAttachments(volume: string) { return structuredClone(this.attachments.get(volume) ?? noAttachments(volume)); }
  async putAttachments(set: AttachmentSet) {
    if ((this.attachments.get(set.volume)?.revision ?? 0) !== set.revision) throw lostAttachRace(set.volume);
    const stored: AttachmentSet = { ...structuredClone(set), revision: ++this.revision };
    this.attachments.set(set.volume, stored);
    return structuredClone(stored);
  }
  async addMountWithUndo(volume: string, node: string, id: string) {
    const undo = await this.beginOp({ volume, node, op: 'unmount', mountId: id });
    let m = this.ledger.get(volume);
    if (!m) this.ledger.set(volume, (m = new Map()));
    const e = m.get(`${node}\0${id}`);
    if (e) e.count++; else m.set(`${node}\0${id}`, { node, id, count: 1, since: new Date().toISOString() });
    return { total: this.total(volume, node), undo };
  }
  async removeMount(volume: string, node: string, id: string, endOp?: number) {
    if (endOp !== undefined) this.ops.delete(endOp);
    const m = this.ledger.get(volume);
    const e = m?.get(`${node}\0${id}`);
    if (!m || !e) return { removed: false, total: this.total(volume, node) };
    if (--e.count === 0) m.delete(`${node}\0${id}`);
    if (m.size === 0) this.ledger.delete(volume);
    return { removed: true, total: this.total(volume, node) };
  }
  async mounts(volume: string): Promise<MountRef[]> {
    return [...(this.ledger.get(volume)?.values() ?? [])]
      .sort((a, b) => (a.since < b.since ? -1 : a.since > b.since ? 1 : a.node < b.node ? -1 : a.node > b.node ? 1 : a.id < b.id ? -1 : 1))
      .map((e) => ({ volume, node: e.node, id: e.id, count: e.count, since: e.since }));
  }
  async nodeMounts(node: string): Promise<MountRef[]> {
    const out: MountRef[] = [];
    for (const v of [...this.ledger.keys()].sort()) out.push(...(await this.mounts(v)).filter((r) => r.node === node));
    return out;
  }
  async mountCount(volume: string, node: string) { return this.total(volume, node); }
  async beginOp(op: Omit<OpRecord, 'id' | 'startedAt'>) {
    const id = this.nextOp++;
    this.ops.set(id, { ...op, id, startedAt: new Date().toISOString() });
    return id;
  }
  async endOp(node: string, id: number) { if (this.ops.get(id)?.node === node) this.ops.delete(id); }
  async pendingOps(node: string) { return [...this.ops.values()].filter((o) => o.node === node); }
  async close() {}
  private total(volume: string, node: string) {
    let t = 0;
    for (const e of this.ledger.get(volume)?.values() ?? []) if (e.node === node) t += e.count;
    return t;
  }
}

const byName = (a: { name: string }, b: { name: string }) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
