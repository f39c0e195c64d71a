import type { AttachmentSet, MountRef, NewSnapshotRecord, NewVolumeRecord, OpRecord, SnapshotRecord, VolumeRecord, VolumeSummary } from '../core/types.js';
import { ConflictError } from '../core/errors.js';

/**
 * Metadata store: volume records, the mount ledger and the operation journal. Two real
 * implementations: SQLite (the embedded default, one host) and etcd (cluster mode); an in-memory one
 * for unit tests. One contract suite (store.test.ts) runs against all of them.
 *
 * - Every method is atomic on its own.
 * - Records are versioned: the store assigns `revision` on every write, and updateVolume/deleteVolume
 *   are compare-and-swap on the revision the caller read. A lost race throws a ConflictError
 *   (retryable) naming the volume; nothing is changed then. There is no blind update.
 * - The ledger and the journal are keyed by node: (volume, node, mount ID). A daemon writes, recovers
 *   and reconciles only its own node's rows; `mounts(volume)` shows every node's, so that a volume
 *   referenced anywhere is not removed.
 */
export interface MetadataStore {
  getVolume(name: string): Promise<VolumeRecord | undefined>;
  /** Every record, by name; with `backend`, only that backend instance's (a create's space check reads them). */
  listVolumes(backend?: string): Promise<VolumeRecord[]>;
  listSummaries(): Promise<VolumeSummary[]>;
  /** Inserts a new record; returns it with its first revision, or undefined (nothing changed) when the name exists. */
  insertVolume(rec: NewVolumeRecord): Promise<VolumeRecord | undefined>;
  /**
   * Replaces the record when its stored revision is still `rec.revision`; returns it with its new
   * revision. Throws a ConflictError when the record changed since, or is gone.
   */
  updateVolume(rec: VolumeRecord): Promise<VolumeRecord>;
  /**
   * Deletes the record, every node's ledger entries and its attachments when its stored revision is still `revision`;
   * absent is fine. Throws a ConflictError when the record changed since.
   */
  deleteVolume(name: string, revision: number): Promise<void>;

  /**
   * Adds one reference for (volume, node, id) and, in the same transaction, journals its undo: an
   * unmount of (volume, node, id). The caller ends the returned journal entry once the mount is
   * answered; a crash before that leaves the entry, and recovery drops the reference the caller never
   * learnt of. `total` is the node's references to the volume after the change.
   */
  addMountWithUndo(volume: string, node: string, id: string): Promise<{ total: number; undo: number }>;
  /**
   * Removes one reference for (volume, node, id) if present; returns whether it was there and the
   * node's references to the volume left. When `endOp` is given, that journal entry of the node is
   * closed in the same transaction.
   */
  removeMount(volume: string, node: string, id: string, endOp?: number): Promise<{ removed: boolean; total: number }>;
  /** Every node's references to the volume. */
  mounts(volume: string): Promise<MountRef[]>;
  /** The node's references, to every volume. */
  nodeMounts(node: string): Promise<MountRef[]>;
  /** The node's references to the volume. */
  mountCount(volume: string, node: string): Promise<number>;

  /** Journal: records the intent of a multi-step operation of a node before its first step; returns its id. */
  beginOp(op: Omit<OpRecord, 'id' | 'startedAt'>): Promise<number>;
  endOp(node: string, id: number): Promise<void>;
  /** The node's operations that began and never ended: a crash happened between their steps. */
  pendingOps(node: string): Promise<OpRecord[]>;

  /** The nodes that hold the volume; `{ epoch: 0, holders: [], revision: 0 }` when none ever did. */
  getAttachments(volume: string): Promise<AttachmentSet>;
  /**
   * Replaces the volume's attachments when their stored revision is still `set.revision` (0: none
   * stored yet); returns the set with its new revision. A lost race throws a ConflictError: two nodes
   * that attach an exclusive volume at the same instant cannot both win.
   */
  putAttachments(set: AttachmentSet): Promise<AttachmentSet>;

  /** Snapshot records (their own namespace): the same versioning as volume records. */
  getSnapshot(name: string): Promise<SnapshotRecord | undefined>;
  /** Every snapshot record by name; with `volume`, only the snapshots of that volume. */
  listSnapshots(volume?: string): Promise<SnapshotRecord[]>;
  /** Inserts a new snapshot record; returns it with its first revision, or undefined (nothing changed) when the name exists. */
  insertSnapshot(rec: NewSnapshotRecord): Promise<SnapshotRecord | undefined>;
  /** Compare-and-swap on `rec.revision`; a ConflictError when it changed since, or is gone. */
  updateSnapshot(rec: SnapshotRecord): Promise<SnapshotRecord>;
  /** Deletes the snapshot record when its revision is still `revision`; absent is fine; a ConflictError when it changed since. */
  deleteSnapshot(name: string, revision: number): Promise<void>;

  /**
   * Optional: throws a ResourceExhaustedError (a sentence naming the directory) when the store's filesystem
   * is too full for new state. Mount calls it before its first write, so that on a full disk the space
   * that is left, and the store's reserve, serve what ends or undoes state (Unmount, the journal).
   */
  assertRoom?(action: string): void;
  /**
   * Shared stores (etcd): resolves once this node's copy holds every change committed before the call,
   * or throws an UnavailableError. For decisions that must not rest on a copy made while the store was
   * out of reach.
   */
  inStep?(what: string): Promise<void>;

  close(): Promise<void>;
}

/** The Conflict of a compare-and-swap that lost: another writer changed the record since it was read. */
export function lostRace(name: string): ConflictError {
  return new ConflictError(`volume ${name} was changed by another operation while this one ran; nothing was changed by this one. Retry it`, { retryable: true });
}

/** The Conflict of a snapshot compare-and-swap that lost. */
export function lostSnapshotRace(name: string): ConflictError {
  return new ConflictError(`snapshot ${name} was changed by another operation while this one ran; nothing was changed by this one. Retry it`, { retryable: true });
}

/** The Conflict of an attachment change that lost: another node changed the volume's attachments since they were read. */
export function lostAttachRace(volume: string): ConflictError {
  return new ConflictError(`the attachments of volume ${volume} were changed by another node while this one changed them; nothing was changed by this one`, { retryable: true });
}

/** What getAttachments answers for a volume no node ever held. */
export function noAttachments(volume: string): AttachmentSet { return { volume, epoch: 0, holders: [], revision: 0 }; }
