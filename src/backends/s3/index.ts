import { mkdir, rmdir } from 'node:fs/promises';
import { detailPath, stagingPathOf, type BackendContext, type BackendFactory, type Placement } from '../types.js';
import type { VolumeRecord } from '../../core/types.js';
import { UnavailableError } from '../../core/errors.js';
import { RemoteDirBackend, parseSubpath, type RemoteFs } from '../remote-dir.js';
import { ConfigReader } from '../config-values.js';
import { within } from '../../host/paths.js';
import { mountAlive, processesMentioning, unmountAndWait } from '../../host/fuse.js';
import { execBounded, statChild } from '../../host/fs-child.js';

/**
 * S3 through s3fs: each volume is a prefix ("directory") of a bucket, or of a prefix of one. The
 * credentials stay in `passwdFile` (KEY:SECRET, mode 0600); s3fs reads them from there, so they
 * never reach argv, logs or Status.
 */
export function s3Fs(instance: string, config: Readonly<Record<string, unknown>>): RemoteFs {
  const c = new ConfigReader(instance, config);
  const url = c.req('url', { re: /^https?:\/\/[a-zA-Z0-9.-]+(:\d{1,5})?\/?$/, hint: 'http(s)://host[:port]' });
  const bucket = c.req('bucket', { re: /^[a-z0-9][a-z0-9.-]{1,62}$/, hint: 'an S3 bucket name' });
  const prefix = config.prefix === undefined ? '' : parseSubpath(c.req('prefix'), `backend ${instance}: prefix`);
  const passwdFile = c.absPath('passwdFile')!;
  const region = c.str('region', { re: /^[a-z0-9-]+$/, hint: 'a region name such as us-east-1' });
  const pathStyle = c.bool('pathStyle', true);
  const timeoutSec = c.int('mountTimeoutSec', 30, 1, 110);
  const opts = [
    `url=${url}`, `passwd_file=${passwdFile}`, ...(pathStyle ? ['use_path_request_style'] : []), ...(region ? [`endpoint=${region}`] : []),
    'allow_other', 'mp_umask=0022', 'retries=3', `connect_timeout=${Math.min(timeoutSec, 10)}`,
  ].join(',');
  return {
    type: 's3',
    label: `s3 backend ${instance} (bucket ${bucket} at ${url})`,
    mountTimeoutMs: timeoutSec * 1000,
    statusFacts: { url, bucket, ...(prefix ? { prefix } : {}) },
    mountArgv: (sub, mp) => {
      const path = [prefix, sub].filter(Boolean).join('/');
      return ['s3fs', path ? `${bucket}:/${path}` : bucket, mp, '-o', opts];
    },
  };
}

/**
 * s3fs refuses chmod and chown of its mount root ("Could not change mode for mount point": EIO), and
 * dockerd chmods and chowns an empty volume's root to match the image's directory before a container
 * starts (and entrypoints chown their data directories). So s3fs mounts the parent of the volume's
 * directory at `fuse/<name>`, and the volume's staging path is a bind mount of the directory itself,
 * which s3fs treats like any other directory.
 */
export class S3Backend extends RemoteDirBackend {
  constructor(name: string, config: Readonly<Record<string, unknown>>, ctx: BackendContext) {
    super(name, s3Fs(name, config), ctx);
  }

  override place(name: string): Placement {
    return { mountpoint: super.place(name).mountpoint, details: { fuseDir: within(this.base, 'fuse', name) } };
  }
  /** Where s3fs mounts the parent of the volume's directory (recorded at create; older records used the config's base). */
  private fuseDirOf(vol: VolumeRecord): string { return detailPath(vol, 'fuseDir', () => within(this.base, 'fuse', vol.name)); }

  private split(vol: VolumeRecord): { dir: string; parent: string; leaf: string } {
    const dir = this.specOf(vol).dir;
    const i = dir.lastIndexOf('/');
    return { dir, parent: i < 0 ? '' : dir.slice(0, i), leaf: dir.slice(i + 1) };
  }

  override async stage(vol: VolumeRecord, stagingPath: string): Promise<void> {
    const mp = stagingPathOf(stagingPath);
    // The mount table first: mkdir -p of a mounted path stats it, which hangs on a hung client.
    if (await this.ctx.mounts.at(mp)) return;
    await mkdir(mp, { recursive: true, mode: 0o755 });
    const fuse = this.fuseDirOf(vol);
    if (!(await this.ctx.mounts.at(fuse))) await mkdir(fuse, { recursive: true, mode: 0o700 });
    const { dir, parent, leaf } = this.split(vol);
    if (await this.ctx.mounts.at(fuse)) {
      // Left from before (a crash between the two mounts): reuse it unless its client is gone.
      const h = await mountAlive(this.ctx.exec, fuse);
      if (!h.alive && /not connected/i.test(h.reason ?? '')) await unmountAndWait(this.ctx.exec, this.ctx.mounts, fuse);
    }
    if (!(await this.ctx.mounts.at(fuse))) await this.mount(parent, fuse, vol.spec);
    try {
      const src = within(fuse, leaf);
      // Through the mount, so in a child with a timeout (src/host/fs-child.ts).
      const st = await statChild(this.ctx.exec, src, Math.max(5_000, this.fs.mountTimeoutMs)).catch((e: Error) => {
        throw new UnavailableError(`${this.fs.label}: could not look up ${dir} on the share: ${e.message}`, { cause: e });
      });
      if (st?.kind !== 'directory') throw new UnavailableError(`${this.fs.label}: the directory ${dir} of volume ${vol.name} is missing from the bucket`);
      await execBounded(this.ctx.exec, ['mount', '--bind', src, mp], { timeoutMs: 30_000 });
    } catch (e) {
      await unmountAndWait(this.ctx.exec, this.ctx.mounts, fuse).catch(() => undefined);
      throw e;
    }
  }

  override async unstage(vol: VolumeRecord, stagingPath: string): Promise<void> {
    await unmountAndWait(this.ctx.exec, this.ctx.mounts, stagingPathOf(stagingPath));
    await unmountAndWait(this.ctx.exec, this.ctx.mounts, this.fuseDirOf(vol));
  }

  override async deprovision(vol: VolumeRecord): Promise<void> {
    await super.deprovision(vol);
    if (!(await this.ctx.mounts.at(this.fuseDirOf(vol)))) await rmdir(this.fuseDirOf(vol)).catch(() => undefined);
  }

  /** Dead when the volume's path no longer answers and no s3fs serves it any more (SIGKILL, crash). */
  override async checkHealth(vol: VolumeRecord, stagingPath: string): Promise<{ healthy: boolean; reason?: string }> {
    const r = await mountAlive(this.ctx.exec, stagingPathOf(stagingPath));
    if (r.alive) return { healthy: true };
    const clients = await processesMentioning(this.fuseDirOf(vol));
    if (clients.length > 0) return { healthy: true, reason: `the s3fs client (pid ${clients.join(', ')}) is running; the server is unreachable for now: ${r.reason}` };
    return { healthy: false, reason: r.reason };
  }
}

export const s3Factory: BackendFactory = {
  type: 's3',
  configKeys: ['url', 'bucket', 'prefix', 'passwdFile', 'region', 'pathStyle', 'mountTimeoutSec'],
  create: (instance, config, ctx) => new S3Backend(instance, config, ctx),
};
