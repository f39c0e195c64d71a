import { mkdir, chown, chmod, rm, readdir } from 'node:fs/promises';
import { statSync } from 'node:fs';
import { dirname } from 'node:path';
import { mountpointOf, probeMountpoint, stagingPathOf, MULTI_NODE_MULTI_WRITER, SINGLE_NODE_WRITER, type AccessModes, type Backend, type HostSnapshot, type BackendContext, type BackendFactory, type OptionDoc, type Orphan, type OrphanFinder, type Placement, type ProvisionContext, type Snapshotter, type SnapshotReader } from '../types.js';
import type { SnapshotRecord, VolumeRecord } from '../../core/types.js';
import { copyTreeAtomic } from '../../host/copy.js';
import { InternalError, InvalidArgumentError } from '../../core/errors.js';
import { checkOptionKeys, parseIntOption } from '../options.js';
import { recordedPath, within } from '../../host/paths.js';
import { publish as bindMount, unpublish as unbindMount } from '../../host/bind.js';

const OPTIONS: readonly OptionDoc[] = [
  { name: 'uid', help: 'owner of the volume directory (number, default 0)' },
  { name: 'gid', help: 'group of the volume directory (number, default 0)' },
  { name: 'mode', help: 'permissions of the volume directory (octal, default 0755)' },
];

/**
 * A directory per volume under the backend's dir: any number of containers on this host share it; one
 * node only (the data is on this host's disk). Its staging path is normally the directory itself (the
 * Docker path); staged elsewhere (CSI), the directory is bind-mounted there.
 */
export class LocalBackend implements Backend, OrphanFinder, Snapshotter, SnapshotReader {
  readonly type = 'local';
  /** Node-local by default; `shared: true` when dir lies on a filesystem every node mounts (many writers). */
  readonly access: AccessModes;
  readonly optionDocs = OPTIONS;
  private readonly dir: string;

  constructor(readonly name: string, config: Readonly<Record<string, unknown>>, private readonly ctx: BackendContext) {
    if (config.shared !== undefined && typeof config.shared !== 'boolean') throw new InvalidArgumentError(`backend ${name}: shared must be true or false (true when dir lies on a filesystem every node of the cluster mounts)`);
    this.access = config.shared ? MULTI_NODE_MULTI_WRITER : SINGLE_NODE_WRITER;
    if (config.dir !== undefined && (typeof config.dir !== 'string' || !config.dir.startsWith('/'))) {
      throw new InvalidArgumentError(`backend ${name}: dir must be an absolute path`);
    }
    this.dir = (config.dir as string | undefined) ?? within(ctx.root, 'backends', name, 'volumes');
  }

  parseOptions(opts: Readonly<Record<string, string>>): Record<string, unknown> {
    checkOptionKeys(this.name, opts, OPTIONS);
    const spec: Record<string, unknown> = { mode: 0o755 };
    if (opts.uid !== undefined) spec.uid = parseIntOption('uid', opts.uid, 0, 2 ** 32 - 2);
    if (opts.gid !== undefined) spec.gid = parseIntOption('gid', opts.gid, 0, 2 ** 32 - 2);
    if (opts.mode !== undefined) spec.mode = parseIntOption('mode', opts.mode, 0, 0o7777, 8);
    return spec;
  }

  /** A directory volume's mountpoint is its data directory. */
  place(name: string): Placement { return { mountpoint: within(this.dir, name), details: {} }; }

  async provision(vol: VolumeRecord, pc?: ProvisionContext): Promise<Record<string, unknown>> {
    const path = mountpointOf(vol);
    await mkdir(dirname(path), { recursive: true, mode: 0o711 });
    if (pc?.source) {
      // A clone: the snapshot's tree copied into place whole or not at all (a resumed create finds it there).
      if (!statSync(path, { throwIfNoEntry: false })) {
        const from = this.snapshotDirOf(pc.source);
        if (!statSync(from, { throwIfNoEntry: false })?.isDirectory()) throw new InternalError(`the directory ${from} of snapshot ${pc.source.name} is missing, so volume ${vol.name} cannot be cloned from it; nothing was made`);
        await copyTreeAtomic(this.ctx.exec, from, path);
      }
      return { path, clonedFrom: pc.source.name };
    }
    await mkdir(path, { mode: 0o700 }).catch((e: NodeJS.ErrnoException) => { if (e.code !== 'EEXIST') throw e; });
    this.ctx.fault?.('local.dir-created');
    const { uid, gid, mode } = vol.spec as { uid?: number; gid?: number; mode: number };
    if (uid !== undefined || gid !== undefined) await chown(path, uid ?? 0, gid ?? 0);
    await chmod(path, mode);
    return { path };
  }

  async deprovision(vol: VolumeRecord): Promise<void> {
    await rm(mountpointOf(vol), { recursive: true, force: true });
  }

  async stage(vol: VolumeRecord, stagingPath: string): Promise<void> {
    const at = stagingPathOf(stagingPath);
    const path = mountpointOf(vol);
    // A local directory: a synchronous stat is a few microseconds, cheaper than a trip to the thread pool.
    const st = statSync(path, { throwIfNoEntry: false });
    if (!st?.isDirectory()) {
      throw new InternalError(`the data directory ${path} of volume ${vol.name} is missing; Ballast will not replace it with an empty one. Restore it, or remove the volume`);
    }
    if (at !== path) await bindMount(this.ctx.exec, this.ctx.mounts, path, at);
  }

  /** Nothing is mounted when the staging path is the directory itself; elsewhere its bind mount goes. */
  async unstage(vol: VolumeRecord, stagingPath: string): Promise<void> {
    const at = stagingPathOf(stagingPath);
    if (at !== mountpointOf(vol)) await unbindMount(this.ctx.exec, this.ctx.mounts, at);
  }

  probe(vol: VolumeRecord, stagingPath: string, snap: HostSnapshot): 'always' | 'mounted' | 'unmounted' {
    return stagingPath === vol.mountpoint ? 'always' : probeMountpoint(snap, stagingPath);
  }

  // Snapshots: a copy of the directory (`cp -a --reflink=auto`: blocks shared where the filesystem can)
  // under `<dir>/.snapshots/`. A host directory cannot be frozen, so a snapshot of a directory that is
  // being written is a copy file by file, not one instant; stop its writers for an exact one.
  readonly freezeForSnapshot = false;
  snapshotMethod(): string { return 'copy of the directory (cp -a, blocks shared where the filesystem can reflink)'; }
  placeSnapshot(name: string, vol: VolumeRecord): Record<string, string> { return { dir: within(dirname(mountpointOf(vol)), '.snapshots', name) }; }
  private snapshotDirOf(snap: SnapshotRecord): string { return recordedPath(snap.details.dir, `directory of snapshot ${snap.name}`); }

  async createSnapshot(vol: VolumeRecord, snap: SnapshotRecord): Promise<Record<string, unknown>> {
    const to = this.snapshotDirOf(snap);
    if (statSync(to, { throwIfNoEntry: false })) return {}; // taken already (the copy is renamed into place whole)
    await mkdir(dirname(to), { recursive: true, mode: 0o700 });
    const t0 = performance.now();
    await copyTreeAtomic(this.ctx.exec, mountpointOf(vol), to);
    return { method: 'copy', copyMs: Math.round(performance.now() - t0) };
  }

  async deleteSnapshot(snap: SnapshotRecord): Promise<string | undefined> {
    const d = this.snapshotDirOf(snap);
    await rm(d, { recursive: true, force: true });
    await rm(`${d}.part`, { recursive: true, force: true });
    return undefined;
  }

  cloneSpec(sourceSpec: Readonly<Record<string, unknown>>): Record<string, unknown> { return { ...sourceSpec }; }

  /** The snapshot's directory, bind-mounted read-only at `dir`. */
  async mountSnapshot(snap: SnapshotRecord, dir: string): Promise<void> {
    await bindMount(this.ctx.exec, this.ctx.mounts, this.snapshotDirOf(snap), dir, { readOnly: true });
  }
  async unmountSnapshot(_snap: SnapshotRecord, dir: string): Promise<void> { await unbindMount(this.ctx.exec, this.ctx.mounts, dir); }

  async findOrphans(known: ReadonlySet<string>): Promise<Orphan[]> {
    const names = (await readdir(this.dir).catch(() => [] as string[])).filter((n) => !n.startsWith('.'));
    return names.filter((n) => !known.has(n)).map((n) => ({
      backend: this.name, kind: 'directory' as const, path: within(this.dir, n), cleanable: false,
      detail: 'a volume directory with no volume record; its data is kept (move it away or create the volume again to adopt it)',
    }));
  }

  async cleanOrphan(): Promise<void> { /* data is never deleted by a repair */ }

  status(vol: VolumeRecord): Record<string, unknown> {
    return { path: vol.mountpoint };
  }
}

export const localFactory: BackendFactory = {
  type: 'local',
  configKeys: ['dir', 'shared'],
  create: (instance, config, ctx) => new LocalBackend(instance, config, ctx),
};
