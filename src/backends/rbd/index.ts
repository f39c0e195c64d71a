import { rmdir } from 'node:fs/promises';
import { detailPath, mountpointOf, probeMountpoint, stagingPathOf, MULTI_NODE_SINGLE_WRITER, type AccessMode, type AttachInfo, type Attacher, type Backend, type BackendContext, type BackendFactory, type Fencer, type HealthChecker, type HostSnapshot, type OptionDoc, type Placement, type ProvisionContext, type StageOptions, type Expander, type Snapshotter } from '../types.js';
import type { SnapshotRecord, VolumeRecord } from '../../core/types.js';
import { BusyError, ConflictError, FailedPreconditionError, InternalError, InvalidArgumentError, UnavailableError } from '../../core/errors.js';
import { checkOptionKeys } from '../options.js';
import { ConfigReader } from '../config-values.js';
import { formatSize, parseSize } from '../../core/validate.js';
import { within } from '../../host/paths.js';
import { FSTYPES, MIN_SIZE, type FsType } from '../../host/blockdev.js';
import { deferredNote, ext4Bytes, formatIfBlank, growExt4IfSmaller, growExt4Offline, growMountedFilesystem, growOnlineOrDefer, type BlockFilesystem } from '../../host/filesystem.js';
import { MOUNT_OPTION_ALLOWLIST, cloneMountopts, parseFsMountOptions } from '../block/index.js';
import { CephClient, CEPH_CONFIG_KEYS } from '../ceph/client.js';
import { RbdFuse, type RbdTarget } from '../ceph/rbd-fuse.js';

export { learnedAddrs, rbdClientArgs } from '../ceph/rbd-fuse.js';

const OPTIONS: readonly OptionDoc[] = [
  { name: 'size', help: 'size of the RBD image, required unless existing= (e.g. 10G)' },
  { name: 'fstype', help: `filesystem: ${FSTYPES.join(', ')} (default ext4); formatted only when the image is blank` },
  { name: 'mountopts', help: `comma-separated mount options from: ${MOUNT_OPTION_ALLOWLIST.join(', ')}` },
  { name: 'existing', help: 'adopt this existing RBD image of the pool instead of creating one; Ballast never deletes it' },
];

interface RbdSpec { image?: string; size?: number; fstype: FsType; mountopts: string[]; existing: boolean }
interface RbdLock { id: string; locker: string; address: string }

/**
 * Ceph RBD: each volume is an RBD image. This kernel has no rbd module, so an image is attached
 * through rbd-fuse (one FUSE daemon per volume, exposing the image as a file) and an autoclear loop
 * device; with a kernel rbd module `rbd map` would take their place. Formatted at create, only when blank.
 * One read-write node, read-only extra nodes: attach (the Attacher, controller side) takes RBD's advisory
 * lock `ballast-<node>` on the image for a read-write node, so a second one is refused and told which
 * node holds it; stage on the node then attaches rbd-fuse and the loop device and mounts. The lock
 * alone keeps no live writer out (neither does librbd's exclusive lock): in cluster mode a takeover
 * first cuts the old node's rbd-fuse off at the OSDs (the Fencer: claim, fence, unstageFenced, with
 * OSD blocklist entries), and every rbd-fuse runs with settings under which an fsync it acknowledges
 * is on the OSDs (rbdClientArgs). Config: opTimeoutSec (default 10) and fenceExpirySec (default 3600).
 */
export class RbdBackend implements Backend, Attacher, HealthChecker, Fencer, Expander, Snapshotter {
  readonly type = 'rbd';
  readonly access = MULTI_NODE_SINGLE_WRITER;
  readonly optionDocs = OPTIONS;
  private readonly ceph: CephClient;
  private readonly pool: string;
  private readonly defaultFstype: FsType;
  private readonly base: string;
  /** This node's lock id (provision and deprovision take and drop it; Status shows it). */
  private readonly lockId: string;
  /** The node side of the images: rbd-fuse, loop device, filesystem (src/backends/ceph/rbd-fuse.ts). */
  private readonly fuse: RbdFuse;

  constructor(readonly name: string, config: Readonly<Record<string, unknown>>, private readonly ctx: BackendContext) {
    this.ceph = new CephClient(name, 'rbd', config, ctx.exec);
    const c = new ConfigReader(name, config);
    this.pool = c.str('pool', { def: 'rbd', re: /^[a-zA-Z0-9_.-]+$/, hint: 'a pool name' })!;
    this.defaultFstype = c.str('defaultFstype', { def: 'ext4', re: /^(ext4|xfs|btrfs)$/, hint: FSTYPES.join(', ') }) as FsType;
    this.base = within(ctx.root, 'backends', name);
    this.lockId = lockIdOf(ctx.node ?? 'node');
    this.fuse = rbdFuseOf(name, c, this.ceph, this.base, ctx);
  }

  parseOptions(opts: Readonly<Record<string, string>>): Record<string, unknown> {
    checkOptionKeys(this.name, opts, OPTIONS);
    const fstype = (opts.fstype ?? this.defaultFstype) as FsType;
    if (!FSTYPES.includes(fstype)) throw new InvalidArgumentError(`fstype ${JSON.stringify(opts.fstype)} is not supported; choose one of ${FSTYPES.join(', ')}`);
    const existing = opts.existing !== undefined;
    if (existing && !/^[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,254}$/.test(opts.existing!)) throw new InvalidArgumentError(`existing=${JSON.stringify(opts.existing!.slice(0, 80))} is not an RBD image name`);
    if (!existing && opts.size === undefined) throw new InvalidArgumentError(`backend ${this.name} needs a size, e.g. -o size=10G (or -o existing=IMAGE)`);
    const size = opts.size !== undefined ? parseSize(opts.size) : undefined;
    if (size !== undefined && size < MIN_SIZE[fstype]) throw new InvalidArgumentError(`size ${opts.size} is too small for ${fstype}; the minimum is ${formatSize(MIN_SIZE[fstype])}`);
    if (size !== undefined && size % (1024 * 1024) !== 0) throw new InvalidArgumentError(`size ${opts.size} must be a whole number of MiB for RBD`);
    const mountopts = parseFsMountOptions(opts.mountopts);
    return { ...(existing ? { image: opts.existing } : {}), ...(size !== undefined ? { size } : {}), fstype, mountopts, existing } satisfies RbdSpec;
  }

  place(name: string): Placement {
    return { mountpoint: within(this.base, 'mounts', name), details: { fuseDir: within(this.base, 'fuse', name) } };
  }
  /** Where rbd-fuse exposes the image (recorded at create; older records used the config's base). */
  private fuseDirOf(vol: VolumeRecord): string { return detailPath(vol, 'fuseDir', () => within(this.base, 'fuse', vol.name)); }
  private imageOf(vol: VolumeRecord): string { return (vol.spec.image as string | undefined) ?? vol.name; }
  private spec(vol: VolumeRecord): RbdSpec { return vol.spec as unknown as RbdSpec; }

  private async info(image: string): Promise<{ size: number; features?: string[] } | undefined> {
    const r = await this.ceph.run('rbd', ['info', `${this.pool}/${image}`, '--format', 'json'], [0, 2]);
    return r.code === 0 ? JSON.parse(r.stdout) as { size: number; features?: string[] } : undefined;
  }

  /** The image as this node reaches it. */
  private target(vol: VolumeRecord): RbdTarget {
    return { volume: vol.name, pool: this.pool, image: this.imageOf(vol), fuseDir: this.fuseDirOf(vol) };
  }

  async provision(vol: VolumeRecord, pc?: ProvisionContext): Promise<Record<string, unknown>> {
    const spec = this.spec(vol);
    const image = this.imageOf(vol);
    const found = await this.info(image);
    if (pc?.source) return this.provisionClone(vol, image, found !== undefined, pc.source);
    if (spec.existing && !found) throw new InvalidArgumentError(`${this.ceph.label}: existing=${image} is not an image of pool ${this.pool}`);
    if (!spec.existing) {
      if (found && !pc?.resumed) throw new ConflictError(`${this.ceph.label}: image ${this.pool}/${image} already exists; to use it, create the volume with -o existing=${image} (Ballast then never deletes it)`);
      // layering only: the exclusive-lock feature takes the same RADOS lock as `rbd lock add`, and a
      // client that cannot get it waits forever.
      if (!found) await this.ceph.run('rbd', ['create', `${this.pool}/${image}`, '--size', `${spec.size! / 1048576}M`, '--image-feature', 'layering']);
    }
    if (found?.features?.includes('exclusive-lock')) {
      throw new InvalidArgumentError(`${this.ceph.label}: image ${this.pool}/${image} has the exclusive-lock feature, which conflicts with the advisory lock Ballast uses to keep a second host out; disable it first: rbd feature disable ${this.pool}/${image} fast-diff object-map exclusive-lock`);
    }
    // Format only a blank image, under our own lock so no other host attaches it meanwhile.
    await this.lock(vol, this.lockId);
    try {
      const file = await this.fuse.attach(this.target(vol));
      try {
        await formatIfBlank(this.ctx.exec, this.filesystem(vol, file), { knownBlank: false, label: vol.name, hint: (t) => `Use -o fstype=${t ?? '...'}` });
      } finally { await this.fuse.detach(this.target(vol)); }
    } finally { await this.unlock(vol, this.lockId); }
    return { pool: this.pool, image, createdByBallast: !spec.existing, formatted: true };
  }

  // Snapshots: RBD's own (`rbd snap create`), taken while the service holds the mounted filesystem
  // frozen (fsfreeze flushes it through rbd-fuse to the OSDs first). A clone is an RBD copy-on-write
  // child of the (protected) snapshot: instant, whatever the size; removing the snapshot flattens its
  // clones first (each then holds all its data, and no longer depends on it).
  readonly freezeForSnapshot = true;
  snapshotMethod(): string { return 'rbd snapshot (clones are copy-on-write children)'; }
  placeSnapshot(name: string, vol: VolumeRecord): Record<string, string> { return { pool: this.pool, image: this.imageOf(vol), snap: `ballast.${name}` }; }
  private snapSpecOf(snap: SnapshotRecord): string {
    const d = snap.details as { pool?: unknown; image?: unknown; snap?: unknown };
    const ok = (v: unknown) => typeof v === 'string' && /^[a-zA-Z0-9_.-]+$/.test(v);
    if (!ok(d.pool) || !ok(d.image) || !ok(d.snap)) throw new InternalError(`the record of snapshot ${snap.name} does not name its RBD snapshot; it is not acted on`);
    return `${String(d.pool)}/${String(d.image)}@${String(d.snap)}`;
  }

  private async snapExists(spec: string): Promise<boolean> {
    const [img, name] = spec.split('@');
    const r = await this.ceph.run('rbd', ['snap', 'ls', img, '--format', 'json'], [0, 2]);
    if (r.code === 2) return false;
    return (JSON.parse(r.stdout) as { name: string }[]).some((x) => x.name === name);
  }

  async createSnapshot(_vol: VolumeRecord, snap: SnapshotRecord): Promise<Record<string, unknown>> {
    const spec = this.snapSpecOf(snap);
    if (!(await this.snapExists(spec))) await this.ceph.run('rbd', ['snap', 'create', '--no-progress', spec]);
    return { method: 'rbd snapshot' };
  }

  async deleteSnapshot(snap: SnapshotRecord, clones: readonly VolumeRecord[]): Promise<string | undefined> {
    const spec = this.snapSpecOf(snap);
    if (!(await this.snapExists(spec))) return undefined;
    const flattened: string[] = [];
    const children = await this.ceph.run('rbd', ['children', spec, '--format', 'json'], [0, 2]);
    const kids = children.code === 0 ? (JSON.parse(children.stdout) as { pool: string; image: string }[]) : [];
    const ours = new Map(clones.map((c) => [`${this.pool}/${this.imageOf(c)}`, c.name]));
    const foreign = kids.filter((k) => !ours.has(`${k.pool}/${k.image}`));
    if (foreign.length > 0) {
      throw new FailedPreconditionError(`snapshot ${snap.name} (${spec}) has clones Ballast did not make: ${foreign.map((k) => `${k.pool}/${k.image}`).join(', ')}; flatten them (rbd flatten) or remove them first`);
    }
    for (const k of kids) {
      await this.ceph.run('rbd', ['flatten', '--no-progress', `${k.pool}/${k.image}`], [0]);
      flattened.push(ours.get(`${k.pool}/${k.image}`) ?? k.image);
    }
    await this.ceph.run('rbd', ['snap', 'unprotect', spec], [0, 22]); // 22: not protected
    await this.ceph.run('rbd', ['snap', 'rm', '--no-progress', spec], [0, 2]);
    return flattened.length ? `snapshot ${snap.name} removed; its clone${flattened.length > 1 ? 's' : ''} ${flattened.join(', ')} ${flattened.length > 1 ? 'were' : 'was'} flattened first (${flattened.length > 1 ? 'they hold' : 'it holds'} all of ${flattened.length > 1 ? 'their' : 'its'} data now, independent of the snapshot)` : undefined;
  }

  cloneSpec(sourceSpec: Readonly<Record<string, unknown>>): Record<string, unknown> {
    const { image: _image, ...rest } = sourceSpec as Record<string, unknown>;
    return { ...rest, existing: false };
  }

  /** A clone: an RBD child of the protected snapshot (layering only, like every image Ballast makes). Its filesystem came with it. */
  private async provisionClone(vol: VolumeRecord, image: string, found: boolean, snap: SnapshotRecord): Promise<Record<string, unknown>> {
    const spec = this.snapSpecOf(snap);
    if (!found) {
      if (!(await this.snapExists(spec))) throw new InternalError(`the RBD snapshot ${spec} of snapshot ${snap.name} is missing, so volume ${vol.name} cannot be cloned from it; nothing was made`);
      await this.ceph.run('rbd', ['snap', 'protect', spec], [0, 16]); // 16: protected already
      await this.ceph.run('rbd', ['clone', spec, `${this.pool}/${image}`, '--image-feature', 'layering']);
    }
    return { pool: this.pool, image, createdByBallast: true, formatted: true, clonedFrom: snap.name, ...(this.spec(vol).fstype === 'xfs' ? { nouuid: true } : {}) };
  }

  /**
   * Grows the image (`rbd resize`, which never shrinks without --allow-shrink), then its filesystem:
   * staged here, online through rbd-fuse's file and the loop device (`losetup -c`, then resize2fs,
   * xfs_growfs or btrfs resize); staged nowhere, ext4 offline on the image attached with rbd-fuse, xfs
   * and btrfs mounted at the volume's mountpoint for the grow (under this node's lock) and unmounted.
   */
  async expand(vol: VolumeRecord, size: number, stagingPath: string | undefined): Promise<{ spec: Record<string, unknown>; details?: Record<string, unknown>; note: string }> {
    const spec = this.spec(vol);
    const image = `${this.pool}/${this.imageOf(vol)}`;
    if (size % 1048576 !== 0) throw new InvalidArgumentError(`size ${formatSize(size)} must be a whole number of MiB for RBD`);
    await this.ceph.run('rbd', ['resize', '--no-progress', image, '--size', `${size / 1048576}M`]);
    const grew = `volume ${vol.name} (rbd image ${image}) grew from ${spec.size ? formatSize(spec.size) : 'its size'} to ${formatSize(size)}`;
    const staged = stagingPath ? await this.ctx.mounts.at(stagingPathOf(stagingPath)) : undefined;
    if (staged) {
      await this.fuse.waitForSize(this.target(vol), size);
      const { deferred } = await growOnlineOrDefer(this.ctx.exec, spec.fstype, staged.source, staged.mountpoint);
      if (deferred) return { spec: { size }, details: { growPending: true }, note: deferredNote(grew, deferred) };
      return { spec: { size }, note: `${grew}; its ${spec.fstype} filesystem grew online, mounted at ${staged.mountpoint}` };
    }
    // On one host under this node's lock (cluster mode: the service attached it here in etcd first).
    if (!this.ctx.cluster) await this.lock(vol, this.lockId);
    try {
      if (spec.fstype === 'ext4') {
        const file = await this.fuse.attach(this.target(vol));
        try {
          if (((await ext4Bytes(file)) ?? 0) + MIN_SIZE.ext4 < size) await growExt4Offline(this.ctx.exec, file);
        } finally { await this.fuse.detach(this.target(vol)); }
        return { spec: { size }, note: `${grew}; its ext4 filesystem was grown offline (e2fsck -f -p, resize2fs)` };
      }
      const mp = mountpointOf(vol);
      await this.stage(vol, mp, { attachment: { attachmentId: this.lockId } });
      try {
        const m = await this.ctx.mounts.at(mp);
        if (!m) throw new InternalError(`volume ${vol.name} could not be mounted at ${mp} to grow its filesystem`);
        await growMountedFilesystem(this.ctx.exec, spec.fstype, m.source, mp);
      } finally { await this.unstage(vol, mp); }
      return { spec: { size }, note: `${grew}; its ${spec.fstype} filesystem was grown (mounted for the grow, unmounted again)` };
    } finally { if (!this.ctx.cluster) await this.unlock(vol, this.lockId); }
  }

  async deprovision(vol: VolumeRecord): Promise<void> {
    await this.unstage(vol, mountpointOf(vol));
    await this.unlock(vol, this.lockId);
    // Local directories, once nothing is mounted there (an rmdir of a hung mount would hang).
    for (const d of [mountpointOf(vol), this.fuseDirOf(vol)]) if (!(await this.ctx.mounts.at(d))) await rmdir(d).catch(() => undefined);
    if (this.spec(vol).existing) return;
    const r = await this.ceph.run('rbd', ['rm', '--no-progress', `${this.pool}/${this.imageOf(vol)}`], [0, 2]);
    if (r.code === 2) this.ctx.log.warn({ volume: vol.name }, 'rbd image was already gone');
  }

  private async locks(vol: VolumeRecord): Promise<RbdLock[]> {
    const r = await this.ceph.run('rbd', ['lock', 'ls', `${this.pool}/${this.imageOf(vol)}`, '--format', 'json'], [0, 2]);
    return r.code === 2 ? [] : JSON.parse(r.stdout) as RbdLock[]; // 2: the image is gone, and any lock with it
  }

  /** Takes the advisory lock `id`, or proves it is held already; refuses when another node's is. */
  private async lock(vol: VolumeRecord, id: string): Promise<void> {
    const image = `${this.pool}/${this.imageOf(vol)}`;
    const r = await this.ceph.run('rbd', ['lock', 'add', image, id], [0, 16]);
    if (r.code === 0) return;
    const held = await this.locks(vol);
    if (held.some((l) => l.id === id)) return; // ours, from before a restart
    const who = held.map((l) => `${l.id.replace(/^ballast-/, 'node ')} (${l.locker} at ${l.address})`).join(', ') || 'another client';
    throw new BusyError(`volume ${vol.name} (rbd image ${image}) is attached read-write by ${who}; an RBD volume is not shareable. Stop its containers there first, or remove the stale lock with: rbd lock rm ${image} <id> <locker>`);
  }

  private async unlock(vol: VolumeRecord, id: string): Promise<void> {
    for (const l of (await this.locks(vol)).filter((x) => x.id === id)) {
      await this.ceph.run('rbd', ['lock', 'rm', `${this.pool}/${this.imageOf(vol)}`, l.id, l.locker], [0, 2]);
    }
  }

  /**
   * Controller side: a read-write node takes the advisory lock `ballast-<node>` (refused, naming the
   * holder, when another node holds one); a read-only node takes none. Idempotent.
   */
  async attach(vol: VolumeRecord, node: string, mode: AccessMode = 'rw'): Promise<AttachInfo> {
    const connection = { pool: this.pool, image: this.imageOf(vol) };
    if (mode === 'ro') return { connection: { ...connection, mode: 'ro' } };
    const id = lockIdOf(node);
    // Cluster mode: the volume's attachments in etcd (compare-and-swap, epochs) keep a second writer node
    // out, and a dead one is cut off by the fence; the advisory lock would only add two Ceph round
    // trips to every handover (measured: about half of a drain's extra time over Docker's local driver).
    if (!this.ctx.cluster) await this.lock(vol, id);
    return { attachmentId: id, connection: { ...connection, mode: 'rw' } };
  }

  /** Releases the node's lock (none in cluster mode); none held is success. */
  async detach(vol: VolumeRecord, node: string): Promise<void> {
    if (!this.ctx.cluster) await this.unlock(vol, lockIdOf(node));
  }

  private filesystem(vol: VolumeRecord, file: string): BlockFilesystem {
    return { source: file, loop: true, fstype: this.spec(vol).fstype, what: `image ${this.pool}/${this.imageOf(vol)}`, volume: vol.name };
  }

  /**
   * Node side: attaches the image with rbd-fuse and a loop device and mounts it at the staging path;
   * never formats (that happened at create). Read-write needs the attachment (the node's lock) from
   * attach; read-only mounts without replaying the journal.
   */
  async stage(vol: VolumeRecord, stagingPath: string, opts: StageOptions = {}): Promise<void> {
    const spec = this.spec(vol);
    await this.fuse.stage(this.target(vol), stagingPathOf(stagingPath), {
      fstype: spec.fstype, mountopts: cloneMountopts(vol, spec.mountopts), readOnly: opts.readOnly, mayFormat: false,
      // An expand whose ext4 could not grow online: grown now, before the mount, if it still is smaller.
      afterAttach: vol.details.growPending && spec.fstype === 'ext4' && !opts.readOnly && spec.size ? async (file) => { await growExt4IfSmaller(this.ctx.exec, file, spec.size!); } : undefined,
      beforeAttach: async () => {
        if (!opts.readOnly && !opts.attachment?.attachmentId) {
          throw new InternalError(`volume ${vol.name} (rbd image ${this.pool}/${this.imageOf(vol)}) must be attached to this node (its RBD lock taken) before it is staged read-write`);
        }
      },
    });
  }

  /** Bounded (RbdFuse.unstage): a hung rbd-fuse is detached lazily and ended, so the lock can go and the volume can be removed. */
  async unstage(vol: VolumeRecord, stagingPath: string): Promise<void> {
    await this.fuse.unstage(this.target(vol), stagingPathOf(stagingPath));
  }

  /** This node's rbd-fuse client of the image (RbdFuse.claim). */
  async claim(vol: VolumeRecord, stagingPath: string): Promise<Readonly<Record<string, string>> | undefined> {
    return this.fuse.claim(this.target(vol), stagingPathOf(stagingPath));
  }

  /**
   * Cuts `holder` off the image at the OSDs (RbdFuse.blocklist: its claimed clients and every watcher
   * no node in `keep` claimed), then its advisory lock goes (the lock ballast-<node>, see lockIdOf), so
   * the new node can attach. Idempotent.
   */
  async fence(vol: VolumeRecord, holder: { readonly node: string; readonly claim?: Readonly<Record<string, string>> }, keep: readonly { readonly node: string; readonly claim?: Readonly<Record<string, string>> }[]): Promise<string> {
    const image = `${this.pool}/${this.imageOf(vol)}`;
    const what = `volume ${vol.name} (rbd image ${image})`;
    const fail = (step: string, e: unknown) => new UnavailableError(`could not fence node ${holder.node} off ${what}: ${step}: ${(e as Error).message}; run the operation again once the cluster answers`, { cause: e });
    const targets = await this.fuse.blocklist(this.target(vol), holder.claim, keep.map((k) => k.claim), fail);
    const lock = lockIdOf(holder.node);
    try { await this.unlock(vol, lock); } catch (e) { throw fail(`its lock ${lock} could not be removed`, e); }
    return `${what}: node ${holder.node} is cut off at the OSDs (${targets.length ? `blocklisted ${targets.join(', ')} for ${this.fuse.fenceExpirySec} s` : 'it had no client of the image'}); its lock ${lock} is removed`;
  }

  /** On a node that was fenced: rbd-fuse killed, everything detached lazily, without a flush (RbdFuse.unstageFenced). */
  async unstageFenced(vol: VolumeRecord, stagingPath: string): Promise<void> {
    await this.fuse.unstageFenced(this.target(vol), stagingPathOf(stagingPath));
  }

  probe(_vol: VolumeRecord, stagingPath: string, snap: HostSnapshot): 'mounted' | 'unmounted' {
    return probeMountpoint(snap, stagingPath);
  }

  /** rbd-fuse's health (its mount under fuse/), whatever the staging path. */
  async checkHealth(vol: VolumeRecord, _stagingPath: string): Promise<{ healthy: boolean; reason?: string }> {
    return this.fuse.health(this.target(vol));
  }

  status(vol: VolumeRecord): Record<string, unknown> {
    const s = this.spec(vol);
    return { pool: this.pool, image: this.imageOf(vol), fstype: s.fstype, ...(s.size ? { size: formatSize(s.size), sizeBytes: s.size } : {}), mountopts: s.mountopts.join(','), existing: s.existing, lock: this.lockId };
  }
}

/**
 * The node side of a Ceph-backed backend's images, from its config: opTimeoutSec (default 10, at most the
 * client's timeoutSec: rbd-fuse must give up on the cluster before Ballast gives up on rbd-fuse) and
 * fenceExpirySec (default 3600).
 */
export function rbdFuseOf(name: string, c: ConfigReader, ceph: CephClient, base: string, ctx: BackendContext): RbdFuse {
  const opTimeoutSec = c.int('opTimeoutSec', 10, 5, 60);
  if (opTimeoutSec > ceph.timeoutSec) throw new InvalidArgumentError(`backend ${name}: opTimeoutSec (${opTimeoutSec}) may not exceed timeoutSec (${ceph.timeoutSec}): rbd-fuse must give up on the cluster before Ballast gives up on rbd-fuse`);
  return new RbdFuse(ctx, ceph, base, opTimeoutSec, c.int('fenceExpirySec', 3600, 300, 30 * 86400));
}

/** The advisory lock id of a node: `ballast-<node>`. */
export function lockIdOf(node: string): string {
  return `ballast-${node.replace(/[^a-zA-Z0-9_.-]/g, '_').slice(0, 64)}`;
}

export const rbdFactory: BackendFactory = {
  type: 'rbd',
  configKeys: [...CEPH_CONFIG_KEYS, 'pool', 'defaultFstype', 'opTimeoutSec', 'fenceExpirySec'],
  create: (instance, config, ctx) => new RbdBackend(instance, config, ctx),
};
