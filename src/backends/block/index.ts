import { statSync, statfsSync } from 'node:fs';
import { mkdir, open, readdir, rm, rmdir, stat, statfs } from 'node:fs/promises';
import { dirname, basename } from 'node:path';
import { detailPath, mountpointOf, probeMountpoint, stagingPathOf, MULTI_NODE_ONE_AT_A_TIME, SINGLE_NODE_WRITER, type AccessModes, type Backend, type BackendContext, type BackendFactory, type HostSnapshot, type OptionDoc, type Orphan, type OrphanFinder, type Placement, type SpaceGate, type StageOptions, type ThinSpace, type Expander, type ProvisionContext, type Snapshotter, type SnapshotReader } from '../types.js';
import type { SnapshotRecord, VolumeRecord } from '../../core/types.js';
import { copyFileAtomic, type CopyMethod } from '../../host/copy.js';
import { FailedPreconditionError, InternalError, InvalidArgumentError, ResourceExhaustedError } from '../../core/errors.js';
import { formatSize, parseSize } from '../../core/validate.js';
import { checkOptionKeys } from '../options.js';
import { parseMountOptions } from '../config-values.js';
import { recordedPath, within } from '../../host/paths.js';
import { deferredNote, formatIfBlank, growExt4IfSmaller, growExt4Offline, growMountedFilesystem, growOnlineOrDefer, stageBlockFilesystem, type BlockFilesystem, type StageBlock } from '../../host/filesystem.js';
import {
  FSTYPES, MIN_SIZE, type FsType, allocateFile, detachLoop, freezeFs, loopDevicesOf, probeSignature, thawFs, unmount,
} from '../../host/blockdev.js';
import { ExecError } from '../../host/exec.js';

/** Mount options a user may ask for; anything else (suid, dev, context=, loop=...) is refused. */
export const MOUNT_OPTION_ALLOWLIST = [
  'noatime', 'nodiratime', 'relatime', 'strictatime', 'lazytime', 'nodev', 'nosuid', 'noexec', 'sync', 'dirsync', 'discard',
] as const;

const ALLOWED: Readonly<Record<string, true>> = Object.fromEntries(MOUNT_OPTION_ALLOWLIST.map((o) => [o, true]));

/** The allowlisted mount options of a filesystem on an image (block, rbd), deduplicated and sorted so equal requests compare equal. */
export function parseFsMountOptions(value: string | undefined): string[] {
  return parseMountOptions(value, ALLOWED).sort();
}

const OPTIONS: readonly OptionDoc[] = [
  { name: 'size', help: 'size of the volume, required (e.g. 512M, 10G, 10GiB; binary units)' },
  { name: 'fstype', help: `filesystem: ${FSTYPES.join(', ')} (default ext4)` },
  { name: 'mountopts', help: `comma-separated mount options from: ${MOUNT_OPTION_ALLOWLIST.join(', ')}` },
  { name: 'provisioning', help: 'thick (default: the image is fully allocated at create, so a full host never fails a write inside it) or thin (a sparse image: accounted against the free space and watched)' },
];

export const PROVISIONING = ['thick', 'thin'] as const;
export type Provisioning = (typeof PROVISIONING)[number];

/**
 * The normalized spec. `provisioning` is there only when the user named it: a spec without it means "the
 * default of the version that created the volume", which the record's details say (`details.provisioning`,
 * written by provision). Records made before provisioning existed have neither and are sparse (thin), and
 * because their spec has no new key, an idempotent re-create with the same options still compares equal.
 */
interface BlockSpec { size: number; fstype: FsType; mountopts: string[]; provisioning?: Provisioning }

/** How a volume's image is provisioned, from its record. */
export function provisioningOf(vol: VolumeRecord): Provisioning {
  const p = (vol.spec as Partial<BlockSpec>).provisioning;
  if (p === 'thick' || p === 'thin') return p;
  const d = vol.details.provisioning;
  if (d === 'thick' || d === 'thin') return d;
  // No key anywhere: a record from before provisioning existed (a sparse image), unless this version is
  // creating it right now (provision, also when resumed after a crash, makes it thick and records that).
  return vol.state === 'creating' ? 'thick' : 'thin';
}

/** A clone's mount options: an xfs clone also gets nouuid (details.nouuid; see provisionClone). */
export function cloneMountopts(vol: VolumeRecord, mountopts: readonly string[]): string[] {
  return vol.details.nouuid === true ? [...mountopts, 'nouuid'] : [...mountopts];
}

/** Bytes for a sentence: "89.2MiB". */
export function human(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = bytes; let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${i === 0 ? v : v.toFixed(1)}${units[i]}`;
}

/**
 * An image file per volume, formatted at create only when `blkid -p` finds no signature, staged once per
 * host through an autoclear loop device (src/host/filesystem.ts). One node only (the image is on this
 * host's disk, and one kernel owns the filesystem); containers on this host share the one mount.
 *
 * Thick (default): the image is allocated in full at create (fallocate), so once create succeeded a full
 * host filesystem cannot fail a write inside the volume. Thin: a sparse image; creates are accounted
 * (the sizes promised to thin images minus what they use may not exceed the free space times
 * `thinOvercommitRatio`), and the space watcher freezes mounted thin volumes before the host is full.
 */
export class BlockBackend implements Backend, OrphanFinder, ThinSpace, Expander, Snapshotter, SnapshotReader {
  readonly type = 'block';
  /** Node-local by default; `shared: true` when imageDir lies on storage every node reaches. */
  readonly access: AccessModes;
  readonly optionDocs = OPTIONS;
  private readonly imageDir: string;
  private readonly mountDir: string;
  private readonly defaultFstype: FsType;
  private readonly overcommit: number;
  private gate: SpaceGate | undefined;

  constructor(readonly name: string, config: Readonly<Record<string, unknown>>, private readonly ctx: BackendContext) {
    if (config.shared !== undefined && typeof config.shared !== 'boolean') throw new InvalidArgumentError(`backend ${name}: shared must be true or false (true when imageDir lies on storage every node of the cluster reaches)`);
    this.access = config.shared ? MULTI_NODE_ONE_AT_A_TIME : SINGLE_NODE_WRITER;
    for (const k of ['imageDir', 'mountDir'] as const) {
      const v = config[k];
      if (v !== undefined && (typeof v !== 'string' || !v.startsWith('/'))) throw new InvalidArgumentError(`backend ${name}: ${k} must be an absolute path`);
    }
    const fs = config.defaultFstype ?? 'ext4';
    if (!FSTYPES.includes(fs as FsType)) throw new InvalidArgumentError(`backend ${name}: defaultFstype must be one of ${FSTYPES.join(', ')}`);
    this.defaultFstype = fs as FsType;
    const oc = config.thinOvercommitRatio ?? 1;
    if (typeof oc !== 'number' || !(oc > 0 && oc <= 100)) throw new InvalidArgumentError(`backend ${name}: thinOvercommitRatio must be a number above 0 and at most 100 (1 means no overcommit)`);
    this.overcommit = oc;
    this.imageDir = (config.imageDir as string | undefined) ?? within(ctx.root, 'backends', name, 'images');
    this.mountDir = (config.mountDir as string | undefined) ?? within(ctx.root, 'backends', name, 'mounts');
  }

  parseOptions(opts: Readonly<Record<string, string>>): Record<string, unknown> {
    checkOptionKeys(this.name, opts, OPTIONS);
    if (opts.size === undefined) throw new InvalidArgumentError(`backend ${this.name} needs a size, e.g. -o size=10G`);
    const size = parseSize(opts.size);
    const fstype = (opts.fstype ?? this.defaultFstype) as FsType;
    if (!FSTYPES.includes(fstype)) throw new InvalidArgumentError(`fstype ${JSON.stringify(opts.fstype)} is not supported; choose one of ${FSTYPES.join(', ')}`);
    if (size < MIN_SIZE[fstype]) throw new InvalidArgumentError(`size ${opts.size} is too small for ${fstype}; the minimum is ${formatSize(MIN_SIZE[fstype])}`);
    const prov = opts.provisioning;
    if (prov !== undefined && !PROVISIONING.includes(prov as Provisioning)) throw new InvalidArgumentError(`provisioning ${JSON.stringify(prov)} is not supported; choose thick or thin`);
    const mountopts = parseFsMountOptions(opts.mountopts);
    if (mountopts.includes('discard') && prov !== 'thin') {
      throw new InvalidArgumentError('mount option discard punches holes into the image when files are deleted, which would turn a thick volume thin again; use -o provisioning=thin with discard, or drop discard');
    }
    return { size, fstype, mountopts, ...(prov ? { provisioning: prov as Provisioning } : {}) } satisfies BlockSpec;
  }

  /**
   * Thick: the image must fit in the free space, and what is left must still cover the thin promises.
   * Thin: the sizes promised to thin images on this filesystem minus what they already use, plus this
   * one, may not exceed the free space times the overcommit ratio. Refusals give the figures.
   */
  async checkCreate(spec: Readonly<Record<string, unknown>>, others: readonly VolumeRecord[] = []): Promise<void> {
    const { size, provisioning } = spec as unknown as BlockSpec;
    const mode = provisioning ?? 'thick';
    let dir = this.imageDir;
    while (!(await stat(dir).catch(() => undefined))) dir = dirname(dir);
    const [s, ds] = await Promise.all([statfs(dir), stat(dir)]);
    const free = s.bavail * s.bsize;
    const t = await this.thinPromises(others, ds.dev);
    const ratio = this.overcommit;
    const where = `the filesystem of ${this.imageDir}`;
    const thinText = `${t.count} thin volume${t.count === 1 ? '' : 's'} there ${t.count === 1 ? 'is' : 'are'} promised ${human(t.outstanding)} more than ${t.count === 1 ? 'it uses' : 'they use'}`;
    if (mode === 'thick') {
      if (size > free) {
        throw new ResourceExhaustedError(`size ${human(size)} is more than the ${human(free)} free in ${this.imageDir}: a thick block volume is allocated in full at create. Free space on that filesystem, ask for less, or use -o provisioning=thin`);
      }
      if (t.outstanding > (free - size) * ratio) {
        throw new ResourceExhaustedError(`a thick block volume of ${human(size)} would leave ${human(free - size)} free on ${where}, but ${thinText} (overcommit ratio ${ratio} allows ${human(Math.max(0, (free - size) * ratio))}); free space there, or shrink or remove thin volumes`);
      }
      return;
    }
    if (t.outstanding + size > free * ratio) {
      throw new ResourceExhaustedError(`a thin block volume of ${human(size)} would overcommit ${where}: ${thinText}; with this one that is ${human(t.outstanding + size)}, more than the ${human(free)} free there times the overcommit ratio ${ratio} (${human(free * ratio)}). Free space, remove thin volumes, or raise thinOvercommitRatio of backend ${this.name}`);
    }
  }

  /** What thin images on the filesystem `dev` are promised beyond what they already use (st_blocks). */
  private async thinPromises(others: readonly VolumeRecord[], dev: number): Promise<{ count: number; outstanding: number }> {
    let count = 0; let outstanding = 0;
    for (const r of others) {
      if (r.state === 'damaged' || provisioningOf(r) !== 'thin') continue;
      let img: string;
      try { img = this.imageOf(r); } catch { continue; }
      const st = await stat(img).catch(() => undefined);
      const d = st?.dev ?? (await stat(dirname(img)).catch(() => undefined))?.dev;
      if (d !== dev) continue;
      const promised = (r.spec as unknown as BlockSpec).size;
      count++;
      outstanding += Math.max(0, promised - (st ? st.blocks * 512 : 0));
    }
    return { count, outstanding };
  }

  place(name: string): Placement {
    return { mountpoint: within(this.mountDir, name), details: { image: within(this.imageDir, `${name}.img`) } };
  }
  /** The volume's image file, from its record (see Placement). */
  private imageOf(vol: VolumeRecord): string { return detailPath(vol, 'image', () => within(this.imageDir, `${vol.name}.img`)); }

  async provision(vol: VolumeRecord, pc?: ProvisionContext): Promise<Record<string, unknown>> {
    const spec = vol.spec as unknown as BlockSpec;
    const image = this.imageOf(vol);
    await mkdir(dirname(image), { recursive: true, mode: 0o700 });
    const mode = spec.provisioning ?? 'thick';
    if (pc?.source) return this.provisionClone(vol, image, mode, pc.source);
    let adopted = false;
    try {
      const fh = await open(image, 'wx', 0o600);
      try { if (mode === 'thin') await fh.truncate(spec.size); } finally { await fh.close(); }
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      adopted = true; // a retry after a crash, or an image left behind: never truncate or format what is there
    }
    // An adopted image of length 0 is one a crash interrupted right after its O_EXCL create: blank, ours.
    const empty = adopted && (await stat(image)).size === 0;
    if (empty && mode === 'thin') await open(image, 'r+').then(async (fh) => { try { await fh.truncate(spec.size); } finally { await fh.close(); } });
    if (mode === 'thick') {
      try {
        // Allocating never changes data; on an adopted image it keeps the length (fills its holes only).
        await allocateFile(this.ctx.exec, image, spec.size, adopted && !empty);
      } catch (e) {
        if (!adopted) await rm(image, { force: true }); // only the image this call made
        throw await this.allocationError(vol, image, e, adopted);
      }
    }
    this.ctx.fault?.('block.image-created');
    // An image this call created (O_EXCL) is blank by construction; one that was there is probed first.
    let made: 'formatted' | 'adopted';
    try {
      made = await formatIfBlank(this.ctx.exec, this.filesystem(vol, image), {
        knownBlank: !adopted, label: vol.name,
        hint: (t) => `Move it away or create the volume with -o fstype=${t ?? '...'}`,
      });
      // mke2fs zeroes ranges with FALLOC_FL_PUNCH_HOLE where ZERO_RANGE is missing (tmpfs): fill those
      // holes again (allocation never changes what the image reads).
      if (made === 'formatted' && mode === 'thick' && (await stat(image)).blocks * 512 < spec.size) {
        await allocateFile(this.ctx.exec, image, spec.size, true).catch(async (e) => { throw await this.allocationError(vol, image, e, adopted); });
      }
    } catch (e) {
      if (!adopted) await rm(image, { force: true }); // only the image this call made
      throw e;
    }
    if (made === 'adopted') this.ctx.log.warn({ volume: vol.name, image }, 'adopting an existing image that already holds a filesystem');
    return { image, formatted: true, provisioning: mode, ...(adopted ? { adopted: true } : {}) };
  }

  /**
   * A clone: the snapshot's image copied into place whole or not at all (a crash leaves no image, or a
   * complete one that the resumed create finds). Thin: a reflink where the image directory's filesystem
   * shares blocks, else a sparse copy. Thick: a full copy whose holes are then allocated, so its space is
   * really there (a reflinked image would need space at its first write to a shared block).
   */
  private async provisionClone(vol: VolumeRecord, image: string, mode: Provisioning, snap: SnapshotRecord): Promise<Record<string, unknown>> {
    const from = this.snapshotImageOf(snap);
    let copy: CopyMethod | 'resumed' = 'resumed';
    if (!(await stat(image).catch(() => undefined))) {
      if (!(await stat(from).catch(() => undefined))) throw new InternalError(`the image ${from} of snapshot ${snap.name} is missing, so volume ${vol.name} cannot be cloned from it; nothing was made`);
      copy = await copyFileAtomic(this.ctx.exec, from, image, { full: mode === 'thick' });
    }
    this.ctx.fault?.('block.clone-copied');
    if (mode === 'thick') {
      await allocateFile(this.ctx.exec, image, (vol.spec as unknown as BlockSpec).size, true).catch(async (e) => {
        throw await this.allocationError(vol, image, e, true);
      });
    }
    // An xfs clone has its source's UUID, which xfs refuses to mount twice: mounted with nouuid (its
    // log, not clean after a freeze, rules out giving it a new UUID offline with xfs_admin). btrfs on
    // this kernel mounts a same-fsid clone on its own (temp-fsid); ext4 does not mind.
    return { image, formatted: true, provisioning: mode, clonedFrom: snap.name, ...(copy === 'resumed' ? {} : { copy }), ...((vol.spec as unknown as BlockSpec).fstype === 'xfs' ? { nouuid: true } : {}) };
  }

  // Snapshots: a copy of the image beside the images, taken while the service holds the mounted
  // filesystem frozen, so the copy is a clean filesystem (no journal to replay).
  readonly freezeForSnapshot = true;
  snapshotMethod(vol: VolumeRecord): string { return `copy of the image (reflink where ${dirname(this.imageOf(vol))} can share blocks, else sparse)`; }
  placeSnapshot(name: string, vol: VolumeRecord): Record<string, string> {
    return { image: within(dirname(this.imageOf(vol)), 'snapshots', `${name}.img`) };
  }
  private snapshotImageOf(snap: SnapshotRecord): string { return recordedPath(snap.details.image, `image of snapshot ${snap.name}`); }

  async createSnapshot(vol: VolumeRecord, snap: SnapshotRecord): Promise<Record<string, unknown>> {
    const to = this.snapshotImageOf(snap);
    const from = this.imageOf(vol);
    if (!(await stat(from).catch(() => undefined))) throw new InternalError(`the image ${from} of volume ${vol.name} is missing; no snapshot was taken`);
    await mkdir(dirname(to), { recursive: true, mode: 0o700 });
    const t0 = performance.now();
    const method = await copyFileAtomic(this.ctx.exec, from, to);
    const st = await stat(to);
    return { method, copyMs: Math.round(performance.now() - t0), allocatedBytes: st.blocks * 512 };
  }

  async deleteSnapshot(snap: SnapshotRecord): Promise<string | undefined> {
    const img = this.snapshotImageOf(snap);
    await rm(img, { force: true });
    await rm(`${img}.part`, { force: true });
    return undefined;
  }

  cloneSpec(sourceSpec: Readonly<Record<string, unknown>>): Record<string, unknown> { return { ...sourceSpec }; }

  /** The snapshot's filesystem read-only at `dir` (a read-only loop device, no journal replay; xfs with nouuid, since its source is mounted with the same UUID). */
  async mountSnapshot(snap: SnapshotRecord, dir: string): Promise<void> {
    const spec = snap.spec as unknown as BlockSpec;
    const image = this.snapshotImageOf(snap);
    await stageBlockFilesystem(this.ctx.exec, this.ctx.mounts, {
      source: image, loop: true, fstype: spec.fstype, what: `the image ${image} of snapshot ${snap.name}`, volume: snap.volume,
      stagingPath: stagingPathOf(dir), mountopts: spec.fstype === 'xfs' ? ['nouuid'] : [], readOnly: true, mayFormat: false, localSource: true,
    });
  }

  async unmountSnapshot(_snap: SnapshotRecord, dir: string): Promise<void> {
    const mp = stagingPathOf(dir);
    if (await this.ctx.mounts.at(mp)) await unmount(this.ctx.exec, mp);
  }

  private async allocationError(vol: VolumeRecord, image: string, e: unknown, adopted: boolean): Promise<Error> {
    const stderr = e instanceof ExecError ? e.result?.stderr ?? '' : '';
    const dir = dirname(image);
    if (/no space left/i.test(stderr)) {
      const s = await statfs(dir).catch(() => undefined);
      return new ResourceExhaustedError(`volume ${vol.name} needs ${human((vol.spec as unknown as BlockSpec).size)} on the filesystem of ${dir}, but only ${s ? human(s.bavail * s.bsize) : 'less'} is free now (something else took space since the check); ${adopted ? `the image that was there is kept as it was` : 'nothing was left behind'}. Free space there, or ask for less`, { cause: e });
    }
    if (/not supported/i.test(stderr)) {
      return new FailedPreconditionError(`the filesystem of ${dir} cannot allocate images in advance (fallocate is not supported there), so volume ${vol.name} cannot be thick; create it with -o provisioning=thin, or put imageDir on ext4, xfs, btrfs or tmpfs`, { cause: e });
    }
    return e instanceof Error ? e : new InternalError(String(e));
  }

  /**
   * Grows the image to `size` (a thick image stays thick: the new part is allocated with fallocate, and
   * the space is checked first like a create of the difference; a thin one is extended sparsely, within
   * the overcommit rule), then the filesystem on it, online: `losetup -c` and resize2fs, xfs_growfs or
   * `btrfs filesystem resize max`. A volume staged nowhere is mounted at its mountpoint for the grow and
   * unmounted again (xfs and btrfs only grow mounted), so every size Ballast reports is the usable one.
   */
  async expand(vol: VolumeRecord, size: number, stagingPath: string | undefined, others: readonly VolumeRecord[]): Promise<{ spec: Record<string, unknown>; details?: Record<string, unknown>; note: string }> {
    const spec = vol.spec as unknown as BlockSpec;
    const image = this.imageOf(vol);
    const mode = provisioningOf(vol);
    const delta = size - spec.size;
    await this.checkCreate({ ...spec, size: delta, provisioning: mode }, others);
    const st = await stat(image).catch(() => undefined);
    if (!st) throw new InternalError(`the image ${image} of volume ${vol.name} is missing; nothing was changed`);
    if (mode === 'thick') {
      await allocateFile(this.ctx.exec, image, size).catch(async (e) => { throw await this.allocationError({ ...vol, spec: { ...spec, size: delta } }, image, e, true); });
    } else if (st.size < size) {
      const fh = await open(image, 'r+');
      try { await fh.truncate(size); } finally { await fh.close(); }
    }
    this.ctx.fault?.('block.image-grown');
    const mp = stagingPath ?? mountpointOf(vol);
    const staged = stagingPath ? await this.ctx.mounts.at(stagingPathOf(stagingPath)) : undefined;
    const grew = `volume ${vol.name} grew from ${formatSize(spec.size)} to ${formatSize(size)} (${mode})`;
    if (staged) {
      const { deferred } = await growOnlineOrDefer(this.ctx.exec, spec.fstype, staged.source, staged.mountpoint);
      if (deferred) {
        this.ctx.log.warn({ volume: vol.name, err: deferred }, 'ext4 could not grow online; it grows at the next mount');
        return { spec: { size }, details: { growPending: true }, note: deferredNote(grew, deferred) };
      }
      return { spec: { size }, note: `${grew}; its ${spec.fstype} filesystem grew online, mounted at ${staged.mountpoint}` };
    }
    if (spec.fstype === 'ext4') {
      await growExt4Offline(this.ctx.exec, image);
      return { spec: { size }, note: `${grew}; its ext4 filesystem was grown offline (e2fsck -f -p, resize2fs)` };
    }
    // xfs and btrfs grow only mounted: mounted at the volume's mountpoint for the grow, unmounted again.
    await this.stage(vol, mp);
    try {
      const m = await this.ctx.mounts.at(mp);
      if (!m) throw new InternalError(`volume ${vol.name} could not be mounted at ${mp} to grow its filesystem`);
      await growMountedFilesystem(this.ctx.exec, spec.fstype, m.source, mp);
    } finally {
      await this.unstage(vol, mp);
    }
    return { spec: { size }, note: `${grew}; its ${spec.fstype} filesystem was grown (mounted for the grow, unmounted again)` };
  }

  async deprovision(vol: VolumeRecord): Promise<void> {
    await this.unstage(vol, mountpointOf(vol));
    await rm(this.imageOf(vol), { force: true });
    await rmdir(mountpointOf(vol)).catch(() => undefined);
  }

  private filesystem(vol: VolumeRecord, image: string): BlockFilesystem {
    return { source: image, loop: true, fstype: (vol.spec as unknown as BlockSpec).fstype, what: `the image ${image}`, volume: vol.name };
  }

  /**
   * Mounts the image at the staging path through an autoclear loop device; never formats (that happened
   * at create: a blank image now is damage, and refused). New mounts of a thin volume wait while its host
   * filesystem is below the critical level.
   */
  async stage(vol: VolumeRecord, stagingPath: string, opts: StageOptions = {}): Promise<void> {
    const spec = vol.spec as unknown as BlockSpec;
    const mp = stagingPathOf(stagingPath);
    const image = this.imageOf(vol);
    const thin = provisioningOf(vol) === 'thin';
    const refusal = thin ? this.gate?.refuseMount(vol, image) : undefined;
    if (refusal) throw new ResourceExhaustedError(refusal);
    // Already mounted (a second reference) is answered inside with two syscalls, without the mount table.
    const st: StageBlock = {
      ...this.filesystem(vol, image), stagingPath: mp, mountopts: cloneMountopts(vol, spec.mountopts), readOnly: opts.readOnly, mayFormat: false, localSource: true,
      beforeMount: async () => {
        const img = await stat(image).catch(() => undefined);
        if (!img) {
          throw new InternalError(`the image ${image} of volume ${vol.name} is missing; Ballast will not create an empty one in its place. Restore it, or remove the volume`);
        }
        // An expand whose ext4 could not grow online: grown now, before the mount, if it still is smaller.
        if (vol.details.growPending && spec.fstype === 'ext4' && !opts.readOnly && await growExt4IfSmaller(this.ctx.exec, image, img.size)) {
          this.ctx.log.info({ volume: vol.name, to: img.size }, 'ext4 filesystem grown at mount (expanded while it could not grow online)');
        }
      },
    };
    await stageBlockFilesystem(this.ctx.exec, this.ctx.mounts, st);
    if (thin) this.gate?.published(vol);
  }

  async unstage(vol: VolumeRecord, stagingPath: string): Promise<void> {
    const mp = stagingPathOf(stagingPath);
    if (await this.ctx.mounts.at(mp)) {
      // Thaw first: unmounting a frozen filesystem would block in its final sync (or leave the
      // superblock frozen). A thin volume may be frozen by the watcher, or by a daemon that crashed.
      if (provisioningOf(vol) === 'thin') await thawFs(this.ctx.exec, mp);
      await unmount(this.ctx.exec, mp);
    }
    if (provisioningOf(vol) === 'thin') this.gate?.unpublished(vol);
    // The loop device is autoclear; detach any that a crash or an outside `losetup` left behind.
    const image = this.imageOf(vol);
    if (await stat(image).catch(() => undefined)) {
      for (const d of await loopDevicesOf(this.ctx.exec, image)) {
        if (!(await this.isMountedSource(d.name))) await detachLoop(this.ctx.exec, d.name).catch(() => undefined);
      }
    }
  }

  probe(_vol: VolumeRecord, stagingPath: string, snap: HostSnapshot): 'mounted' | 'unmounted' {
    return probeMountpoint(snap, stagingPath);
  }

  async findOrphans(known: ReadonlySet<string>, snap: HostSnapshot): Promise<Orphan[]> {
    const out: Orphan[] = [];
    const prefix = this.mountDir + '/';
    for (const m of snap.mounts) {
      if (m.mountpoint.startsWith(prefix) && !known.has(m.mountpoint.slice(prefix.length))) {
        out.push({ backend: this.name, kind: 'mount', path: m.mountpoint, cleanable: true, detail: `${m.source} (${m.fstype}) is mounted here but no volume record names it` });
      }
    }
    const imgPrefix = this.imageDir + '/';
    const sources = new Set(snap.mounts.map((m) => m.source));
    for (const l of snap.loops) {
      if (l.backFile.startsWith(imgPrefix) && !sources.has(l.name)) {
        out.push({ backend: this.name, kind: 'loop', path: l.name, cleanable: true, detail: `attached to ${l.backFile} but not mounted` });
      }
    }
    for (const f of await readdir(this.imageDir).catch(() => [] as string[])) {
      if (f.endsWith('.img') && !known.has(basename(f, '.img'))) {
        const img = within(this.imageDir, f);
        const sig = await probeSignature(this.ctx.exec, img).catch(() => undefined);
        out.push({ backend: this.name, kind: 'image', path: img, cleanable: false, detail: `an image${sig?.type ? ` holding ${sig.type}` : ''} with no volume record; its data is kept (creating volume ${basename(f, '.img')} again adopts it without formatting)` });
      }
    }
    return out;
  }

  async cleanOrphan(o: Orphan): Promise<void> {
    if (o.kind === 'mount') await unmount(this.ctx.exec, o.path);
    else if (o.kind === 'loop') await detachLoop(this.ctx.exec, o.path);
  }

  private async isMountedSource(dev: string): Promise<boolean> {
    return (await this.ctx.mounts.list()).some((m) => m.source === dev);
  }

  thinImage(vol: VolumeRecord): { image: string; size: number } | undefined {
    return provisioningOf(vol) === 'thin' ? { image: this.imageOf(vol), size: (vol.spec as unknown as BlockSpec).size } : undefined;
  }

  async freeze(vol: VolumeRecord): Promise<void> {
    const mp = mountpointOf(vol);
    if (await this.ctx.mounts.at(mp)) await freezeFs(this.ctx.exec, mp);
  }

  async thaw(vol: VolumeRecord): Promise<void> {
    const mp = mountpointOf(vol);
    if (await this.ctx.mounts.at(mp)) await thawFs(this.ctx.exec, mp);
  }

  setSpaceGate(gate: SpaceGate): void { this.gate = gate; }

  /**
   * Read on every Get (a hot path): cheap synchronous stat/statfs of local files only, no process.
   * allocatedBytes: the image's st_blocks * 512; usedBytes: the mounted filesystem's blocks in use
   * (absent when not mounted: the mountpoint is then on the same device as its parent).
   */
  status(vol: VolumeRecord): Record<string, unknown> {
    const spec = vol.spec as unknown as BlockSpec;
    const image = this.imageOf(vol);
    const out: Record<string, unknown> = {
      size: formatSize(spec.size), sizeBytes: spec.size, fstype: spec.fstype, mountopts: spec.mountopts.join(','), image,
      provisioning: provisioningOf(vol),
    };
    try {
      const st = statSync(image);
      out.allocatedBytes = st.blocks * 512;
      out.allocated = human(st.blocks * 512);
    } catch { /* image missing: publish says so */ }
    try {
      const mp = mountpointOf(vol);
      if (statSync(mp).dev !== statSync(dirname(mp)).dev) {
        const f = statfsSync(mp);
        out.usedBytes = (f.blocks - f.bfree) * f.bsize;
        out.used = human((f.blocks - f.bfree) * f.bsize);
      }
    } catch { /* not mounted, or no mountpoint yet */ }
    if (this.gate?.isFrozen(vol.name)) out.frozen = true;
    const note = this.gate?.note(vol.name);
    if (note) out.hostSpace = note;
    return out;
  }
}

export const blockFactory: BackendFactory = {
  type: 'block',
  configKeys: ['imageDir', 'mountDir', 'defaultFstype', 'thinOvercommitRatio', 'shared'],
  create: (instance, config, ctx) => new BlockBackend(instance, config, ctx),
};
