import { mkdir, rmdir } from 'node:fs/promises';
import { mountpointOf, probeMountpoint, stagingPathOf, MULTI_NODE_MULTI_WRITER, type Backend, type BackendContext, type BackendFactory, type HealthChecker, type HostSnapshot, type OptionDoc, type Placement, type ProvisionContext } from '../types.js';
import type { VolumeRecord } from '../../core/types.js';
import { ConflictError, InvalidArgumentError, UnavailableError } from '../../core/errors.js';
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

interface CephfsSpec { subvolume: string; size?: number; existing: boolean }

/**
 * CephFS: each volume is a subvolume (`ceph fs subvolume create ... --size`), so `-o size=` is a
 * quota the cluster enforces; mounted with ceph-fuse at the subvolume's path. Shared: any number of
 * containers and hosts read and write it.
 */
export class CephfsBackend implements Backend, HealthChecker {
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
