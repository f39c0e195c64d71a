import { mkdir, readdir, rm, rmdir } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { mountpointOf, probeMountpoint, stagingPathOf, MULTI_NODE_MULTI_WRITER, type Backend, type BackendContext, type HealthChecker, type HostSnapshot, type OptionDoc, type Orphan, type OrphanFinder, type Placement, type ProvisionContext } from './types.js';
import type { VolumeRecord } from '../core/types.js';
import { ConflictError, InvalidArgumentError, UnavailableError } from '../core/errors.js';
import { checkOptionKeys } from './options.js';
import { within } from '../host/paths.js';
import { forceDetach, mountAlive, mountAndVerify, processesMentioning, serverAnswers, unmountAndWait } from '../host/fuse.js';
import { FsChildError, mkdirChild, rmTreeChild, statChild } from '../host/fs-child.js';

/** rm -r of a volume's directory through the share: well below dockerd's 60 s for a Remove, with the mount. */
const RM_TIMEOUT_MS = 40_000;

/**
 * A network filesystem whose share holds one directory per volume (GlusterFS, sshfs, S3 via s3fs,
 * NFS). The driver only knows how to mount a path of the share; everything else is common.
 */
export interface RemoteFs {
  readonly type: string;
  /** Names the backend and its server in messages, never a secret: `glusterfs backend gv (servers a, b)`. */
  readonly label: string;
  /**
   * argv that mounts `sub` of the share ('' for its root) at `mountpoint`, with the volume's spec (empty
   * for the share root). No secret on it: key and password files only.
   */
  mountArgv(sub: string, mountpoint: string, spec: Readonly<Record<string, unknown>>): string[];
  /** How long a mount may take before it counts as a server that is down or unreachable. */
  readonly mountTimeoutMs: number;
  /** Facts for Status (server, share), never a secret. */
  readonly statusFacts: Readonly<Record<string, unknown>>;
}

/** Where a volume's data lives on the share, and whether Ballast made it (and so may delete it). */
export interface RemoteDirSpec { dir: string; existing: boolean }

const SUBPATH_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*(\/[a-zA-Z0-9][a-zA-Z0-9_.-]*)*$/;

/** A relative path inside the share: no `..`, no leading `/`, no odd characters, at most 512. */
export function parseSubpath(value: string, what: string): string {
  const v = value.replace(/\/+$/, '');
  if (v.length > 512 || !SUBPATH_RE.test(v) || v.split('/').some((p) => p === '.' || p === '..')) {
    throw new InvalidArgumentError(`${what} ${JSON.stringify(value.slice(0, 100))} must be a relative path inside the share (letters, digits, "_", ".", "-", separated by "/"; no "..")`);
  }
  return v;
}

export const REMOTE_DIR_OPTIONS: readonly OptionDoc[] = [
  { name: 'existing', help: 'adopt this existing directory of the share (relative path) instead of creating one; Ballast never deletes it' },
];

/**
 * Every file operation through the share (stat, mkdir, rm -r) runs in a child process with a timeout
 * (src/host/fs-child.ts): the daemon's own thread pool never waits on a server that does not answer.
 */
export class RemoteDirBackend implements Backend, HealthChecker, OrphanFinder {
  /** A shared filesystem: any number of nodes read and write it at once. */
  readonly access = MULTI_NODE_MULTI_WRITER;
  readonly optionDocs: readonly OptionDoc[];
  readonly type: string;
  protected readonly base: string;
  /** Temporary share mountpoints in use by this process now (everything else under tmp/ is a leftover). */
  private readonly active = new Set<string>();

  constructor(
    readonly name: string, readonly fs: RemoteFs, protected readonly ctx: BackendContext,
    private readonly extra: { options: readonly OptionDoc[]; parse: (opts: Readonly<Record<string, string>>) => Record<string, unknown> } = { options: [], parse: () => ({}) },
  ) {
    this.type = fs.type;
    this.optionDocs = [...REMOTE_DIR_OPTIONS, ...extra.options];
    this.base = within(ctx.root, 'backends', name);
  }

  parseOptions(opts: Readonly<Record<string, string>>): Record<string, unknown> {
    checkOptionKeys(this.name, opts, this.optionDocs);
    const own = opts.existing !== undefined ? { dir: parseSubpath(opts.existing, 'existing'), existing: true } : { existing: false };
    return { ...this.extra.parse(opts), ...own };
  }

  place(name: string): Placement { return { mountpoint: within(this.base, 'mounts', name), details: {} }; }

  protected specOf(vol: VolumeRecord): RemoteDirSpec {
    const s = vol.spec as { dir?: string; existing?: boolean };
    return { dir: s.dir ?? vol.name, existing: !!s.existing };
  }

  private get tmpDir(): string { return within(this.base, 'tmp'); }
  /** How long one file operation through the share may take. */
  private get fsTimeoutMs(): number { return Math.max(5_000, this.fs.mountTimeoutMs); }

  /**
   * Mounts the share's root on a private temporary mountpoint for the duration of fn, and always cleans
   * it up afterwards, also when the mount or fn gave up (see releaseShareRoot). What a crash leaves there
   * is found by findOrphans.
   */
  private async withShareRoot<T>(fn: (root: string) => Promise<T>): Promise<T> {
    await mkdir(this.tmpDir, { recursive: true, mode: 0o700 });
    // Named and marked active before it exists, so a reconcile pass never takes it for a leftover.
    const mp = within(this.tmpDir, `share-${randomBytes(6).toString('hex')}`);
    this.active.add(mp);
    try {
      await mkdir(mp, { mode: 0o700 });
      await this.mount('', mp, {});
      return await fn(mp);
    } finally {
      await this.releaseShareRoot(mp).catch((e: Error) => this.ctx.log.warn({ backend: this.name, mountpoint: mp, err: e.message }, 'temporary share mount left for the reconciler'));
      this.active.delete(mp);
    }
  }

  /**
   * Unmounts a temporary share mountpoint (bounded: a hung one is detached lazily and its client
   * ended), then removes the directory. Nobody else ever uses these mounts, so a busy one is detached
   * too. The directory is touched only once the mount table no longer shows a mount there: a stat or
   * rmdir of a hung mount would hang.
   */
  private async releaseShareRoot(mp: string): Promise<void> {
    try {
      await unmountAndWait(this.ctx.exec, this.ctx.mounts, mp);
    } catch {
      await forceDetach(this.ctx.exec, this.ctx.mounts, mp);
    }
    if (await this.ctx.mounts.at(mp)) throw new Error(`${mp} is still mounted`);
    await rmdir(mp).catch(async (e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return;
      // Not empty: a client that exited mid-way let a mkdir land in the local directory (local: nothing is mounted there).
      if (e.code === 'ENOTEMPTY') { await rm(mp, { recursive: true, force: true }); return; }
      throw e;
    });
  }

  /** Leftover temporary share mountpoints (a create or remove that crashed or could not clean up): never in use. */
  async findOrphans(_known: ReadonlySet<string>, snap: HostSnapshot): Promise<Orphan[]> {
    const tmp = this.tmpDir;
    // readdir of the local tmp directory reads names only (no stat of a possibly hung mount below it).
    const ours = (p: string) => p.startsWith(`${tmp}/share-`) && !p.slice(tmp.length + 1).includes('/');
    const paths = new Set((await readdir(tmp).catch(() => [] as string[])).map((n) => within(tmp, n)).filter(ours));
    for (const m of snap.mounts) if (ours(m.mountpoint)) paths.add(m.mountpoint);
    const out: Orphan[] = [];
    for (const path of [...paths].sort()) {
      if (this.active.has(path)) continue;
      const m = snap.mounts.find((x) => x.mountpoint === path);
      out.push({
        backend: this.name, kind: m ? 'mount' : 'directory', path, cleanable: true, autoClean: true,
        detail: m
          ? `temporary ${m.fstype} mount of the share (${m.source}) that a create or remove did not clean up; never in use`
          : 'temporary share mountpoint that a create or remove did not clean up; nothing is mounted there',
      });
    }
    return out;
  }

  async cleanOrphan(o: Orphan): Promise<void> {
    const tmp = this.tmpDir;
    if (o.backend !== this.name || !o.path.startsWith(`${tmp}/share-`) || o.path.slice(tmp.length + 1).includes('/') || o.path.includes('/../')) {
      throw new Error(`${o.path} is not a temporary share mountpoint of backend ${this.name}`);
    }
    if (this.active.has(o.path)) return;
    await this.releaseShareRoot(o.path);
  }

  protected async mount(sub: string, mp: string, spec: Readonly<Record<string, unknown>>): Promise<void> {
    const t0 = Date.now();
    try {
      await mountAndVerify(this.ctx.exec, this.ctx.mounts, this.fs.mountArgv(sub, mp, spec), mp, this.fs.mountTimeoutMs);
    } catch (e) {
      const m = (e as Error).message;
      const hint = /timed out/.test(m) ? '; is the server up and reachable?' : '';
      throw new UnavailableError(`${this.fs.label}: could not mount ${sub || 'the share'}: ${m}${hint}`, { cause: e });
    }
    // A client that mounted but cannot reach its server (s3fs exits a moment later) must not be handed out.
    const probe = await serverAnswers(this.ctx.exec, mp, Math.max(5_000, this.fs.mountTimeoutMs - (Date.now() - t0)));
    const still = await this.ctx.mounts.at(mp);
    if (!probe.ok || !still) {
      // Nobody uses the mount yet: if it does not unmount cleanly it is detached and its client ended,
      // so a later publish does not find it mounted and hand it out.
      await unmountAndWait(this.ctx.exec, this.ctx.mounts, mp).catch(() => forceDetach(this.ctx.exec, this.ctx.mounts, mp)).catch(() => undefined);
      throw new UnavailableError(`${this.fs.label}: mounted ${sub || 'the share'} but the server did not answer through it (${probe.reason ?? 'the client exited'}); is the server up and reachable?`);
    }
  }

  /** Is the share still mounted at root? Otherwise a file operation just went to the local directory. */
  private async assertMounted(root: string): Promise<void> {
    if (!(await this.ctx.mounts.at(root))) throw new UnavailableError(`${this.fs.label}: the share's client exited while Ballast was using it; is the server up and reachable?`);
  }

  /** A failed file operation through the share, as the sentence a user reads. */
  private fsError(what: string, e: unknown): Error {
    if (!(e instanceof FsChildError)) return e as Error;
    return new UnavailableError(`${this.fs.label}: could not ${what} on the share: ${e.message}${e.timedOut ? '; is the server up and reachable?' : ''}`, { cause: e });
  }

  async provision(vol: VolumeRecord, pc?: ProvisionContext): Promise<Record<string, unknown>> {
    const spec = this.specOf(vol);
    await this.withShareRoot(async (root) => {
      const path = within(root, spec.dir);
      // Only "no such file" means absent: any other error is the server's, not an answer.
      const st = await statChild(this.ctx.exec, path, this.fsTimeoutMs).catch((e) => { throw this.fsError(`look up ${spec.dir}`, e); });
      await this.assertMounted(root);
      if (spec.existing) {
        if (st?.kind !== 'directory') throw new InvalidArgumentError(`${this.fs.label}: existing=${spec.dir} is not a directory of the share`);
        return;
      }
      if (st && !pc?.resumed) {
        throw new ConflictError(`${this.fs.label}: a directory ${spec.dir} already exists on the share; to use it, create the volume with -o existing=${spec.dir} (Ballast then never deletes it)`);
      }
      if (!st) {
        await mkdirChild(this.ctx.exec, path, 0o755, this.fsTimeoutMs).catch((e) => { throw this.fsError(`make the directory ${spec.dir}`, e); });
        await this.assertMounted(root);
      }
    });
    return { dir: spec.dir, createdByBallast: !spec.existing };
  }

  /**
   * Unmounts (bounded), then deletes the directory Ballast made, through a fresh mount of the share.
   * A share that cannot be mounted or does not answer fails the removal with UnavailableError and
   * deletes nothing: Ballast never deletes what it cannot see, and a later Remove tries again.
   */
  async deprovision(vol: VolumeRecord): Promise<void> {
    await this.unstage(vol, mountpointOf(vol));
    const mp = mountpointOf(vol);
    if (!(await this.ctx.mounts.at(mp))) await rmdir(mp).catch(() => undefined);
    const spec = this.specOf(vol);
    if (spec.existing) return; // adopted data is never deleted
    try {
      await this.withShareRoot(async (root) => {
        await rmTreeChild(this.ctx.exec, within(root, spec.dir), RM_TIMEOUT_MS).catch((e) => { throw this.fsError(`delete the directory ${spec.dir} of volume ${vol.name}`, e); });
        await this.assertMounted(root);
      });
    } catch (e) {
      if (!(e instanceof UnavailableError)) throw e;
      throw new UnavailableError(`${e.message}${/[.?!]$/.test(e.message) ? '' : '.'} Volume ${vol.name} is kept, with its directory ${spec.dir} on the share; remove it again once the server answers`, { cause: e });
    }
  }

  /** Mounts the volume's directory of the share at the staging path (one client per volume and path). */
  async stage(vol: VolumeRecord, stagingPath: string): Promise<void> {
    const mp = stagingPathOf(stagingPath);
    // The mount table first: mkdir -p of a mounted path stats it, which hangs on a hung client.
    if (await this.ctx.mounts.at(mp)) return;
    await mkdir(mp, { recursive: true, mode: 0o755 });
    await this.mount(this.specOf(vol).dir, mp, vol.spec);
  }

  /** Bounded (UNMOUNT_BOUNDS): a hung client is detached lazily and ended. */
  async unstage(_vol: VolumeRecord, stagingPath: string): Promise<void> {
    await unmountAndWait(this.ctx.exec, this.ctx.mounts, stagingPathOf(stagingPath));
  }

  probe(_vol: VolumeRecord, stagingPath: string, snap: HostSnapshot): 'mounted' | 'unmounted' {
    return probeMountpoint(snap, stagingPath);
  }

  async checkHealth(_vol: VolumeRecord, stagingPath: string): Promise<{ healthy: boolean; reason?: string }> {
    const mp = stagingPathOf(stagingPath);
    const r = await mountAlive(this.ctx.exec, mp);
    if (r.alive) return { healthy: true };
    // A client whose server is away can answer like a dead mount (glusterfs says "Transport endpoint
    // is not connected" while its bricks are down) and reconnects by itself once the server is back.
    // Only a mount whose client process is gone is dead: mounting again in place would leave running
    // containers on the old client (and a second client for the volume), and fails anyway while the
    // server is down.
    const clients = await processesMentioning(mp);
    if (clients.length > 0) return { healthy: true, reason: `the ${this.fs.type} client (pid ${clients.join(', ')}) is running and reconnects by itself; the server is unreachable for now: ${r.reason}` };
    return { healthy: false, reason: r.reason };
  }

  status(vol: VolumeRecord): Record<string, unknown> {
    const spec = this.specOf(vol);
    return { ...this.fs.statusFacts, dir: spec.dir, existing: spec.existing };
  }
}
