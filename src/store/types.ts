import type { MountRef, VolumeRecord, VolumeSummary } from '../core/types.js';

/**
 * Metadata store: volume records and the mount ledger. Two real implementations: SQLite (embedded
 * default) and etcd (cluster mode, later); an in-memory one for unit tests.
 * All methods are atomic on their own; the ledger methods return the volume's total after the change.
 */
export interface MetadataStore {
  getVolume(name: string): Promise<VolumeRecord | undefined>;
  listVolumes(): Promise<VolumeRecord[]>;
  listSummaries(): Promise<VolumeSummary[]>;
  /** Inserts the record; returns false (and changes nothing) when the name exists. */
  insertVolume(rec: VolumeRecord): Promise<boolean>;
  /** Replaces an existing record. */
  updateVolume(rec: VolumeRecord): Promise<void>;
  /** Deletes the record and its ledger entries; absent is fine. */
  deleteVolume(name: string): Promise<void>;

  /** Adds one reference for (volume, id); returns the volume's total references. */
  addMount(volume: string, id: string): Promise<number>;
  /** Removes one reference for (volume, id) if present; returns whether it was there and the total left. */
  removeMount(volume: string, id: string): Promise<{ removed: boolean; total: number }>;
  mounts(volume: string): Promise<MountRef[]>;
  allMounts(): Promise<MountRef[]>;
  mountCount(volume: string): Promise<number>;

  close(): Promise<void>;
}
