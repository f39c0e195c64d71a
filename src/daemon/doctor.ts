import { access, constants, stat } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import type { Exec } from '../host/exec.js';
import { unixRequest, dockerSocketPath } from '../host/unix-http.js';
import { driverName } from '../config/index.js';
import type { PassReport } from '../reconciler/index.js';
import type { FsReport } from '../reconciler/space.js';
import { human } from '../backends/block/index.js';

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

/** What the reconciler found: uncertain volumes, leaked references, orphans, and the Docker API it needs. */
export function reconcilerChecks(r: PassReport, counters: Record<string, number>): Check[] {
  const out: Check[] = [];
  out.push({ name: 'last reconcile pass', ok: true, detail: `${r.startedAt}, ${r.ms} ms, ${r.volumes} volumes; the checks below are what it found (ballast repair runs a pass now)` });
  out.push({
    name: 'uncertain volumes', ok: r.uncertain.length === 0,
    detail: r.uncertain.length === 0 ? 'none' : r.uncertain.map((u) => `${u.volume}: ${u.error} (attempt ${u.attempts}, next ${u.nextTry})`).join('; '),
  });
  if (r.stale.length > 0) out.push({ name: 'stale mounts', ok: false, detail: r.stale.map((x) => `${x.volume}: ${x.detail}`).join('; ') });
  out.push({
    name: 'damaged records', ok: r.damaged.length === 0,
    detail: r.damaged.length === 0 ? 'none' : `${r.damaged.map((d) => `${d.volume}: ${d.detail}`).join('; ')}. Ballast will not mount, format or delete these volumes and their data is untouched; mend or delete the row in the volumes table of the store by hand, with the daemon stopped`,
  });
  const waiting = r.leaked.filter((l) => !l.dropped);
  out.push({
    name: 'leaked references', ok: waiting.length === 0, warn: waiting.length > 0,
    detail: waiting.length === 0 ? `none (${counters['leaked-reference'] ?? 0} dropped since start)` : `${waiting.map((l) => `${l.volume}/${l.id.slice(0, 12)} since ${l.since}`).join(', ')}: no running container uses them; they are dropped after the grace period, or now with ballast repair`,
  });
  out.push({
    name: 'leak detection', ok: r.docker === 'ok', warn: r.docker !== 'ok',
    detail: r.docker === 'ok' ? 'the Docker engine API answers; references no container owns are dropped' : `off: ${r.docker}. Ballast cannot tell leaked references from live ones, so it drops none`,
  });
  const stray = r.orphans.filter((o) => o.cleanable);
  const kept = r.orphans.filter((o) => !o.cleanable);
  out.push({
    name: 'orphan mounts/loops', ok: stray.length === 0, warn: stray.length > 0,
    detail: stray.length === 0 ? 'none' : `${stray.map((o) => `${o.kind} ${o.path} (${o.detail})`).join('; ')}; ballast repair cleans them`,
  });
  // Leftovers that are never in use (a temporary share mount a timed-out create left) are cleaned on
  // every pass; name what the last pass cleaned, so it is not only a counter.
  const cleaned = r.repairs.filter((x) => x.kind === 'orphan-cleaned');
  if (cleaned.length > 0) out.push({ name: 'leftovers cleaned', ok: true, detail: `the last reconcile pass (${r.startedAt}) cleaned: ${cleaned.map((x) => x.detail).join('; ')}` });
  out.push({
    name: 'orphan data', ok: kept.length === 0, warn: kept.length > 0,
    detail: kept.length === 0 ? 'none' : kept.map((o) => `${o.kind} ${o.path}: ${o.detail}`).join('; '),
  });
  out.push({ name: 'repairs since start', ok: true, detail: Object.entries(counters).map(([k, v]) => `${k}=${v}`).join(' ') });
  return out;
}

/** Volumes whose recorded paths are not where the current config would put a new volume. */
export function placementCheck(drift: readonly { volume: string; backend: string; field: string; recorded: string; config: string }[]): Check {
  return {
    name: 'volume paths', ok: true, warn: drift.length > 0,
    detail: drift.length === 0
      ? 'every volume lives where the current config puts new volumes'
      : `${drift.map((d) => `${d.volume} (${d.backend}) has its ${d.field} at ${d.recorded}, not ${d.config}`).join('; ')}. These volumes keep working at their recorded paths (the config changed after they were made); new volumes use the new paths`,
  };
}

/** Free space of the host filesystems holding mounted thin block images (the space watcher's last poll). */
export function spaceCheck(report: readonly FsReport[]): Check {
  if (report.length === 0) return { name: 'thin volume space', ok: true, detail: 'no thin volumes mounted' };
  const critical = report.filter((r) => r.level === 'critical');
  const warning = report.filter((r) => r.level === 'warning');
  const line = (r: FsReport) => `${r.dir}: ${human(r.freeBytes)} of ${human(r.totalBytes)} free (${r.level}; warning below ${human(r.warnBytes)}, critical below ${human(r.criticalBytes)}), thin volumes ${r.volumes.join(', ')}${r.frozen.length ? `; frozen: ${r.frozen.join(', ')} (their writers wait until more than ${human(r.resumeBytes)} is free)` : ''}`;
  return {
    name: 'thin volume space', ok: critical.length === 0, warn: critical.length === 0 && warning.length > 0,
    detail: `${report.map(line).join('; ')}${critical.length || warning.length ? '. Free space on these filesystems, or move data to thick volumes' : ''}`,
  };
}

/** Cluster mode: does this node hold its lease in etcd (the others see it as up only while it does)? */
export function leaseCheck(l: { ttlSec: number; held: boolean; renewedAt?: string; lostAt?: string; error?: string }): Check {
  return l.held
    ? { name: 'cluster lease', ok: true, detail: `held (TTL ${l.ttlSec} s), last renewed ${l.renewedAt ?? 'at start'}${l.lostAt ? `; it was lost at ${l.lostAt} (${l.error ?? 'expired'}) and registered again` : ''}` }
    : { name: 'cluster lease', ok: false, detail: `NOT held since ${l.lostAt ?? 'start'}${l.error ? ` (${l.error})` : ''}: other nodes see this node as down. Check that this node reaches a majority of the etcd members` };
}

/** Cluster mode: the self-fence (src/cluster/self-fence.ts) and what it froze. */
export function selfFenceCheck(s: { mode: string; since?: string; reason?: string; volumes: readonly string[]; deadlineInSec?: number }, frozen: readonly string[]): Check {
  switch (s.mode) {
    case 'ok':
      return frozen.length
        ? { name: 'self-fence', ok: false, detail: `etcd is reachable, but ${frozen.join(', ')} stay${frozen.length > 1 ? '' : 's'} frozen: another node took ${frozen.length > 1 ? 'them' : 'it'} over while this node was cut off, and the backend cannot cut this node off at the storage. Stop the containers using ${frozen.length > 1 ? 'them' : 'it'} here and reboot this node` }
        : { name: 'self-fence', ok: true, detail: 'not fenced: this node reaches etcd' };
    case 'etcd-unreachable':
      return { name: 'self-fence', ok: false, detail: `this node does not reach etcd since ${s.since}; unless its peers confirm that etcd is down for all of them, its exclusive volumes are frozen in ${s.deadlineInSec ?? '?'} s (before its lease can expire for the others)` };
    case 'etcd-down-everywhere':
      return { name: 'self-fence', ok: false, detail: `etcd is down for every node since ${s.since} (${s.reason}): volumes stay mounted and writable, since nobody can take one over; new mounts and creates fail until a majority of the etcd members is back` };
    default:
      return { name: 'self-fence', ok: false, detail: `FENCED since ${s.since}: this node lost etcd while it could not confirm that the others did too (${s.reason}); writes to ${s.volumes.length ? s.volumes.join(', ') : 'its exclusive volumes (none mounted)'} are stopped (frozen) until it reaches etcd again` };
  }
}
