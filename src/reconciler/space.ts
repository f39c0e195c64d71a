import { readFileSync, statSync, statfsSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Logger } from 'pino';
import type { BackendRegistry } from '../backends/registry.js';
import { hasThinSpace, type Backend, type SpaceGate, type ThinSpace } from '../backends/types.js';
import type { VolumeRecord } from '../core/types.js';
import type { MetadataStore } from '../store/types.js';
import { human } from '../backends/block/index.js';

/**
 * Free-space levels of a host filesystem that holds mounted thin images, in percent of its size.
 * Defaults (Ceph's nearfull 0.85 / full 0.95, as free space): warning below 15 % free, critical below
 * 5 % free but never below 256 MiB, plus the headroom (see SpaceWatcher); thaw when back above
 * critical + 2 %. Polled every 200 ms while thin volumes are mounted.
 */
export interface SpaceSettings {
  readonly warnFreePercent: number;
  readonly criticalFreePercent: number;
  /**
   * Floor of the critical level, for the first poll interval of a burst, before its rate is known:
   * 256 MiB covers a writer at 1.2 GiB/s for one 200 ms interval.
   */
  readonly criticalMinMiB: number;
  /** Hysteresis: frozen volumes thaw only when free space is above the critical level plus this. */
  readonly resumeMarginPercent: number;
  /** statfs poll interval while thin volumes are mounted; must be well under the reconcile interval. */
  readonly pollMs: number;
}

export const SPACE_DEFAULTS: SpaceSettings = { warnFreePercent: 15, criticalFreePercent: 5, criticalMinMiB: 256, resumeMarginPercent: 2, pollMs: 200 };

export type SpaceLevel = 'ok' | 'warning' | 'critical';

/** One host filesystem with mounted thin volumes, as the last poll saw it (doctor and Status read this). */
export interface FsReport {
  readonly dir: string;
  readonly totalBytes: number;
  readonly freeBytes: number;
  readonly level: SpaceLevel;
  readonly warnBytes: number;
  readonly criticalBytes: number;
  readonly resumeBytes: number;
  /** Part of the critical level that covers data still in memory and the fall of free space until the next poll. */
  readonly headroomBytes: number;
  readonly volumes: readonly string[];
  readonly frozen: readonly string[];
  readonly at: string;
}

export interface SpaceWatcherDeps {
  readonly backends: BackendRegistry;
  readonly store: MetadataStore;
  /** Runs fn under the volume's lock (VolumeService.withLock): a freeze never races a Mount or Unmount. */
  readonly withLock: <T>(volume: string, fn: () => Promise<T>) => Promise<T>;
  readonly log: Logger;
  readonly settings: SpaceSettings;
  /** Injected for tests; production: statfsSync, statSync, /proc/meminfo. */
  readonly statfs?: (path: string) => { totalBytes: number; freeBytes: number };
  readonly allocated?: (image: string) => number;
  /** Is something mounted at this path (it is on another device than its parent)? */
  readonly isMounted?: (path: string) => boolean;
  /** Bytes of dirty and under-writeback page cache (Dirty + Writeback of /proc/meminfo). */
  readonly dirtyBytes?: () => number;
  readonly now?: () => number;
}

const FREEZE_PARALLEL = 8;

interface Watched { readonly vol: VolumeRecord; readonly backend: Backend & ThinSpace; readonly image: string; readonly size: number; readonly dir: string }
/** `criticalHeadroom`: the headroom in force when the level became critical, kept until it is left (see measure). */
interface FsState { level: SpaceLevel; lastFree?: number; lastAt?: number; rates: number[]; report?: FsReport; criticalHeadroom?: number }

/**
 * The space watcher. While thin volumes are mounted it polls (statfs, cheap and synchronous) the free
 * space of the host filesystems holding their images, every `pollMs`, well under the reconcile interval.
 *
 * Below the critical level it stops writes by freezing each mounted thin volume (FIFREEZE, `fsfreeze -f`),
 * and refuses new mounts of thin volumes there; when free space is back above critical + margin it thaws
 * them. One log line per volume frozen or thawed, one per filesystem changing level.
 *
 * Why freeze and not a read-only remount: a remount read-only is refused by the kernel (EBUSY) while a
 * file is open for writing, which is exactly when writes must stop; and where it works, every write then
 * fails with EROFS inside the application. A freeze always succeeds on ext4, xfs and btrfs, first writes
 * out the dirty data (while there is still room for it), and makes writers wait, not fail: they resume
 * where they were when space is back. The cost: a writer blocked on a frozen filesystem is in
 * uninterruptible sleep, so it cannot be killed (a `docker stop` waits) until the thaw. Ballast thaws
 * before any unmount (an unmount must not hang on a frozen filesystem), and at start it thaws what a
 * crashed daemon left frozen unless the level is still critical (then it freezes again: idempotent).
 * A stopping daemon leaves frozen volumes frozen; the next start decides. By hand: `fsfreeze -u <mountpoint>`.
 *
 * The critical level is `criticalFreePercent` of the filesystem (at least `criticalMinMiB`, which covers
 * the first poll interval of a burst) plus a headroom, so that no write inside a thin volume can fail
 * before writes are stopped: data already accepted by the volume's filesystem
 * but still in the page cache (Dirty + Writeback of /proc/meminfo, an upper bound) plus the fastest fall
 * of free space seen in the last polls times two poll intervals, both capped by the holes the mounted thin
 * images can still fill (they can never need more than that).
 */
export class SpaceWatcher implements SpaceGate {
  private readonly watched = new Map<string, Watched>();
  private readonly frozen = new Set<string>();
  /** Mounted at start: maybe frozen by a daemon that crashed; thawed on the first poll that is not critical. */
  private readonly unknown = new Set<string>();
  private readonly fs = new Map<string, FsState>();
  private timer: NodeJS.Timeout | undefined;
  private polling: Promise<void> | undefined;
  private readonly statfs: (path: string) => { totalBytes: number; freeBytes: number };
  private readonly allocated: (image: string) => number;
  private readonly isMounted: (path: string) => boolean;
  private readonly dirtyBytes: () => number;
  private readonly now: () => number;

  constructor(private readonly d: SpaceWatcherDeps) {
    this.statfs = d.statfs ?? ((p) => { const s = statfsSync(p); return { totalBytes: s.blocks * s.bsize, freeBytes: s.bavail * s.bsize }; });
    this.allocated = d.allocated ?? ((img) => { try { return statSync(img).blocks * 512; } catch { return 0; } });
    this.isMounted = d.isMounted ?? ((p) => { try { return statSync(p).dev !== statSync(dirname(p)).dev; } catch { return false; } });
    this.dirtyBytes = d.dirtyBytes ?? readDirtyBytes;
    this.now = d.now ?? Date.now;
    for (const b of d.backends.all()) if (hasThinSpace(b)) b.setSpaceGate(this);
  }

  /** Finds the thin volumes mounted now (after a restart) and starts polling. */
  async start(): Promise<void> {
    for (const rec of await this.d.store.listVolumes()) {
      if (rec.state !== 'ready') continue;
      const w = this.watchedOf(rec);
      if (w && this.isMounted(rec.mountpoint)) { this.watched.set(rec.name, w); this.unknown.add(rec.name); }
    }
    if (!this.timer) {
      const tick = () => {
        void this.poll().catch((e) => this.d.log.error({ op: 'space', err: String(e) }, 'free-space poll failed'))
          .finally(() => { if (this.timer) this.timer = setTimeout(tick, this.d.settings.pollMs).unref(); });
      };
      this.timer = setTimeout(tick, 0).unref();
    }
  }

  async stop(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.polling?.catch(() => undefined);
    if (this.frozen.size > 0) this.d.log.warn({ op: 'space', frozen: [...this.frozen] }, 'stopping with thin volumes frozen; they stay frozen until the next start finds space (or fsfreeze -u by hand)');
  }

  // ---- SpaceGate (called by backends) ------------------------------------------------------------

  refuseMount(vol: VolumeRecord, image: string): string | undefined {
    const dir = dirname(image);
    const vols = [...this.watched.values()].filter((w) => w.dir === dir && w.vol.name !== vol.name);
    const self = this.watchedOf(vol);
    const r = this.measure(dir, self ? [...vols, self] : vols, this.fs.get(dir));
    if (r.level !== 'critical') return undefined;
    return `volume ${vol.name} is thin and the filesystem holding its image (${dir}) has only ${human(r.freeBytes)} of ${human(r.totalBytes)} free, below the critical level of ${human(r.criticalBytes)}; new mounts of thin volumes there wait until more than ${human(r.resumeBytes)} is free. Free space on that filesystem, or use a thick volume (-o provisioning=thick)`;
  }

  isFrozen(volume: string): boolean { return this.frozen.has(volume); }

  note(volume: string): string | undefined {
    const w = this.watched.get(volume);
    const r = w ? this.fs.get(w.dir)?.report : undefined;
    if (!r || r.level === 'ok') return undefined;
    return r.level === 'critical'
      ? `critical: ${human(r.freeBytes)} free on the host filesystem of the image (critical below ${human(r.criticalBytes)}); writes ${this.frozen.has(volume) ? 'wait (frozen)' : 'are being stopped'} until more than ${human(r.resumeBytes)} is free`
      : `warning: ${human(r.freeBytes)} free on the host filesystem of the image (warning below ${human(r.warnBytes)}, writes stop below ${human(r.criticalBytes)})`;
  }

  published(vol: VolumeRecord): void {
    const w = this.watchedOf(vol);
    if (!w) return;
    this.watched.set(vol.name, w);
    // A first sample of its host filesystem now, so that the next poll already knows how fast free
    // space falls: a writer that starts at once would otherwise get two poll intervals, not one,
    // before its rate counts in the headroom.
    if (!this.fs.has(w.dir)) {
      try { this.fs.set(w.dir, { level: 'ok', rates: [], lastFree: this.statfs(w.dir).freeBytes, lastAt: this.now() }); } catch { /* the next poll measures it */ }
    }
  }

  unpublished(vol: VolumeRecord): void {
    this.watched.delete(vol.name);
    this.unknown.delete(vol.name);
    if (this.frozen.delete(vol.name)) this.d.log.info({ op: 'space', volume: vol.name, outcome: 'ok' }, 'thin volume thawed and unmounted');
  }

  // ---- polling --------------------------------------------------------------------------------------

  /** The filesystems with mounted thin volumes, as the last poll saw them. */
  report(): FsReport[] {
    return [...this.fs.values()].map((s) => s.report).filter((r): r is FsReport => !!r);
  }

  /** One poll: measure each filesystem, freeze below critical, thaw above critical + margin. Never overlaps. */
  poll(): Promise<void> {
    if (this.polling) return this.polling;
    this.polling = this.pollOnce().finally(() => { this.polling = undefined; });
    return this.polling;
  }

  private async pollOnce(): Promise<void> {
    for (const [name, w] of this.watched) {
      if (!this.isMounted(w.vol.mountpoint)) { this.watched.delete(name); this.frozen.delete(name); this.unknown.delete(name); }
    }
    const byDir = new Map<string, Watched[]>();
    for (const w of this.watched.values()) {
      const l = byDir.get(w.dir);
      if (l) l.push(w); else byDir.set(w.dir, [w]);
    }
    for (const dir of [...this.fs.keys()]) if (!byDir.has(dir)) this.fs.delete(dir);
    const work: (() => Promise<void>)[] = [];
    for (const [dir, vols] of byDir) {
      const st = this.fs.get(dir) ?? { level: 'ok' as SpaceLevel, rates: [] };
      this.fs.set(dir, st);
      const r = this.measure(dir, vols, st);
      const t = this.now();
      if (st.lastFree !== undefined && st.lastAt !== undefined && t > st.lastAt) {
        st.rates.push(Math.max(0, st.lastFree - r.freeBytes) / (t - st.lastAt));
        if (st.rates.length > 4) st.rates.shift();
      }
      st.lastFree = r.freeBytes; st.lastAt = t;
      st.criticalHeadroom = r.level === 'critical' ? r.headroomBytes : undefined;
      if (r.level !== st.level) {
        const fields = { op: 'space', dir, level: r.level, freeBytes: r.freeBytes, totalBytes: r.totalBytes, warnBytes: r.warnBytes, criticalBytes: r.criticalBytes, resumeBytes: r.resumeBytes, volumes: r.volumes };
        if (r.level === 'critical') this.d.log.error(fields, `host filesystem of ${dir} is below the critical free-space level (${human(r.freeBytes)} free): stopping writes to its thin volumes`);
        else if (r.level === 'warning') this.d.log.warn(fields, `host filesystem of ${dir} is below the warning free-space level (${human(r.freeBytes)} free); thin volumes there are frozen below ${human(r.criticalBytes)}`);
        else this.d.log.info(fields, `host filesystem of ${dir} has space again (${human(r.freeBytes)} free)`);
        st.level = r.level;
      }
      for (const w of vols) {
        if (r.level === 'critical' && !this.frozen.has(w.vol.name)) work.push(() => this.setFrozen(w, true));
        else if (r.level !== 'critical' && (this.frozen.has(w.vol.name) || this.unknown.has(w.vol.name))) work.push(() => this.setFrozen(w, false));
      }
      st.report = { ...r, frozen: vols.filter((w) => this.frozen.has(w.vol.name)).map((w) => w.vol.name) };
    }
    // A few at a time: after an upgrade every old (sparse, so thin) mounted volume gets a precautionary thaw.
    await Promise.all(Array.from({ length: Math.min(FREEZE_PARALLEL, work.length) }, async () => {
      for (let job = work.shift(); job; job = work.shift()) await job();
    }));
    for (const [dir, vols] of byDir) {
      const st = this.fs.get(dir);
      if (st?.report) st.report = { ...st.report, frozen: vols.filter((w) => this.frozen.has(w.vol.name)).map((w) => w.vol.name) };
    }
  }

  private async setFrozen(w: Watched, freeze: boolean): Promise<void> {
    const name = w.vol.name;
    const wasUnknown = this.unknown.delete(name);
    const t0 = performance.now();
    try {
      await this.d.withLock(name, async () => {
        if (!this.watched.has(name) || !this.isMounted(w.vol.mountpoint)) return;
        if (freeze) { await w.backend.freeze(w.vol); this.frozen.add(name); }
        else { await w.backend.thaw(w.vol); this.frozen.delete(name); }
        if (!freeze && wasUnknown) return; // a precautionary thaw at start: nothing to report
        const ms = Math.round(performance.now() - t0);
        if (freeze) this.d.log.warn({ op: 'freeze', volume: name, backend: w.vol.backend, mountpoint: w.vol.mountpoint, ms, outcome: 'ok' }, `thin volume ${name} frozen: its writers wait until the host filesystem of ${w.dir} has space again`);
        else this.d.log.info({ op: 'thaw', volume: name, backend: w.vol.backend, mountpoint: w.vol.mountpoint, ms, outcome: 'ok' }, `thin volume ${name} thawed: space is back on the host filesystem of ${w.dir}`);
      });
    } catch (e) {
      if (wasUnknown) this.unknown.add(name);
      this.d.log.error({ op: freeze ? 'freeze' : 'thaw', volume: name, backend: w.vol.backend, outcome: 'Internal', err: (e as Error).message }, `could not ${freeze ? 'freeze' : 'thaw'} thin volume ${name}`);
    }
  }

  private measure(dir: string, vols: readonly Watched[], st: FsState | undefined): Omit<FsReport, 'frozen'> {
    const s = this.d.settings;
    const { totalBytes, freeBytes } = this.statfs(dir);
    let holes = 0;
    for (const w of vols) holes += Math.max(0, w.size - this.allocated(w.image));
    const rate = st?.rates.length ? Math.max(...st.rates) : 0;
    // While frozen the dirty data is written out and free space stops falling, so the headroom measured
    // now would shrink and thaw at once, and writers would resume at their old rate: the headroom in force
    // when the level became critical stays until the volumes thaw.
    const wasCritical = st?.level === 'critical';
    const measured = Math.round(Math.min(holes, this.dirtyBytes() + rate * 2 * s.pollMs));
    const headroomBytes = wasCritical ? Math.max(measured, st?.criticalHeadroom ?? 0) : measured;
    const criticalBytes = Math.max(Math.round(totalBytes * s.criticalFreePercent / 100), s.criticalMinMiB * 1024 ** 2) + headroomBytes;
    const warnBytes = Math.max(criticalBytes, Math.round(totalBytes * s.warnFreePercent / 100) + headroomBytes);
    const resumeBytes = criticalBytes + Math.round(totalBytes * s.resumeMarginPercent / 100);
    const level: SpaceLevel = freeBytes < criticalBytes || (wasCritical && freeBytes < resumeBytes) ? 'critical' : freeBytes < warnBytes ? 'warning' : 'ok';
    return { dir, totalBytes, freeBytes, level, warnBytes, criticalBytes, resumeBytes, headroomBytes, volumes: vols.map((w) => w.vol.name), at: new Date(this.now()).toISOString() };
  }

  private watchedOf(vol: VolumeRecord): Watched | undefined {
    if (!this.d.backends.has(vol.backend)) return undefined;
    const b = this.d.backends.get(vol.backend);
    if (!hasThinSpace(b)) return undefined;
    const t = b.thinImage(vol);
    return t ? { vol, backend: b, image: t.image, size: t.size, dir: dirname(t.image) } : undefined;
  }
}

/** Dirty + Writeback of /proc/meminfo, in bytes (0 if unreadable). */
export function readDirtyBytes(): number {
  try {
    const m = readFileSync('/proc/meminfo', 'utf8');
    let kb = 0;
    for (const k of ['Dirty', 'Writeback']) {
      const r = new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(m);
      if (r) kb += Number(r[1]);
    }
    return kb * 1024;
  } catch { return 0; }
}
