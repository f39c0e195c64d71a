import type { Logger } from 'pino';
import type { MetadataStore } from '../store/types.js';
import type { BackendRegistry } from '../backends/registry.js';
import { stageAtMountpoint, unstageAtMountpoint } from '../backends/node-ops.js';
import { rmdir } from 'node:fs/promises';
import { within } from '../host/paths.js';
import type { Attachment, AttachmentSet, SnapshotInfo, SnapshotRecord, VolumeInfo, VolumeRecord, VolumeSummary } from './types.js';
import { AbortedError, AlreadyExistsError, BallastError, BusyError, ConflictError, FailedPreconditionError, InvalidArgumentError, NotFoundError, UnavailableError, asBallastError } from './errors.js';
import { canExpand, canFence, canReadSnapshot, canSnapshot, checkAccess, mountpointOf, type AccessMode, type Backend, type Fencer, type Snapshotter } from '../backends/types.js';
import type { Exec } from '../host/exec.js';
import type { MountTable } from '../host/mountinfo.js';
import { freezeFs, freezeFsOwned, thawFs } from '../host/blockdev.js';
import { assertPlainString, formatSize, parseSize, validateAnySnapshotName, validateMountId, validateSnapshotName, validateVolumeName } from './validate.js';
import { KeyedLock } from './keyed-lock.js';

export interface ServiceDeps {
  readonly store: MetadataStore;
  readonly backends: BackendRegistry;
  readonly log: Logger;
  readonly node: string;
  readonly defaultBackend: string;
  readonly now?: () => Date;
  /** Fault injection for crash tests: called at each named step; kills the process at the chosen one. */
  readonly fault?: (point: string) => void;
  /**
   * Cluster mode: the store is shared by several nodes (etcd). Then a node attaches a volume before it
   * stages it (not attached / attached here / attached elsewhere, under the backend's access modes),
   * and a node-local volume is mounted only on its home node. On one host (SQLite) there is no other
   * node to keep out, and Mount stays free of those writes.
   */
  readonly cluster?: boolean;
  /** Cluster mode: the node registry, to tell a dead holder (lease gone) from a live one. */
  readonly liveness?: { isAlive(node: string): Promise<boolean>; leaseLeft(node: string): Promise<number | undefined> };
  /**
   * Cluster timing (config clusterTiming): a takeover waits `takeoverGraceMs` after a holder's lease is
   * seen gone; a Mount waits at most `takeoverWaitMs` for a holder that is releasing, suspect or dead;
   * a holder whose lease etcd counts below `suspectBelowSec` missed renewals (suspect).
   */
  readonly timing?: { readonly takeoverGraceMs: number; readonly takeoverWaitMs: number; readonly suspectBelowSec: number };
  /** For the self-fence (fsfreeze) and to see what is mounted here. */
  readonly exec?: Exec;
  readonly mounts?: MountTable;
}

/**
 * Restores backups into new volumes (`-o from-backup=ID`): the backups service (src/backups/service.ts),
 * set once the daemon built it.
 */
export interface Restorer {
  /** The backup `id` of target `target` (the default one when undefined): its full id, its target, the size of the volume it was taken of. */
  describe(id: string, target: string | undefined): Promise<{ readonly id: string; readonly target: string; readonly size?: number; readonly volume?: string }>;
  /** Restores it into `dir`, the new volume's staged filesystem (empty but for lost+found). */
  restoreInto(id: string, target: string, dir: string, volume: string): Promise<{ readonly files: number; readonly bytes: number }>;
}

/** How long one freeze of the self-fence is waited for: writers block as soon as it starts; the flush may hang on a cut-off server. */
const FREEZE_WAIT_MS = 1_000;
const POLL_MS = 250;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** How often an attach that lost a race to another node re-reads and decides again. */
const ATTACH_RETRIES = 5;

const MAX_OPTIONS = 64;

/**
 * The core. Frontends call it with plain values and get plain values or a BallastError back.
 * Contract (idempotency, house style 3):
 * - create: same name + same spec returns the existing volume; a different spec is a Conflict.
 * - remove: absent succeeds; a volume with references is Busy, naming them.
 * - mount: the ledger gains (volume, id) after the real mount succeeded; the real mount happens on
 *   the first reference only.
 * - unmount: the ledger always loses (volume, id), even if the real unmount fails; the real unmount
 *   happens on the last reference. An unknown id succeeds.
 * One operation per volume at a time; different volumes run in parallel.
 */
export class VolumeService {
  private readonly lock = new KeyedLock();
  /** Cluster mode: the epoch of each volume's attachments when this node attached it (a newer one means it lost it). */
  private readonly heldEpoch = new Map<string, number>();
  /** Volumes the self-fence froze (src/cluster/self-fence.ts), until etcd answers again. */
  private readonly selfFrozen = new Map<string, VolumeRecord>();
  private readonly now: () => Date;
  private readonly fault: (point: string) => void;
  private restorer?: Restorer;

  /** The daemon hands the backups service in once it is built (it needs this service itself). */
  setRestorer(r: Restorer): void { this.restorer = r; }

  constructor(private readonly d: ServiceDeps) {
    this.now = d.now ?? (() => new Date());
    this.fault = d.fault ?? (() => undefined);
  }

  /**
   * What Docker's Capabilities answers: "global" in cluster mode (a volume is the same on every node,
   * so Swarm and dockerd treat it as cluster-wide), "local" on one host.
   */
  get scope(): 'local' | 'global' { return this.d.cluster ? 'global' : 'local'; }

  /** Runs fn with the volume's lock held (the reconciler uses this so it never races an operation). */
  withLock<T>(name: string, fn: () => Promise<T>): Promise<T> { return this.lock.run(name, fn); }

  async create(name: unknown, options: unknown): Promise<VolumeInfo> {
    const vname = validateVolumeName(name);
    const opts = normalizeOptions(options);
    return this.op('create', vname, opts.backend, () => this.lock.run(vname, async () => {
      const { backend: asked, ...rest } = opts;
      // A clone is made by its source's backend, with its source's spec.
      const clone = await this.cloneRequest(vname, asked, rest);
      const backendName = clone?.backend ?? asked ?? this.d.defaultBackend;
      const backend = this.d.backends.get(backendName);
      const spec = clone?.spec ?? await this.restoreRequest(vname, backend, rest) ?? backend.parseOptions(rest);
      const existing = await this.d.store.getVolume(vname);
      if (existing) {
        if (existing.backend !== backendName || stableJson(existing.spec) !== stableJson(spec)) {
          throw new ConflictError(`volume ${vname} already exists with backend ${existing.backend} and options ${describeSpec(existing.spec)}; remove it first or create it with the same options`);
        }
        if (existing.state === 'ready') return this.info(existing);
        // A create that crashed half-way: finish it (provision is idempotent).
        return this.info(await this.finishCreate(existing, true));
      }
      // Paths are chosen now, from the current config, and from here on read from the record only.
      const placement = backend.place(vname);
      // The check sees the backend's other records (thin space is accounted over them), so check and
      // insert run one create of the backend at a time: two creates racing past the check cannot both
      // count on the same free space. (A "\0" never occurs in a volume name, so the keys cannot clash.)
      const rec = await this.lock.run(`\0backend ${backendName}`, async () => {
        if (backend.checkCreate) await backend.checkCreate(spec, (await this.d.store.listVolumes(backendName)).filter((r) => r.state !== 'damaged'));
        return this.d.store.insertVolume({
          name: vname, backend: backendName, spec, mountpoint: placement.mountpoint,
          createdAt: this.now().toISOString(), state: 'creating', details: { ...placement.details },
          // Cluster mode: a backend that serves a volume on one node only keeps its data on the node that made it.
          ...(this.d.cluster && !backend.access.multiNode ? { home: this.d.node } : {}),
        });
      });
      if (!rec) throw new ConflictError(`volume ${vname} was created concurrently by another node; run the create again to see it`, { retryable: true });
      this.fault('create.recorded');
      try {
        return this.info(await this.finishCreate(rec, false));
      } catch (e) {
        // Roll back the record (as it now is: the compare-and-swap names its revision). The backend
        // cleans up only what its own failed provision made: storage that was there before (an adopted
        // image) is never deleted here.
        const cur = await this.d.store.getVolume(vname);
        if (cur) await this.d.store.deleteVolume(vname, cur.revision);
        const temp = await this.d.store.getSnapshot(cloneSnapshotName(vname));
        if (temp) await this.lock.run(snapKey(temp.name), () => this.deleteSnapshotNow(temp)).catch(() => undefined);
        throw e;
      }
    }));
  }

  private async finishCreate(rec: VolumeRecord, resumed: boolean): Promise<VolumeRecord> {
    const backend = this.d.backends.get(rec.backend);
    const source = await this.cloneSource(rec, backend);
    const details = await backend.provision(rec, { resumed, ...(source ? { source } : {}) });
    this.fault('create.provisioned');
    const provisioned = { ...rec, details: { ...rec.details, ...details } };
    if (typeof rec.spec.fromBackup === 'string' && rec.details.restored !== true) await this.restoreBackupInto(provisioned, backend, resumed);
    const ready = await this.d.store.updateVolume({ ...provisioned, details: { ...provisioned.details, ...(typeof rec.spec.fromBackup === 'string' ? { restored: true } : {}) }, state: 'ready' });
    // The snapshot a clone of a volume took for itself goes once the clone stands (a backend whose
    // clones depend on their snapshot makes this one independent first).
    if (source?.details.temporary) {
      await this.lock.run(snapKey(source.name), async () => {
        const cur = await this.d.store.getSnapshot(source.name);
        if (cur) await this.deleteSnapshotNow(cur);
      });
    }
    return ready;
  }

  /**
   * `-o from-backup=ID [-o backup-target=NAME]`: the new volume's spec, from the options given (any
   * backend: a backup holds files, not blocks) with the backed-up volume's size where none is given and
   * the backend takes one. Undefined when no backup is named.
   */
  private async restoreRequest(vname: string, backend: Backend, rest: Record<string, string>): Promise<Record<string, unknown> | undefined> {
    const id = rest['from-backup'];
    const target = rest['backup-target'];
    if (id === undefined) {
      if (target !== undefined) throw new InvalidArgumentError('backup-target names where the backup of from-backup=ID is; give from-backup too');
      return undefined;
    }
    if (!this.restorer) throw new FailedPreconditionError(`volume ${vname} cannot be restored from a backup: no backup target is configured (backupTargets in the config file)`);
    if (!/^[0-9a-f]{8,64}$/.test(id)) throw new InvalidArgumentError(`from-backup=${JSON.stringify(id.slice(0, 80))} is not a backup id (8 to 64 hex digits, as ballast backup ls shows)`);
    const b = await this.restorer.describe(id, target);
    const { 'from-backup': _id, 'backup-target': _t, ...opts } = rest;
    if (opts.size === undefined && b.size && backend.optionDocs.some((o) => o.name === 'size')) opts.size = String(b.size);
    return { ...backend.parseOptions(opts), fromBackup: `${b.target}:${b.id}` };
  }

  /**
   * Fills a new volume with a backup: staged at its mountpoint (attached here first in cluster mode),
   * restored, unstaged. A restore a crash interrupted is started again on an emptied filesystem (the
   * volume is still `creating`: nothing but the restore ever wrote to it).
   */
  private async restoreBackupInto(rec: VolumeRecord, backend: Backend, resumed: boolean): Promise<void> {
    if (!this.restorer) throw new FailedPreconditionError(`volume ${rec.name} is to be restored from backup ${String(rec.spec.fromBackup)}, but no backup target is configured; configure backupTargets, or remove the volume`);
    const [target, id] = String(rec.spec.fromBackup).split(':');
    if (this.d.cluster) await this.attachHere(rec, backend, 'rw');
    try {
      await stageAtMountpoint(backend, rec, this.d.node, this.d.mounts);
      try {
        const mp = mountpointOf(rec);
        if (resumed && this.d.exec) {
          await this.d.exec(['find', mp, '-mindepth', '1', '-maxdepth', '1', '!', '-name', 'lost+found', '-exec', 'rm', '-rf', '--', '{}', '+'], { timeoutMs: 10 * 60_000 });
        }
        const r = await this.restorer.restoreInto(id, target, mp, rec.name);
        this.fault('restore.restored');
        this.d.log.info({ op: 'restore', volume: rec.name, backup: id, target, files: r.files, bytes: r.bytes, outcome: 'ok' }, `volume ${rec.name} restored from backup ${id} of target ${target}`);
      } finally {
        await unstageAtMountpoint(backend, rec, this.d.node);
      }
    } finally {
      if (this.d.cluster) await this.releaseHere(rec.name).catch(() => undefined);
    }
  }

  /**
   * For a backup: takes a temporary snapshot of the volume (consistent, as any snapshot), makes it
   * readable at a directory under `readRoot`, runs `fn` on it with the volume itself free again (its
   * containers go on, other operations on it too), then unmounts and removes the snapshot. A crash
   * in between leaves the snapshot recorded with where it was read, and recovery removes both.
   */
  async readSnapshotForBackup<T>(volume: unknown, readRoot: string, fn: (dir: string, snap: SnapshotRecord, vol: VolumeRecord, method: string) => Promise<T>): Promise<T> {
    const vname = validateVolumeName(volume);
    const { snap, vol, backend } = await this.lock.run(vname, async () => {
      const rec = await this.ready(vname);
      const b = this.d.backends.get(rec.backend);
      if (!canSnapshot(b) || !canReadSnapshot(b)) throw new FailedPreconditionError(`volume ${vname} cannot be backed up: backend ${rec.backend} (type ${b.type}) cannot take and read snapshots, which a consistent backup is made from; nothing was changed`);
      const name = `_backup.${vname}.${this.now().getTime()}`.slice(0, 255);
      const taken = await this.takeSnapshot(rec, b, name, { temporary: true, purpose: 'backup', readAt: within(readRoot, name) });
      return { snap: taken, vol: rec, backend: b };
    });
    return this.lock.run(snapKey(snap.name), async () => {
      const dir = String(snap.details.readAt);
      try {
        await backend.mountSnapshot(snap, dir);
        this.fault('backup.snapshot-mounted');
        return await fn(dir, snap, vol, backend.snapshotMethod(vol));
      } finally {
        await backend.unmountSnapshot(snap, dir).catch((e: Error) => this.d.log.error({ op: 'backup', volume: vname, err: e.message }, `the snapshot ${snap.name} read for a backup could not be unmounted from ${dir}; the reconciler's recovery removes it at the next start`));
        await rmdir(dir).catch(() => undefined);
        await this.deleteSnapshotNow(snap).catch((e: Error) => this.d.log.error({ op: 'backup', volume: vname, err: e.message }, `the temporary snapshot ${snap.name} of a backup could not be removed; ballast snapshot rm ${snap.name} removes it`));
      }
    });
  }

  /**
   * `-o from-snapshot=NAME` or `-o from-volume=NAME`: the backend and spec of the clone (its source's;
   * only `size`, equal to the source's, may be given besides). Undefined for a plain create.
   */
  private async cloneRequest(vname: string, asked: string | undefined, rest: Record<string, string>): Promise<{ backend: string; spec: Record<string, unknown> } | undefined> {
    const fromSnap = rest['from-snapshot'];
    const fromVol = rest['from-volume'];
    if (fromSnap === undefined && fromVol === undefined) return undefined;
    if (fromSnap !== undefined && fromVol !== undefined) throw new InvalidArgumentError('give one of from-snapshot and from-volume, not both');
    if (rest['from-backup'] !== undefined) throw new InvalidArgumentError(`give one of ${fromSnap !== undefined ? 'from-snapshot' : 'from-volume'} and from-backup, not both`);
    let source: { backend: string; spec: Readonly<Record<string, unknown>>; home?: string; what: string };
    if (fromSnap !== undefined) {
      const sname = validateSnapshotName(fromSnap);
      const snap = await this.d.store.getSnapshot(sname);
      if (!snap) throw new NotFoundError(`snapshot ${sname} does not exist, so volume ${vname} cannot be cloned from it; ballast snapshot ls lists the snapshots`);
      if (snap.state !== 'ready') throw new BusyError(`snapshot ${sname} is ${snap.state === 'creating' ? 'being taken' : 'being removed'}; retry when that has finished`);
      source = { backend: snap.backend, spec: snap.spec, home: snap.home, what: `snapshot ${sname}` };
    } else {
      const src = validateVolumeName(fromVol);
      if (src === vname) throw new InvalidArgumentError(`volume ${vname} cannot be a clone of itself`);
      const rec = await this.d.store.getVolume(src);
      if (!rec) throw new NotFoundError(`volume ${src} does not exist, so volume ${vname} cannot be cloned from it`);
      if (rec.state !== 'ready') throw new BusyError(`volume ${src} is ${rec.state}; clone it once it is ready`);
      source = { backend: rec.backend, spec: rec.spec, home: rec.home, what: `volume ${src}` };
    }
    if (asked !== undefined && asked !== source.backend) {
      throw new InvalidArgumentError(`a clone is made by the backend of its source: ${source.what} is on backend ${source.backend}, not ${asked}. To move data to another backend, back it up and restore the backup there (ballast backup create, -o from-backup=ID)`);
    }
    if (!this.d.backends.has(source.backend)) throw new FailedPreconditionError(`${source.what} is on backend ${source.backend}, which is not configured on this node`);
    const backend = this.d.backends.get(source.backend);
    if (!canSnapshot(backend)) throw new FailedPreconditionError(`volume ${vname} cannot be cloned: backend ${source.backend} (type ${backend.type}) does not support snapshots or clones`);
    if (this.d.cluster && source.home && source.home !== this.d.node) throw new FailedPreconditionError(`${source.what} lives on node ${source.home} (its data is on that node's own disk); create the clone on node ${source.home}`);
    const extra = Object.keys(rest).filter((k) => k !== 'from-snapshot' && k !== 'from-volume');
    for (const k of extra) {
      if (k === 'size' && typeof source.spec.size === 'number' && parseSize(rest.size) === source.spec.size) continue;
      if (k === 'size') throw new InvalidArgumentError(`a clone has the size of its source (${typeof source.spec.size === 'number' ? formatSize(source.spec.size) : 'unsized'}); create it without -o size, then grow it with ballast volume expand ${vname} SIZE`);
      throw new InvalidArgumentError(`a clone has the options of its source (${source.what}: ${describeSpec(source.spec)}); option ${k} cannot be given with ${fromSnap !== undefined ? 'from-snapshot' : 'from-volume'}`);
    }
    const spec = backend.cloneSpec(source.spec);
    return { backend: source.backend, spec: fromSnap !== undefined ? { ...spec, fromSnapshot: fromSnap } : { ...spec, fromVolume: fromVol } };
  }

  /**
   * The snapshot a clone is made from: the one it names, or (a clone of a volume) the one it takes of
   * that volume for itself, `_clone.<name>`, found again when a crash interrupted the create. The
   * caller holds the clone's lock; the source volume's lock is taken for the snapshot.
   */
  private async cloneSource(rec: VolumeRecord, backend: Backend): Promise<SnapshotRecord | undefined> {
    const fromSnap = rec.spec.fromSnapshot;
    const fromVol = rec.spec.fromVolume;
    if (typeof fromSnap === 'string') {
      const snap = await this.d.store.getSnapshot(fromSnap);
      if (!snap || snap.state !== 'ready') throw new FailedPreconditionError(`snapshot ${fromSnap}, which volume ${rec.name} is cloned from, ${snap ? `is ${snap.state}` : 'is gone'}; remove volume ${rec.name} and create it again from another snapshot`);
      return snap;
    }
    if (typeof fromVol !== 'string') return undefined;
    if (!canSnapshot(backend)) throw new FailedPreconditionError(`backend ${rec.backend} does not support clones`);
    const temp = cloneSnapshotName(rec.name);
    const have = await this.d.store.getSnapshot(temp);
    if (have?.state === 'ready') return have;
    return this.lock.run(fromVol, async () => {
      const src = await this.ready(fromVol);
      return this.takeSnapshot(src, backend, temp, { temporary: true, purpose: 'clone', for: rec.name });
    });
  }

  /**
   * `ballast repair`: puts back the record of a volume whose storage says it is Ballast's (Cinder
   * metadata) but whose record the store lost. Never overwrites a record: a volume of that name that
   * exists now wins, and the storage stays an orphan to report.
   */
  async adopt(backendName: string, a: { readonly name: string; readonly spec: Readonly<Record<string, unknown>>; readonly mountpoint: string; readonly details: Readonly<Record<string, unknown>>; readonly createdAt: string }): Promise<void> {
    const vname = validateVolumeName(a.name);
    await this.lock.run(vname, async () => {
      if (await this.d.store.getVolume(vname)) throw new ConflictError(`volume ${vname} exists in the store already, with other storage; rename or remove it before adopting this one back`);
      const rec = await this.d.store.insertVolume({ name: vname, backend: backendName, spec: a.spec, mountpoint: a.mountpoint, createdAt: a.createdAt, state: 'ready', details: a.details });
      if (!rec) throw new ConflictError(`volume ${vname} was created concurrently; run ballast repair again`);
      this.d.log.warn({ op: 'adopt', volume: vname, backend: backendName, outcome: 'ok' }, `volume ${vname} adopted back into the store from backend ${backendName}`);
    });
  }

  /**
   * `ballast volume expand NAME SIZE`: grows the volume's storage and its filesystem (online where it is
   * mounted on this node). Shrinking is refused (data past the new end would be lost); the same size is
   * a no-op. The record's size changes only after the backend grew it. Cluster mode: on the node that
   * holds the volume (or, staged nowhere, on any node that may stage it).
   */
  async expand(name: unknown, size: unknown): Promise<VolumeInfo & { note: string }> {
    const vname = validateVolumeName(name);
    const bytes = parseSize(size);
    return this.op('expand', vname, undefined, () => this.lock.run(vname, async () => {
      const rec = await this.ready(vname);
      const backend = this.d.backends.get(rec.backend);
      if (!canExpand(backend)) throw new FailedPreconditionError(`volume ${vname} cannot be expanded: backend ${rec.backend} (type ${backend.type}) does not support expansion; nothing was changed`);
      const cur = typeof rec.spec.size === 'number' ? rec.spec.size : undefined;
      if (cur === undefined) throw new FailedPreconditionError(`volume ${vname} has no recorded size to grow from; nothing was changed`);
      if (bytes < cur) throw new InvalidArgumentError(`volume ${vname} is ${formatSize(cur)}; shrinking it to ${formatSize(bytes)} is refused (data past the new end would be lost). Ballast only grows volumes; nothing was changed`);
      if (bytes === cur) return { ...(await this.info(rec)), note: `volume ${vname} is ${formatSize(cur)} already; nothing to do` };
      if (this.d.cluster) {
        if (rec.home && rec.home !== this.d.node) throw new FailedPreconditionError(`volume ${vname} lives on node ${rec.home}; expand it there`);
        const others = (await this.d.store.getAttachments(vname)).holders.filter((h) => h.node !== this.d.node);
        if (others.length > 0) throw new FailedPreconditionError(`volume ${vname} is mounted on node ${others.map((h) => h.node).join(', ')}; expand it there, where its filesystem can grow online`);
      }
      const staged = (await this.d.mounts?.at(rec.mountpoint)) ? rec.mountpoint : undefined;
      if (!staged && this.d.cluster) await this.attachHere(rec, backend, 'rw', false);
      try {
        const others = (await this.d.store.listVolumes(rec.backend)).filter((r) => r.name !== vname && r.state !== 'damaged');
        const r = await backend.expand(rec, bytes, staged, [...others, rec]);
        this.fault('expand.grown');
        const updated = await this.d.store.updateVolume({ ...rec, spec: { ...rec.spec, ...r.spec }, details: { ...rec.details, ...(r.details ?? {}) } });
        this.d.log.info({ op: 'expand', volume: vname, from: cur, to: bytes, online: !!staged, outcome: 'ok' }, r.note);
        return { ...(await this.info(updated)), note: r.note };
      } finally {
        if (!staged && this.d.cluster && (await this.d.store.mountCount(vname, this.d.node)) === 0) await this.releaseHere(vname).catch(() => undefined);
      }
    }));
  }

  // ---- Snapshots ----

  /**
   * `ballast snapshot create VOLUME [NAME]`: a point-in-time copy, kept by the volume's backend. A
   * filesystem the backend asks to be frozen (a block image) that is mounted on this node is frozen
   * for the copy only, so the snapshot holds a clean filesystem. Taking one that exists, of the same
   * volume, answers it (idempotent); of another volume is AlreadyExists.
   */
  async createSnapshot(volume: unknown, name?: unknown): Promise<SnapshotInfo> {
    const vname = validateVolumeName(volume);
    const sname = name === undefined || name === null || name === '' ? defaultSnapshotName(vname, this.now()) : validateSnapshotName(name);
    return this.op('snapshot', vname, undefined, () => this.lock.run(vname, async () => {
      const rec = await this.ready(vname);
      const backend = this.d.backends.get(rec.backend);
      if (!canSnapshot(backend)) throw new FailedPreconditionError(`volume ${vname} cannot be snapshotted: backend ${rec.backend} (type ${backend.type}) does not support snapshots; nothing was changed`);
      const snap = await this.takeSnapshot(rec, backend, sname, {});
      return (await this.snapshotInfos([snap]))[0];
    }));
  }

  /**
   * Takes snapshot `name` of `rec` (the caller holds the volume's lock): recorded `creating` first, so a
   * crash at any step is rolled back by recovery (thaw, delete); frozen only for the backend's copy and
   * always thawed. Cluster mode: on the node where the volume is mounted, if it is mounted anywhere.
   */
  private async takeSnapshot(rec: VolumeRecord, backend: Backend & Snapshotter, name: string, extra: Record<string, unknown>): Promise<SnapshotRecord> {
    return this.lock.run(snapKey(name), async () => {
      const existing = await this.d.store.getSnapshot(name);
      if (existing) {
        if (existing.volume !== rec.name) throw new AlreadyExistsError(`snapshot ${name} exists already, of volume ${existing.volume}; choose another name`);
        if (existing.state === 'ready') return existing;
        throw new BusyError(`snapshot ${name} is ${existing.state === 'creating' ? 'being taken' : 'being removed'}; retry when that has finished`);
      }
      if (this.d.cluster) {
        if (rec.home && rec.home !== this.d.node) throw new FailedPreconditionError(`volume ${rec.name} lives on node ${rec.home}; take its snapshot there`);
        const others = (await this.d.store.getAttachments(rec.name)).holders.filter((h) => h.node !== this.d.node && h.mode === 'rw');
        if (others.length > 0 && backend.freezeForSnapshot) throw new FailedPreconditionError(`volume ${rec.name} is mounted read-write on node ${others.map((h) => h.node).join(', ')}; take the snapshot there, where its filesystem can be frozen for it`);
      }
      if (this.selfFrozen.has(rec.name)) throw new UnavailableError(`volume ${rec.name} is frozen because node ${this.d.node} lost etcd; take the snapshot once etcd answers again`);
      const inserted = await this.d.store.insertSnapshot({
        name, volume: rec.name, backend: rec.backend, spec: rec.spec, size: typeof rec.spec.size === 'number' ? rec.spec.size : 0,
        createdAt: this.now().toISOString(), state: 'creating', node: this.d.node,
        details: { ...backend.placeSnapshot(name, rec), ...extra }, ...(rec.home ? { home: rec.home } : {}),
      });
      if (!inserted) throw new ConflictError(`snapshot ${name} was created concurrently by another operation; run it again to see it`, { retryable: true });
      this.fault('snapshot.recorded');
      const mp = rec.mountpoint;
      const staged = backend.freezeForSnapshot && this.d.exec && (await this.d.mounts?.at(mp)) ? mp : undefined;
      try {
        let details: Record<string, unknown>;
        let frozenMs: number | undefined;
        if (staged) {
          const t0 = performance.now();
          const owned = await freezeFsOwned(this.d.exec!, staged);
          try {
            this.fault('snapshot.frozen');
            details = await backend.createSnapshot(rec, inserted);
          } finally {
            if (owned) await thawFs(this.d.exec!, staged).catch((e: Error) => this.d.log.error({ op: 'snapshot', volume: rec.name, err: e.message }, `the thaw of volume ${rec.name} after its snapshot failed; run fsfreeze -u ${staged}`));
            frozenMs = round(performance.now() - t0);
          }
        } else {
          details = await backend.createSnapshot(rec, inserted);
        }
        this.fault('snapshot.taken');
        const ready = await this.d.store.updateSnapshot({ ...inserted, state: 'ready', details: { ...inserted.details, ...details, ...(frozenMs !== undefined ? { frozenMs } : {}) } });
        this.d.log.info({ op: 'snapshot', volume: rec.name, snapshot: name, frozenMs, method: details.method, outcome: 'ok' }, `snapshot ${name} of volume ${rec.name} taken`);
        return ready;
      } catch (e) {
        // Nothing half-made is left: the backend's part and the record go.
        await backend.deleteSnapshot(inserted, []).catch(() => undefined);
        const cur = await this.d.store.getSnapshot(name).catch(() => undefined);
        if (cur) await this.d.store.deleteSnapshot(name, cur.revision).catch(() => undefined);
        throw e;
      }
    });
  }

  async listSnapshots(volume?: unknown): Promise<SnapshotInfo[]> {
    const v = volume === undefined || volume === null || volume === '' ? undefined : validateVolumeName(volume);
    return this.snapshotInfos(await this.d.store.listSnapshots(v));
  }

  async getSnapshot(name: unknown): Promise<SnapshotInfo> {
    const sname = validateAnySnapshotName(name);
    const snap = await this.d.store.getSnapshot(sname);
    if (!snap) throw new NotFoundError(`snapshot ${sname} does not exist; ballast snapshot ls lists the snapshots`);
    return (await this.snapshotInfos([snap]))[0];
  }

  /** The record of a ready snapshot, for the backup path (which reads it). */
  async snapshotRecord(name: string): Promise<SnapshotRecord | undefined> { return this.d.store.getSnapshot(name); }

  /**
   * `ballast snapshot rm NAME`: gone is success. Clones made from it stay: where the backend's clones
   * depend on their snapshot (RBD) they are made independent first (flattened), and the answer says so.
   */
  async removeSnapshot(name: unknown): Promise<{ name: string; note?: string }> {
    const sname = validateAnySnapshotName(name);
    return this.op('snapshot-rm', sname, undefined, () => this.lock.run(snapKey(sname), async () => {
      const snap = await this.d.store.getSnapshot(sname);
      if (!snap) return { name: sname };
      if (snap.state === 'creating') throw new BusyError(`snapshot ${sname} is being taken; retry when that has finished`);
      if (this.d.cluster && snap.home && snap.home !== this.d.node) throw new FailedPreconditionError(`snapshot ${sname} lives on node ${snap.home} (as its volume ${snap.volume}); remove it there`);
      const note = await this.deleteSnapshotNow(snap);
      return { name: sname, ...(note ? { note } : {}) };
    }));
  }

  /** Marks the snapshot `removing`, deletes it at the backend, then its record (the caller holds its lock). */
  private async deleteSnapshotNow(snap: SnapshotRecord): Promise<string | undefined> {
    const clones = (await this.d.store.listVolumes(snap.backend)).filter((v) => v.spec.fromSnapshot === snap.name || v.details.clonedFrom === snap.name);
    const making = clones.filter((v) => v.state === 'creating');
    if (making.length > 0) throw new BusyError(`snapshot ${snap.name} is being cloned into ${making.map((v) => v.name).join(', ')}; retry when that has finished`);
    const marked = snap.state === 'removing' ? snap : await this.d.store.updateSnapshot({ ...snap, state: 'removing' });
    this.fault('snapshot-rm.marked');
    const backend = this.d.backends.get(snap.backend);
    const note = canSnapshot(backend) ? await backend.deleteSnapshot(marked, clones.filter((v) => v.state === 'ready')) : undefined;
    await this.d.store.deleteSnapshot(snap.name, marked.revision);
    this.d.log.info({ op: 'snapshot-rm', volume: snap.volume, snapshot: snap.name, outcome: 'ok' }, note ?? `snapshot ${snap.name} removed`);
    return note;
  }

  private async snapshotInfos(snaps: readonly SnapshotRecord[]): Promise<SnapshotInfo[]> {
    const clonesOf = new Map<string, string[]>();
    if (snaps.length > 0) {
      for (const v of await this.d.store.listVolumes()) {
        const from = typeof v.spec.fromSnapshot === 'string' ? v.spec.fromSnapshot : typeof v.details.clonedFrom === 'string' ? v.details.clonedFrom : undefined;
        if (from && !from.startsWith('_')) clonesOf.set(from, [...(clonesOf.get(from) ?? []), v.name]);
      }
    }
    return snaps.map((s) => {
      const b = this.d.backends.has(s.backend) ? this.d.backends.get(s.backend) : undefined;
      return {
        name: s.name, volume: s.volume, backend: s.backend, type: b?.type ?? 'unknown (not configured)', size: s.size, createdAt: s.createdAt,
        state: s.state, node: s.node, ...(typeof s.details.method === 'string' ? { method: s.details.method } : {}),
        ...(typeof s.details.frozenMs === 'number' ? { frozenMs: s.details.frozenMs } : {}), clones: clonesOf.get(s.name) ?? [],
      };
    });
  }

  /**
   * Start-up recovery of snapshots this node was taking or removing when it stopped: a `creating` one
   * is rolled back (its volume's filesystem thawed first, since the crash may have come while it was
   * frozen; then the backend's part and the record go), a `removing` one rolled forward, and a
   * temporary one (a backup's, or a clone's whose create is over) deleted.
   */
  private async recoverSnapshots(out: { volume: string; action: string; ok: boolean; error?: string }[], phase: 'before' | 'after'): Promise<void> {
    for (const snap of await this.d.store.listSnapshots()) {
      if (snap.node !== this.d.node || !this.d.backends.has(snap.backend)) continue;
      const temporary = snap.details.temporary === true;
      if (phase === 'before' && snap.state === 'ready') continue;
      if (phase === 'after' && !(snap.state === 'ready' && temporary)) continue;
      if (phase === 'after' && snap.details.purpose === 'clone') {
        const target = await this.d.store.getVolume(String(snap.details.for));
        if (target?.state === 'creating') continue; // its create still needs it (it failed to roll forward)
      }
      const action = snap.state === 'creating' ? `roll back interrupted snapshot ${snap.name}` : snap.state === 'removing' ? `roll forward interrupted removal of snapshot ${snap.name}` : `remove temporary snapshot ${snap.name} (${String(snap.details.purpose ?? 'unknown')})`;
      await this.lock.run(snap.volume, () => this.lock.run(snapKey(snap.name), async () => {
        try {
          const backend = this.d.backends.get(snap.backend);
          if (snap.state === 'creating') {
            const vol = await this.d.store.getVolume(snap.volume);
            if (vol && canSnapshot(backend) && backend.freezeForSnapshot && this.d.exec && (await this.d.mounts?.at(vol.mountpoint))) await thawFs(this.d.exec, vol.mountpoint);
            if (canSnapshot(backend)) await backend.deleteSnapshot(snap, []);
            await this.d.store.deleteSnapshot(snap.name, snap.revision);
          } else {
            if (typeof snap.details.readAt === 'string' && canReadSnapshot(backend)) await backend.unmountSnapshot(snap, snap.details.readAt);
            await this.deleteSnapshotNow(snap);
          }
          out.push({ volume: snap.volume, action, ok: true });
        } catch (e) {
          out.push({ volume: snap.volume, action, ok: false, error: (e as Error).message });
        }
      }));
    }
  }

  async remove(name: unknown): Promise<void> {
    const vname = validateVolumeName(name);
    await this.op('remove', vname, undefined, () => this.lock.run(vname, async () => {
      const rec = await this.d.store.getVolume(vname);
      if (!rec) return;
      const refs = await this.d.store.mounts(vname);
      if (refs.length > 0) {
        const ids = refs.map((r) => `${r.id.slice(0, 12)} (x${r.count}, since ${r.since}${r.node === this.d.node ? '' : `, on node ${r.node}`})`).join(', ');
        throw new BusyError(`volume ${vname} is in use by ${refs.length} mount${refs.length > 1 ? 's' : ''}: ${ids}; stop the containers using it first`);
      }
      if (rec.state === 'damaged') throw new BusyError(damagedMessage(rec));
      const snaps = await this.d.store.listSnapshots(vname);
      if (snaps.length > 0) {
        const names = snaps.map((x) => x.name);
        throw new FailedPreconditionError(`volume ${vname} has ${names.length} snapshot${names.length > 1 ? 's' : ''} (${names.slice(0, 10).join(', ')}${names.length > 10 ? ', ...' : ''}); remove ${names.length > 1 ? 'them' : 'it'} first with ballast snapshot rm${names.some((n) => n.startsWith('_')) ? ' (a name starting with "_" is a backup or clone of it under way: let it finish)' : ''}, then remove the volume`);
      }
      if (this.d.cluster) {
        if (rec.home && rec.home !== this.d.node) throw new FailedPreconditionError(`volume ${vname} lives on node ${rec.home} (its data is on that node's own disk); remove it on node ${rec.home}`);
        const others = (await this.d.store.getAttachments(vname)).holders.filter((h) => h.node !== this.d.node);
        if (others.length > 0) throw new BusyError(`volume ${vname} is still attached to ${others.map((h) => `node ${h.node} (${h.mode === 'rw' ? 'read-write' : 'read-only'} since ${h.since})`).join(', ')}; it is released there once its last container there stopped and its mount is gone`);
      }
      const marked = await this.d.store.updateVolume({ ...rec, state: 'removing' });
      this.fault('remove.marked');
      await this.finishRemove(marked);
    }));
  }

  private async finishRemove(rec: VolumeRecord): Promise<void> {
    await this.d.backends.get(rec.backend).deprovision(rec);
    this.fault('remove.deprovisioned');
    await this.d.store.deleteVolume(rec.name, rec.revision);
  }

  async mount(name: unknown, id: unknown): Promise<string> {
    const vname = validateVolumeName(name);
    const mid = validateMountId(id);
    return this.op('mount', vname, undefined, () => this.lock.run(vname, async () => {
      const rec = await this.ready(vname);
      const backend = this.d.backends.get(rec.backend);
      // A full state directory refuses new references before anything is written: what space is left
      // (and the store's reserve) is kept for Unmount and the journal.
      this.d.store.assertRoom?.(`mounting volume ${vname}`);
      // Cluster mode: attached here before anything is staged, or refused when another node holds it.
      // A crash after the attach and before the ledger commit leaves an attachment with no reference,
      // which the reconciler releases (the same as a last Unmount).
      const attached = this.d.cluster ? await this.attachHere(rec, backend, 'rw') : false;
      // Nothing is journaled before publish: a crash during or after it, before the ledger commit,
      // leaves a volume published without a new reference, which the start-up reconcile unpublishes
      // when nothing else references it (what recovery of a journaled intent would have left it to do).
      this.fault('mount.intent');
      // Publish is idempotent and reads the real mount table, so a volume unmounted behind our back
      // (or never mounted after a restart) is mounted again even when the ledger has references.
      try {
        await stageAtMountpoint(backend, rec, this.d.node, this.d.mounts);
        // A backend that can fence at the storage records which client of it is this node's, before the
        // container can write: a takeover from another node then knows whom to cut off.
        if (this.d.cluster && canFence(backend)) await this.recordClaim(rec, backend);
      } catch (e) {
        // A stage that failed leaves nothing to hold: let go of an attachment this call took.
        if (attached && (await this.d.store.mountCount(vname, this.d.node)) === 0) {
          await unstageAtMountpoint(backend, rec, this.d.node).catch(() => undefined);
          await this.releaseHere(vname).catch(() => undefined);
        }
        throw e;
      }
      this.fault('mount.published');
      // The ledger entry and, in the same transaction, its undo in the journal. Until the undo is ended
      // below, just before the answer goes out, a crash means the caller never learnt of this mount
      // (dockerd re-sends the interrupted request without its body, which fails): recovery drops the
      // reference again, so it cannot leak, and a caller that retries in full mounts afresh.
      const { undo } = await this.d.store.addMountWithUndo(vname, this.d.node, mid);
      this.fault('mount.ledger');
      await this.d.store.endOp(this.d.node, undo);
      return rec.mountpoint;
    }));
  }

  async unmount(name: unknown, id: unknown): Promise<void> {
    const vname = validateVolumeName(name);
    const mid = validateMountId(id);
    await this.op('unmount', vname, undefined, () => this.lock.run(vname, async () => {
      const rec = await this.d.store.getVolume(vname);
      if (!rec) return;
      await this.dropReference(rec, mid, 'unmount');
    }));
  }

  /**
   * Drops one reference and unpublishes on the last. The caller holds the volume's lock. The intent is
   * journaled first and ends with the ledger change, in one transaction: a crash before it is rolled
   * forward on the next start (the reference is dropped: dockerd does not re-send the Unmount in a
   * usable form), a crash after it leaves an unreferenced mount that the start-up reconcile unmounts.
   */
  async dropReference(rec: VolumeRecord, mid: string, why: string): Promise<{ removed: boolean; total: number }> {
    const op = await this.d.store.beginOp({ volume: rec.name, node: this.d.node, op: 'unmount', mountId: mid });
    this.fault('unmount.intent');
    let r: { removed: boolean; total: number };
    try {
      r = await this.d.store.removeMount(rec.name, this.d.node, mid, op); // ledger change and end of journal in one transaction
    } catch (e) {
      await this.d.store.endOp(this.d.node, op).catch(() => undefined);
      throw e;
    }
    if (!r.removed) this.d.log.warn({ volume: rec.name, mountId: mid, why }, 'unmount for a mount ID the ledger does not hold');
    this.fault('unmount.ledger');
    if (r.total === 0 && rec.state !== 'damaged') await this.unstageHere(rec);
    this.fault('unmount.unpublished');
    return r;
  }

  /**
   * The last reference here is gone: unstage and (cluster mode) let go of the attachment, only once
   * nothing is staged here any more (a failed unstage keeps it, and the reconciler releases it after
   * the unmount it retries). A volume another node took over from this one (stale here) is torn down
   * without a write instead, and its attachment, no longer this node's, is left alone.
   */
  private async unstageHere(rec: VolumeRecord): Promise<void> {
    if (this.d.cluster && await this.staleHere(rec)) {
      if (!(await this.tearDownStale(rec))) this.d.log.error({ op: 'stale', volume: rec.name, node: this.d.node, outcome: 'left' }, `volume ${rec.name} was taken from this node while mounted here; backend ${rec.backend} cannot cut this node off at the storage, so its mount is left alone (and frozen if it was): stop the containers using it here and reboot this node`);
      return;
    }
    await unstageAtMountpoint(this.d.backends.get(rec.backend), rec, this.d.node);
    this.selfFrozen.delete(rec.name);
    if (this.d.cluster) await this.releaseHere(rec.name);
  }

  /**
   * Tears down this node's staging of a volume another node now holds (this node was fenced: a takeover
   * or `ballast node fence`). A backend that fences at the storage has cut this node's client off, so a
   * frozen filesystem is thawed (its writers get I/O errors instead of hanging) and the staging is
   * detached without a flush (Fencer.unstageFenced). Any other backend is left mounted (and frozen, if
   * the self-fence froze it): an unmount would write to storage another node owns; the caller reports
   * it. Returns whether it was torn down.
   */
  async tearDownStale(rec: VolumeRecord): Promise<boolean> {
    const backend = this.d.backends.get(rec.backend);
    if (!canFence(backend)) return false;
    // A freeze (or a thaw) can be stuck in the flush through the client the fence cut off, in the kernel,
    // where no timeout ends it: the thaw is started, not waited for; ending the client (unstageFenced
    // kills it first) fails that flush, and the freeze and the thaw then finish.
    const thawing = this.selfFrozen.has(rec.name) ? this.thawWithin(mountpointOf(rec)) : undefined;
    if (thawing) await thawing(FREEZE_WAIT_MS);
    this.selfFrozen.delete(rec.name);
    await backend.unstageFenced(rec, mountpointOf(rec));
    if (thawing) await thawing(5 * FREEZE_WAIT_MS);
    this.heldEpoch.delete(rec.name);
    this.d.log.warn({ op: 'stale', volume: rec.name, node: this.d.node, outcome: 'torn-down' }, `volume ${rec.name} is held by another node now (this node was fenced at the storage): its staging here was detached without writing`);
    return true;
  }

  /**
   * Starts a thaw of the filesystem at `mp` and returns a wait for it, bounded by its argument, that
   * resolves whether it finished (a thaw can be stuck in the kernel, where no exec timeout ends it).
   */
  private thawWithin(mp: string): (ms: number) => Promise<boolean> {
    const done = this.d.exec ? thawFs(this.d.exec, mp).then(() => true, () => false) : Promise.resolve(false);
    return (ms) => Promise.race([done, sleep(ms).then(() => false)]);
  }

  /** Cuts `holder` off volume `rec` at the storage (Fencer.fence), with the backend's sentence in the log. */
  private async fenceAtStorage(rec: VolumeRecord, backend: Backend & Fencer, holder: Attachment, keep: readonly Attachment[]): Promise<void> {
    this.d.log.warn({ op: 'fence', volume: rec.name, node: this.d.node, fenced: holder.node, outcome: 'ok' }, await backend.fence(rec, holder, keep));
  }

  /**
   * After the reconciler mounted a dead staging again (a new storage client): the claim is recorded
   * afresh, under the volume's lock (the caller holds it).
   */
  async refreshClaim(rec: VolumeRecord): Promise<void> {
    if (this.d.cluster) await this.recordClaim(rec, this.d.backends.get(rec.backend));
  }

  /** Stores this node's storage claim (Fencer.claim) in its attachment, when it changed. */
  private async recordClaim(rec: VolumeRecord, backend: Backend): Promise<void> {
    if (!canFence(backend)) return;
    const mine = (await this.d.store.getAttachments(rec.name)).holders.find((h) => h.node === this.d.node);
    if (!mine) return;
    const claim = await backend.claim(rec, mountpointOf(rec));
    if (!claim) return;
    await this.changeAttachments(rec.name, (set) => {
      const h = set.holders.find((x) => x.node === this.d.node);
      if (!h) throw new FailedPreconditionError(`volume ${rec.name} was taken over by another node while it was being mounted on node ${this.d.node}; run the container again`);
      if (stableJson(h.claim ?? {}) === stableJson(claim)) return undefined;
      return { ...set, holders: set.holders.map((x) => (x.node === this.d.node ? { ...x, claim } : x)) };
    }, `could not record which storage client of node ${this.d.node} holds it`, 'run the container again');
  }

  /**
   * How a node that stands in the way of an attach looks now: `dead` (no lease: it crashed or is cut
   * off, and its lease expired), `suspect` (etcd counts its lease well below the TTL: it missed
   * renewals), `releasing` (alive, attached, but no reference: its mount or its last unmount is under
   * way), or `alive`.
   */
  private async holderState(volume: string, node: string): Promise<'dead' | 'suspect' | 'releasing' | 'alive'> {
    const l = this.d.liveness;
    if (!l) return 'alive';
    const left = await l.leaseLeft(node);
    if (left === undefined) return 'dead';
    if (left < (this.d.timing?.suspectBelowSec ?? 0)) return 'suspect';
    if ((await this.d.store.mountCount(volume, node)) === 0) return 'releasing';
    return 'alive';
  }

  /** Drops every reference `node` holds on `volume` (its containers are gone with it); returns how many. */
  private async dropNodeRefs(volume: string, node: string): Promise<number> {
    let dropped = 0;
    for (const r of (await this.d.store.mounts(volume)).filter((m) => m.node === node)) {
      for (let k = 0; k < r.count; k++) if ((await this.d.store.removeMount(volume, node, r.id)).removed) dropped++;
    }
    return dropped;
  }

  /**
   * The attach state machine of cluster mode, for this node and `mode`:
   * - attached here (in that mode, or read-write when read-only is asked): nothing to write;
   * - not attached, or attached elsewhere in a way the backend's access modes allow: this node joins the
   *   holders, in a compare-and-swap on the volume's attachments, so of two nodes that attach an
   *   exclusive volume at the same instant exactly one wins and the other reads again and is refused;
   * - attached elsewhere otherwise: refused (FailedPrecondition) with a sentence naming the node, since
   *   when, and what to do.
   * A node-local volume is refused on every node but its home. Returns whether this call attached.
   */
  private async attachHere(rec: VolumeRecord, backend: Backend, mode: AccessMode, takeover = true): Promise<boolean> {
    if (rec.home && rec.home !== this.d.node) {
      throw new FailedPreconditionError(`volume ${rec.name} lives on node ${rec.home} (backend ${rec.backend} keeps its data on that node's own disk), so it cannot be mounted on node ${this.d.node}; run its containers on ${rec.home}, e.g. docker service create --constraint node.hostname==<hostname of ${rec.home}> ..., or use a backend on shared storage`);
    }
    const t0 = Date.now();
    const waitMs = this.d.timing?.takeoverWaitMs ?? 0;
    const graceMs = this.d.timing?.takeoverGraceMs ?? 0;
    const deadSeen = new Map<string, number>();
    let lost = 0;
    const me = { node: this.d.node, mode, since: this.now().toISOString() };
    for (;;) {
      const set = await this.d.store.getAttachments(rec.name);
      const mine = set.holders.find((h) => h.node === this.d.node);
      if (mine && (mine.mode === 'rw' || mode === 'ro')) { this.heldEpoch.set(rec.name, set.epoch); return false; }
      const want = { node: this.d.node, mode };
      const decision = checkAccess(rec.name, backend, want, set.holders);
      let next: AttachmentSet | undefined;
      let fenced: readonly string[] = [];
      if (decision.allowed) {
        next = { ...set, holders: [...set.holders.filter((h) => h.node !== this.d.node), me] };
      } else {
        // Who stands in the way, and can they be moved: a dead holder is taken over only once its lease
        // is gone (plus the grace) and it is cut off at the storage; a releasing or suspect one is waited for.
        const blockers = set.holders.filter((h) => h.node !== this.d.node && !checkAccess(rec.name, backend, want, [h]).allowed);
        const states = await Promise.all(blockers.map((h) => this.holderState(rec.name, h.node)));
        const dead = blockers.filter((_, i) => states[i] === 'dead');
        for (const h of dead) if (!deadSeen.has(h.node)) deadSeen.set(h.node, Date.now());
        const canTake = takeover && canFence(backend) && dead.length === blockers.length;
        if (canTake && dead.every((h) => Date.now() - deadSeen.get(h.node)! >= graceMs)) {
          const keep = set.holders.filter((h) => !dead.includes(h) && h.node !== this.d.node);
          for (const h of dead) await this.fenceAtStorage(rec, backend as Backend & Fencer, h, keep);
          fenced = dead.map((h) => h.node);
          next = { ...set, epoch: set.epoch + 1, holders: [...keep, me] };
        } else {
          const waiting = canTake || states.some((x) => x === 'releasing' || x === 'suspect');
          if (waiting && Date.now() - t0 < waitMs) { await sleep(POLL_MS); continue; }
          const others = [...new Set(blockers.map((h) => h.node))];
          if (dead.length > 0 && !canFence(backend) && takeover) {
            throw new FailedPreconditionError(`volume ${rec.name} is attached to ${dead.map((h) => `node ${h.node} (${h.mode === 'rw' ? 'read-write' : 'read-only'} since ${h.since})`).join(', ')}, whose lease expired: it is down or cut off. Backend ${rec.backend} cannot cut a node off at the storage, so Ballast does not take the volume over by itself (the node could still be writing). If ${dead.length > 1 ? 'those nodes are' : `node ${dead[0].node} is`} down for good (powered off), release ${dead.length > 1 ? 'their' : 'its'} volumes with: ${dead.map((h) => `ballast node fence ${h.node}`).join('; ')}`);
          }
          throw new FailedPreconditionError(`${decision.reason}. If ${others.length > 1 ? 'those nodes are' : `node ${others[0]} is`} down for good (powered off), release ${others.length > 1 ? 'their' : 'its'} volumes with: ${others.map((n) => `ballast node fence ${n}`).join('; ')}`);
        }
      }
      let written: AttachmentSet;
      try {
        written = await this.d.store.putAttachments(next);
      } catch (e) {
        if ((e as BallastError).code !== 'Conflict') throw e;
        if (++lost >= ATTACH_RETRIES) throw new AbortedError(`volume ${rec.name} could not be attached to node ${this.d.node}: its attachments kept changing under concurrent operations from other nodes; retry`);
        continue;
      }
      for (const n of fenced) {
        const dropped = await this.dropNodeRefs(rec.name, n);
        this.d.log.warn({ op: 'takeover', volume: rec.name, node: this.d.node, from: n, epoch: written.epoch, referencesDropped: dropped, ms: Date.now() - t0, outcome: 'ok' }, `volume ${rec.name} taken over from node ${n} (lease expired, fenced at the storage)`);
      }
      this.heldEpoch.set(rec.name, written.epoch);
      this.d.log.info({ op: 'attach', volume: rec.name, node: this.d.node, mode, epoch: written.epoch, outcome: 'ok' }, 'attach');
      return true;
    }
  }

  /**
   * One change of a volume's attachments: read them, let `next` decide (the set to write, undefined for
   * nothing to write, or a throw), and write with a compare-and-swap on their revision. A lost race
   * (another node changed them in between) reads and decides again, a bounded number of times; then
   * an AbortedError says the volume `failed` and what to do (`then`). Returns the set written, if any.
   */
  private async changeAttachments(volume: string, next: (set: AttachmentSet) => AttachmentSet | undefined, failed: string, then: string): Promise<AttachmentSet | undefined> {
    for (let i = 0; i < ATTACH_RETRIES; i++) {
      const want = next(await this.d.store.getAttachments(volume));
      if (!want) return undefined;
      try {
        return await this.d.store.putAttachments(want);
      } catch (e) {
        if ((e as BallastError).code !== 'Conflict') throw e;
      }
    }
    throw new AbortedError(`volume ${volume} ${failed}: its attachments kept changing under concurrent operations from other nodes; ${then}`);
  }

  /**
   * Which nodes hold which volumes (attachments in cluster mode; on one host, this node's references),
   * and which nodes reference them: what `ballast node ls` shows beside the node registry.
   */
  async holdings(): Promise<Map<string, { volume: string; mode: string; since: string; references: number }[]>> {
    const out = new Map<string, { volume: string; mode: string; since: string; references: number }[]>();
    const add = (node: string, e: { volume: string; mode: string; since: string; references: number }) => {
      const l = out.get(node);
      if (l) l.push(e); else out.set(node, [e]);
    };
    for (const rec of await this.d.store.listVolumes()) {
      const refs = await this.d.store.mounts(rec.name);
      const count = (node: string) => refs.filter((r) => r.node === node).reduce((n, r) => n + r.count, 0);
      if (this.d.cluster) {
        const holders = (await this.d.store.getAttachments(rec.name)).holders;
        for (const h of holders) add(h.node, { volume: rec.name, mode: h.mode, since: h.since, references: count(h.node) });
        for (const node of new Set(refs.map((r) => r.node))) {
          if (!holders.some((h) => h.node === node)) add(node, { volume: rec.name, mode: 'referenced, not attached', since: refs.find((r) => r.node === node)!.since, references: count(node) });
        }
      } else {
        for (const node of new Set(refs.map((r) => r.node))) add(node, { volume: rec.name, mode: 'rw', since: refs.find((r) => r.node === node)!.since, references: count(node) });
      }
    }
    return out;
  }

  /**
   * `ballast node fence NODE`: the operator confirms that NODE is down (powered off, or cut off for
   * good), the way Kubernetes' out-of-service taint works, so that its volumes can be used elsewhere.
   * Refused while NODE holds its lease (`isAlive`). For every volume NODE holds: NODE leaves the
   * holders and the epoch goes up by one (so NODE, should it come back, sees that it lost the volume),
   * and NODE's references are dropped (its containers are gone with it). Its journal is left to its
   * own recovery. Backends that can fence at the storage do not need this once automatic takeover
   * exists; for the others it is the only way a dead node's exclusive volume moves.
   */
  async fenceNode(node: string, isAlive: (node: string) => Promise<boolean>): Promise<{ volume: string; epoch: number; referencesDropped: number }[]> {
    if (!this.d.cluster) throw new FailedPreconditionError('ballast node fence is for cluster mode (the etcd store); on one host there is no other node');
    if (node === this.d.node) throw new InvalidArgumentError(`node ${node} is this node; fence a node from another one`);
    if (await isAlive(node)) {
      throw new FailedPreconditionError(`node ${node} still holds its lease: its daemon runs and reaches the cluster store, so it is not down. Stop it (or cut it off), wait for its lease to expire, then fence it`);
    }
    const out: { volume: string; epoch: number; referencesDropped: number }[] = [];
    for (const rec of await this.d.store.listVolumes()) {
      await this.lock.run(rec.name, async () => {
        // Cut off at the storage first where the backend can: the operator may be wrong about the node.
        const before = await this.d.store.getAttachments(rec.name);
        const h = before.holders.find((x) => x.node === node);
        const backend = this.d.backends.has(rec.backend) ? this.d.backends.get(rec.backend) : undefined;
        if (h && backend && canFence(backend)) await this.fenceAtStorage(rec, backend, h, before.holders.filter((x) => x.node !== node));
        const written = await this.changeAttachments(rec.name, (set) => (set.holders.some((x) => x.node === node)
          ? { ...set, epoch: set.epoch + 1, holders: set.holders.filter((x) => x.node !== node) } : undefined), `could not be released from node ${node}`, `run ballast node fence ${node} again`);
        const epoch = written ? written.epoch : -1;
        const dropped = await this.dropNodeRefs(rec.name, node);
        if (epoch >= 0 || dropped > 0) {
          out.push({ volume: rec.name, epoch: epoch >= 0 ? epoch : (await this.d.store.getAttachments(rec.name)).epoch, referencesDropped: dropped });
          this.d.log.warn({ op: 'fence', volume: rec.name, node: this.d.node, fenced: node, epoch, referencesDropped: dropped, outcome: 'ok' }, 'fenced node released');
        }
      });
    }
    return out;
  }

  /**
   * Cluster mode: is the volume staged here although this node no longer holds it while another node
   * does (it was fenced, or taken over)? Such a mount is stale: unmounting it would write to storage
   * another node now owns: it is torn down without a write where the backend cut this node off at the
   * storage (tearDownStale), and otherwise left alone and reported.
   */
  async staleHere(rec: VolumeRecord): Promise<{ holders: string; epoch: number } | undefined> {
    if (!this.d.cluster) return undefined;
    const set = await this.d.store.getAttachments(rec.name);
    if (set.holders.some((h) => h.node === this.d.node)) return undefined;
    const known = this.heldEpoch.get(rec.name);
    if (set.holders.length === 0 && !(known !== undefined && set.epoch > known)) return undefined;
    return { holders: set.holders.map((h) => `node ${h.node} (${h.mode} since ${h.since})`).join(', ') || 'no node', epoch: set.epoch };
  }

  /** Cluster mode: attaches the volume here (read-write) unless it already is; throws when another node holds it. */
  async ensureAttached(rec: VolumeRecord): Promise<void> {
    // Never a takeover: that is for a Mount a caller asked for, not for a repair.
    if (this.d.cluster) await this.attachHere(rec, this.d.backends.get(rec.backend), 'rw', false);
  }

  /**
   * Self-fence (src/cluster/self-fence.ts): this node lost etcd while another node may reach it, so
   * writes to its exclusive volumes stop before its lease can expire for the others: each such volume
   * mounted here (a backend that serves one writer node at a time: rbd, shared block images) is frozen
   * (FIFREEZE: writers wait; the kernel first writes out what is dirty, which may hang on a cut-off
   * server, so the freeze is not waited for beyond a second: writers already wait once it started).
   * The volume list comes from the store's local copy (it answers for a while without etcd). Returns the
   * volumes frozen.
   */
  async selfFence(reason: string): Promise<string[]> {
    const out: string[] = [];
    if (!this.d.exec || !this.d.mounts) return out;
    for (const rec of await this.d.store.listVolumes()) {
      if (rec.state !== 'ready' || rec.home || !this.d.backends.has(rec.backend)) continue;
      const a = this.d.backends.get(rec.backend).access;
      if (!a.multiNode || a.multiWriter) continue;
      const mp = mountpointOf(rec);
      if (!(await this.d.mounts.at(mp))) continue;
      const freezing = freezeFs(this.d.exec, mp);
      freezing.catch((e: Error) => (/read-only/i.test(e.message)
        ? this.d.log.warn({ op: 'self-fence', volume: rec.name }, `volume ${rec.name} is read-only already (its filesystem stopped writing after I/O errors): writes are stopped`)
        : this.d.log.error({ op: 'self-fence', volume: rec.name, err: e.message }, `the freeze of volume ${rec.name} failed`)));
      await Promise.race([freezing.catch(() => undefined), sleep(FREEZE_WAIT_MS)]);
      this.selfFrozen.set(rec.name, rec);
      out.push(rec.name);
      this.d.log.error({ op: 'self-fence', volume: rec.name, node: this.d.node, mountpoint: mp, reason, outcome: 'frozen' }, `volume ${rec.name} frozen on node ${this.d.node}: this node lost etcd (${reason}); its writers wait until etcd answers again`);
    }
    return out;
  }

  /**
   * etcd answers again after a self-fence: a volume this node still holds is thawed (nothing happened
   * meanwhile); one another node took over is thawed only where the backend cut this node off at the
   * storage (its writers then fail instead of hanging) and torn down at once; anywhere else it stays
   * frozen and is reported. Returns one line per volume.
   */
  async resumeAfterSelfFence(): Promise<string[]> {
    const out: string[] = [];
    // Decide on what etcd holds now, not on the copy made while it was away (a takeover may be on its
    // way in): until the copy is in step, nothing is thawed (the self-fence tries again).
    if (this.selfFrozen.size) await this.d.store.inStep?.('checking which volumes this node still holds after it lost etcd');
    for (const [name, rec] of [...this.selfFrozen]) {
      await this.lock.run(name, async () => {
        const set = await this.d.store.getAttachments(name);
        const mp = mountpointOf(rec);
        if (set.holders.some((h) => h.node === this.d.node)) {
          // Bounded: a freeze still flushing to a server that is slow to answer finishes first.
          const thawed = await this.thawWithin(mp)(10 * FREEZE_WAIT_MS);
          this.selfFrozen.delete(name);
          out.push(`${name}: still held here at epoch ${set.epoch}: ${thawed ? 'thawed' : 'thaw did not finish within 10 s (a freeze still flushing); run fsfreeze -u ' + mp + ' if writers stay blocked'}`);
        } else if (canFence(this.d.backends.get(rec.backend))) {
          out.push(`${name}: taken over by ${set.holders.map((h) => h.node).join(', ') || 'another node'} at epoch ${set.epoch}; this node is cut off at the storage: thawed (its writes fail) and detached`);
          // At once, even while containers here still use it: a fenced rbd-fuse left alive makes every
          // loop device scan on the host hang (it stats the image file).
          await this.tearDownStale(rec);
        } else {
          out.push(`${name}: taken over by ${set.holders.map((h) => h.node).join(', ') || 'another node'} at epoch ${set.epoch}; backend ${rec.backend} cannot cut this node off at the storage, so it stays frozen: stop its containers here and reboot this node`);
        }
      });
    }
    return out;
  }

  /** Volumes the self-fence holds frozen now (doctor). */
  frozenBySelfFence(): string[] { return [...this.selfFrozen.keys()]; }

  /** This node lets go of the volume (its last reference is gone and nothing is staged here). */
  private async releaseHere(volume: string): Promise<void> {
    const written = await this.changeAttachments(volume, (set) => (set.holders.some((h) => h.node === this.d.node)
      ? { ...set, holders: set.holders.filter((h) => h.node !== this.d.node) } : undefined), `could not be released by node ${this.d.node}`, 'the reconciler tries again');
    if (written) this.d.log.info({ op: 'detach', volume, node: this.d.node, epoch: written.epoch, outcome: 'ok' }, 'detach');
  }

  /**
   * Reconciler hook, under the volume's lock: in cluster mode, a volume this node holds but neither
   * references nor has staged (a crash between attach and the ledger, a failed unstage since repaired)
   * is released. Returns whether it released one.
   */
  async releaseIfIdle(rec: VolumeRecord, staged: boolean): Promise<boolean> {
    if (!this.d.cluster || staged) return false;
    if ((await this.d.store.mountCount(rec.name, this.d.node)) > 0) return false;
    if (!(await this.d.store.getAttachments(rec.name)).holders.some((h) => h.node === this.d.node)) return false;
    await this.releaseHere(rec.name);
    return true;
  }

  /**
   * Start-up recovery of operations a crash interrupted, before anything is served: creates and
   * removes are rolled forward (each step is idempotent); journaled mounts are rolled back (a mount
   * journal entry is open either before its ledger entry was committed, or after it but before it was
   * answered: then it reads "unmount" and the reference is dropped) and unmounts rolled forward (the
   * entry is open only while the reference is still in the ledger). The reconciler then makes the
   * host match the ledger. Returns what it did, one line per operation.
   */
  async recover(): Promise<{ volume: string; action: string; ok: boolean; error?: string }[]> {
    const out: { volume: string; action: string; ok: boolean; error?: string }[] = [];
    await this.recoverSnapshots(out, 'before');
    for (const op of await this.d.store.pendingOps(this.d.node)) {
      await this.lock.run(op.volume, async () => {
        const rec = await this.d.store.getVolume(op.volume);
        const action = op.op === 'mount' ? 'roll back interrupted mount' : 'roll forward interrupted unmount';
        try {
          if (rec && op.op === 'unmount') {
            // An unmount before its ledger change, or a mount committed but never answered: either way
            // the reference goes (and the journal entry with it, in one transaction).
            const r = await this.d.store.removeMount(rec.name, this.d.node, op.mountId, op.id);
            if (r.total === 0 && rec.state === 'ready') await this.unstageHere(rec);
          } else {
            // A mount before its ledger entry: no reference was added; the reconciler unpublishes if
            // nothing else uses the volume.
            await this.d.store.endOp(this.d.node, op.id);
          }
          out.push({ volume: op.volume, action, ok: true });
        } catch (e) {
          out.push({ volume: op.volume, action, ok: false, error: (e as Error).message });
        }
      });
    }
    for (const rec of await this.d.store.listVolumes()) {
      if (rec.state !== 'creating' && rec.state !== 'removing') continue;
      await this.lock.run(rec.name, async () => {
        const action = rec.state === 'creating' ? 'roll forward interrupted create' : 'roll forward interrupted remove';
        try {
          if (rec.state === 'creating') await this.finishCreate(rec, true); else await this.finishRemove(rec);
          out.push({ volume: rec.name, action, ok: true });
        } catch (e) {
          out.push({ volume: rec.name, action, ok: false, error: (e as Error).message });
        }
      });
    }
    await this.recoverSnapshots(out, 'after');
    for (const r of out) this.d.log[r.ok ? 'info' : 'error']({ op: 'recover', volume: r.volume, node: this.d.node, action: r.action, outcome: r.ok ? 'ok' : 'Internal', err: r.error }, 'recover');
    return out;
  }

  async path(name: unknown): Promise<string> {
    const vname = validateVolumeName(name);
    const rec = await this.ready(vname);
    return rec.mountpoint;
  }

  async get(name: unknown): Promise<VolumeInfo> {
    const vname = validateVolumeName(name);
    const rec = await this.d.store.getVolume(vname);
    if (!rec) throw new NotFoundError(`volume ${vname} does not exist`);
    return this.info(rec);
  }

  async list(): Promise<VolumeSummary[]> {
    return this.d.store.listSummaries();
  }

  async listInfo(): Promise<VolumeInfo[]> {
    const recs = await this.d.store.listVolumes();
    return Promise.all(recs.map((r) => this.info(r)));
  }

  /**
   * Volumes whose recorded paths differ from what the current config would give a new volume (a
   * backend's `dir`, `imageDir` or `mountDir` changed since they were made). They keep working at their
   * recorded paths; doctor lists them so the operator knows where their data is.
   */
  async placementDrift(): Promise<{ volume: string; backend: string; field: string; recorded: string; config: string }[]> {
    const out: { volume: string; backend: string; field: string; recorded: string; config: string }[] = [];
    for (const rec of await this.d.store.listVolumes()) {
      if (rec.state === 'damaged' || !this.d.backends.has(rec.backend)) continue;
      const now = this.d.backends.get(rec.backend).place(rec.name);
      if (now.mountpoint !== rec.mountpoint) out.push({ volume: rec.name, backend: rec.backend, field: 'mountpoint', recorded: rec.mountpoint, config: now.mountpoint });
      for (const [k, v] of Object.entries(now.details)) {
        const r = rec.details[k];
        if (typeof r === 'string' && r !== v) out.push({ volume: rec.name, backend: rec.backend, field: k, recorded: r, config: v });
      }
    }
    return out;
  }

  /** Waits for operations in flight (graceful stop). */
  async drain(): Promise<void> { await this.lock.idle(); }

  private async ready(vname: string): Promise<VolumeRecord> {
    const rec = await this.d.store.getVolume(vname);
    if (!rec) throw new NotFoundError(`volume ${vname} does not exist`);
    if (rec.state === 'damaged') throw new BusyError(damagedMessage(rec));
    // A remove whose storage step failed (a server that did not answer) leaves the record `removing`:
    // nothing finishes it but another remove, so say that rather than "wait".
    if (rec.state === 'removing') throw new FailedPreconditionError(`volume ${vname} is being removed: an earlier remove did not finish (its storage did not answer); run docker volume rm ${vname} again to finish it`);
    if (rec.state !== 'ready') throw new BusyError(`volume ${vname} is ${rec.state}; retry when that has finished`);
    return rec;
  }

  private async info(rec: VolumeRecord): Promise<VolumeInfo> {
    const refs = await this.d.store.mounts(rec.name);
    const backend = this.d.backends.has(rec.backend) ? this.d.backends.get(rec.backend) : undefined;
    const mounts = refs.reduce((n, r) => n + r.count, 0);
    if (rec.state === 'damaged') {
      return {
        name: rec.name, backend: rec.backend, type: backend?.type ?? 'unknown', mountpoint: rec.mountpoint, createdAt: rec.createdAt,
        state: rec.state, spec: {}, mounts, mountIds: refs.map((r) => r.id),
        status: { backend: rec.backend, state: 'damaged', mounts, error: damagedMessage(rec) },
      };
    }
    return {
      name: rec.name, backend: rec.backend, type: backend?.type ?? 'unknown', mountpoint: rec.mountpoint,
      createdAt: rec.createdAt, state: rec.state, spec: rec.spec, mounts, mountIds: refs.map((r) => r.id),
      status: {
        backend: rec.backend, type: backend?.type ?? 'unknown (not configured)', state: rec.state, mounts,
        ...(backend ? backend.status(rec) : {}),
        ...(this.d.cluster ? { ...(rec.home ? { node: rec.home } : {}), ...(await this.attachmentStatus(rec.name)) } : {}),
      },
    };
  }

  /** Cluster mode: who holds the volume, for Status and inspect (node, mode, since, epoch). */
  private async attachmentStatus(volume: string): Promise<Record<string, unknown>> {
    const set = await this.d.store.getAttachments(volume);
    return { attachments: set.holders.map((h) => ({ node: h.node, mode: h.mode, since: h.since })), epoch: set.epoch };
  }

  /** One structured log line per mutating operation: op, volume, backend, node, ms, outcome. */
  private async op<T>(op: string, volume: string, backend: string | undefined, fn: () => Promise<T>): Promise<T> {
    const t0 = performance.now();
    try {
      const r = await fn();
      this.d.log.info({ op, volume, backend, node: this.d.node, ms: round(performance.now() - t0), outcome: 'ok' }, op);
      return r;
    } catch (e) {
      const err = asBallastError(e);
      this.d.log[err.code === 'Internal' ? 'error' : 'warn']({ op, volume, backend, node: this.d.node, ms: round(performance.now() - t0), outcome: err.code, err: err.message }, op);
      throw err;
    }
  }
}

/** The lock key of a snapshot name ("\0" never occurs in a volume name, so it cannot clash with one). */
function snapKey(name: string): string { return `\0snap ${name}`; }

/** The temporary snapshot a clone of a volume takes of its source. */
export function cloneSnapshotName(volume: string): string { return `_clone.${volume}`.slice(0, 255); }

/** `<volume>-<UTC time>`, e.g. db-20261202T101500Z (the volume name shortened to keep it within 255). */
function defaultSnapshotName(volume: string, now: Date): string {
  const t = now.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
  return `${volume.slice(0, 255 - t.length - 1)}-${t}`;
}

function damagedMessage(rec: VolumeRecord): string {
  return `the stored record of volume ${rec.name} is damaged (${String(rec.details.damage ?? 'unreadable')}); Ballast will not mount, format or delete it. Its data is untouched; see ballast doctor`;
}

function round(ms: number): number { return Math.round(ms * 100) / 100; }

/** Docker sends Opts as a map of strings, or null. Anything else is refused before it reaches a backend. */
function normalizeOptions(options: unknown): Record<string, string> & { backend?: string } {
  if (options === undefined || options === null) return {};
  if (typeof options !== 'object' || Array.isArray(options)) throw new InvalidArgumentError('options must be a map of names to strings');
  const out: Record<string, string> = Object.create(null);
  const entries = Object.entries(options as Record<string, unknown>);
  if (entries.length > MAX_OPTIONS) throw new InvalidArgumentError(`too many options (${entries.length}); at most ${MAX_OPTIONS}`);
  for (const [k, v] of entries) {
    if (!/^[a-zA-Z][a-zA-Z0-9_.-]{0,63}$/.test(k)) throw new InvalidArgumentError(`option name ${JSON.stringify(k.slice(0, 80))} is not valid`);
    out[k] = assertPlainString(typeof v === 'number' || typeof v === 'boolean' ? String(v) : v, `option ${k}`, 1024);
  }
  return { ...out };
}

export function stableJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(stableJson).join(',')}]`;
  if (v && typeof v === 'object') {
    return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${stableJson((v as Record<string, unknown>)[k])}`).join(',')}}`;
  }
  return JSON.stringify(v);
}

function describeSpec(spec: Readonly<Record<string, unknown>>): string {
  return Object.entries(spec)
    .filter(([, v]) => !(Array.isArray(v) && v.length === 0))
    .map(([k, v]) => `${k}=${k === 'size' && typeof v === 'number' ? formatSize(v) : k === 'mode' && typeof v === 'number' ? '0' + v.toString(8) : Array.isArray(v) ? v.join(',') : String(v)}`)
    .join(' ') || '(none)';
}

export { BallastError };
