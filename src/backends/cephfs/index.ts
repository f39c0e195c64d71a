import { mkdir, rmdir } from 'node:fs/promises';
import { mountpointOf, probeMountpoint, stagingPathOf, MULTI_NODE_MULTI_WRITER, type Backend, type BackendContext, type BackendFactory, type HealthChecker, type HostSnapshot, type OptionDoc, type Placement, type ProvisionContext, type Snapshotter, type Expander } from '../types.js';
import type { SnapshotRecord, VolumeRecord } from '../../core/types.js';
import { ConflictError, InternalError, InvalidArgumentError, UnavailableError } from '../../core/errors.js';
import { checkOptionKeys } from '../options.js';
import { ConfigReader } from '../config-values.js';
import { formatSize, parseSize } from '../../core/validate.js';
import { within } from '../../host/paths.js';
import { mountAlive, mountAndVerify, unmountAndWait } from '../../host/fuse.js';
import { CephClient, CEPH_CONFIG_KEYS } from '../ceph/client.js';

const OPTIONS: readonly OptionDoc[] = [
  { name: 'size', help: 'quota of the subvolume (e.g. 10G); without it the subvolume has no quota' },
  { name: 'existing', help: 'adopt this existing subvolume (name) instead of creating one; Ballast never deletes it' },
];

/** How long a create waits for the mgr to copy a snapshot into a clone. */
const CLONE_WAIT_MS = 30 * 60_000;

interface CephfsSpec { subvolume: string; size?: number; existing: boolean }

/**
 * CephFS: each volume is a subvolume (`ceph fs subvolume create ... --size`), so `-o size=` is a
 * quota the cluster enforces; mounted with ceph-fuse at the subvolume's path. Shared: any number of
 * containers and hosts read and write it.
 */
export class CephfsBackend implements Backend, HealthChecker, Snapshotter, Expander {
  readonly type = 'cephfs';
  /** A shared filesystem: any number of nodes read and write it at once. */
  readonly access = MULTI_NODE_MULTI_WRITER;
  readonly optionDocs = OPTIONS;
  private readonly ceph: CephClient;
  private readonly fs: string;
  private readonly group?: string;
  private readonly base: string;

  constructor(readonly name: string, config: Readonly<Record<string, unknown>>, private readonly ctx: BackendContext) {
    this.ceph = new CephClient(name, 'cephfs', config, ctx.exec);
    const c = new ConfigReader(name, config);
    this.fs = c.str('fs', { def: 'cephfs', re: /^[a-zA-Z0-9_.-]+$/, hint: 'a CephFS name' })!;
    this.group = c.str('group', { re: /^[a-zA-Z0-9_.-]+$/, hint: 'a subvolume group name' });
    this.base = within(ctx.root, 'backends', name);
  }

  parseOptions(opts: Readonly<Record<string, string>>): Record<string, unknown> {
    checkOptionKeys(this.name, opts, OPTIONS);
    const spec: CephfsSpec = { subvolume: '', existing: false };
    if (opts.existing !== undefined) {
      if (!/^[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,254}$/.test(opts.existing)) throw new InvalidArgumentError(`existing=${JSON.stringify(opts.existing.slice(0, 80))} is not a subvolume name`);
      spec.subvolume = opts.existing;
      spec.existing = true;
    }
    if (opts.size !== undefined) spec.size = parseSize(opts.size);
    const { subvolume, ...rest } = spec;
    return subvolume ? { subvolume, ...rest } : rest;
  }

  place(name: string): Placement { return { mountpoint: within(this.base, 'mounts', name), details: {} }; }

  private subvolumeOf(vol: VolumeRecord): string { return (vol.spec.subvolume as string | undefined) ?? vol.name; }
  private groupArgs(): string[] { return this.group ? ['--group_name', this.group] : []; }

  private async getpath(sub: string): Promise<string | undefined> {
    const r = await this.ceph.run('ceph', ['fs', 'subvolume', 'getpath', this.fs, sub, ...this.groupArgs()], [0, 2]);
    return r.code === 0 ? r.stdout.trim() : undefined;
  }

  async provision(vol: VolumeRecord, pc?: ProvisionContext): Promise<Record<string, unknown>> {
    const spec = vol.spec as unknown as CephfsSpec;
    const sub = this.subvolumeOf(vol);
    let path = await this.getpath(sub);
    if (pc?.source) return this.provisionClone(vol, sub, path, pc.source);
    if (spec.existing) {
      if (!path) throw new InvalidArgumentError(`${this.ceph.label}: existing=${sub} is not a subvolume of ${this.fs}`);
      if (spec.size) await this.ceph.run('ceph', ['fs', 'subvolume', 'resize', this.fs, sub, String(spec.size), ...this.groupArgs(), '--no_shrink']);
    } else {
      if (path && !pc?.resumed) throw new ConflictError(`${this.ceph.label}: subvolume ${sub} already exists in ${this.fs}; to use it, create the volume with -o existing=${sub} (Ballast then never deletes it)`);
      if (!path) {
        await this.ceph.run('ceph', ['fs', 'subvolume', 'create', this.fs, sub, ...(spec.size ? ['--size', String(spec.size)] : []), ...this.groupArgs(), '--mode', '755']);
        path = await this.getpath(sub);
      }
      if (!path) throw new UnavailableError(`${this.ceph.label}: subvolume ${sub} was created but its path cannot be read`);
    }
    return { subvolume: sub, path, createdByBallast: !spec.existing };
  }

  // Snapshots: CephFS subvolume snapshots (`ceph fs subvolume snapshot create`), atomic at the MDS, so
  // nothing is frozen; a clone is a new subvolume the mgr copies from the snapshot (`snapshot clone`,
  // waited for until complete) with the source's quota. Clones are full copies: removing the snapshot
  // leaves them as they are.
  readonly freezeForSnapshot = false;
  snapshotMethod(): string { return 'cephfs subvolume snapshot (clones are copied by the mgr)'; }
  placeSnapshot(name: string, vol: VolumeRecord): Record<string, string> { return { subvolume: this.subvolumeOf(vol), snap: `ballast.${name}` }; }
  private snapOf(snap: SnapshotRecord): { sub: string; name: string } {
    const d = snap.details as { subvolume?: unknown; snap?: unknown };
    const ok = (v: unknown) => typeof v === 'string' && /^[a-zA-Z0-9_.-]+$/.test(v);
    if (!ok(d.subvolume) || !ok(d.snap)) throw new InternalError(`the record of snapshot ${snap.name} does not name its CephFS snapshot; it is not acted on`);
    return { sub: String(d.subvolume), name: String(d.snap) };
  }
  private async snapNames(sub: string): Promise<string[] | undefined> {
    const r = await this.ceph.run('ceph', ['fs', 'subvolume', 'snapshot', 'ls', this.fs, sub, ...this.groupArgs(), '--format', 'json'], [0, 2]);
    return r.code === 0 ? (JSON.parse(r.stdout) as { name: string }[]).map((x) => x.name) : undefined;
  }

  async createSnapshot(vol: VolumeRecord, snap: SnapshotRecord): Promise<Record<string, unknown>> {
    const { sub, name } = this.snapOf(snap);
    const have = await this.snapNames(sub);
    if (!have) throw new UnavailableError(`${this.ceph.label}: subvolume ${sub} of volume ${vol.name} is missing; no snapshot was taken`);
    if (!have.includes(name)) await this.ceph.run('ceph', ['fs', 'subvolume', 'snapshot', 'create', this.fs, sub, name, ...this.groupArgs()]);
    return { method: 'cephfs snapshot' };
  }

  async deleteSnapshot(snap: SnapshotRecord): Promise<string | undefined> {
    const { sub, name } = this.snapOf(snap);
    if (!(await this.snapNames(sub))?.includes(name)) return undefined;
    await this.ceph.run('ceph', ['fs', 'subvolume', 'snapshot', 'rm', this.fs, sub, name, ...this.groupArgs(), '--force']);
    return undefined;
  }

  cloneSpec(sourceSpec: Readonly<Record<string, unknown>>): Record<string, unknown> {
    const { subvolume: _sub, ...rest } = sourceSpec as Record<string, unknown>;
    return { ...rest, existing: false };
  }

  /** Clones the snapshot into the new subvolume and waits until the mgr has copied it (resumed: only waits). */
  private async provisionClone(vol: VolumeRecord, target: string, path: string | undefined, snap: SnapshotRecord): Promise<Record<string, unknown>> {
    const { sub, name } = this.snapOf(snap);
    const group = this.group ? ['--group_name', this.group, '--target_group_name', this.group] : [];
    if (!path) await this.ceph.run('ceph', ['fs', 'subvolume', 'snapshot', 'clone', this.fs, sub, name, target, ...group]);
    const deadline = Date.now() + CLONE_WAIT_MS;
    for (;;) {
      const st = await this.ceph.json<{ status: { state: string; failure?: { errstr?: string } } }>('ceph', ['fs', 'clone', 'status', this.fs, target, ...this.groupArgs()]);
      if (st.status.state === 'complete') break;
      if (st.status.state === 'failed' || st.status.state === 'canceled') {
        throw new UnavailableError(`${this.ceph.label}: the clone of snapshot ${snap.name} into subvolume ${target} ${st.status.state}${st.status.failure?.errstr ? `: ${st.status.failure.errstr}` : ''}; remove volume ${vol.name} and try again`);
      }
      if (Date.now() > deadline) throw new UnavailableError(`${this.ceph.label}: the clone of snapshot ${snap.name} into subvolume ${target} is still ${st.status.state} after ${CLONE_WAIT_MS / 60000} min; run the create again to keep waiting`);
      await new Promise((r) => setTimeout(r, 500));
    }
    const spec = vol.spec as unknown as CephfsSpec;
    if (spec.size) await this.ceph.run('ceph', ['fs', 'subvolume', 'resize', this.fs, target, String(spec.size), ...this.groupArgs()]);
    const p = await this.getpath(target);
    if (!p) throw new UnavailableError(`${this.ceph.label}: subvolume ${target} was cloned but its path cannot be read`);
    return { subvolume: target, path: p, createdByBallast: true, clonedFrom: snap.name };
  }

  /** The quota grows (`ceph fs subvolume resize --no_shrink`); it is enforced by the cluster at once, mounted or not. */
  async expand(vol: VolumeRecord, size: number): Promise<{ spec: Record<string, unknown>; note: string }> {
    const sub = this.subvolumeOf(vol);
    await this.ceph.run('ceph', ['fs', 'subvolume', 'resize', this.fs, sub, String(size), ...this.groupArgs(), '--no_shrink']);
    return { spec: { size }, note: `volume ${vol.name} (cephfs subvolume ${sub}) now has a quota of ${formatSize(size)}; mounted clients see it at once` };
  }

  async deprovision(vol: VolumeRecord): Promise<void> {
    await this.unstage(vol, mountpointOf(vol));
    // A local directory once nothing is mounted there (an rmdir of a hung mount would hang).
    if (!(await this.ctx.mounts.at(mountpointOf(vol)))) await rmdir(mountpointOf(vol)).catch(() => undefined);
    if ((vol.spec as unknown as CephfsSpec).existing) return;
    const r = await this.ceph.run('ceph', ['fs', 'subvolume', 'rm', this.fs, this.subvolumeOf(vol), ...this.groupArgs()], [0, 2]);
    if (r.code === 2) this.ctx.log.warn({ volume: vol.name }, 'subvolume was already gone');
  }

  /** Mounts the subvolume at the staging path with ceph-fuse. */
  async stage(vol: VolumeRecord, stagingPath: string): Promise<void> {
    const mp = stagingPathOf(stagingPath);
    // The mount table first: a mkdir of a mountpoint whose ceph-fuse hangs would stat it and block a thread.
    if (await this.ctx.mounts.at(mp)) return;
    await mkdir(mp, { recursive: true, mode: 0o755 });
    const path = (vol.details.path as string | undefined) ?? (await this.getpath(this.subvolumeOf(vol)));
    if (!path) throw new UnavailableError(`${this.ceph.label}: subvolume ${this.subvolumeOf(vol)} of volume ${vol.name} is missing`);
    try {
      await mountAndVerify(this.ctx.exec, this.ctx.mounts, ['ceph-fuse', ...this.ceph.identity(), '-r', path, mp], mp, this.ceph.timeoutSec * 1000);
    } catch (e) {
      throw new UnavailableError(`${this.ceph.label}: could not mount subvolume ${this.subvolumeOf(vol)}: ${(e as Error).message}`, { cause: e });
    }
  }

  /**
   * Bounded (UNMOUNT_BOUNDS, ~11 s at worst): a ceph-fuse that is hung or fenced is detached lazily and
   * ended, never stat'ed (a stat of a fenced ceph-fuse mount hangs).
   */
  async unstage(_vol: VolumeRecord, stagingPath: string): Promise<void> {
    await unmountAndWait(this.ctx.exec, this.ctx.mounts, stagingPathOf(stagingPath));
  }

  probe(_vol: VolumeRecord, stagingPath: string, snap: HostSnapshot): 'mounted' | 'unmounted' {
    return probeMountpoint(snap, stagingPath);
  }

  async checkHealth(_vol: VolumeRecord, stagingPath: string): Promise<{ healthy: boolean; reason?: string }> {
    const r = await mountAlive(this.ctx.exec, stagingPathOf(stagingPath));
    return { healthy: r.alive, reason: r.reason };
  }

  status(vol: VolumeRecord): Record<string, unknown> {
    const spec = vol.spec as unknown as CephfsSpec;
    return { fs: this.fs, subvolume: this.subvolumeOf(vol), ...(this.group ? { group: this.group } : {}), ...(spec.size ? { size: formatSize(spec.size), sizeBytes: spec.size } : {}), existing: spec.existing, ...(vol.details.path ? { path: vol.details.path } : {}) };
  }
}

export const cephfsFactory: BackendFactory = {
  type: 'cephfs',
  configKeys: [...CEPH_CONFIG_KEYS, 'fs', 'group'],
  create: (instance, config, ctx) => new CephfsBackend(instance, config, ctx),
};
