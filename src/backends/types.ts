import type { Logger } from 'pino';
import type { VolumeRecord } from '../core/types.js';
import type { Exec } from '../host/exec.js';
import type { MountEntry, MountTable } from '../host/mountinfo.js';
import type { LoopDevice } from '../host/blockdev.js';
import { recordedPath } from '../host/paths.js';

/** What every backend gets from the composition root (constructor injection; fakes in unit tests). */
export interface BackendContext {
  /** Ballast's state directory; a backend keeps its files under `<root>/backends/<instance>` unless configured. */
  readonly root: string;
  readonly exec: Exec;
  readonly mounts: MountTable;
  readonly log: Logger;
  /** This node's name (locks and messages name it). */
  readonly node?: string;
  /** Fault injection for crash tests (no-op in production). */
  readonly fault?: (point: string) => void;
}

/** The host as one reconciler pass sees it: read once per pass, not once per volume. */
export interface HostSnapshot {
  readonly mounts: readonly MountEntry[];
  readonly loops: readonly LoopDevice[];
}

/** Probe of a backend whose volume is mounted at its mountpoint: is something mounted there? */
export function probeMountpoint(snap: HostSnapshot, mountpoint: string): 'mounted' | 'unmounted' {
  return snap.mounts.some((m) => m.mountpoint === mountpoint) ? 'mounted' : 'unmounted';
}

/** The volume's mountpoint, from its record (see Placement). */
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
  readonly kind: 'mount' | 'loop' | 'image' | 'directory';
  readonly path: string;
  readonly detail: string;
  /** Safe to clean on `ballast repair` (a stray mount or loop device); data (images, dirs) never is. */
  readonly cleanable: boolean;
  /**
   * Never in use by anything (a temporary mount a create or remove left behind): the reconciler cleans it
   * on every pass, not only on `ballast repair`, and reports the cleaning among the pass's repairs.
   */
  readonly autoClean?: boolean;
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

/**
 * A storage system. It never sees Docker or CSI types. Paths come from the record (`vol.mountpoint`,
 * the placement keys of `vol.details`), which `place` filled at create. Idempotency is part of the contract:
 * - provision: create the storage for a new volume, once, cluster-wide; safe to call again after a crash.
 *   It returns details that are merged over the placement.
 * - deprovision: delete what provision made; absent is success.
 * - publish: make `vol.mountpoint` hold the data on this node (attach, format only if blank, mount);
 *   already published is success. Read "is it mounted" from the real mount table.
 * - unpublish: undo publish on this node; not published is success.
 */
export interface Backend {
  /** Instance name from the config (what `-o backend=` names). */
  readonly name: string;
  /** Backend type: local, block, ... */
  readonly type: string;
  /** May several containers and nodes write at once? */
  readonly shareable: boolean;
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
  publish(vol: VolumeRecord): Promise<void>;
  unpublish(vol: VolumeRecord): Promise<void>;
  /**
   * Is the volume's data mounted at its mountpoint, judged from the snapshot? `always` for backends
   * with nothing to mount (a directory is always reachable).
   */
  probe(vol: VolumeRecord, snap: HostSnapshot): 'mounted' | 'unmounted' | 'always';
  /** Backend facts for `docker volume inspect` Status; never secrets. */
  status(vol: VolumeRecord): Record<string, unknown>;
}

/** How provision is called: `resumed` when finishing a create that a crash or a failure interrupted. */
export interface ProvisionContext { readonly resumed: boolean }

/** Optional ability: tell a dead mount ("Transport endpoint is not connected") from a live one. */
export interface HealthChecker {
  checkHealth(vol: VolumeRecord): Promise<{ healthy: boolean; reason?: string }>;
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
