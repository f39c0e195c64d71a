import { statfsSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Exec } from './exec.js';
import { InternalError } from '../core/errors.js';

/** Timeouts for host tools, in ms. mkfs of a large sparse image is quick; mount may wait on a journal replay. */
export const TIMEOUTS = { probe: 15_000, mkfs: 120_000, mount: 90_000, umount: 60_000, losetup: 15_000, fallocate: 120_000, freeze: 60_000 } as const;

export interface Signature { readonly type?: string; readonly usage?: string; readonly ptType?: string }

/**
 * Low-level probe of a device or image with `blkid -p` (no cache, no udev). Returns undefined when
 * blkid finds nothing at all (exit 2): only then may the caller format it.
 */
export async function probeSignature(exec: Exec, path: string): Promise<Signature | undefined> {
  const r = await exec(['blkid', '-p', '-o', 'export', '--', path], { timeoutMs: TIMEOUTS.probe, okCodes: [0, 2] });
  if (r.code === 2) return undefined;
  const kv: Record<string, string> = {};
  for (const line of r.stdout.split('\n')) {
    const i = line.indexOf('=');
    if (i > 0) kv[line.slice(0, i)] = line.slice(i + 1);
  }
  return { type: kv.TYPE, usage: kv.USAGE, ptType: kv.PTTYPE };
}

export const FSTYPES = ['ext4', 'xfs', 'btrfs'] as const;
export type FsType = (typeof FSTYPES)[number];

/** Smallest image each mkfs accepts here (xfsprogs 6.1: 300 MiB; btrfs-progs 6.2: 109 MiB). */
export const MIN_SIZE: Record<FsType, number> = { ext4: 8 * 1024 ** 2, xfs: 300 * 1024 ** 2, btrfs: 109 * 1024 ** 2 };

/**
 * Formats a blank target. Callers must have proved it blank with probeSignature. No tool gets a
 * force flag: mkfs.xfs and mkfs.btrfs then refuse an existing filesystem on their own.
 */
export async function makeFilesystem(exec: Exec, fstype: FsType, target: string, label?: string): Promise<void> {
  const lbl = label ? label.slice(0, fstype === 'xfs' ? 12 : 16) : undefined;
  const argv: Record<FsType, string[]> = {
    ext4: ['mkfs.ext4', '-q', '-E', 'nodiscard,lazy_itable_init=1,lazy_journal_init=1', ...(lbl ? ['-L', lbl] : []), '--', target],
    xfs: ['mkfs.xfs', '-q', '-K', ...(lbl ? ['-L', lbl] : []), '--', target],
    btrfs: ['mkfs.btrfs', '-q', '-K', ...(lbl ? ['-L', lbl] : []), '--', target],
  };
  await exec(argv[fstype], { timeoutMs: TIMEOUTS.mkfs });
}

export interface LoopDevice { readonly name: string; readonly backFile: string; readonly autoclear: boolean }

/**
 * Loop devices backed by `file`, from the list (sysfs), not `losetup -j`: that asks every loop device
 * for its status (LOOP_GET_STATUS stats each backing file) and hangs while any one is behind a hung client.
 */
export async function loopDevicesOf(exec: Exec, file: string): Promise<LoopDevice[]> {
  return (await allLoopDevices(exec)).filter((d) => d.backFile === file);
}

/** Every loop device on the host (losetup -J -l). */
export async function allLoopDevices(exec: Exec): Promise<LoopDevice[]> {
  const r = await exec(['losetup', '-J', '-l', '-O', 'NAME,BACK-FILE,AUTOCLEAR'], { timeoutMs: TIMEOUTS.losetup });
  if (!r.stdout.trim()) return [];
  const j = JSON.parse(r.stdout) as { loopdevices?: { name: string; 'back-file': string | null; autoclear: boolean | string }[] };
  return (j.loopdevices ?? []).map((d) => ({
    name: d.name, backFile: (d['back-file'] ?? '').replace(/ \(deleted\)$/, ''), autoclear: d.autoclear === true || d.autoclear === '1',
  }));
}

export async function detachLoop(exec: Exec, dev: string): Promise<void> {
  await exec(['losetup', '-d', dev], { timeoutMs: TIMEOUTS.losetup });
}

export async function unmount(exec: Exec, mountpoint: string): Promise<void> {
  // -c: no canonicalization of the path, so umount never stats what it unmounts.
  await exec(['umount', '-c', '--', mountpoint], { timeoutMs: TIMEOUTS.umount });
}

/**
 * Allocates `size` bytes of `file` for real (fallocate(2) mode 0 through util-linux `fallocate`): instant
 * on ext4, xfs, btrfs and tmpfs, which record the extents as unwritten without writing zeros. Existing
 * data is never touched. `keepSize` allocates without changing the file's length (an adopted image).
 * Fails with the tool's stderr (ENOSPC: "No space left on device"; EOPNOTSUPP on filesystems without it).
 */
export async function allocateFile(exec: Exec, file: string, size: number, keepSize = false): Promise<void> {
  await exec(['fallocate', ...(keepSize ? ['-n'] : []), '-l', String(size), '--', file], { timeoutMs: TIMEOUTS.fallocate });
}

/**
 * Freezes the filesystem mounted at `mountpoint` (FIFREEZE through util-linux `fsfreeze -f`): the kernel
 * first writes out its dirty data, then every writer blocks until the thaw. Already frozen (EBUSY) is success.
 */
export async function freezeFs(exec: Exec, mountpoint: string): Promise<void> {
  await freezeFsOwned(exec, mountpoint);
}

/**
 * Freezes like freezeFs, and says whether this call froze it (true) or it was frozen already (false:
 * by the space watcher or the self-fence, whose thaw it is, not this caller's).
 */
export async function freezeFsOwned(exec: Exec, mountpoint: string): Promise<boolean> {
  const r = await exec(['fsfreeze', '-f', '--', mountpoint], { timeoutMs: TIMEOUTS.freeze, okCodes: [0, 1] });
  if (r.code === 0) return true;
  if (/busy/i.test(r.stderr)) return false;
  throw new InternalError(`fsfreeze -f ${mountpoint} failed: ${r.stderr.trim()}`);
}

/** Thaws a frozen filesystem (FITHAW, `fsfreeze -u`). Not frozen (EINVAL) is success. */
export async function thawFs(exec: Exec, mountpoint: string): Promise<void> {
  const r = await exec(['fsfreeze', '-u', '--', mountpoint], { timeoutMs: TIMEOUTS.freeze, okCodes: [0, 1] });
  if (r.code !== 0 && !/invalid argument/i.test(r.stderr)) throw new InternalError(`fsfreeze -u ${mountpoint} failed: ${r.stderr.trim()}`);
}

/** statfs f_type of the filesystems Ballast formats (linux/magic.h). */
const FS_MAGIC: Readonly<Record<number, FsType>> = { 0xef53: 'ext4', 0x58465342: 'xfs', 0x9123683e: 'btrfs' };

/**
 * The filesystem type mounted at `mountpoint`, judged without reading the mount table: a mountpoint
 * whose device differs from its parent's has something mounted on it, and statfs names what. Two
 * syscalls instead of parsing /proc/self/mountinfo, for the hot path of a Mount that finds its volume
 * already mounted. Undefined when nothing of ours is mounted there (the caller then asks the mount
 * table). Only for local filesystems on loop devices: a stat of a hung network mount would block.
 */
export function mountedFsType(mountpoint: string): FsType | undefined {
  try {
    const st = statSync(mountpoint, { throwIfNoEntry: false });
    if (!st || st.dev === statSync(dirname(mountpoint)).dev) return undefined;
    return FS_MAGIC[statfsSync(mountpoint).type];
  } catch {
    return undefined;
  }
}
