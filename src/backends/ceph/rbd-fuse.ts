import { mkdir, readFile, rm } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import type { BackendContext } from '../types.js';
import { UnavailableError } from '../../core/errors.js';
import { within } from '../../host/paths.js';
import { endClients, forceDetach, mountAlive, mountAndVerify, processesMentioning, unmountAndWait } from '../../host/fuse.js';
import { execBounded } from '../../host/fs-child.js';
import { allLoopDevices, detachLoop, type FsType } from '../../host/blockdev.js';
import { stageBlockFilesystem } from '../../host/filesystem.js';
import type { CephClient } from './client.js';

/**
 * The node side of an RBD image on this kernel, which has no rbd module: the image is attached as a
 * file through rbd-fuse (one FUSE daemon per image) and mounted through an autoclear loop device; with
 * a kernel rbd module `rbd map --exclusive` would take their place. Shared by the rbd backend (images
 * Ballast makes in a pool) and the Cinder backend (images Cinder's RBD driver made, reached with the
 * attachment's connection data), so both attach, claim, fence and tear down an image the same way.
 */

/**
 * The librados/librbd settings of every rbd-fuse Ballast starts, given on its command line: they beat
 * ceph.conf and the monitors' config database, so a user's config cannot weaken them. Measured on
 * Ceph 16.2.15, rbd-fuse + loop + ext4, a writer appending a counter with fsync every 0.1 s, a 40 s
 * fault (the node's veth down, or the OSD SIGSTOPped), the old client blocklisted during the fault,
 * then the image read from another client:
 * - rbd-fuse answers fsync without looking at rbd_flush's result, so with librbd's cache on (the
 *   default) an acknowledged fsync proves nothing. Defaults: the fsync hangs for the whole partition,
 *   and once the link came back the *blocklisted* client acknowledged it: that counter was not on the
 *   image. Cache on with 10 s op timeouts: fsyncs acknowledged 20 s and 40 s into the partition; the
 *   image ended 2 counters short, and after the heal the fenced client acknowledged 95 more fsyncs,
 *   none of which reached the image.
 * - `rbd_cache=false`: rbd-fuse answers a write only once the OSDs have it, and a failed write fails
 *   the loop I/O and so the filesystem's fsync (EIO). With `rados_osd_op_timeout` an OSD that does not
 *   answer fails the write after that long instead of never: EIO 10.0 s into a partition and into a
 *   SIGSTOP of the OSD. Later fsyncs can wait a multiple of the timeout (the loop device works one
 *   I/O at a time) and then fail (EIO, EROFS once ext4 aborted its journal) or, when the fault healed
 *   before any fence, succeed. In every run (partition and SIGSTOP, fenced during the fault or after
 *   it healed) each acknowledged counter was on the image. (A writethrough cache, rbd_cache_max_dirty=0,
 *   behaved the same in one run; off is simpler.) The cost: no librbd read cache or write coalescing;
 *   the page cache above the loop device still serves reads.
 * - `rados_mon_op_timeout` and `client_mount_timeout`: a start or a monitor op against monitors that
 *   are away fails after that long instead of hanging.
 * The op timeout also bounds how long a write can stay pending in a fenced client: see blocklist(). The
 * `rbd` CLI calls need none of this: they move no file data and Exec's timeout bounds them.
 */
export function rbdClientArgs(opTimeoutSec: number): string[] {
  const t = String(opTimeoutSec);
  return ['--rbd_cache=false', `--rados_osd_op_timeout=${t}`, `--rados_mon_op_timeout=${t}`, `--client_mount_timeout=${t}`];
}

/** An RBD client as Ceph names it in `rbd status` and the OSD blocklist: `IP:PORT/NONCE`. */
export const CLIENT_ADDR = /^(\[[0-9a-fA-F:.]+\]|[0-9.]+):\d{1,5}\/\d{1,20}$/;

/** The client addresses an rbd-fuse log names (`learned my addr 10.99.0.11:0/1390865666`), in order, without repeats. */
export function learnedAddrs(log: string): string[] {
  const out: string[] = [];
  for (const m of log.matchAll(/learned my addr (?:v[12]:|any:)?(\S+)/g)) {
    const vec = /^\[(?:v[12]|any):([^,\]]+)/.exec(m[1]); // an address vector: its first address
    const a = vec ? vec[1] : m[1];
    if (CLIENT_ADDR.test(a) && !out.includes(a)) out.push(a);
  }
  return out;
}

/** The `clients` of a claim, checked: only well-formed addresses reach the `ceph` command. */
export function claimedClients(claim: Readonly<Record<string, string>> | undefined): string[] {
  return (claim?.clients ?? '').split(',').map((x) => x.trim()).filter((x) => CLIENT_ADDR.test(x));
}

/** Monitor addresses as `-m` takes them (`host:port,host:port`), checked; undefined when none is usable. */
export function monAddrs(hosts: readonly unknown[], ports: readonly unknown[]): string | undefined {
  const out: string[] = [];
  hosts.forEach((h, i) => {
    const host = String(h);
    const port = ports[i] === undefined ? '' : String(ports[i]);
    if (!/^([0-9.]+|\[[0-9a-fA-F:]+\]|[a-zA-Z0-9.-]+)$/.test(host) || (port && !/^\d{1,5}$/.test(port))) return;
    out.push(port ? `${host}:${port}` : host);
  });
  return out.length ? out.join(',') : undefined;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** How long the filesystem's own umount may take (it flushes through rbd-fuse) before rbd-fuse counts as hung. */
const FS_UMOUNT_MS = 8_000;

/** One image as the node reaches it. */
export interface RbdTarget {
  readonly volume: string;
  readonly pool: string;
  readonly image: string;
  /** Where rbd-fuse exposes the image (a directory of the volume's record). */
  readonly fuseDir: string;
  /** Monitors to reach (`-m`), when the caller knows them better than the ceph.conf (a Cinder attachment). */
  readonly monitors?: string;
}

/** How the filesystem on the image is staged. */
export interface RbdStage {
  readonly fstype: FsType;
  readonly mountopts: readonly string[];
  readonly readOnly?: boolean;
  /** May a blank image be formatted at this stage (a new Cinder volume); false: blank is damage. */
  readonly mayFormat: boolean;
  readonly label?: string;
  /** Runs before anything is attached (a check that the node may stage read-write). */
  readonly beforeAttach?: () => Promise<void>;
  /** Runs once the image file is there, before the mount (an ext4 grow a staged expand had to defer). */
  readonly afterAttach?: (file: string) => Promise<void>;
}

export class RbdFuse {
  constructor(
    private readonly ctx: BackendContext,
    private readonly ceph: CephClient,
    /** The backend's own directory (`<root>/backends/<name>`): rbd-fuse's admin sockets and logs go under it. */
    private readonly base: string,
    /** librados's bound on one OSD or monitor op of rbd-fuse (rbdClientArgs). */
    readonly opTimeoutSec: number,
    /** How long a fence's OSD blocklist entries last (see blocklist()). */
    readonly fenceExpirySec: number,
  ) {}

  /** The image as a file, under the FUSE directory. */
  file(t: RbdTarget): string { return within(t.fuseDir, t.image); }
  private what(t: RbdTarget): string { return `image ${t.pool}/${t.image}`; }

  /**
   * Where the image's rbd-fuse keeps its admin socket and its log (the log holds the client addresses
   * claim() reads). A unix socket path must stay below 108 bytes: a long root moves them to /run.
   */
  private clientFiles(t: RbdTarget): { dir: string; asok: string; log: string } {
    const key = createHash('sha256').update(`${t.fuseDir}\0${t.pool}/${t.image}`).digest('hex').slice(0, 16);
    let dir = within(this.base, 'run');
    if (dir.length + key.length + 7 > 100) dir = `/run/ballast-rbd-${createHash('sha256').update(this.base).digest('hex').slice(0, 12)}`;
    return { dir, asok: `${dir}/${key}.asok`, log: `${dir}/${key}.log` };
  }

  /**
   * Attaches the image as a file through rbd-fuse, on this node; returns the file. rbd-fuse runs with
   * rbdClientArgs (durable fsync, bounded ops), its own admin socket and log, and its messenger log
   * kept in memory (debug_ms 0/1) only until recordClientAddrs has written its addresses down (cluster
   * mode only: on one host no other node fences, and the two admin-socket calls, a Python CLI each,
   * would cost about 0.4 s of every attach).
   */
  async attach(t: RbdTarget): Promise<string> {
    const dir = t.fuseDir;
    await this.detachIfDead(dir);
    if (!(await this.ctx.mounts.at(dir))) {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      const f = this.clientFiles(t);
      await mkdir(f.dir, { recursive: true, mode: 0o700 });
      await rm(f.log, { force: true }); // a new client: no addresses of an earlier one
      // Only in cluster mode does a fence from another node need this client's address (claim()).
      const record = !!this.ctx.cluster;
      const argv = ['rbd-fuse', ...this.ceph.identity(), ...(t.monitors ? ['-m', t.monitors] : []), ...rbdClientArgs(this.opTimeoutSec),
        `--admin_socket=${f.asok}`, `--log_file=${f.log}`, ...(record ? ['--debug_ms=0/1'] : []), '-p', t.pool, '-r', t.image, dir];
      try {
        await mountAndVerify(this.ctx.exec, this.ctx.mounts, argv, dir, this.ceph.timeoutSec * 1000);
      } catch (e) {
        throw new UnavailableError(`${this.ceph.label}: could not attach ${this.what(t)} of volume ${t.volume} with rbd-fuse: ${(e as Error).message}`, { cause: e });
      }
      if (record) await this.recordClientAddrs(t, f);
    }
    return this.file(t);
  }

  /**
   * A fresh rbd-fuse's client address as Ceph knows it (`IP:0/NONCE`, a new nonce per start) appears
   * nowhere but in its messenger's log ("learned my addr", debug_ms 1): its admin socket's `log dump`
   * writes the in-memory log of its start (rbd-fuse's own messengers only) to its log file, and then
   * its messenger log is turned off (debug_ms 0/0), as it would cost on every message. Best effort:
   * without the record, claim() claims nothing and a fence cuts off every unclaimed client anyway.
   */
  private async recordClientAddrs(t: RbdTarget, f: { asok: string; log: string }): Promise<void> {
    const asok = (cmd: string[]) => execBounded(this.ctx.exec, ['ceph', '--admin-daemon', f.asok, ...cmd], { timeoutMs: 10_000 });
    try {
      await asok(['log', 'dump']);
      const deadline = Date.now() + 3_000; // the dump is written by rbd-fuse's log thread
      while (learnedAddrs(await readFile(f.log, 'utf8').catch(() => '')).length === 0 && Date.now() < deadline) await sleep(50);
    } catch (e) {
      this.ctx.log.warn({ volume: t.volume, err: (e as Error).message }, 'could not read the client address of rbd-fuse from its admin socket');
    } finally {
      await asok(['config', 'set', 'debug_ms', '0/0']).catch((e: Error) => this.ctx.log.warn({ volume: t.volume, err: e.message }, 'could not turn the messenger log of rbd-fuse off'));
    }
  }

  /** Addresses of the image's watchers (its open clients) as `rbd status` gives them; none for an image that is gone. */
  async watchers(t: RbdTarget): Promise<string[]> {
    const r = await this.ceph.run('rbd', ['status', `${t.pool}/${t.image}`, '--format', 'json'], [0, 2]);
    if (r.code === 2) return [];
    return ((JSON.parse(r.stdout) as { watchers?: { address?: string }[] }).watchers ?? []).map((w) => w.address ?? '').filter(Boolean);
  }

  /**
   * Bounded (UNMOUNT_BOUNDS): a hung rbd-fuse is detached lazily and ended. A busy mount with no
   * rbd-fuse left is a dead client whose image a loop device still holds (see detachIfDead): detached
   * lazily too. Read from the mount table and /proc, never by a stat of the mount.
   */
  async detach(t: RbdTarget): Promise<void> {
    const dir = t.fuseDir;
    try {
      await unmountAndWait(this.ctx.exec, this.ctx.mounts, dir);
    } catch (e) {
      if (!/busy/i.test((e as Error).message) || (await processesMentioning(dir)).length > 0) throw e;
      this.ctx.log.warn({ mountpoint: dir }, 'rbd-fuse is gone; detaching its dead mount lazily');
      await forceDetach(this.ctx.exec, this.ctx.mounts, dir);
    }
  }

  /**
   * An rbd-fuse that died (killed, crashed) leaves a mount that cannot be unmounted while a loop device
   * still holds the image file through it (the filesystem stays mounted in the containers that were
   * using it), and that fails every operation with "Transport endpoint is not connected". Nothing can
   * reach the image through it any more, so it is detached lazily: the kernel frees it, and the old
   * loop device, when the last of those containers exits. A fresh rbd-fuse can then attach the image.
   */
  private async detachIfDead(dir: string): Promise<void> {
    if (!(await this.ctx.mounts.at(dir))) return;
    const h = await mountAlive(this.ctx.exec, dir);
    if (h.alive || !/not connected/i.test(h.reason ?? '')) return;
    this.ctx.log.warn({ mountpoint: dir, reason: h.reason }, 'rbd-fuse is gone; detaching its dead mount lazily');
    await forceDetach(this.ctx.exec, this.ctx.mounts, dir);
  }

  /**
   * Attaches the image (rbd-fuse and a loop device) and mounts its filesystem at the staging path;
   * formats only a blank image and only when `s.mayFormat`. Already staged is success ('already').
   * A stage that fails after rbd-fuse started ends it again.
   */
  async stage(t: RbdTarget, stagingPath: string, s: RbdStage): Promise<'mounted' | 'already'> {
    let fuse = false;
    try {
      return await stageBlockFilesystem(this.ctx.exec, this.ctx.mounts, {
        source: this.file(t), loop: true, fstype: s.fstype, what: this.what(t), volume: t.volume,
        stagingPath, mountopts: s.mountopts, readOnly: s.readOnly, mayFormat: s.mayFormat, likelyBlank: s.mayFormat, label: s.label, localSource: false,
        beforeMount: async () => {
          await s.beforeAttach?.();
          fuse = true;
          const file = await this.attach(t);
          await s.afterAttach?.(file);
        },
      });
    } catch (e) {
      if (fuse) await this.detach(t).catch(() => undefined);
      throw e;
    }
  }

  /**
   * Bounded, so an Unmount answers within dockerd's limits: the filesystem's umount may take
   * FS_UMOUNT_MS (it flushes through rbd-fuse). One that does not return by then means rbd-fuse is hung
   * (stopped, or its cluster away): the filesystem is detached lazily and rbd-fuse ended, which drops
   * the writes it could not pass on anyway, so the attachment can go and the volume can be removed.
   */
  async unstage(t: RbdTarget, mp: string): Promise<void> {
    let hung = false;
    if (await this.ctx.mounts.at(mp)) {
      // -c: no canonicalization, which stats the mountpoint and hangs on a hung client.
      try { await execBounded(this.ctx.exec, ['umount', '-c', '--', mp], { timeoutMs: FS_UMOUNT_MS }); } catch (e) {
        const m = (e as Error).message;
        hung = /timed out/.test(m);
        // The filesystem of a dead rbd-fuse client cannot be unmounted cleanly; detach it lazily.
        if (!hung && !/not connected|Input\/output error|not mounted/i.test(m)) throw e;
        if (!/not mounted/i.test(m)) await forceDetach(this.ctx.exec, this.ctx.mounts, mp);
      }
    }
    if (hung) {
      this.ctx.log.warn({ volume: t.volume, mountpoint: mp }, `the filesystem did not unmount within ${FS_UMOUNT_MS} ms: rbd-fuse is hung; detached lazily, ending rbd-fuse`);
      await forceDetach(this.ctx.exec, this.ctx.mounts, t.fuseDir);
    } else {
      await this.detach(t);
    }
  }

  /**
   * This node's client of the image: the addresses rbd-fuse learned at its start (recordClientAddrs)
   * that are watchers of the image (`rbd status`; rbd-fuse opens the image, and so registers its watch,
   * at the loop device's first open, which stage did). Exact: a nonce belongs to one process. Not
   * staged here: undefined. No record (an rbd-fuse started by an older Ballast): undefined, logged.
   */
  async claim(t: RbdTarget, mp: string): Promise<Readonly<Record<string, string>> | undefined> {
    if (!(await this.ctx.mounts.at(mp))) return undefined;
    const learned = learnedAddrs(await readFile(this.clientFiles(t).log, 'utf8').catch(() => ''));
    if (learned.length === 0) {
      this.ctx.log.warn({ volume: t.volume }, 'the client address of rbd-fuse is not known (started without a record of it); a fence from another node cuts off every client of the image no other node claims');
      return undefined;
    }
    const deadline = Date.now() + 5_000;
    for (;;) {
      const w = await this.watchers(t);
      const mine = learned.filter((a) => w.includes(a));
      if (mine.length > 0) return { clients: mine.join(',') };
      if (Date.now() > deadline) break;
      await sleep(250);
    }
    // Still exact (these are this rbd-fuse's own messengers), only wider than needed.
    this.ctx.log.warn({ volume: t.volume, clients: learned }, 'no address of rbd-fuse is a watcher of the image yet; claiming all of them');
    return { clients: learned.join(',') };
  }

  /**
   * Cuts a holder's clients off the image at the OSDs: an OSD blocklist entry (`ceph osd blocklist add
   * ADDR EXPIRY`) for each client it claimed and for every watcher of the image that no client in
   * `keep` claimed (what a crash left unclaimed). Resolves once the monitors committed every entry:
   * measured, the old rbd-fuse's next write fails (EIO to its writer's fsync) within milliseconds, and
   * nothing it writes afterwards reaches the image. Idempotent (a second entry for an address just
   * renews it). Returns the addresses blocklisted. `fail(step, e)` makes the caller's error.
   * Expiry (fenceExpirySec, default 3600 s, Ceph's own default for a blocklist entry and what librbd
   * uses when it breaks a lock): a fenced client never recovers by itself (it does not reconnect with a
   * new nonce), and with rados_osd_op_timeout (rbdClientArgs) every write it had in flight has failed
   * within opTimeoutSec, so its filesystem has gone read-only long before the entry expires; the hour
   * is for the fenced node to notice (its lease lost, a newer epoch) and end that client
   * (unstageFenced). A node cut off for longer than that must not get its old client back: raise it
   * for clusters whose nodes can stay partitioned that long.
   */
  async blocklist(t: RbdTarget, holderClaim: Readonly<Record<string, string>> | undefined, keep: readonly (Readonly<Record<string, string>> | undefined)[], fail: (step: string, e: unknown) => Error): Promise<string[]> {
    const kept = new Set(keep.flatMap((k) => claimedClients(k)));
    let watching: string[];
    try { watching = await this.watchers(t); } catch (e) { throw fail('its clients could not be listed (rbd status)', e); }
    const targets = [...new Set([...claimedClients(holderClaim), ...watching.filter((a) => CLIENT_ADDR.test(a) && !kept.has(a))])];
    for (const a of targets) {
      try { await this.ceph.run('ceph', ['osd', 'blocklist', 'add', a, String(this.fenceExpirySec)]); } catch (e) { throw fail(`the OSD blocklist entry for client ${a} was not made`, e); }
    }
    return targets;
  }

  /**
   * On a node that was fenced: rbd-fuse is ended first, with SIGKILL (a fenced rbd-fuse ignores
   * SIGTERM: that would close the image, a flush through a client that is cut off; and a stat of its
   * mount hangs), so nothing below can write to the image any more and every I/O of the filesystem
   * above fails at once instead of after the op timeout. Then the filesystem and rbd-fuse's mount are
   * detached lazily (containers that still use the filesystem keep a dead one) and the loop device is
   * detached (or, still in use, freed by the kernel with its last user). Loop devices are found in the
   * mount table and sysfs (losetup -l), never by a stat. Not staged is success.
   */
  async unstageFenced(t: RbdTarget, mp: string): Promise<void> {
    const file = this.file(t);
    const fs = await this.ctx.mounts.at(mp);
    const killed = await endClients(t.fuseDir, 0, 'SIGKILL');
    const loops = new Set<string>(fs && /^\/dev\/loop\d+$/.test(fs.source) ? [fs.source] : []);
    for (const d of await allLoopDevices(this.ctx.exec).catch(() => [])) if (d.backFile === file) loops.add(d.name);
    if (fs) await forceDetach(this.ctx.exec, this.ctx.mounts, mp);
    await forceDetach(this.ctx.exec, this.ctx.mounts, t.fuseDir);
    for (const l of loops) {
      await detachLoop(this.ctx.exec, l).catch((e: Error) => this.ctx.log.warn({ volume: t.volume, loop: l, err: e.message }, 'could not detach the loop device of a fenced rbd image; the kernel frees it when its last user lets go'));
    }
    this.ctx.log.warn({ volume: t.volume, mountpoint: mp, rbdFuse: killed, loops: [...loops] }, 'fenced: rbd-fuse killed, filesystem and rbd-fuse mount detached lazily, without a flush');
  }

  /**
   * Waits until the image file shows at least `size` bytes (after an `rbd resize`, rbd-fuse and the
   * kernel's FUSE attribute cache learn the new size within about a second). Bounded; stat in a child.
   */
  async waitForSize(t: RbdTarget, size: number, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = await execBounded(this.ctx.exec, ['stat', '-c', '%s', '--', this.file(t)], { timeoutMs: 5_000 }).catch(() => undefined);
      if (r && Number(r.stdout.trim()) >= size) return;
      if (Date.now() > deadline) throw new UnavailableError(`the image ${t.pool}/${t.image} of volume ${t.volume} still shows ${r ? r.stdout.trim() : 'no'} bytes through rbd-fuse ${Math.round(timeoutMs / 1000)} s after it was resized to ${size}; run the expand again`);
      await sleep(200);
    }
  }

  /** rbd-fuse's health (its mount), whatever the staging path. */
  async health(t: RbdTarget): Promise<{ healthy: boolean; reason?: string }> {
    const r = await mountAlive(this.ctx.exec, t.fuseDir);
    return { healthy: r.alive, reason: r.reason };
  }
}
