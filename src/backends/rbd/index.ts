import { mkdir, rmdir } from 'node:fs/promises';
import { detailPath, mountpointOf, probeMountpoint, type Backend, type BackendContext, type BackendFactory, type HealthChecker, type HostSnapshot, type OptionDoc, type Placement, type ProvisionContext } from '../types.js';
import type { VolumeRecord } from '../../core/types.js';
import { BusyError, ConflictError, InternalError, InvalidArgumentError, UnavailableError } from '../../core/errors.js';
import { checkOptionKeys } from '../options.js';
import { ConfigReader } from '../config-values.js';
import { formatSize, parseSize } from '../../core/validate.js';
import { within } from '../../host/paths.js';
import { forceDetach, mountAlive, mountAndVerify, processesMentioning, unmountAndWait } from '../../host/fuse.js';
import { execBounded } from '../../host/fs-child.js';
import { FSTYPES, MIN_SIZE, type FsType, makeFilesystem, mountImage, probeSignature } from '../../host/blockdev.js';
import { MOUNT_OPTION_ALLOWLIST, parseFsMountOptions } from '../block/index.js';
import { CephClient, CEPH_CONFIG_KEYS } from '../ceph/client.js';

const OPTIONS: readonly OptionDoc[] = [
  { name: 'size', help: 'size of the RBD image, required unless existing= (e.g. 10G)' },
  { name: 'fstype', help: `filesystem: ${FSTYPES.join(', ')} (default ext4); formatted only when the image is blank` },
  { name: 'mountopts', help: `comma-separated mount options from: ${MOUNT_OPTION_ALLOWLIST.join(', ')}` },
  { name: 'existing', help: 'adopt this existing RBD image of the pool instead of creating one; Ballast never deletes it' },
];

interface RbdSpec { image?: string; size?: number; fstype: FsType; mountopts: string[]; existing: boolean }
interface RbdLock { id: string; locker: string; address: string }

/** How long the filesystem's own umount may take (it flushes through rbd-fuse) before rbd-fuse counts as hung. */
const FS_UMOUNT_MS = 8_000;

/**
 * Ceph RBD: each volume is an RBD image. This kernel has no rbd module, so an image is attached
 * through rbd-fuse (one FUSE daemon per volume, exposing the image as a file) and an autoclear loop
 * device; with a kernel rbd module `rbd map` would take their place. Formatted only when blank.
 * Exclusive: before attaching, Ballast takes RBD's advisory lock `ballast-<node>` on the image, so a
 * second host is refused read-write and told which node holds it. (Expiry and fencing of a dead
 * node's lock belong to cluster mode.)
 */
export class RbdBackend implements Backend, HealthChecker {
  readonly type = 'rbd';
  readonly shareable = false;
  readonly optionDocs = OPTIONS;
  private readonly ceph: CephClient;
  private readonly pool: string;
  private readonly defaultFstype: FsType;
  private readonly base: string;
  private readonly lockId: string;

  constructor(readonly name: string, config: Readonly<Record<string, unknown>>, private readonly ctx: BackendContext) {
    this.ceph = new CephClient(name, 'rbd', config, ctx.exec);
    const c = new ConfigReader(name, config);
    this.pool = c.str('pool', { def: 'rbd', re: /^[a-zA-Z0-9_.-]+$/, hint: 'a pool name' })!;
    this.defaultFstype = c.str('defaultFstype', { def: 'ext4', re: /^(ext4|xfs|btrfs)$/, hint: FSTYPES.join(', ') }) as FsType;
    this.base = within(ctx.root, 'backends', name);
    this.lockId = `ballast-${(ctx.node ?? 'node').replace(/[^a-zA-Z0-9_.-]/g, '_').slice(0, 64)}`;
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

  /** Attaches the image as a file through rbd-fuse; returns the file. */
  private async attach(vol: VolumeRecord): Promise<string> {
    const dir = this.fuseDirOf(vol);
    await this.detachIfDead(dir);
    if (!(await this.ctx.mounts.at(dir))) {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      try {
        await mountAndVerify(this.ctx.exec, this.ctx.mounts, ['rbd-fuse', ...this.ceph.identity(), '-p', this.pool, '-r', this.imageOf(vol), dir], dir, this.ceph.timeoutSec * 1000);
      } catch (e) {
        throw new UnavailableError(`${this.ceph.label}: could not attach image ${this.pool}/${this.imageOf(vol)} with rbd-fuse: ${(e as Error).message}`, { cause: e });
      }
    }
    return within(dir, this.imageOf(vol));
  }

  /**
   * Bounded (UNMOUNT_BOUNDS): a hung rbd-fuse is detached lazily and ended. A busy mount with no
   * rbd-fuse left is a dead client whose image a loop device still holds (see detachIfDead): detached
   * lazily too. Read from the mount table and /proc, never by a stat of the mount.
   */
  private async detach(vol: VolumeRecord): Promise<void> {
    const dir = this.fuseDirOf(vol);
    try {
      await unmountAndWait(this.ctx.exec, this.ctx.mounts, dir);
    } catch (e) {
      if (!/busy/i.test((e as Error).message) || (await processesMentioning(dir)).length > 0) throw e;
      this.ctx.log.warn({ mountpoint: dir }, 'rbd-fuse is gone; detaching its dead mount lazily');
      await forceDetach(this.ctx.exec, this.ctx.mounts, dir);
    }
  }

  /**
   * An rbd-fuse that died (killed, crashed) leaves a mount that cannot be unmounted while a loop device
   * still holds the image file through it (the filesystem stays mounted in the containers that were
   * using it), and that fails every operation with "Transport endpoint is not connected". Nothing can
   * reach the image through it any more, so it is detached lazily: the kernel frees it, and the old
   * loop device, when the last of those containers exits. A fresh rbd-fuse can then attach the image.
   */
  private async detachIfDead(dir: string): Promise<void> {
    if (!(await this.ctx.mounts.at(dir))) return;
    const h = await mountAlive(this.ctx.exec, dir);
    if (h.alive || !/not connected/i.test(h.reason ?? '')) return;
    this.ctx.log.warn({ mountpoint: dir, reason: h.reason }, 'rbd-fuse is gone; detaching its dead mount lazily');
    await forceDetach(this.ctx.exec, this.ctx.mounts, dir);
  }

  async provision(vol: VolumeRecord, pc?: ProvisionContext): Promise<Record<string, unknown>> {
    const spec = this.spec(vol);
    const image = this.imageOf(vol);
    const found = await this.info(image);
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
    await this.lock(vol);
    try {
      const file = await this.attach(vol);
      try {
        const sig = await probeSignature(this.ctx.exec, file);
        if (!sig) await makeFilesystem(this.ctx.exec, spec.fstype, file, vol.name);
        else if (sig.type !== spec.fstype) throw new InternalError(`${this.ceph.label}: image ${this.pool}/${image} holds ${sig.type ?? sig.ptType ?? 'data'}, not ${spec.fstype}; Ballast will not format over it. Use -o fstype=${sig.type ?? '...'}`);
      } finally { await this.detach(vol); }
    } finally { await this.unlock(vol); }
    return { pool: this.pool, image, createdByBallast: !spec.existing, formatted: true };
  }

  async deprovision(vol: VolumeRecord): Promise<void> {
    await this.unpublish(vol);
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

  /** Takes the advisory lock, or proves this node already holds it; refuses when another node does. */
  private async lock(vol: VolumeRecord): Promise<void> {
    const image = `${this.pool}/${this.imageOf(vol)}`;
    const r = await this.ceph.run('rbd', ['lock', 'add', image, this.lockId], [0, 16]);
    if (r.code === 0) return;
    const held = await this.locks(vol);
    if (held.some((l) => l.id === this.lockId)) return; // ours, from before a restart
    const who = held.map((l) => `${l.id.replace(/^ballast-/, 'node ')} (${l.locker} at ${l.address})`).join(', ') || 'another client';
    throw new BusyError(`volume ${vol.name} (rbd image ${image}) is attached read-write by ${who}; an RBD volume is not shareable. Stop its containers there first, or remove the stale lock with: rbd lock rm ${image} <id> <locker>`);
  }

  private async unlock(vol: VolumeRecord): Promise<void> {
    for (const l of (await this.locks(vol)).filter((x) => x.id === this.lockId)) {
      await this.ceph.run('rbd', ['lock', 'rm', `${this.pool}/${this.imageOf(vol)}`, l.id, l.locker], [0, 2]);
    }
  }

  async publish(vol: VolumeRecord): Promise<void> {
    const spec = this.spec(vol);
    const mp = mountpointOf(vol);
    // The mount table first: a mkdir of a mountpoint whose mount hangs would stat it and block a thread.
    const cur = await this.ctx.mounts.at(mp);
    if (cur) {
      if (cur.fstype !== spec.fstype) throw new InternalError(`${mp} is already mounted with ${cur.fstype}, not volume ${vol.name}'s ${spec.fstype}; unmount it first`);
      return;
    }
    await mkdir(mp, { recursive: true, mode: 0o755 });
    await this.lock(vol);
    try {
      const file = await this.attach(vol);
      const sig = await probeSignature(this.ctx.exec, file);
      if (!sig) throw new InternalError(`image ${this.pool}/${this.imageOf(vol)} of volume ${vol.name} has no filesystem signature although Ballast formatted it; refusing to format it again. Inspect it before use`);
      if (sig.type !== spec.fstype) throw new InternalError(`image ${this.pool}/${this.imageOf(vol)} of volume ${vol.name} holds ${sig.type ?? 'something else'}, not ${spec.fstype}; refusing to mount it`);
      await mountImage(this.ctx.exec, file, spec.fstype, mp, spec.mountopts);
    } catch (e) {
      await this.detach(vol).catch(() => undefined);
      await this.unlock(vol).catch(() => undefined);
      throw e;
    }
  }

  /**
   * Bounded, so an Unmount answers within dockerd's limits: the filesystem's umount may take
   * FS_UMOUNT_MS (it flushes through rbd-fuse). One that does not return by then means rbd-fuse is hung
   * (stopped, or its cluster away): the filesystem is detached lazily and rbd-fuse ended, which drops
   * the writes it could not pass on anyway, so the lock can go and the volume can be removed.
   */
  async unpublish(vol: VolumeRecord): Promise<void> {
    const mp = mountpointOf(vol);
    let hung = false;
    if (await this.ctx.mounts.at(mp)) {
      // -c: no canonicalization, which stats the mountpoint and hangs on a hung client.
      try { await execBounded(this.ctx.exec, ['umount', '-c', '--', mp], { timeoutMs: FS_UMOUNT_MS }); } catch (e) {
        const m = (e as Error).message;
        hung = /timed out/.test(m);
        // The filesystem of a dead rbd-fuse client cannot be unmounted cleanly; detach it lazily.
        if (!hung && !/not connected|Input\/output error|not mounted/i.test(m)) throw e;
        if (!/not mounted/i.test(m)) await forceDetach(this.ctx.exec, this.ctx.mounts, mp);
      }
    }
    if (hung) {
      this.ctx.log.warn({ volume: vol.name, mountpoint: mp }, `the filesystem did not unmount within ${FS_UMOUNT_MS} ms: rbd-fuse is hung; detached lazily, ending rbd-fuse`);
      await forceDetach(this.ctx.exec, this.ctx.mounts, this.fuseDirOf(vol));
    } else {
      await this.detach(vol);
    }
    await this.unlock(vol);
  }

  probe(vol: VolumeRecord, snap: HostSnapshot): 'mounted' | 'unmounted' {
    return probeMountpoint(snap, mountpointOf(vol));
  }

  async checkHealth(vol: VolumeRecord): Promise<{ healthy: boolean; reason?: string }> {
    const r = await mountAlive(this.ctx.exec, this.fuseDirOf(vol));
    return { healthy: r.alive, reason: r.reason };
  }

  status(vol: VolumeRecord): Record<string, unknown> {
    const s = this.spec(vol);
    return { pool: this.pool, image: this.imageOf(vol), fstype: s.fstype, ...(s.size ? { size: formatSize(s.size), sizeBytes: s.size } : {}), mountopts: s.mountopts.join(','), existing: s.existing, lock: this.lockId };
  }
}

export const rbdFactory: BackendFactory = {
  type: 'rbd',
  configKeys: [...CEPH_CONFIG_KEYS, 'pool', 'defaultFstype'],
  create: (instance, config, ctx) => new RbdBackend(instance, config, ctx),
};
