import type { Logger } from 'pino';
import type { MetadataStore } from '../store/types.js';
import type { BackendRegistry } from '../backends/registry.js';
import { restageAtMountpoint, stageAtMountpoint, unstageAtMountpoint } from '../backends/node-ops.js';
import { canCheckHealth, canFindOrphans, type HostSnapshot, type Orphan } from '../backends/types.js';
import type { VolumeService } from '../core/service.js';
import type { MountRef, VolumeRecord } from '../core/types.js';
import type { MountTable } from '../host/mountinfo.js';
import type { LoopDevice } from '../host/blockdev.js';
import type { DockerApi } from '../host/docker-api.js';

export type RepairKind = 'unmount-unreferenced' | 'remount-referenced' | 'remount-dead' | 'leaked-reference' | 'orphan-cleaned' | 'released-idle' | 'stale-detached' | 'adopted';

export interface Repair { readonly kind: RepairKind; readonly volume: string; readonly detail: string }
export interface Uncertain { readonly volume: string; readonly since: string; readonly error: string; readonly attempts: number; readonly nextTry: string }
export interface LeakedRef { readonly volume: string; readonly id: string; readonly since: string; readonly dropped: boolean }

export interface PassReport {
  readonly startedAt: string;
  readonly ms: number;
  readonly volumes: number;
  readonly repairs: readonly Repair[];
  readonly uncertain: readonly Uncertain[];
  readonly orphans: readonly Orphan[];
  readonly leaked: readonly LeakedRef[];
  /**
   * Cluster mode: volumes mounted here that another node now holds (this node was fenced or its volume
   * taken over) and whose backend cannot cut this node off at the storage: never unmounted or remounted
   * by this node, only reported (the others are detached without a write, a `stale-detached` repair).
   */
  readonly stale: readonly { readonly volume: string; readonly detail: string }[];
  /** Volumes whose stored record does not decode: never touched, only reported. */
  readonly damaged: readonly { readonly volume: string; readonly detail: string }[];
  /** Why leaked references could not be checked, if they could not. */
  readonly docker: string;
}

export interface ReconcilerDeps {
  readonly service: VolumeService;
  readonly store: MetadataStore;
  readonly backends: BackendRegistry;
  readonly mounts: MountTable;
  readonly loops: () => Promise<LoopDevice[]>;
  readonly docker?: DockerApi;
  readonly driver: string;
  readonly log: Logger;
  readonly node: string;
  /** A reference younger than this is never taken for leaked (its container may still be starting). */
  readonly leakGraceMs: number;
  readonly intervalMs: number;
  readonly now?: () => Date;
}

const BACKOFF_MIN_MS = 2_000;
const BACKOFF_MAX_MS = 300_000;

/**
 * Desired state (the ledger) against actual state (the mount table, loop devices, the Docker engine's
 * running containers), repaired one volume at a time under the volume's lock: first references no
 * container can own are dropped, then unreferenced volumes are unmounted, then referenced ones mounted
 * (unmounts before mounts). A volume whose repair fails is "uncertain" and retried with backoff.
 * (kubelet volumemanager: desired/actual state of world, one operation per volume.)
 */
export class Reconciler {
  private readonly uncertain = new Map<string, { since: string; error: string; attempts: number; nextTry: number }>();
  private readonly counters: Record<RepairKind | 'passes' | 'failures', number> = {
    passes: 0, failures: 0, 'unmount-unreferenced': 0, 'remount-referenced': 0, 'remount-dead': 0, 'leaked-reference': 0, 'orphan-cleaned': 0, 'released-idle': 0, 'stale-detached': 0, adopted: 0,
  };
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<PassReport> | undefined;
  private last: PassReport | undefined;
  private readonly now: () => Date;

  constructor(private readonly d: ReconcilerDeps) { this.now = d.now ?? (() => new Date()); }

  /**
   * One pass. `repair`: also drop leaked references regardless of the grace period, retry uncertain
   * volumes now, and clean stray mounts and loop devices (never data). Passes never overlap.
   */
  runOnce(opts: { repair?: boolean; checkDocker?: boolean } = {}): Promise<PassReport> {
    if (this.running) return this.running.then(() => this.runOnce(opts));
    this.running = this.pass(opts).finally(() => { this.running = undefined; });
    return this.running;
  }

  start(): void {
    if (this.timer) return;
    const tick = () => {
      this.runOnce({ checkDocker: true })
        .catch((e) => this.d.log.error({ op: 'reconcile', err: String(e) }, 'reconcile pass failed'))
        .finally(() => { if (this.timer) this.timer = setTimeout(tick, this.d.intervalMs).unref(); });
    };
    this.timer = setTimeout(tick, this.d.intervalMs).unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.running?.catch(() => undefined);
  }

  status() {
    return { counters: { ...this.counters }, uncertain: this.uncertainList(), last: this.last };
  }

  private uncertainList(): Uncertain[] {
    return [...this.uncertain.entries()].map(([volume, u]) => ({ volume, since: u.since, error: u.error, attempts: u.attempts, nextTry: new Date(u.nextTry).toISOString() }));
  }

  private async snapshot(): Promise<HostSnapshot> {
    const [mounts, loops] = await Promise.all([this.d.mounts.list(), this.d.loops().catch(() => [] as LoopDevice[])]);
    return { mounts, loops };
  }

  private async pass(opts: { repair?: boolean; checkDocker?: boolean }): Promise<PassReport> {
    const t0 = performance.now();
    const startedAt = this.now().toISOString();
    const repairs: Repair[] = [];
    const leaked: LeakedRef[] = [];
    const stale: { volume: string; detail: string }[] = [];
    const vols = await this.d.store.listVolumes();
    // Only this node's references: another node's are that node's to reconcile.
    const refs = groupRefs(await this.d.store.nodeMounts(this.d.node));

    // 1. References that no running container can own (dockerd never sent Unmount).
    let docker = 'not checked';
    if (opts.checkDocker !== false && this.d.docker) {
      try {
        const inUse = await this.d.docker.volumesInUse(this.d.driver);
        docker = 'ok';
        const cutoff = this.now().getTime() - (opts.repair ? 0 : this.d.leakGraceMs);
        for (const v of vols) {
          const rs = refs.get(v.name);
          if (!rs || inUse.has(v.name)) continue;
          for (const r of rs) {
            const old = Date.parse(r.since) <= cutoff;
            leaked.push({ volume: v.name, id: r.id, since: r.since, dropped: old });
            if (!old) continue;
            await this.attempt(v.name, async () => {
              await this.d.service.withLock(v.name, async () => {
                const cur = await this.d.store.getVolume(v.name);
                if (!cur) return;
                for (let i = 0; i < r.count; i++) await this.d.service.dropReference(cur, r.id, 'leaked');
              });
              repairs.push({ kind: 'leaked-reference', volume: v.name, detail: `mount ID ${r.id.slice(0, 12)} (x${r.count}, since ${r.since}) has no running container` });
            });
          }
        }
      } catch (e) {
        docker = (e as Error).message;
      }
    } else if (!this.d.docker) {
      docker = 'no Docker engine configured';
    }

    // 2. Unmount what nothing references, then 3. mount what is referenced.
    for (const phase of ['unmount', 'mount'] as const) {
      const snap = await this.snapshot();
      for (const v of vols) {
        if (!opts.repair && !this.due(v.name)) continue;
        await this.attempt(v.name, () => this.d.service.withLock(v.name, async () => {
          const cur = await this.d.store.getVolume(v.name);
          if (!cur || cur.state !== 'ready' || !this.d.backends.has(cur.backend)) return;
          const backend = this.d.backends.get(cur.backend);
          let state = backend.probe(cur, cur.mountpoint, snap);
          if (state === 'mounted') {
            const s = await this.d.service.staleHere(cur);
            if (s) {
              // The backend cut this node off at the storage: detach it without a write, at once, even while
              // containers here still use it (they get I/O errors either way; a fenced client left alive
              // can hang every loop device scan on the host).
              if (phase === 'unmount' && await this.d.service.tearDownStale(cur)) {
                repairs.push({ kind: 'stale-detached', volume: cur.name, detail: `held by ${s.holders} at epoch ${s.epoch}, and this node is cut off at the storage: its staging here was detached without writing` });
                return;
              }
              if (phase === 'unmount') stale.push({ volume: cur.name, detail: `mounted on this node, but held by ${s.holders} at epoch ${s.epoch}: this node was fenced or its volume taken over. Ballast leaves the mount alone (an unmount would write to storage another node now owns); stop the containers using it here and reboot this node, or detach it by hand with umount -l ${cur.mountpoint}` });
              return;
            }
          }
          const total = await this.d.store.mountCount(cur.name, this.d.node);
          // Cluster mode: an attachment this node holds with nothing referenced or staged here is let go.
          if (phase === 'unmount' && total === 0 && state !== 'mounted' && await this.d.service.releaseIfIdle(cur, false)) {
            repairs.push({ kind: 'released-idle', volume: cur.name, detail: `attached to node ${this.d.node} with no reference and nothing mounted: released for other nodes` });
          }
          if (state === 'always') return;
          if (phase === 'mount' && total > 0 && state === 'mounted' && canCheckHealth(backend)) {
            // A FUSE client that died leaves "Transport endpoint is not connected": mount it again in place.
            const h = await backend.checkHealth(cur, cur.mountpoint);
            if (!h.healthy && /not connected/i.test(h.reason ?? '')) {
              await restageAtMountpoint(backend, cur, this.d.node, this.d.mounts);
              await this.d.service.refreshClaim(cur); // a new storage client: record it for a later fence
              repairs.push({ kind: 'remount-dead', volume: cur.name, detail: `the mount was dead (${h.reason}); mounted again in place. Containers started before see the old, dead mount until they restart: the kernel does not carry a new mount into their mount namespaces` });
            }
            return;
          }
          const suspect = (phase === 'unmount' && total === 0 && state === 'mounted') || (phase === 'mount' && total > 0 && state === 'unmounted');
          if (!suspect) return;
          // The snapshot predates this volume's lock: look again before acting.
          state = backend.probe(cur, cur.mountpoint, { mounts: await this.d.mounts.list(), loops: [] });
          if (phase === 'unmount' && total === 0 && state === 'mounted') {
            await unstageAtMountpoint(backend, cur, this.d.node);
            repairs.push({ kind: 'unmount-unreferenced', volume: cur.name, detail: 'mounted with no references: unmounted' });
            if (await this.d.service.releaseIfIdle(cur, false)) repairs.push({ kind: 'released-idle', volume: cur.name, detail: `released by node ${this.d.node} after the unmount` });
          } else if (phase === 'mount' && total > 0 && state === 'unmounted') {
            // Cluster mode: only while this node may hold it (another node may have it by now).
            await this.d.service.ensureAttached(cur);
            await stageAtMountpoint(backend, cur, this.d.node, this.d.mounts);
            repairs.push({ kind: 'remount-referenced', volume: cur.name, detail: `${total} reference(s) but not mounted: mounted again` });
          }
        }));
      }
    }

    // 4. What no record accounts for: reported; stray mounts and loop devices cleaned on repair only,
    // leftovers that are never in use (autoClean: a backend's temporary share mounts) on every pass.
    const known = new Set((await this.d.store.listSummaries()).map((s) => s.name));
    const orphans: Orphan[] = [];
    const snap = await this.snapshot();
    for (const b of this.d.backends.all()) {
      if (!canFindOrphans(b)) continue;
      for (const o of await b.findOrphans(known, snap).catch(() => [] as Orphan[])) {
        if (o.adopt && opts.repair) {
          try {
            await this.d.service.adopt(b.name, o.adopt);
            repairs.push({ kind: 'adopted', volume: o.adopt.name, detail: `${o.path}: the store had lost it; adopted back from the backend's own record of it` });
            continue;
          } catch (e) {
            orphans.push({ ...o, detail: `${o.detail}; adopting failed: ${(e as Error).message}` });
            continue;
          }
        }
        if (o.cleanable && (opts.repair || o.autoClean)) {
          try {
            await b.cleanOrphan(o);
            repairs.push({ kind: 'orphan-cleaned', volume: '', detail: `${o.kind} ${o.path}: ${o.detail}` });
            continue;
          } catch (e) {
            orphans.push({ ...o, detail: `${o.detail}; cleaning failed: ${(e as Error).message}` });
            continue;
          }
        }
        orphans.push(o);
      }
    }

    for (const r of repairs) {
      this.counters[r.kind]++;
      this.d.log.warn({ op: 'repair', kind: r.kind, volume: r.volume || undefined, node: this.d.node, detail: r.detail, outcome: 'ok' }, 'repair');
    }
    this.counters.passes++;
    const report: PassReport = {
      startedAt, ms: Math.round((performance.now() - t0) * 100) / 100, volumes: vols.length,
      repairs, uncertain: this.uncertainList(), orphans, leaked, docker,
      stale,
      damaged: vols.filter((v) => v.state === 'damaged').map((v) => ({ volume: v.name, detail: String(v.details.damage ?? 'unreadable') })),
    };
    this.last = report;
    this.d.log.debug({ op: 'reconcile', ms: report.ms, volumes: report.volumes, repairs: repairs.length, uncertain: report.uncertain.length, orphans: orphans.length }, 'reconcile');
    return report;
  }

  private due(volume: string): boolean {
    const u = this.uncertain.get(volume);
    return !u || u.nextTry <= this.now().getTime();
  }

  /** Runs one volume's repair; a failure marks the volume uncertain with exponential backoff. */
  private async attempt(volume: string, fn: () => Promise<void>): Promise<void> {
    try {
      await fn();
      if (this.uncertain.delete(volume)) this.d.log.info({ op: 'reconcile', volume, outcome: 'ok' }, 'volume is certain again');
    } catch (e) {
      this.counters.failures++;
      const prev = this.uncertain.get(volume);
      const attempts = (prev?.attempts ?? 0) + 1;
      const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** (attempts - 1));
      const error = (e as Error).message;
      this.uncertain.set(volume, { since: prev?.since ?? this.now().toISOString(), error, attempts, nextTry: this.now().getTime() + delay });
      this.d.log.error({ op: 'reconcile', volume, node: this.d.node, outcome: 'uncertain', attempts, retryInMs: delay, err: error }, 'repair failed; volume is uncertain');
    }
  }
}

function groupRefs(all: MountRef[]): Map<string, MountRef[]> {
  const m = new Map<string, MountRef[]>();
  for (const r of all) {
    const l = m.get(r.volume);
    if (l) l.push(r); else m.set(r.volume, [r]);
  }
  return m;
}

export type { VolumeRecord };
