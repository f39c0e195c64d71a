import type { Logger } from 'pino';
import type { SnapshotRecord, VolumeRecord } from '../core/types.js';
import type { Exec } from '../host/exec.js';
import type { MountEntry, MountTable } from '../host/mountinfo.js';
import type { LoopDevice } from '../host/blockdev.js';
import { callerPath, recordedPath } from '../host/paths.js';

/** What every backend gets from the composition root (constructor injection; fakes in unit tests). */
export interface BackendContext {
  /** Ballast's state directory; a backend keeps its files under `<root>/backends/<instance>` unless configured. */
  readonly root: string;
  readonly exec: Exec;
  readonly mounts: MountTable;
  readonly log: Logger;
  /** This node's name (locks and messages name it). */
  readonly node?: string;
  /** Cluster mode: the store's attachments keep other nodes out, so per-node storage locks are not needed. */
  readonly cluster?: boolean;
  /** Fault injection for crash tests (no-op in production). */
  readonly fault?: (point: string) => void;
}

/** The host as one reconciler pass sees it: read once per pass, not once per volume. */
export interface HostSnapshot {
  readonly mounts: readonly MountEntry[];
  readonly loops: readonly LoopDevice[];
}

/** Probe of a backend whose volume is mounted at its staging path: is something mounted there? */
export function probeMountpoint(snap: HostSnapshot, stagingPath: string): 'mounted' | 'unmounted' {
  return snap.mounts.some((m) => m.mountpoint === stagingPath) ? 'mounted' : 'unmounted';
}

/** A staging path a caller named, checked before anything is mounted there. */
export function stagingPathOf(stagingPath: string): string { return callerPath(stagingPath, 'staging path'); }

/** The volume's mountpoint, from its record (see Placement): the Docker path's staging path. */
export function mountpointOf(vol: VolumeRecord): string { return recordedPath(vol.mountpoint, `mountpoint of volume ${vol.name}`); }

/**
 * A path the backend's `place` put into the record's details (`key`). Records made before placement
 * was recorded lack it: `legacy` is then the path the config of that time gave, which is what they used.
 */
export function detailPath(vol: VolumeRecord, key: string, legacy: () => string): string {
  const v = vol.details[key];
  return v === undefined ? legacy() : recordedPath(v, `${key} of volume ${vol.name}`);
}

/** Something of a backend's on the host that no volume record accounts for. */
export interface Orphan {
  readonly backend: string;
  readonly kind: 'mount' | 'loop' | 'image' | 'directory' | 'volume' | 'attachment';
  readonly path: string;
  readonly detail: string;
  /** Safe to clean on `ballast repair` (a stray mount or loop device); data (images, dirs) never is. */
  readonly cleanable: boolean;
  /**
   * Never in use by anything (a temporary mount a create or remove left behind): the reconciler cleans it
   * on every pass, not only on `ballast repair`, and reports the cleaning among the pass's repairs.
   */
  readonly autoClean?: boolean;
  /**
   * Storage whose record the store lost but that says what it is (a Cinder volume's metadata): the
   * record `ballast repair` inserts for it, as it was. Data is never cleaned; it is adopted back.
   */
  readonly adopt?: { readonly name: string; readonly spec: Readonly<Record<string, unknown>>; readonly mountpoint: string; readonly details: Readonly<Record<string, unknown>>; readonly createdAt: string };
}

/** Optional ability: find and clean what a crash or a lost record left behind. */
export interface OrphanFinder {
  findOrphans(known: ReadonlySet<string>, snap: HostSnapshot): Promise<Orphan[]>;
  cleanOrphan(o: Orphan): Promise<void>;
}

export function canFindOrphans(b: Backend): b is Backend & OrphanFinder {
  return typeof (b as Partial<OrphanFinder>).findOrphans === 'function';
}

/** Accepted per-volume option, for validation and for the error that lists what is accepted. */
export interface OptionDoc { readonly name: string; readonly help: string }

/**
 * Where a new volume's data will live on this host, chosen once at create from the current config and
 * written into its record: `mountpoint` becomes the record's mountpoint, `details` its first details
 * (an image path, a FUSE directory). Every later call reads these paths from the record, never from the
 * config, so a changed `dir`, `imageDir` or `mountDir` applies to new volumes only.
 */
export interface Placement {
  readonly mountpoint: string;
  readonly details: Readonly<Record<string, string>>;
}

/** How a node uses a volume: read-write, or read-only. */
export type AccessMode = 'rw' | 'ro';

/**
 * Which nodes may use a volume at once, declared by its backend (CSI's access modes, said once in the
 * backend and enforced by the service). Containers on one node always share that node's one staging of
 * the volume; these flags are about nodes.
 * - single node, one writer (SINGLE_NODE_WRITER): `{ multiNode: false, multiWriter: false, readOnlyExtraNodes: false }`
 *   (local, block: the data lives on one host)
 * - one read-write node, any number of read-only ones (MULTI_NODE_SINGLE_WRITER): `{ multiNode: true, multiWriter: false, readOnlyExtraNodes: true }` (rbd)
 * - any number of read-write nodes (MULTI_NODE_MULTI_WRITER): `{ multiNode: true, multiWriter: true, readOnlyExtraNodes: true }`
 *   (the shared filesystems: glusterfs, cephfs, sshfs, s3, nfs)
 * - several nodes, none writing while another holds it (MULTI_NODE_READER_ONLY): `{ multiNode: true, multiWriter: false, readOnlyExtraNodes: false }`
 */
export interface AccessModes {
  /** May more than one node hold the volume at once? */
  readonly multiNode: boolean;
  /** May more than one node hold it read-write at once? (Needs multiNode.) */
  readonly multiWriter: boolean;
  /** Besides one read-write node, may other nodes hold it read-only? (Needs multiNode.) */
  readonly readOnlyExtraNodes: boolean;
}

export const SINGLE_NODE_WRITER: AccessModes = Object.freeze({ multiNode: false, multiWriter: false, readOnlyExtraNodes: false });
export const MULTI_NODE_SINGLE_WRITER: AccessModes = Object.freeze({ multiNode: true, multiWriter: false, readOnlyExtraNodes: true });
export const MULTI_NODE_MULTI_WRITER: AccessModes = Object.freeze({ multiNode: true, multiWriter: true, readOnlyExtraNodes: true });
export const MULTI_NODE_READER_ONLY: AccessModes = Object.freeze({ multiNode: true, multiWriter: false, readOnlyExtraNodes: false });

/** A node that holds a volume now (staged or attached there), and how. */
/**
 * Block images on a directory every node shares (`shared: true`): any node may stage one, but only one
 * node at a time, since one kernel owns a mounted filesystem (no read-only extra nodes either: a
 * read-only mount of a filesystem another kernel writes reads garbage). Its only fence is the
 * attachment itself.
 */
export const MULTI_NODE_ONE_AT_A_TIME: AccessModes = Object.freeze({ multiNode: true, multiWriter: false, readOnlyExtraNodes: false });

export interface AccessHolder {
  readonly node: string;
  readonly mode: AccessMode;
  /** Since when, for the sentence (RFC 3339 or a clock time); optional. */
  readonly since?: string;
}

export type AccessDecision = { readonly allowed: true } | { readonly allowed: false; readonly reason: string };

/**
 * May `want.node` take volume `volume` in `want.mode`, given the backend's declared access modes and the
 * nodes that hold it now? Pure: the service calls it with the holders it read (ledger, attachments) and
 * refuses with the reason, a sentence naming the volume, the holding node and what to do. Holders on
 * the asking node itself are ignored: containers on one node share its one staging (a node going from
 * read-only to read-write is checked against the other nodes as a writer).
 */
export function checkAccess(volume: string, backend: { readonly name: string; readonly access: AccessModes }, want: { readonly node: string; readonly mode: AccessMode }, holders: readonly AccessHolder[]): AccessDecision {
  const a = backend.access;
  const others = holders.filter((h) => h.node !== want.node);
  if (others.length === 0) return { allowed: true };
  const since = (h: AccessHolder) => (h.since ? ` since ${h.since}` : '');
  const how = (h: AccessHolder) => (h.mode === 'rw' ? 'read-write' : 'read-only');
  const list = (hs: readonly AccessHolder[]) => {
    const uniq = new Map<string, AccessHolder>();
    for (const h of hs) if (!uniq.has(h.node) || (h.mode === 'rw' && uniq.get(h.node)!.mode === 'ro')) uniq.set(h.node, h);
    return [...uniq.values()].map((h) => `${how(h)} to node ${h.node}${since(h)}`).join(', ');
  };
  if (!a.multiNode) {
    return { allowed: false, reason: `volume ${volume} is attached ${list(others)}; backend ${backend.name} serves a volume on one node at a time. Stop its containers there first, or wait for that node's lease to expire` };
  }
  if (a.multiWriter) return { allowed: true };
  const writers = others.filter((h) => h.mode === 'rw');
  if (want.mode === 'rw' && writers.length > 0) {
    return { allowed: false, reason: `volume ${volume} is attached ${list(writers)}; backend ${backend.name} allows one read-write node at a time${a.readOnlyExtraNodes ? ' (other nodes may mount it read-only)' : ''}. Stop its containers there first, or wait for that node's lease to expire` };
  }
  if (a.readOnlyExtraNodes) return { allowed: true };
  // MULTI_NODE_READER_ONLY: several nodes only while none of them writes.
  if (want.mode === 'rw' || writers.length > 0) {
    return { allowed: false, reason: `volume ${volume} is attached ${list(want.mode === 'rw' ? others : writers)}; backend ${backend.name} allows several nodes only when all of them mount it read-only. Stop its containers there first, or mount it read-only` };
  }
  return { allowed: true };
}

/**
 * What a node needs to stage a volume, from the controller side's attach (an RBD lock taken for the node,
 * a Cinder attachment and its connection data). Never a secret: it is stored and logged.
 */
export interface AttachInfo {
  readonly attachmentId?: string;
  readonly connection?: Readonly<Record<string, string>>;
}

/** How stage is asked: with the attach's answer when the backend is an Attacher, read-only when the node holds the volume read-only. */
export interface StageOptions {
  readonly attachment?: AttachInfo;
  /** Stage without writing to the storage (a block filesystem is mounted ro without journal replay, never formatted). */
  readonly readOnly?: boolean;
}

/**
 * A storage system. It never sees Docker or CSI types. Its lifecycle, as CSI splits it:
 * - provision / deprovision: create or delete the storage of a volume, once, cluster-wide.
 * - attach / detach (optional, the Attacher interface): make the volume usable by one node, controller side.
 * - stage / unstage: on this node, make the volume's filesystem appear at the staging path the caller
 *   names (attach the device locally, format only if blank and Ballast made it, mount; or mount the share).
 * - publish / unpublish are not per backend: a bind mount of the staging path at a target path
 *   (src/host/bind.ts). The Docker path needs none: it stages at the record's mountpoint (src/backends/node-ops.ts).
 *
 * Paths: node work happens at the path the caller passes, never one recomputed from the config;
 * a backend's own paths (an image, a FUSE directory) come from the record's details, which `place` filled
 * at create. `access` says which nodes may hold a volume at once (see AccessModes); the service enforces it.
 *
 * Idempotency is part of the contract:
 * - provision: safe to call again after a crash; returns details that are merged over the placement.
 * - deprovision: delete what provision made; absent is success. It also unstages the volume at its
 *   recorded mountpoint on this node (the Docker path's staging).
 * - stage: already staged at that path is success. "Is it staged" is read from the real mount table.
 * - unstage: not staged is success; bounded, so a hung client cannot hold an Unmount forever.
 */
export interface Backend {
  /** Instance name from the config (what `-o backend=` names). */
  readonly name: string;
  /** Backend type: local, block, ... */
  readonly type: string;
  /** Which nodes may hold a volume at once. */
  readonly access: AccessModes;
  readonly optionDocs: readonly OptionDoc[];
  /** Validates the per-volume options (everything but `backend`) into a normalized spec; rejects unknown keys. */
  parseOptions(opts: Readonly<Record<string, string>>): Record<string, unknown>;
  /**
   * Checks that a volume with this spec can be created now (free space, thin overcommit...), before
   * anything is written. `others` are the backend's existing records (their recorded paths and specs).
   */
  checkCreate?(spec: Readonly<Record<string, unknown>>, others: readonly VolumeRecord[]): Promise<void>;
  /** Paths a volume created now would get (see Placement); pure, no I/O. */
  place(name: string): Placement;
  provision(vol: VolumeRecord, pc?: ProvisionContext): Promise<Record<string, unknown>>;
  deprovision(vol: VolumeRecord): Promise<void>;
  /** Makes the volume's filesystem appear at `stagingPath` on this node (absolute, normalized). */
  stage(vol: VolumeRecord, stagingPath: string, opts?: StageOptions): Promise<void>;
  /** Undoes stage at `stagingPath` on this node. */
  unstage(vol: VolumeRecord, stagingPath: string): Promise<void>;
  /**
   * Is the volume's filesystem staged at `stagingPath`, judged from the snapshot? `always` for backends
   * with nothing to mount (a directory is always reachable).
   */
  probe(vol: VolumeRecord, stagingPath: string, snap: HostSnapshot): 'mounted' | 'unmounted' | 'always';
  /** Backend facts for `docker volume inspect` Status; never secrets. */
  status(vol: VolumeRecord): Record<string, unknown>;
}

/**
 * Optional ability, controller side: make a volume usable by one node before any node work (an RBD
 * advisory lock for the node; a Cinder API attach), and undo it. Both idempotent: attaching what is
 * attached to that node returns the same AttachInfo, detaching what is not attached succeeds. A volume
 * held by another node in a way its access modes forbid is refused with a BusyError naming that node.
 */
export interface Attacher {
  attach(vol: VolumeRecord, node: string, mode?: AccessMode): Promise<AttachInfo>;
  detach(vol: VolumeRecord, node: string): Promise<void>;
}

export function canAttach(b: Backend): b is Backend & Attacher {
  return typeof (b as Partial<Attacher>).attach === 'function' && typeof (b as Partial<Attacher>).detach === 'function';
}

/**
 * Optional ability, cluster mode: cut a node off a volume at the storage itself, so that none of its
 * writes reach the storage any more, even if the node is alive and comes back (an OSD blocklist entry
 * for its RBD client). Only a backend that can do this is ever taken over automatically from a node
 * whose lease expired; for the others an operator's `ballast node fence` is the only way.
 * - claim: after a read-write stage on this node, what identifies this node's client(s) of the volume at
 *   the storage (e.g. `{ clients: "10.99.0.11:0/1390865666" }`); the service stores it in the node's
 *   attachment before Mount answers, so a later fence from another node knows whom to cut off.
 * - fence: from another node, cut off `holder` (a node whose lease expired, or that an operator
 *   fenced): its claimed clients, and every client of the volume at the storage that does not belong to
 *   a node in `keep` (what a crash left unclaimed). Resolves only once the storage confirmed it; then
 *   nothing the old holder writes reaches the volume. Idempotent. Returns a sentence for the log.
 */
export interface Fencer {
  claim(vol: VolumeRecord, stagingPath: string): Promise<Readonly<Record<string, string>> | undefined>;
  fence(vol: VolumeRecord, holder: { readonly node: string; readonly claim?: Readonly<Record<string, string>> }, keep: readonly { readonly node: string; readonly claim?: Readonly<Record<string, string>> }[]): Promise<string>;
  /**
   * On the node that was fenced (it sees a newer epoch): tear the stale staging down without writing to
   * the storage (the old client is cut off anyway): a lazy detach of the filesystem and the end of the
   * client, never a flush. Not staged is success.
   */
  unstageFenced(vol: VolumeRecord, stagingPath: string): Promise<void>;
}

export function canFence(b: Backend): b is Backend & Fencer {
  return typeof (b as Partial<Fencer>).fence === 'function' && typeof (b as Partial<Fencer>).claim === 'function';
}

/**
 * Optional ability: grow a volume (never shrink). `stagingPath` is where it is staged on this node now
 * (its filesystem is then grown online), or undefined when it is staged nowhere here (the backend grows
 * the filesystem offline, or mounts it for the grow and unmounts it again). `others` are the backend's
 * other records (for space accounting). Returns the spec fields that change (the new size) and a
 * sentence for the user saying what was done.
 */
export interface Expander {
  expand(vol: VolumeRecord, size: number, stagingPath: string | undefined, others: readonly VolumeRecord[]): Promise<{ readonly spec: Readonly<Record<string, unknown>>; readonly details?: Readonly<Record<string, unknown>>; readonly note: string }>;
}

export function canExpand(b: Backend): b is Backend & Expander {
  return typeof (b as Partial<Expander>).expand === 'function';
}

/**
 * How provision is called: `resumed` when finishing a create that a crash or a failure interrupted;
 * `source` when the volume is a clone: provision makes its storage from that snapshot (of the same
 * backend instance; the service checked it is `ready`) instead of blank storage, and never formats it.
 */
export interface ProvisionContext { readonly resumed: boolean; readonly source?: SnapshotRecord }

/**
 * Optional ability: point-in-time snapshots of a volume, and clones made from them (provision with
 * `ProvisionContext.source`). The service records the snapshot (`creating`) before createSnapshot and
 * freezes the volume's filesystem around it where `freezeForSnapshot` says so and the volume is staged
 * on this node, so what a snapshot holds is a clean filesystem; recovery rolls a `creating` one back
 * (thaw, deleteSnapshot). Both calls are idempotent: createSnapshot redoes a half-made snapshot,
 * deleteSnapshot of what is gone succeeds.
 */
export interface Snapshotter {
  /** Freeze the staged filesystem around createSnapshot (a filesystem on an image the storage copies); false where the storage snapshots atomically on its own (CephFS) or nothing can be frozen (a host directory). */
  readonly freezeForSnapshot: boolean;
  /** How snapshots of this volume are taken, for Status and the CLI: "reflink", "copy", "rbd snapshot", ... */
  snapshotMethod(vol: VolumeRecord): string;
  /** Where a snapshot of `vol` named `name` would keep its data (pure, no I/O): the record's first details. */
  placeSnapshot(name: string, vol: VolumeRecord): Readonly<Record<string, string>>;
  /** Takes it; returns details merged over the placement (the method used, the bytes copied). */
  createSnapshot(vol: VolumeRecord, snap: SnapshotRecord): Promise<Record<string, unknown>>;
  /**
   * Deletes it; gone is success. `clones` are the volumes made from it that still exist: a backend whose
   * clones depend on their snapshot (RBD) makes them independent first (flatten) and says so in the
   * returned sentence; others copy at clone time and ignore them.
   */
  deleteSnapshot(snap: SnapshotRecord, clones: readonly VolumeRecord[]): Promise<string | undefined>;
  /** The spec a clone gets from its source's spec, less what names the source's own storage (an adopted `existing`). */
  cloneSpec(sourceSpec: Readonly<Record<string, unknown>>): Record<string, unknown>;
}

export function canSnapshot(b: Backend): b is Backend & Snapshotter {
  return typeof (b as Partial<Snapshotter>).createSnapshot === 'function';
}

/**
 * Optional ability, for backups: make a ready snapshot's filesystem readable at `dir` (read-only, never
 * replaying a journal into the snapshot), and undo it. Idempotent both ways.
 */
export interface SnapshotReader {
  mountSnapshot(snap: SnapshotRecord, dir: string): Promise<void>;
  unmountSnapshot(snap: SnapshotRecord, dir: string): Promise<void>;
}

export function canReadSnapshot(b: Backend): b is Backend & SnapshotReader {
  return typeof (b as Partial<SnapshotReader>).mountSnapshot === 'function';
}

/** Optional ability: tell a dead staging ("Transport endpoint is not connected") from a live one. */
export interface HealthChecker {
  checkHealth(vol: VolumeRecord, stagingPath: string): Promise<{ healthy: boolean; reason?: string }>;
}

export function canCheckHealth(b: Backend): b is Backend & HealthChecker {
  return typeof (b as Partial<HealthChecker>).checkHealth === 'function';
}

/**
 * What the space watcher (src/reconciler/space.ts) offers a backend with thin volumes: it says whether a
 * new mount must wait for space, and learns which thin volumes are mounted.
 */
export interface SpaceGate {
  /** A sentence when a new mount of this thin volume must be refused now (its host filesystem is below the critical level). */
  refuseMount(vol: VolumeRecord, image: string): string | undefined;
  /** Is the volume frozen by the watcher (writes wait for space)? */
  isFrozen(volume: string): boolean;
  /** A sentence for Status when the volume's host filesystem is below the warning or critical level. */
  note(volume: string): string | undefined;
  published(vol: VolumeRecord): void;
  unpublished(vol: VolumeRecord): void;
}

/**
 * Optional ability: thin-provisioned volumes (sparse images on a host filesystem) whose writes the space
 * watcher can stop (freeze) and resume (thaw) when that filesystem runs low.
 */
export interface ThinSpace {
  /** The volume's sparse image and its promised size; undefined for a thick volume. */
  thinImage(vol: VolumeRecord): { readonly image: string; readonly size: number } | undefined;
  /** Stops writes to the mounted volume (writers wait); already frozen is success. */
  freeze(vol: VolumeRecord): Promise<void>;
  /** Lets writes resume; not frozen is success. */
  thaw(vol: VolumeRecord): Promise<void>;
  setSpaceGate(gate: SpaceGate): void;
}

export function hasThinSpace(b: Backend): b is Backend & ThinSpace {
  return typeof (b as Partial<ThinSpace>).thinImage === 'function' && typeof (b as Partial<ThinSpace>).setSpaceGate === 'function';
}

export interface BackendFactory {
  readonly type: string;
  /** Keys accepted in the instance's config section (besides `type`). */
  readonly configKeys: readonly string[];
  create(instance: string, config: Readonly<Record<string, unknown>>, ctx: BackendContext): Backend;
}
