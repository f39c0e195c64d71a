import { randomFillSync } from 'node:crypto';
import { closeSync, fsyncSync, openSync, renameSync, statfsSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { ResourceExhaustedError } from '../core/errors.js';

/** A doctor check, the shape of src/daemon/doctor.ts's `Check` (declared here so the store does not depend on the daemon). */
export interface ReserveCheck { readonly name: string; readonly ok: boolean; readonly detail: string; readonly warn?: boolean }

export interface ReserveOptions {
  /** Bytes kept in reserve; default 8 MiB. */
  readonly size?: number;
  /** Free space, beyond the reserve, below which new state (a new mount reference) is refused; default 1 MiB. */
  readonly headroom?: number;
  /** How often a used or missing reserve is re-created once there is room again; default 10 s (0: never by timer). */
  readonly retryMs?: number;
  readonly now?: () => Date;
}

const MiB = 1024 * 1024;
export const RESERVE_FILE = 'ballast.reserve';

/**
 * Space kept for Ballast's own state. A file of a few MiB under the root (real blocks, written with
 * random bytes so no compressing or sparse filesystem makes it free) that the store gives back to the
 * filesystem when one of its writes fails for lack of space, then retries that write once: Unmount, the
 * journal and the ledger keep working on a full disk. New state (a Mount) is refused first, while
 * space is short (see `assertRoom`), so the reserve is left for what ends or undoes state. The file is
 * created at start when space allows and re-created when space is back.
 */
export class StoreReserve {
  readonly file: string;
  readonly size: number;
  private readonly headroom: number;
  private readonly now: () => Date;
  private present = false;
  /** When and why the reserve was last given back; cleared when it is re-created. */
  private used?: { at: string; why: string };
  private timer?: NodeJS.Timeout;

  constructor(readonly dir: string, o: ReserveOptions = {}) {
    this.file = join(dir, RESERVE_FILE);
    this.size = o.size ?? 8 * MiB;
    this.headroom = o.headroom ?? MiB;
    this.now = o.now ?? (() => new Date());
    this.present = this.fileIsWhole();
    if (!this.present) this.ensure();
    const retry = o.retryMs ?? 10_000;
    if (retry > 0) {
      this.timer = setInterval(() => { if (!this.present) this.ensure(); }, retry);
      this.timer.unref();
    }
  }

  /**
   * Free bytes on the filesystem of `dir` as an ordinary user sees them (statfs f_bavail). Ballast runs
   * as root and could write further into the blocks a filesystem keeps for root, but f_bfree also
   * counts blocks nobody may allocate (ext4's reserved clusters), so "full" is judged by f_bavail, and
   * what is kept for root is left, like the reserve, to unmounts and the journal.
   */
  freeBytes(): number {
    const s = statfsSync(this.dir);
    return s.bavail * s.bsize;
  }

  /**
   * Creates the reserve if it is missing and the filesystem has room for it and the headroom. Returns
   * whether the reserve is in place. Synchronous: 8 MiB once, at start or after space came back.
   */
  ensure(): boolean {
    if (this.present) return true;
    if (this.fileIsWhole()) { this.present = true; this.used = undefined; return true; }
    let free: number;
    try { free = this.freeBytes(); } catch { return false; }
    if (free < this.size + 2 * this.headroom) return false;
    const tmp = `${this.file}.tmp`;
    let fd: number | undefined;
    try {
      fd = openSync(tmp, 'w', 0o600);
      const chunk = Buffer.allocUnsafe(MiB);
      for (let done = 0; done < this.size; done += chunk.length) {
        randomFillSync(chunk);
        writeSync(fd, chunk, 0, Math.min(chunk.length, this.size - done));
      }
      fsyncSync(fd);
      closeSync(fd); fd = undefined;
      renameSync(tmp, this.file);
      this.present = true;
      this.used = undefined;
      return true;
    } catch {
      if (fd !== undefined) try { closeSync(fd); } catch { /* already failing */ }
      try { unlinkSync(tmp); } catch { /* absent */ }
      return false;
    }
  }

  /** Gives the reserve back to the filesystem. Returns false when there was none to give. */
  release(why: string): boolean {
    if (!this.present && !this.fileIsWhole()) return false;
    try { unlinkSync(this.file); } catch { /* gone already */ }
    this.present = false;
    this.used = { at: this.now().toISOString(), why };
    return true;
  }

  /** Is the reserve in place? */
  get intact(): boolean { return this.present; }
  /** When and why it was last used, while it is not yet re-created. */
  get lastUse(): { at: string; why: string } | undefined { return this.used; }

  /**
   * Throws a ResourceExhaustedError naming the directory when the filesystem has less than the headroom
   * free beyond the reserve (a reserve that is not in place counts as owed). Callers adding new state
   * call it before their first write. One statfs (a microsecond); when there is room for a missing
   * reserve again it is re-created here.
   */
  assertRoom(action: string): void {
    let free: number;
    try { free = this.freeBytes(); } catch { return; } // no answer from statfs: let the write itself tell
    if (!this.present && free >= this.size + 2 * this.headroom) { this.ensure(); return; }
    if (free >= this.headroom + (this.present ? 0 : this.size)) return;
    throw new ResourceExhaustedError(`${action} is refused: ${fullSentence(this.dir, free)}. Ballast refuses new mounts while the disk is full, so that unmounts and its journal can still be written`);
  }

  /** The doctor check: is the reserve in place, and if it was used, when and how to get it back. */
  check(): ReserveCheck {
    if (this.present) return { name: 'state reserve', ok: true, detail: `${fmt(this.size)} kept free for Ballast's state in ${this.file}` };
    let free = -1;
    try { free = this.freeBytes(); } catch { /* unknown */ }
    const where = free >= 0 ? ` (${fmt(free)} free now)` : '';
    const back = `free at least ${fmt(this.size + 2 * this.headroom)} on the filesystem of ${this.dir}${where}; Ballast re-creates the reserve on its own within seconds of space being back`;
    if (this.used) {
      return { name: 'state reserve', ok: false, warn: true, detail: `the ${fmt(this.size)} reserve under ${this.dir} was used at ${this.used.at} (${this.used.why}), because the filesystem of Ballast's state directory filled up; new mounts are refused until there is room again. To get it back, ${back}` };
    }
    return { name: 'state reserve', ok: false, warn: true, detail: `no ${fmt(this.size)} reserve under ${this.dir}: there was no room to create it; on a full disk Unmount and the journal could fail. ${back[0].toUpperCase()}${back.slice(1)}` };
  }

  close(): void { if (this.timer) clearInterval(this.timer); this.timer = undefined; }

  private fileIsWhole(): boolean {
    try { return statSync(this.file).size >= this.size; } catch { return false; }
  }
}

/** The sentence for a state directory without space. */
export function fullSentence(dir: string, free?: number): string {
  return `the filesystem of Ballast's state directory ${dir} is full${free !== undefined ? ` (${fmt(free)} free)` : ''}; free space there (see df -h ${dir}) and retry`;
}

function fmt(bytes: number): string {
  if (bytes >= MiB) return `${Math.round((bytes / MiB) * 10) / 10} MiB`;
  return `${Math.round(bytes / 1024)} KiB`;
}
