import { access, constants, stat } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import type { Exec } from '../host/exec.js';
import { unixRequest, dockerSocketPath } from '../host/unix-http.js';
import { driverName } from '../config/index.js';

export interface Check { readonly name: string; readonly ok: boolean; readonly detail: string; readonly warn?: boolean }

async function onPath(cmd: string): Promise<string | undefined> {
  const dirs = (process.env.PATH ?? '').split(delimiter).concat(['/usr/sbin', '/sbin']);
  for (const d of dirs) {
    const p = join(d, cmd);
    if (await access(p, constants.X_OK).then(() => true, () => false)) return p;
  }
  return undefined;
}

/** Host checks that need no daemon: loop devices, FUSE, filesystem tools. */
export async function hostChecks(exec: Exec): Promise<Check[]> {
  const out: Check[] = [];
  const lc = await stat('/dev/loop-control').then(() => true, () => false);
  let loopDetail = lc ? '/dev/loop-control present' : '/dev/loop-control missing: block volumes cannot be attached';
  let loopOk = lc;
  if (lc) {
    try {
      const r = await exec(['losetup', '-f'], { timeoutMs: 5000 });
      loopDetail += `; next free loop device ${r.stdout.trim()}`;
    } catch (e) { loopOk = false; loopDetail += `; losetup -f failed: ${(e as Error).message}`; }
  }
  out.push({ name: 'loop devices', ok: loopOk, detail: loopDetail });
  const fuse = await stat('/dev/fuse').then(() => true, () => false);
  out.push({ name: 'FUSE', ok: fuse, warn: !fuse, detail: fuse ? '/dev/fuse present' : '/dev/fuse missing: FUSE backends (sshfs, s3, glusterfs, cephfs) will not mount' });
  for (const tool of ['blkid', 'losetup', 'mount', 'umount', 'mkfs.ext4', 'mkfs.xfs', 'mkfs.btrfs']) {
    const p = await onPath(tool);
    const pkg: Record<string, string> = { 'mkfs.xfs': 'xfsprogs', 'mkfs.btrfs': 'btrfs-progs', 'mkfs.ext4': 'e2fsprogs' };
    out.push({ name: tool, ok: !!p, warn: !p && tool.startsWith('mkfs.') && tool !== 'mkfs.ext4', detail: p ?? `not found${pkg[tool] ? `; apt-get install ${pkg[tool]}` : ''}` });
  }
  return out;
}

/** Is the plugin socket answering, and can dockerd see the plugin? */
export async function pluginChecks(socket: string, dockerHost: string): Promise<Check[]> {
  const out: Check[] = [];
  try {
    const r = await unixRequest(socket, 'POST', '/Plugin.Activate', undefined, { timeoutMs: 3000 });
    const impl = (r.body as { Implements?: string[] })?.Implements ?? [];
    out.push({ name: 'plugin socket', ok: impl.includes('VolumeDriver'), detail: `${socket} answers Plugin.Activate with ${JSON.stringify(impl)}` });
  } catch (e) {
    out.push({ name: 'plugin socket', ok: false, detail: `${socket} does not answer: ${(e as Error).message}` });
  }
  const dsock = dockerSocketPath(dockerHost);
  const name = driverName(socket);
  try {
    const ping = await unixRequest(dsock, 'GET', '/_ping', undefined, { timeoutMs: 3000 });
    if (ping.status !== 200) throw new Error(`GET /_ping answered ${ping.status}`);
    // A volume list makes dockerd look up (and activate) legacy plugins; /info then names the volume drivers.
    await unixRequest(dsock, 'GET', '/volumes', undefined, { timeoutMs: 60_000 });
    const info = await unixRequest(dsock, 'GET', '/info', undefined, { timeoutMs: 10_000 });
    const drivers = ((info.body as { Plugins?: { Volume?: string[] } })?.Plugins?.Volume) ?? [];
    const seen = drivers.includes(name);
    out.push({ name: 'dockerd sees plugin', ok: seen, warn: !seen, detail: seen ? `dockerd at ${dockerHost} lists volume driver ${name}` : `dockerd at ${dockerHost} lists volume drivers ${JSON.stringify(drivers)}, not ${name}; try: docker volume create -d ${name} probe && docker volume rm probe` });
  } catch (e) {
    out.push({ name: 'dockerd sees plugin', ok: false, warn: true, detail: `no Docker engine reachable at ${dockerHost}: ${(e as Error).message}` });
  }
  return out;
}
