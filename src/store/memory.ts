import type { MetadataStore } from './types.js';
import type { MountRef, OpRecord, VolumeRecord, VolumeSummary } from '../core/types.js';

/** In-memory store for unit tests of the layers above; same contract as SqliteStore. */
export class MemoryStore implements MetadataStore {
  private readonly volumes = new Map<string, VolumeRecord>();
  private readonly ledger = new Map<string, Map<string, { count: number; since: string }>>();
  private readonly ops = new Map<number, OpRecord>();
  private nextOp = 1;

  async getVolume(name: string) { const v = this.volumes.get(name); return v && structuredClone(v); }
  async listVolumes() { return [...this.volumes.values()].sort(byName).map((v) => structuredClone(v)); }
  async listSummaries(): Promise<VolumeSummary[]> {
    return [...this.volumes.values()].sort(byName).map((v) => ({ name: v.name, mountpoint: v.mountpoint, createdAt: v.createdAt }));
  }
  async insertVolume(rec: VolumeRecord) {
    if (this.volumes.has(rec.name)) return false;
    this.volumes.set(rec.name, structuredClone(rec));
    return true;
  }
  async updateVolume(rec: VolumeRecord) {
    if (!this.volumes.has(rec.name)) throw new Error(`volume ${rec.name} is not in the store`);
    this.volumes.set(rec.name, structuredClone(rec));
  }
  async deleteVolume(name: string) { this.volumes.delete(name); this.ledger.delete(name); }
  async addMount(volume: string, id: string, endOp?: number) {
    if (endOp !== undefined) this.ops.delete(endOp);
    let m = this.ledger.get(volume);
    if (!m) this.ledger.set(volume, (m = new Map()));
    const e = m.get(id);
    if (e) e.count++; else m.set(id, { count: 1, since: new Date().toISOString() });
    return this.total(volume);
  }
  async commitMount(volume: string, id: string, op: number) {
    const o = this.ops.get(op);
    if (!o || o.op !== 'mount') throw new Error(`journal entry ${op} is not an open mount`);
    this.ops.set(op, { ...o, op: 'unmount' });
    return this.addMount(volume, id);
  }
  async addMountWithUndo(volume: string, id: string) {
    const undo = await this.beginOp({ volume, op: 'unmount', mountId: id });
    return { total: await this.addMount(volume, id), undo };
  }
  async removeMount(volume: string, id: string, endOp?: number) {
    if (endOp !== undefined) this.ops.delete(endOp);
    const m = this.ledger.get(volume);
    const e = m?.get(id);
    if (!m || !e) return { removed: false, total: this.total(volume) };
    if (--e.count === 0) m.delete(id);
    if (m.size === 0) this.ledger.delete(volume);
    return { removed: true, total: this.total(volume) };
  }
  async mounts(volume: string): Promise<MountRef[]> {
    return [...(this.ledger.get(volume) ?? new Map()).entries()].map(([id, e]) => ({ volume, id, count: e.count, since: e.since }));
  }
  async allMounts(): Promise<MountRef[]> {
    const out: MountRef[] = [];
    for (const v of [...this.ledger.keys()].sort()) out.push(...(await this.mounts(v)));
    return out;
  }
  async mountCount(volume: string) { return this.total(volume); }
  async beginOp(op: Omit<OpRecord, 'id' | 'startedAt'>) {
    const id = this.nextOp++;
    this.ops.set(id, { ...op, id, startedAt: new Date().toISOString() });
    return id;
  }
  async endOp(id: number) { this.ops.delete(id); }
  async pendingOps() { return [...this.ops.values()]; }
  async close() {}
  private total(volume: string) {
    let t = 0;
    for (const e of this.ledger.get(volume)?.values() ?? []) t += e.count;
    return t;
  }
}
const byName = (a: { name: string }, b: { name: string }) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
