import type { MountRef, OpRecord, VolumeRecord, VolumeSummary } from '../core/types.js';

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

  /**
   * Adds one reference for (volume, id); returns the volume's total references. When `endOp` is
   * given, that journal entry is closed in the same transaction.
   */
  addMount(volume: string, id: string, endOp?: number): Promise<number>;
  /**
   * Adds one reference for (volume, id) and, in the same transaction, turns the mount journal entry
   * `op` into its undo: an unmount of (volume, id). The caller ends `op` once the mount is answered; a
   * crash before that leaves the entry, and recovery drops the reference the caller never learnt of.
   * Returns the volume's total references.
   */
  commitMount(volume: string, id: string, op: number): Promise<number>;
  /**
   * Adds one reference for (volume, id) and, in the same transaction, journals its undo: an unmount of
   * (volume, id). The caller ends the returned journal entry once the mount is answered; a crash before
   * that leaves the entry, and recovery drops the reference the caller never learnt of. One commit where
   * beginOp + commitMount take two (Mount needs no journal entry before publish: a volume published
   * without a reference is unpublished by the start-up reconcile, journal or not).
   */
  addMountWithUndo(volume: string, id: string): Promise<{ total: number; undo: number }>;
  /**
   * Removes one reference for (volume, id) if present; returns whether it was there and the total left.
   * When `endOp` is given, that journal entry is closed in the same transaction.
   */
  removeMount(volume: string, id: string, endOp?: number): Promise<{ removed: boolean; total: number }>;
  mounts(volume: string): Promise<MountRef[]>;
  allMounts(): Promise<MountRef[]>;
  mountCount(volume: string): Promise<number>;

  /** Journal: records the intent of a multi-step operation before its first step; returns its id. */
  beginOp(op: Omit<OpRecord, 'id' | 'startedAt'>): Promise<number>;
  endOp(id: number): Promise<void>;
  /** Operations that began and never ended: a crash happened between their steps. */
  pendingOps(): Promise<OpRecord[]>;

  /**
   * Optional: throws a ResourceExhaustedError (a sentence naming the directory) when the store's filesystem
   * is too full for new state. Mount calls it before its first write, so that on a full disk the space
   * that is left, and the store's reserve, serve what ends or undoes state (Unmount, the journal).
   */
  assertRoom?(action: string): void;

  close(): Promise<void>;
}
