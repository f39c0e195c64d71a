import { mkdir, open, readdir, rm, rmdir, stat, statfs } from 'node:fs/promises';
import { dirname, basename } from 'node:path';
import { detailPath, mountpointOf, probeMountpoint, type Backend, type BackendContext, type BackendFactory, type HostSnapshot, type OptionDoc, type Orphan, type OrphanFinder, type Placement } from '../types.js';
import type { VolumeRecord } from '../../core/types.js';
import { InternalError, InvalidArgumentError } from '../../core/errors.js';
import { formatSize, parseSize } from '../../core/validate.js';
import { checkOptionKeys } from '../options.js';
import { parseMountOptions } from '../config-values.js';
import { within } from '../../host/paths.js';
import {
  FSTYPES, MIN_SIZE, type FsType, detachLoop, loopDevicesOf, makeFilesystem, mountImage, probeSignature, unmount,
} from '../../host/blockdev.js';

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
];

interface BlockSpec { size: number; fstype: FsType; mountopts: string[] }

/**
 * A sparse image file per volume, formatted only when `blkid -p` finds no signature, mounted once per
 * host through an autoclear loop device. Not shareable across hosts (one kernel owns the filesystem);
 * containers on this host share the one mount.
 */
export class BlockBackend implements Backend, OrphanFinder {
  readonly type = 'block';
  readonly shareable = false;
  readonly optionDocs = OPTIONS;
  private readonly imageDir: string;
  private readonly mountDir: string;
  private readonly defaultFstype: FsType;

  constructor(readonly name: string, config: Readonly<Record<string, unknown>>, private readonly ctx: BackendContext) {
    for (const k of ['imageDir', 'mountDir'] as const) {
      const v = config[k];
      if (v !== undefined && (typeof v !== 'string' || !v.startsWith('/'))) throw new InvalidArgumentError(`backend ${name}: ${k} must be an absolute path`);
    }
    const fs = config.defaultFstype ?? 'ext4';
    if (!FSTYPES.includes(fs as FsType)) throw new InvalidArgumentError(`backend ${name}: defaultFstype must be one of ${FSTYPES.join(', ')}`);
    this.defaultFstype = fs as FsType;
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
    return { size, fstype, mountopts: parseFsMountOptions(opts.mountopts) } satisfies BlockSpec;
  }

  async checkCreate(spec: Readonly<Record<string, unknown>>): Promise<void> {
    const { size } = spec as unknown as BlockSpec;
    let dir = this.imageDir;
    while (!(await stat(dir).catch(() => undefined))) dir = dirname(dir);
    const s = await statfs(dir);
    const free = s.bavail * s.bsize;
    if (size > free) {
      throw new InvalidArgumentError(`size ${formatSize(size)} is more than the ${formatSize(Math.floor(free / 1048576) * 1048576)} free in ${this.imageDir}`);
    }
  }

  place(name: string): Placement {
    return { mountpoint: within(this.mountDir, name), details: { image: within(this.imageDir, `${name}.img`) } };
  }
  /** The volume's image file, from its record (see Placement). */
  private imageOf(vol: VolumeRecord): string { return detailPath(vol, 'image', () => within(this.imageDir, `${vol.name}.img`)); }

  async provision(vol: VolumeRecord): Promise<Record<string, unknown>> {
    const spec = vol.spec as unknown as BlockSpec;
    const image = this.imageOf(vol);
    await mkdir(dirname(image), { recursive: true, mode: 0o700 });
    let adopted = false;
    try {
      const fh = await open(image, 'wx', 0o600);
      try { await fh.truncate(spec.size); } finally { await fh.close(); }
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      adopted = true; // a retry after a crash, or an image left behind: never truncate or format what is there
    }
    this.ctx.fault?.('block.image-created');
    // An image this call created (O_EXCL) is blank by construction; one that was there is probed first.
    const sig = adopted ? await probeSignature(this.ctx.exec, image) : undefined;
    if (!sig) {
      try {
        await makeFilesystem(this.ctx.exec, spec.fstype, image, vol.name);
      } catch (e) {
        if (!adopted) await rm(image, { force: true }); // only the image this call made
        throw e;
      }
    } else if (sig.type !== spec.fstype) {
      throw new InternalError(`image ${image} for volume ${vol.name} already holds ${sig.type ?? sig.ptType ?? 'data'}, not ${spec.fstype}; Ballast will not format over it. Move it away or create the volume with -o fstype=${sig.type ?? '...'}`);
    } else {
      this.ctx.log.warn({ volume: vol.name, image }, 'adopting an existing image that already holds a filesystem');
    }
    return { image, formatted: true, ...(adopted ? { adopted: true } : {}) };
  }

  async deprovision(vol: VolumeRecord): Promise<void> {
    await this.unpublish(vol);
    await rm(this.imageOf(vol), { force: true });
    await rmdir(mountpointOf(vol)).catch(() => undefined);
  }

  async publish(vol: VolumeRecord): Promise<void> {
    const spec = vol.spec as unknown as BlockSpec;
    const mp = mountpointOf(vol);
    const image = this.imageOf(vol);
    await mkdir(mp, { recursive: true, mode: 0o755 });
    const cur = await this.ctx.mounts.at(mp);
    if (cur) {
      if (cur.fstype !== spec.fstype) throw new InternalError(`${mp} is already mounted with ${cur.fstype} from ${cur.source}, not volume ${vol.name}'s ${spec.fstype}; unmount it first`);
      return;
    }
    if (!(await stat(image).catch(() => undefined))) {
      throw new InternalError(`the image ${image} of volume ${vol.name} is missing; Ballast will not create an empty one in its place. Restore it, or remove the volume`);
    }
    // mount -t names the filesystem, so a wiped or foreign image fails to mount and is never formatted;
    // only then is it probed, to say why.
    try {
      await mountImage(this.ctx.exec, image, spec.fstype, mp, spec.mountopts);
    } catch (e) {
      const sig = await probeSignature(this.ctx.exec, image).catch(() => undefined);
      if (!sig) {
        throw new InternalError(`the image ${image} of volume ${vol.name} has no filesystem signature although Ballast formatted it; refusing to format it again. Inspect it (blkid -p, fsck) before use`, { cause: e });
      }
      if (sig.type !== spec.fstype) {
        throw new InternalError(`the image ${image} of volume ${vol.name} holds ${sig.type ?? 'something else'}, not ${spec.fstype}; refusing to mount it`, { cause: e });
      }
      throw e;
    }
  }

  async unpublish(vol: VolumeRecord): Promise<void> {
    const mp = mountpointOf(vol);
    if (await this.ctx.mounts.at(mp)) await unmount(this.ctx.exec, mp);
    // The loop device is autoclear; detach any that a crash or an outside `losetup` left behind.
    const image = this.imageOf(vol);
    if (await stat(image).catch(() => undefined)) {
      for (const d of await loopDevicesOf(this.ctx.exec, image)) {
        if (!(await this.isMountedSource(d.name))) await detachLoop(this.ctx.exec, d.name).catch(() => undefined);
      }
    }
  }

  probe(vol: VolumeRecord, snap: HostSnapshot): 'mounted' | 'unmounted' {
    return probeMountpoint(snap, mountpointOf(vol));
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

  status(vol: VolumeRecord): Record<string, unknown> {
    const spec = vol.spec as unknown as BlockSpec;
    return { size: formatSize(spec.size), sizeBytes: spec.size, fstype: spec.fstype, mountopts: spec.mountopts.join(','), image: this.imageOf(vol) };
  }
}

export const blockFactory: BackendFactory = {
  type: 'block',
  configKeys: ['imageDir', 'mountDir', 'defaultFstype'],
  create: (instance, config, ctx) => new BlockBackend(instance, config, ctx),
};
