import { mkdir, open } from 'node:fs/promises';
import type { Exec } from './exec.js';
import type { MountTable } from './mountinfo.js';
import { InternalError } from '../core/errors.js';
import { MIN_SIZE, TIMEOUTS, type FsType, type Signature, detachLoop, makeFilesystem, mountedFsType, probeSignature } from './blockdev.js';

/**
 * "Format only if blank, then mount", once, for every backend whose volume is a filesystem on a block
 * device or an image file: block (an image on a loop device), rbd (an image exposed by rbd-fuse, on a
 * loop device) and later Cinder (a device the API attached). Nothing here formats what `blkid -p` did
 * not call blank (exit 2), and nothing mounts without naming the filesystem type (`mount -t`), so a
 * wiped or foreign device fails to mount instead of being formatted.
 */

/** A filesystem on a device or an image file. */
export interface BlockFilesystem {
  /** The device, or an image file (then mounted through an autoclear loop device: `loop`). */
  readonly source: string;
  readonly loop: boolean;
  readonly fstype: FsType;
  /** Names the source at the start of a sentence: `the image /x/v.img`, `image rbd/v1`. */
  readonly what: string;
  readonly volume: string;
}

/** What blkid found, for a sentence. */
function found(sig: Signature): string {
  return sig.type ?? (sig.ptType ? `a ${sig.ptType} partition table` : 'data');
}

/**
 * Formats a new volume's filesystem at create, the one moment Ballast formats. With `knownBlank` the
 * caller made the target itself just now (an image created with O_EXCL: blank by construction), so no
 * probe is spent. Otherwise `blkid -p` decides: nothing found formats; a filesystem of the asked type is
 * kept ('adopted'); anything else is refused with an InternalError: `<what> for volume <v> already holds
 * X, not <fstype>; Ballast will not format over it. <hint(X)>`.
 */
export async function formatIfBlank(
  exec: Exec, fs: BlockFilesystem, opts: { readonly knownBlank: boolean; readonly label?: string; readonly hint: (foundType: string | undefined) => string },
): Promise<'formatted' | 'adopted'> {
  const sig = opts.knownBlank ? undefined : await probeSignature(exec, fs.source);
  if (!sig) {
    await makeFilesystem(exec, fs.fstype, fs.source, opts.label);
    return 'formatted';
  }
  if (sig.type !== fs.fstype) {
    throw new InternalError(`${fs.what} for volume ${fs.volume} already holds ${found(sig)}, not ${fs.fstype}; Ballast will not format over it. ${opts.hint(sig.type)}`);
  }
  return 'adopted';
}

/**
 * Mount options that keep a read-only mount from writing the device: the journal is not replayed (a
 * read-only node must not write what a read-write node may be writing).
 */
const NO_REPLAY: Readonly<Record<FsType, string>> = { ext4: 'noload', xfs: 'norecovery', btrfs: 'nologreplay' };

export function blockMountOptions(fs: BlockFilesystem, mountopts: readonly string[], readOnly: boolean): string[] {
  return [...(readOnly ? ['ro', NO_REPLAY[fs.fstype]] : []), ...mountopts];
}

/**
 * Mounts `s.source` at `mp`. An image file goes through a loop device attached with `losetup --find
 * --show` (LOOP_CONFIGURE on a free device: no scan of the other loop devices, which `mount -o loop` and
 * `losetup -j` do with LOOP_GET_STATUS, a stat of every backing file, and so hang host-wide while any
 * one of them is behind a hung or fenced FUSE client), read-only when the mount is; once mounted,
 * `losetup -d` marks it autoclear (the kernel frees it at the last unmount, so a crash after this point
 * cannot leak it). A mount that fails detaches the device it attached.
 */
async function mountBlock(exec: Exec, s: StageBlock, mp: string): Promise<void> {
  const opts = optionArgs(blockMountOptions(s, s.mountopts, !!s.readOnly));
  if (!s.loop) { await exec(['mount', '-t', s.fstype, ...opts, '--', s.source, mp], { timeoutMs: TIMEOUTS.mount }); return; }
  const dev = (await exec(['losetup', '--find', '--show', ...(s.readOnly ? ['--read-only'] : []), '--', s.source], { timeoutMs: TIMEOUTS.losetup })).stdout.trim();
  if (!/^\/dev\/loop\d+$/.test(dev)) throw new InternalError(`losetup attached ${s.what} of volume ${s.volume} but printed ${JSON.stringify(dev.slice(0, 80))}, not a loop device`);
  try {
    await exec(['mount', '-t', s.fstype, ...opts, '--', dev, mp], { timeoutMs: TIMEOUTS.mount });
  } catch (e) {
    await detachLoop(exec, dev).catch(() => undefined);
    throw e;
  }
  await detachLoop(exec, dev);
}

export interface StageBlock extends BlockFilesystem {
  /** Where the filesystem is to appear (absolute, normalized; the caller checked it). */
  readonly stagingPath: string;
  /** Allowlisted mount options of the volume. */
  readonly mountopts: readonly string[];
  readonly readOnly?: boolean;
  /**
   * May a blank source be formatted here? Only for storage Ballast made and never formatted (a Cinder
   * volume formats on its first stage). Block and rbd format at create, so for them a blank source at
   * stage is damage: false, and it is refused.
   */
  readonly mayFormat: boolean;
  /** With mayFormat: the source was never formatted as far as Ballast knows, so it is probed before the first mount. */
  readonly likelyBlank?: boolean;
  readonly label?: string;
  /**
   * The source is on a local disk (an image file): a stat of the staging path cannot hang, so an already
   * staged filesystem is recognized with two syscalls instead of a read of the mount table (the hot path
   * of a Mount of a mounted volume). False for anything behind a network client (rbd-fuse).
   */
  readonly localSource: boolean;
  /** Runs once nothing is found staged, before anything is made or mounted (block: is the image still there?). */
  readonly beforeMount?: () => Promise<void>;
}

/**
 * Makes the filesystem on `s.source` appear at `s.stagingPath`. Idempotent: a filesystem of the volume's
 * type already mounted there is success ('already'); anything else mounted there is refused. "Is it
 * mounted" comes from the mount table (or, for a local source, from stat + statfs of the path). The
 * mount names the type; only when it fails is the source probed, to say why: no signature is refused
 * (unless `mayFormat` and not read-only: then it is formatted and mounted), another type is refused.
 */
export async function stageBlockFilesystem(exec: Exec, mounts: MountTable, s: StageBlock): Promise<'mounted' | 'already'> {
  const mp = s.stagingPath;
  if (s.localSource && mountedFsType(mp) === s.fstype) return 'already';
  // The mount table before any mkdir: a mkdir of a path whose mount hangs would stat it and block a thread.
  const cur = await mounts.at(mp);
  if (cur) {
    if (cur.fstype !== s.fstype) throw new InternalError(`${mp} is already mounted with ${cur.fstype} from ${cur.source}, not volume ${s.volume}'s ${s.fstype}; unmount it first`);
    return 'already';
  }
  await s.beforeMount?.();
  await mkdir(mp, { recursive: true, mode: 0o755 });
  const mount = () => mountBlock(exec, s, mp);
  // Storage that was never formatted (its first stage): probed first, so a blank one is formatted
  // without a mount that must fail first.
  if (s.mayFormat && s.likelyBlank && !s.readOnly && !(await probeSignature(exec, s.source))) {
    await makeFilesystem(exec, s.fstype, s.source, s.label);
    await mount();
    return 'mounted';
  }
  try {
    await mount();
    return 'mounted';
  } catch (e) {
    let sig: Signature | undefined;
    let probed = true;
    try { sig = await probeSignature(exec, s.source); } catch { probed = false; }
    if (probed && !sig && s.mayFormat && !s.readOnly) {
      await makeFilesystem(exec, s.fstype, s.source, s.label);
      await mount();
      return 'mounted';
    }
    if (probed && !sig && s.mayFormat) {
      throw new InternalError(`${s.what} of volume ${s.volume} has no filesystem yet and is staged read-only here, so it cannot be formatted; stage it read-write once first`, { cause: e });
    }
    if (!probed) throw e; // the mount's own error says why (a source that cannot even be read)
    if (!sig) {
      throw new InternalError(`${s.what} of volume ${s.volume} has no filesystem signature although Ballast formatted it; refusing to format it again. Inspect it (blkid -p, fsck) before use`, { cause: e });
    }
    if (sig.type !== s.fstype) {
      throw new InternalError(`${s.what} of volume ${s.volume} holds ${sig.type ?? 'something else'}, not ${s.fstype}; refusing to mount it`, { cause: e });
    }
    throw e;
  }
}

function optionArgs(opts: readonly string[]): string[] { return opts.length ? ['-o', opts.join(',')] : []; }

/**
 * Grows a mounted filesystem to the size of its device, online: the loop device first learns its
 * backing file's new length (`losetup -c`), then ext4 `resize2fs DEVICE`, xfs `xfs_growfs MOUNTPOINT`,
 * btrfs `btrfs filesystem resize max MOUNTPOINT`. The caller grew the storage under it.
 */
export async function growMountedFilesystem(exec: Exec, fstype: FsType, device: string, mountpoint: string): Promise<void> {
  // resize2fs, btrfs and losetup -c take no `--`; the device and mountpoint come from the mount table (absolute).
  if (!device.startsWith('/') || !mountpoint.startsWith('/')) throw new InternalError(`cannot grow ${fstype} on ${device} at ${mountpoint}: not absolute paths`);
  if (/^\/dev\/loop\d+$/.test(device)) await exec(['losetup', '-c', device], { timeoutMs: TIMEOUTS.losetup }); // losetup takes no `--` here
  if (fstype === 'ext4') await exec(['resize2fs', device], { timeoutMs: TIMEOUTS.mkfs });
  else if (fstype === 'xfs') await exec(['xfs_growfs', '--', mountpoint], { timeoutMs: TIMEOUTS.mkfs });
  else await exec(['btrfs', 'filesystem', 'resize', 'max', mountpoint], { timeoutMs: TIMEOUTS.mkfs });
}

/**
 * The size an ext4 filesystem on `source` spans, from its superblock (blocks count, 64-bit when the
 * filesystem is, times the block size); undefined when it holds no ext4 superblock.
 */
export async function ext4Bytes(source: string): Promise<number | undefined> {
  const fh = await open(source, 'r');
  try {
    const sb = Buffer.alloc(1024);
    await fh.read(sb, 0, 1024, 1024);
    if (sb.readUInt16LE(0x38) !== 0xef53) return undefined;
    const lo = sb.readUInt32LE(0x04);
    const hi = (sb.readUInt32LE(0x60) & 0x80) !== 0 ? sb.readUInt32LE(0x150) : 0;
    return (hi * 2 ** 32 + lo) * (1024 << sb.readUInt32LE(0x18));
  } finally { await fh.close(); }
}

/**
 * Grows an unmounted ext4 filesystem to its source's size: `e2fsck -f -p` (resize2fs insists on a fresh
 * check; -p only fixes what is safe, and any other finding stops here), then `resize2fs`.
 */
export async function growExt4Offline(exec: Exec, source: string): Promise<void> {
  await exec(['e2fsck', '-f', '-p', source], { timeoutMs: TIMEOUTS.mkfs, okCodes: [0, 1] });
  await exec(['resize2fs', source], { timeoutMs: TIMEOUTS.mkfs });
}

/**
 * An expand whose ext4 could not grow online left the filesystem smaller than its source: grown
 * offline now (before a mount), when the superblock still spans less than `size` minus a little slack.
 */
export async function growExt4IfSmaller(exec: Exec, source: string, size: number): Promise<boolean> {
  const fs = await ext4Bytes(source);
  if (fs === undefined || fs + MIN_SIZE.ext4 >= size) return false;
  await growExt4Offline(exec, source);
  return true;
}

/**
 * Grows a staged filesystem online; ext4, which grows online only where the kernel lets resize2fs
 * (EXT4_IOC_RESIZE_FS needs CAP_SYS_RESOURCE and reserved descriptor blocks), is left for its next
 * mount instead, and the reason is returned. Other failures throw.
 */
export async function growOnlineOrDefer(exec: Exec, fstype: FsType, device: string, mountpoint: string): Promise<{ deferred?: string }> {
  try {
    await growMountedFilesystem(exec, fstype, device, mountpoint);
    return {};
  } catch (e) {
    if (fstype !== 'ext4') throw e;
    return { deferred: ((e as { result?: { stderr?: string } }).result?.stderr ?? (e as Error).message).trim().split('\n').pop() ?? 'resize2fs failed' };
  }
}

/** The sentence of an expand whose ext4 grows at the next mount. */
export function deferredNote(grew: string, why: string): string {
  return `${grew}; its ext4 filesystem could not grow online here (${why}): it grows at its next mount, once no container uses it (stop them, then start them again)`;
}
