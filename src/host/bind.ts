import { mkdir, rmdir } from 'node:fs/promises';
import type { Exec } from './exec.js';
import type { MountTable } from './mountinfo.js';
import { ConflictError, InternalError } from '../core/errors.js';
import { TIMEOUTS } from './blockdev.js';
import { execBounded } from './fs-child.js';
import { callerPath } from './paths.js';

/**
 * Publish and unpublish, the same for every backend (CSI NodePublishVolume / NodeUnpublishVolume): the
 * staged filesystem appears at a target path the caller names, through a bind mount, read-only when
 * asked. The Docker frontend needs none of this (its target is the staging path itself).
 */

/** A bind mount of a hung FUSE staging path may wait on its client: bounded like a mount. */
const BIND_MS = TIMEOUTS.mount;

function isReadOnly(options: string): boolean { return options.split(',').includes('ro'); }

/**
 * Bind-mounts `stagingPath` at `targetPath` (made if missing), then remounts it read-only when
 * `readOnly`. Idempotent: a target that already shows the staged filesystem in the same mode is
 * success; one published in the other mode, or holding something else, is a ConflictError (CSI's
 * ALREADY_EXISTS). "Is it published" is read from the mount table. Both paths are checked first
 * (absolute, normalized, not /, not the same).
 */
export async function publish(exec: Exec, mounts: MountTable, stagingPath: string, targetPath: string, opts: { readonly readOnly?: boolean } = {}): Promise<void> {
  const src = callerPath(stagingPath, 'staging path');
  const dst = callerPath(targetPath, 'target path');
  if (src === dst) throw new ConflictError(`the target path ${dst} is the staging path itself; nothing to publish`);
  const all = await mounts.list();
  const at = (p: string) => { for (let i = all.length - 1; i >= 0; i--) if (all[i].mountpoint === p) return all[i]; return undefined; };
  const staged = at(src);
  const cur = at(dst);
  const ro = !!opts.readOnly;
  if (cur) {
    if (staged && (cur.majorMinor !== staged.majorMinor || cur.root !== staged.root)) {
      throw new ConflictError(`the target path ${dst} already holds ${cur.source} (${cur.fstype}), not the filesystem staged at ${src}; unpublish it first`);
    }
    if (isReadOnly(cur.options) !== ro) {
      throw new ConflictError(`the target path ${dst} is already published ${isReadOnly(cur.options) ? 'read-only' : 'read-write'}, not ${ro ? 'read-only' : 'read-write'}; unpublish it first`);
    }
    return;
  }
  await mkdir(dst, { recursive: true, mode: 0o750 });
  await execBounded(exec, ['mount', '--bind', '--', src, dst], { timeoutMs: BIND_MS });
  if (!ro) return;
  try {
    // A bind mount takes the flags of its source; read-only needs a second, bind-only remount.
    await execBounded(exec, ['mount', '-o', 'remount,bind,ro', '--', dst], { timeoutMs: BIND_MS });
  } catch (e) {
    await execBounded(exec, ['umount', '-c', '--', dst], { timeoutMs: TIMEOUTS.umount }).catch(() => undefined);
    throw new InternalError(`could not make ${dst} read-only, so it was not published: ${(e as Error).message}`, { cause: e });
  }
}

/** At most this many stacked mounts are taken off a target (a publish raced twice); more is not ours. */
const MAX_STACKED = 8;

/**
 * Unmounts whatever is mounted at `targetPath` (umount -c: no stat of a possibly hung mount), then
 * removes the empty directory. Not published is success.
 */
export async function unpublish(exec: Exec, mounts: MountTable, targetPath: string): Promise<void> {
  const dst = callerPath(targetPath, 'target path');
  for (let i = 0; await mounts.at(dst); i++) {
    if (i >= MAX_STACKED) throw new InternalError(`${dst} still has mounts after ${MAX_STACKED} unmounts; inspect it (findmnt ${dst})`);
    await execBounded(exec, ['umount', '-c', '--', dst], { timeoutMs: TIMEOUTS.umount });
  }
  await rmdir(dst).catch((e: NodeJS.ErrnoException) => { if (e.code !== 'ENOENT' && e.code !== 'ENOTEMPTY') throw e; });
}
