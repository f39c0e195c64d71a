import { rename, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Exec } from './exec.js';
import { ExecError } from './exec.js';

/** A copy of an image or tree may take a while (a plain copy of 100 GiB at 200 MB/s is ~9 min). */
export const COPY_TIMEOUT_MS = 2 * 60 * 60_000;

/** How a copy was made: a reflink shares the blocks (instant, CoW); a copy wrote them (holes kept). */
export type CopyMethod = 'reflink' | 'copy';

/** Did cp fail because the filesystem cannot share blocks (not because the copy itself failed)? */
function reflinkRefused(e: unknown): boolean {
  const err = e instanceof ExecError ? e.result?.stderr ?? '' : '';
  return /failed to clone|operation not supported|invalid cross-device link|not supported/i.test(err);
}

/**
 * Copies the file `src` to `dst` whole or not at all: into `dst.part`, flushed to disk (`sync FILE`),
 * then renamed into place and the directory flushed, so a crash leaves either no `dst` or a complete one
 * (a stale `dst.part` is overwritten by the next try). A reflink (`cp --reflink=always`) where the
 * filesystem can share blocks (xfs with reflink, btrfs), otherwise a sparse-aware copy (`cp --sparse=always`:
 * holes and zeroed ranges stay holes). `full`: never share blocks and never leave holes (a thick image,
 * whose space must really be there): a plain copy, the caller allocates the rest.
 */
export async function copyFileAtomic(exec: Exec, src: string, dst: string, o: { readonly full?: boolean } = {}): Promise<CopyMethod> {
  const part = `${dst}.part`;
  await rm(part, { force: true });
  let method: CopyMethod = 'copy';
  try {
    if (!o.full) {
      try {
        await exec(['cp', '--reflink=always', '--', src, part], { timeoutMs: COPY_TIMEOUT_MS });
        method = 'reflink';
      } catch (e) {
        if (!reflinkRefused(e)) throw e;
        await rm(part, { force: true });
      }
    }
    if (method === 'copy') await exec(['cp', '--reflink=never', '--sparse=always', '--', src, part], { timeoutMs: COPY_TIMEOUT_MS });
    await exec(['sync', '--', part], { timeoutMs: COPY_TIMEOUT_MS });
    await rename(part, dst);
    await exec(['sync', '--', dirname(dst)], { timeoutMs: 60_000 });
  } catch (e) {
    await rm(part, { force: true }).catch(() => undefined);
    throw e;
  }
  return method;
}

/**
 * Copies the directory `src` to `dst` (which must not exist) with owners, modes, times, links and
 * xattrs (`cp -a`), sharing blocks where the filesystem can (`--reflink=auto`), whole or not at all
 * (into `dst.part`, flushed with syncfs, renamed).
 */
export async function copyTreeAtomic(exec: Exec, src: string, dst: string): Promise<void> {
  const part = `${dst}.part`;
  await rm(part, { recursive: true, force: true });
  try {
    await exec(['cp', '-a', '--reflink=auto', '--no-target-directory', '--', src, part], { timeoutMs: COPY_TIMEOUT_MS });
    await exec(['sync', '-f', '--', part], { timeoutMs: COPY_TIMEOUT_MS });
    await rename(part, dst);
    await exec(['sync', '--', dirname(dst)], { timeoutMs: 60_000 });
  } catch (e) {
    await rm(part, { recursive: true, force: true }).catch(() => undefined);
    throw e;
  }
}
