/** Domain types shared by the core, the stores and the backends. No Docker or CSI types here. */

/** `damaged`: the stored record could not be read; the volume is reported and never touched. */
export type VolumeState = 'creating' | 'ready' | 'removing' | 'damaged';

/** A volume as the store keeps it. `spec` is the normalized user request; `details` belong to the backend. */
export interface VolumeRecord {
  readonly name: string;
  /** Name of the backend instance (config key), e.g. "block" or "fast-ssd". */
  readonly backend: string;
  readonly spec: Readonly<Record<string, unknown>>;
  /** Where dockerd finds the data once mounted. */
  readonly mountpoint: string;
  /** RFC 3339. */
  readonly createdAt: string;
  readonly state: VolumeState;
  readonly details: Readonly<Record<string, unknown>>;
  /**
   * The node that holds the data of a node-local volume (a local directory, a block image on a node's
   * own disk), set at create; absent for storage every node reaches. A mount on another node is refused.
   */
  readonly home?: string;
  /**
   * The store's version of this record (SQLite: a counter; etcd: the key's mod_revision). Assigned by
   * the store on every write; an update or delete names the revision it read, and loses (a Conflict)
   * when another writer changed the record since.
   */
  readonly revision: number;
}

/** A record before the store has it: the store assigns its revision. */
export type NewVolumeRecord = Omit<VolumeRecord, 'revision'>;

/** What List needs, read without decoding specs. */
export interface VolumeSummary {
  readonly name: string;
  readonly mountpoint: string;
  readonly createdAt: string;
}

/** One entry of the mount ledger: a (volume, node, mount ID) triple with its multiplicity. */
export interface MountRef {
  readonly volume: string;
  /** The node whose daemon took the reference (its config `node`). */
  readonly node: string;
  readonly id: string;
  readonly count: number;
  /** RFC 3339 time of the first reference. */
  readonly since: string;
}

/** What Get and inspect return. */
export interface VolumeInfo {
  readonly name: string;
  readonly backend: string;
  readonly type: string;
  readonly mountpoint: string;
  readonly createdAt: string;
  readonly state: VolumeState;
  readonly spec: Readonly<Record<string, unknown>>;
  readonly mounts: number;
  readonly mountIds: readonly string[];
  readonly status: Readonly<Record<string, unknown>>;
}

/** A journaled operation: its intent is stored before its first step and removed after its last. */
export interface OpRecord {
  readonly id: number;
  readonly volume: string;
  /** The node whose daemon journaled it; only that node's recovery acts on it. */
  readonly node: string;
  readonly op: 'mount' | 'unmount';
  readonly mountId: string;
  readonly startedAt: string;
}

/** A node's hold on a volume: read-write or read-only, since when. */
export interface Attachment {
  readonly node: string;
  readonly mode: 'rw' | 'ro';
  /** RFC 3339. */
  readonly since: string;
  /**
   * What the node's stage left at the storage for a later fence (the backend's Fencer.claim: e.g. the
   * rbd-fuse client addresses Ceph knows it by). Never a secret: it is stored in the cluster store.
   */
  readonly claim?: Readonly<Record<string, string>>;
}

/**
 * Which nodes hold a volume (the attach state machine: not attached / attached here / attached
 * elsewhere). `epoch` increases on every takeover of the volume from a node that did not let go
 * itself, so a node that holds an older epoch knows it lost the volume. `revision` is the store's
 * version of the set (0: never stored); a change is a compare-and-swap on it.
 */
export interface AttachmentSet {
  readonly volume: string;
  readonly epoch: number;
  readonly holders: readonly Attachment[];
  readonly revision: number;
}

/** A snapshot being taken (`creating`: a crash then rolls it back), usable (`ready`), or being deleted (`removing`: rolled forward). */
export type SnapshotState = 'creating' | 'ready' | 'removing';

/**
 * A point-in-time copy of a volume, kept by the volume's backend (a reflinked image, an RBD or CephFS
 * snapshot). Snapshots have their own namespace (a snapshot and a volume may share a name). Versioned
 * like volume records: updateSnapshot and deleteSnapshot are compare-and-swap on `revision`.
 */
export interface SnapshotRecord {
  readonly name: string;
  /** The volume it was taken of. */
  readonly volume: string;
  /** The source volume's backend instance; clones are made by it. */
  readonly backend: string;
  /** The source volume's spec when the snapshot was taken: a clone gets it. */
  readonly spec: Readonly<Record<string, unknown>>;
  /** Bytes: the volume's size when taken (0 where a backend has no size). */
  readonly size: number;
  /** RFC 3339. */
  readonly createdAt: string;
  readonly state: SnapshotState;
  /** The node that took it: only its recovery rolls back a `creating` one (it may have frozen a filesystem there). */
  readonly node: string;
  /** Belongs to the backend (a path, a snapshot id), plus `temporary: true` for one a backup or a clone of a volume made for itself. */
  readonly details: Readonly<Record<string, unknown>>;
  /** As the source volume's home: a node-local volume's snapshot lives on that node. */
  readonly home?: string;
  readonly revision: number;
}

export type NewSnapshotRecord = Omit<SnapshotRecord, 'revision'>;

/** What `ballast snapshot ls` and inspect show. */
export interface SnapshotInfo {
  readonly name: string;
  readonly volume: string;
  readonly backend: string;
  readonly type: string;
  readonly size: number;
  readonly createdAt: string;
  readonly state: SnapshotState;
  readonly node: string;
  /** How it was taken ("reflink", "copy", "rbd snapshot", ...) and how long the filesystem was frozen. */
  readonly method?: string;
  readonly frozenMs?: number;
  /** Volumes made from it that still exist. */
  readonly clones: readonly string[];
}
