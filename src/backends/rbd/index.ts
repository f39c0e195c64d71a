import { mkdir, readFile, rm, rmdir } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { detailPath, mountpointOf, probeMountpoint, stagingPathOf, MULTI_NODE_SINGLE_WRITER, type AccessMode, type AttachInfo, type Attacher, type Backend, type BackendContext, type BackendFactory, type Fencer, type HealthChecker, type HostSnapshot, type OptionDoc, type Placement, type ProvisionContext, type StageOptions } from '../types.js';
import type { VolumeRecord } from '../../core/types.js';
import { BusyError, ConflictError, InternalError, InvalidArgumentError, UnavailableError } from '../../core/errors.js';
import { checkOptionKeys } from '../options.js';
import { ConfigReader } from '../config-values.js';
import { formatSize, parseSize } from '../../core/validate.js';
import { within } from '../../host/paths.js';
import { endClients, forceDetach, mountAlive, mountAndVerify, processesMentioning, unmountAndWait } from '../../host/fuse.js';
import { execBounded } from '../../host/fs-child.js';
import { allLoopDevices, detachLoop, FSTYPES, MIN_SIZE, type FsType } from '../../host/blockdev.js';
import { formatIfBlank, stageBlockFilesystem, type BlockFilesystem } from '../../host/filesystem.js';
import { MOUNT_OPTION_ALLOWLIST, parseFsMountOptions } from '../block/index.js';
import { CephClient, CEPH_CONFIG_KEYS } from '../ceph/client.js';

const OPTIONS: readonly OptionDoc[] = [
  { name: 'size', help: 'size of the RBD image, required unless existing= (e.g. 10G)' },
  { name: 'fstype', help: `filesystem: ${FSTYPES.join(', ')} (default ext4); formatted only when the image is blank` },
  { name: 'mountopts', help: `comma-separated mount options from: ${MOUNT_OPTION_ALLOWLIST.join(', ')}` },
  { name: 'existing', help: 'adopt this existing RBD image of the pool instead of creating one; Ballast never deletes it' },
];

interface RbdSpec { image?: string; size?: number; fstype: FsType; mountopts: string[]; existing: boolean }
interface RbdLock { id: string; locker: string; address: string }

/** How long the filesystem's own umount may take (it flushes through rbd-fuse) before rbd-fuse counts as hung. */
const FS_UMOUNT_MS = 8_000;

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
 * The op timeout also bounds how long a write can stay pending in a fenced client: see fence(). The
 * `rbd` CLI calls need none of this: they move no file data and Exec's timeout bounds them.
 */
export function rbdClientArgs(opTimeoutSec: number): string[] {
  const t = String(opTimeoutSec);
  return ['--rbd_cache=false', `--rados_osd_op_timeout=${t}`, `--rados_mon_op_timeout=${t}`, `--client_mount_timeout=${t}`];
}

/** An RBD client as Ceph names it in `rbd status` and the OSD blocklist: `IP:PORT/NONCE`. */
const CLIENT_ADDR = /^(\[[0-9a-fA-F:.]+\]|[0-9.]+):\d{1,5}\/\d{1,20}$/;

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
function claimedClients(claim: Readonly<Record<string, string>> | undefined): string[] {
  return (claim?.clients ?? '').split(',').map((x) => x.trim()).filter((x) => CLIENT_ADDR.test(x));
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Ceph RBD: each volume is an RBD image. This kernel has no rbd module, so an image is attached
 * through rbd-fuse (one FUSE daemon per volume, exposing the image as a file) and an autoclear loop
 * device; with a kernel rbd module `rbd map` would take their place. Formatted at create, only when blank.
 * One read-write node, read-only extra nodes: attach (the Attacher, controller side) takes RBD's advisory
 * lock `ballast-<node>` on the image for a read-write node, so a second one is refused and told which
 * node holds it; stage on the node then attaches rbd-fuse and the loop device and mounts. The lock
 * alone keeps no live writer out (neither does librbd's exclusive lock): in cluster mode a takeover
 * first cuts the old node's rbd-fuse off at the OSDs (the Fencer: claim, fence, unstageFenced, with
 * OSD blocklist entries), and every rbd-fuse runs with settings under which an fsync it acknowledges
 * is on the OSDs (rbdClientArgs). Config: opTimeoutSec (default 10) and fenceExpirySec (default 3600).
 */
export class RbdBackend implements Backend, Attacher, HealthChecker, Fencer {
  readonly type = 'rbd';
  readonly access = MULTI_NODE_SINGLE_WRITER;
  readonly optionDocs = OPTIONS;
  private readonly ceph: CephClient;
  private readonly pool: string;
  private readonly defaultFstype: FsType;
  private readonly base: string;
  /** This node's lock id (provision and deprovision take and drop it; Status shows it). */
  private readonly lockId: string;
  /** librados's bound on one OSD or monitor op of rbd-fuse (rbdClientArgs). */
  private readonly opTimeoutSec: number;
  /** How long a fence's OSD blocklist entries last (see fence()). */
  private readonly fenceExpirySec: number;

  constructor(readonly name: string, config: Readonly<Record<string, unknown>>, private readonly ctx: BackendContext) {
    this.ceph = new CephClient(name, 'rbd', config, ctx.exec);
    const c = new ConfigReader(name, config);
    this.pool = c.str('pool', { def: 'rbd', re: /^[a-zA-Z0-9_.-]+$/, hint: 'a pool name' })!;
    this.defaultFstype = c.str('defaultFstype', { def: 'ext4', re: /^(ext4|xfs|btrfs)$/, hint: FSTYPES.join(', ') }) as FsType;
    this.base = within(ctx.root, 'backends', name);
    this.lockId = lockIdOf(ctx.node ?? 'node');
    this.opTimeoutSec = c.int('opTimeoutSec', 10, 5, 60);
    if (this.opTimeoutSec > this.ceph.timeoutSec) throw new InvalidArgumentError(`backend ${name}: opTimeoutSec (${this.opTimeoutSec}) may not exceed timeoutSec (${this.ceph.timeoutSec}): rbd-fuse must give up on the cluster before Ballast gives up on rbd-fuse`);
    this.fenceExpirySec = c.int('fenceExpirySec', 3600, 300, 30 * 86400);
  }

  parseOptions(opts: Readonly<Record<string, string>>): Record<string, unknown> {
    checkOptionKeys(this.name, opts, OPTIONS);
    const fstype = (opts.fstype ?? this.defaultFstype) as FsType;
    if (!FSTYPES.includes(fstype)) throw new InvalidArgumentError(`fstype ${JSON.stringify(opts.fstype)} is not supported; choose one of ${FSTYPES.join(', ')}`);
    const existing = opts.existing !== undefined;
    if (existing && !/^[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,254}$/.test(opts.existing!)) throw new InvalidArgumentError(`existing=${JSON.stringify(opts.existing!.slice(0, 80))} is not an RBD image name`);
    if (!existing && opts.size === undefined) throw new InvalidArgumentError(`backend ${this.name} needs a size, e.g. -o size=10G (or -o existing=IMAGE)`);
    const size = opts.size !== undefined ? parseSize(opts.size) : undefined;
    if (size !== undefined && size < MIN_SIZE[fstype]) throw new InvalidArgumentError(`size ${opts.size} is too small for ${fstype}; the minimum is ${formatSize(MIN_SIZE[fstype])}`);
    if (size !== undefined && size % (1024 * 1024) !== 0) throw new InvalidArgumentError(`size ${opts.size} must be a whole number of MiB for RBD`);
    const mountopts = parseFsMountOptions(opts.mountopts);
    return { ...(existing ? { image: opts.existing } : {}), ...(size !== undefined ? { size } : {}), fstype, mountopts, existing } satisfies RbdSpec;
  }

  place(name: string): Placement {
    return { mountpoint: within(this.base, 'mounts', name), details: { fuseDir: within(this.base, 'fuse', name) } };
  }
  /** Where rbd-fuse exposes the image (recorded at create; older records used the config's base). */
  private fuseDirOf(vol: VolumeRecord): string { return detailPath(vol, 'fuseDir', () => within(this.base, 'fuse', vol.name)); }
  private imageOf(vol: VolumeRecord): string { return (vol.spec.image as string | undefined) ?? vol.name; }
  private spec(vol: VolumeRecord): RbdSpec { return vol.spec as unknown as RbdSpec; }

  private async info(image: string): Promise<{ size: number; features?: string[] } | undefined> {
    const r = await this.ceph.run('rbd', ['info', `${this.pool}/${image}`, '--format', 'json'], [0, 2]);
    return r.code === 0 ? JSON.parse(r.stdout) as { size: number; features?: string[] } : undefined;
  }

  /**
   * Where the volume's rbd-fuse keeps its admin socket and its log (the log holds the client addresses
   * claim() reads). A unix socket path must stay below 108 bytes: a long root moves them to /run.
   */
  private clientFiles(vol: VolumeRecord): { dir: string; asok: string; log: string } {
    const key = createHash('sha256').update(`${this.fuseDirOf(vol)}\0${this.pool}/${this.imageOf(vol)}`).digest('hex').slice(0, 16);
    let dir = within(this.base, 'run');
    if (dir.length + key.length + 7 > 100) dir = `/run/ballast-rbd-${createHash('sha256').update(this.base).digest('hex').slice(0, 12)}`;
    return { dir, asok: `${dir}/${key}.asok`, log: `${dir}/${key}.log` };
  }

  /**
   * Attaches the image as a file through rbd-fuse, on this node; returns the file. rbd-fuse runs with
   * rbdClientArgs (durable fsync, bounded ops), its own admin socket and log, and its messenger log
   * kept in memory (debug_ms 0/1) only until recordClientAddrs has written its addresses down.
   */
  private async attachFuse(vol: VolumeRecord): Promise<string> {
    const dir = this.fuseDirOf(vol);
    await this.detachIfDead(dir);
    if (!(await this.ctx.mounts.at(dir))) {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      const f = this.clientFiles(vol);
      await mkdir(f.dir, { recursive: true, mode: 0o700 });
      await rm(f.log, { force: true }); // a new client: no addresses of an earlier one
      const argv = ['rbd-fuse', ...this.ceph.identity(), ...rbdClientArgs(this.opTimeoutSec), `--admin_socket=${f.asok}`, `--log_file=${f.log}`, '--debug_ms=0/1',
        '-p', this.pool, '-r', this.imageOf(vol), dir];
      try {
        await mountAndVerify(this.ctx.exec, this.ctx.mounts, argv, dir, this.ceph.timeoutSec * 1000);
      } catch (e) {
        throw new UnavailableError(`${this.ceph.label}: could not attach image ${this.pool}/${this.imageOf(vol)} with rbd-fuse: ${(e as Error).message}`, { cause: e });
      }
      await this.recordClientAddrs(vol, f);
    }
    return within(dir, this.imageOf(vol));
  }

  /**
   * A fresh rbd-fuse's client address as Ceph knows it (`IP:0/NONCE`, a new nonce per start) appears
   * nowhere but in its messenger's log ("learned my addr", debug_ms 1): its admin socket's `log dump`
   * writes the in-memory log of its start (rbd-fuse's own messengers only) to its log file, and then
   * its messenger log is turned off (debug_ms 0/0), as it would cost on every message. Best effort:
   * without the record, claim() claims nothing and a fence cuts off every unclaimed client anyway.
   */
  private async recordClientAddrs(vol: VolumeRecord, f: { asok: string; log: string }): Promise<void> {
    const asok = (cmd: string[]) => execBounded(this.ctx.exec, ['ceph', '--admin-daemon', f.asok, ...cmd], { timeoutMs: 10_000 });
    try {
      await asok(['log', 'dump']);
      const deadline = Date.now() + 3_000; // the dump is written by rbd-fuse's log thread
      while (learnedAddrs(await readFile(f.log, 'utf8').catch(() => '')).length === 0 && Date.now() < deadline) await sleep(50);
    } catch (e) {
      this.ctx.log.warn({ volume: vol.name, err: (e as Error).message }, 'could not read the client address of rbd-fuse from its admin socket');
    } finally {
      await asok(['config', 'set', 'debug_ms', '0/0']).catch((e: Error) => this.ctx.log.warn({ volume: vol.name, err: e.message }, 'could not turn the messenger log of rbd-fuse off'));
    }
  }

  /** Addresses of the image's watchers (its open clients) as `rbd status` gives them; none for an image that is gone. */
  private async watchers(vol: VolumeRecord): Promise<string[]> {
    const r = await this.ceph.run('rbd', ['status', `${this.pool}/${this.imageOf(vol)}`, '--format', 'json'], [0, 2]);
    if (r.code === 2) return [];
    return ((JSON.parse(r.stdout) as { watchers?: { address?: string }[] }).watchers ?? []).map((w) => w.address ?? '').filter(Boolean);
  }

  /**
   * Bounded (UNMOUNT_BOUNDS): a hung rbd-fuse is detached lazily and ended. A busy mount with no
   * rbd-fuse left is a dead client whose image a loop device still holds (see detachIfDead): detached
   * lazily too. Read from the mount table and /proc, never by a stat of the mount.
   */
  private async detachFuse(vol: VolumeRecord): Promise<void> {
    const dir = this.fuseDirOf(vol);
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

  async provision(vol: VolumeRecord, pc?: ProvisionContext): Promise<Record<string, unknown>> {
    const spec = this.spec(vol);
    const image = this.imageOf(vol);
    const found = await this.info(image);
    if (spec.existing && !found) throw new InvalidArgumentError(`${this.ceph.label}: existing=${image} is not an image of pool ${this.pool}`);
    if (!spec.existing) {
      if (found && !pc?.resumed) throw new ConflictError(`${this.ceph.label}: image ${this.pool}/${image} already exists; to use it, create the volume with -o existing=${image} (Ballast then never deletes it)`);
      // layering only: the exclusive-lock feature takes the same RADOS lock as `rbd lock add`, and a
      // client that cannot get it waits forever.
      if (!found) await this.ceph.run('rbd', ['create', `${this.pool}/${image}`, '--size', `${spec.size! / 1048576}M`, '--image-feature', 'layering']);
    }
    if (found?.features?.includes('exclusive-lock')) {
      throw new InvalidArgumentError(`${this.ceph.label}: image ${this.pool}/${image} has the exclusive-lock feature, which conflicts with the advisory lock Ballast uses to keep a second host out; disable it first: rbd feature disable ${this.pool}/${image} fast-diff object-map exclusive-lock`);
    }
    // Format only a blank image, under our own lock so no other host attaches it meanwhile.
    await this.lock(vol, this.lockId);
    try {
      const file = await this.attachFuse(vol);
      try {
        await formatIfBlank(this.ctx.exec, this.filesystem(vol, file), { knownBlank: false, label: vol.name, hint: (t) => `Use -o fstype=${t ?? '...'}` });
      } finally { await this.detachFuse(vol); }
    } finally { await this.unlock(vol, this.lockId); }
    return { pool: this.pool, image, createdByBallast: !spec.existing, formatted: true };
  }

  async deprovision(vol: VolumeRecord): Promise<void> {
    await this.unstage(vol, mountpointOf(vol));
    await this.unlock(vol, this.lockId);
    // Local directories, once nothing is mounted there (an rmdir of a hung mount would hang).
    for (const d of [mountpointOf(vol), this.fuseDirOf(vol)]) if (!(await this.ctx.mounts.at(d))) await rmdir(d).catch(() => undefined);
    if (this.spec(vol).existing) return;
    const r = await this.ceph.run('rbd', ['rm', '--no-progress', `${this.pool}/${this.imageOf(vol)}`], [0, 2]);
    if (r.code === 2) this.ctx.log.warn({ volume: vol.name }, 'rbd image was already gone');
  }

  private async locks(vol: VolumeRecord): Promise<RbdLock[]> {
    const r = await this.ceph.run('rbd', ['lock', 'ls', `${this.pool}/${this.imageOf(vol)}`, '--format', 'json'], [0, 2]);
    return r.code === 2 ? [] : JSON.parse(r.stdout) as RbdLock[]; // 2: the image is gone, and any lock with it
  }

  /** Takes the advisory lock `id`, or proves it is held already; refuses when another node's is. */
  private async lock(vol: VolumeRecord, id: string): Promise<void> {
    const image = `${this.pool}/${this.imageOf(vol)}`;
    const r = await this.ceph.run('rbd', ['lock', 'add', image, id], [0, 16]);
    if (r.code === 0) return;
    const held = await this.locks(vol);
    if (held.some((l) => l.id === id)) return; // ours, from before a restart
    const who = held.map((l) => `${l.id.replace(/^ballast-/, 'node ')} (${l.locker} at ${l.address})`).join(', ') || 'another client';
    throw new BusyError(`volume ${vol.name} (rbd image ${image}) is attached read-write by ${who}; an RBD volume is not shareable. Stop its containers there first, or remove the stale lock with: rbd lock rm ${image} <id> <locker>`);
  }

  private async unlock(vol: VolumeRecord, id: string): Promise<void> {
    for (const l of (await this.locks(vol)).filter((x) => x.id === id)) {
      await this.ceph.run('rbd', ['lock', 'rm', `${this.pool}/${this.imageOf(vol)}`, l.id, l.locker], [0, 2]);
    }
  }

  /**
   * Controller side: a read-write node takes the advisory lock `ballast-<node>` (refused, naming the
   * holder, when another node holds one); a read-only node takes none. Idempotent.
   */
  async attach(vol: VolumeRecord, node: string, mode: AccessMode = 'rw'): Promise<AttachInfo> {
    const connection = { pool: this.pool, image: this.imageOf(vol) };
    if (mode === 'ro') return { connection: { ...connection, mode: 'ro' } };
    const id = lockIdOf(node);
    // Cluster mode: the volume's attachments in etcd (compare-and-swap, epochs) keep a second writer node
    // out, and a dead one is cut off by the fence; the advisory lock would only add two Ceph round
    // trips to every handover (measured: about half of a drain's extra time over Docker's local driver).
    if (!this.ctx.cluster) await this.lock(vol, id);
    return { attachmentId: id, connection: { ...connection, mode: 'rw' } };
  }

  /** Releases the node's lock (none in cluster mode); none held is success. */
  async detach(vol: VolumeRecord, node: string): Promise<void> {
    if (!this.ctx.cluster) await this.unlock(vol, lockIdOf(node));
  }

  private filesystem(vol: VolumeRecord, file: string): BlockFilesystem {
    return { source: file, loop: true, fstype: this.spec(vol).fstype, what: `image ${this.pool}/${this.imageOf(vol)}`, volume: vol.name };
  }

  /**
   * Node side: attaches the image with rbd-fuse and a loop device and mounts it at the staging path;
   * never formats (that happened at create). Read-write needs the attachment (the node's lock) from
   * attach; read-only mounts without replaying the journal.
   */
  async stage(vol: VolumeRecord, stagingPath: string, opts: StageOptions = {}): Promise<void> {
    const spec = this.spec(vol);
    const mp = stagingPathOf(stagingPath);
    let fuse = false;
    try {
      await stageBlockFilesystem(this.ctx.exec, this.ctx.mounts, {
        ...this.filesystem(vol, within(this.fuseDirOf(vol), this.imageOf(vol))), stagingPath: mp, mountopts: spec.mountopts,
        readOnly: opts.readOnly, mayFormat: false, localSource: false,
        beforeMount: async () => {
          if (!opts.readOnly && !opts.attachment?.attachmentId) {
            throw new InternalError(`volume ${vol.name} (rbd image ${this.pool}/${this.imageOf(vol)}) must be attached to this node (its RBD lock taken) before it is staged read-write`);
          }
          fuse = true;
          await this.attachFuse(vol);
        },
      });
    } catch (e) {
      if (fuse) await this.detachFuse(vol).catch(() => undefined);
      throw e;
    }
  }

  /**
   * Bounded, so an Unmount answers within dockerd's limits: the filesystem's umount may take
   * FS_UMOUNT_MS (it flushes through rbd-fuse). One that does not return by then means rbd-fuse is hung
   * (stopped, or its cluster away): the filesystem is detached lazily and rbd-fuse ended, which drops
   * the writes it could not pass on anyway, so the lock can go (detach) and the volume can be removed.
   */
  async unstage(vol: VolumeRecord, stagingPath: string): Promise<void> {
    const mp = stagingPathOf(stagingPath);
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
      this.ctx.log.warn({ volume: vol.name, mountpoint: mp }, `the filesystem did not unmount within ${FS_UMOUNT_MS} ms: rbd-fuse is hung; detached lazily, ending rbd-fuse`);
      await forceDetach(this.ctx.exec, this.ctx.mounts, this.fuseDirOf(vol));
    } else {
      await this.detachFuse(vol);
    }
  }

  /**
   * This node's client of the image: the addresses rbd-fuse learned at its start (recordClientAddrs)
   * that are watchers of the image (`rbd status`; rbd-fuse opens the image, and so registers its watch,
   * at the loop device's first open, which stage did). Exact: a nonce belongs to one process. Not
   * staged here: undefined. No record (an rbd-fuse started by an older Ballast): undefined, logged.
   */
  async claim(vol: VolumeRecord, stagingPath: string): Promise<Readonly<Record<string, string>> | undefined> {
    if (!(await this.ctx.mounts.at(stagingPathOf(stagingPath)))) return undefined;
    const learned = learnedAddrs(await readFile(this.clientFiles(vol).log, 'utf8').catch(() => ''));
    if (learned.length === 0) {
      this.ctx.log.warn({ volume: vol.name }, 'the client address of rbd-fuse is not known (started without a record of it); a fence from another node cuts off every client of the image no other node claims');
      return undefined;
    }
    const deadline = Date.now() + 5_000;
    for (;;) {
      const w = await this.watchers(vol);
      const mine = learned.filter((a) => w.includes(a));
      if (mine.length > 0) return { clients: mine.join(',') };
      if (Date.now() > deadline) break;
      await sleep(250);
    }
    // Still exact (these are this rbd-fuse's own messengers), only wider than needed.
    this.ctx.log.warn({ volume: vol.name, clients: learned }, 'no address of rbd-fuse is a watcher of the image yet; claiming all of them');
    return { clients: learned.join(',') };
  }

  /**
   * Cuts `holder` off the image at the OSDs: an OSD blocklist entry (`ceph osd blocklist add ADDR
   * EXPIRY`) for each client it claimed and for every watcher of the image that no node in `keep`
   * claimed (what a crash left unclaimed); then its advisory lock goes (the lock ballast-<node>, see
   * lockIdOf), so the new node can attach. Resolves once the monitors committed every entry: measured,
   * the old rbd-fuse's next write fails (EIO to its writer's fsync) within milliseconds, and nothing it
   * writes afterwards reaches the image. Idempotent (a second entry for an address just renews it).
   * Expiry (fenceExpirySec, default 3600 s, Ceph's own default for a blocklist entry and what librbd
   * uses when it breaks a lock): a fenced client never recovers by itself (it does not reconnect with a
   * new nonce), and with rados_osd_op_timeout (rbdClientArgs) every write it had in flight has failed
   * within opTimeoutSec, so its filesystem has gone read-only long before the entry expires; the hour
   * is for the fenced node to notice (its lease lost, a newer epoch) and end that client
   * (unstageFenced). A node cut off for longer than that must not get its old client back: raise it
   * for clusters whose nodes can stay partitioned that long.
   */
  async fence(vol: VolumeRecord, holder: { readonly node: string; readonly claim?: Readonly<Record<string, string>> }, keep: readonly { readonly node: string; readonly claim?: Readonly<Record<string, string>> }[]): Promise<string> {
    const image = `${this.pool}/${this.imageOf(vol)}`;
    const what = `volume ${vol.name} (rbd image ${image})`;
    const fail = (step: string, e: unknown) => new UnavailableError(`could not fence node ${holder.node} off ${what}: ${step}: ${(e as Error).message}; run the operation again once the cluster answers`, { cause: e });
    const kept = new Set(keep.flatMap((k) => claimedClients(k.claim)));
    let watching: string[];
    try { watching = await this.watchers(vol); } catch (e) { throw fail('its clients could not be listed (rbd status)', e); }
    const targets = [...new Set([...claimedClients(holder.claim), ...watching.filter((a) => CLIENT_ADDR.test(a) && !kept.has(a))])];
    for (const a of targets) {
      try { await this.ceph.run('ceph', ['osd', 'blocklist', 'add', a, String(this.fenceExpirySec)]); } catch (e) { throw fail(`the OSD blocklist entry for client ${a} was not made`, e); }
    }
    const lock = lockIdOf(holder.node);
    try { await this.unlock(vol, lock); } catch (e) { throw fail(`its lock ${lock} could not be removed`, e); }
    return `${what}: node ${holder.node} is cut off at the OSDs (${targets.length ? `blocklisted ${targets.join(', ')} for ${this.fenceExpirySec} s` : 'it had no client of the image'}); its lock ${lock} is removed`;
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
  async unstageFenced(vol: VolumeRecord, stagingPath: string): Promise<void> {
    const mp = stagingPathOf(stagingPath);
    const dir = this.fuseDirOf(vol);
    const file = within(dir, this.imageOf(vol));
    const fs = await this.ctx.mounts.at(mp);
    const killed = await endClients(dir, 0, 'SIGKILL');
    const loops = new Set<string>(fs && /^\/dev\/loop\d+$/.test(fs.source) ? [fs.source] : []);
    for (const d of await allLoopDevices(this.ctx.exec).catch(() => [])) if (d.backFile === file) loops.add(d.name);
    if (fs) await forceDetach(this.ctx.exec, this.ctx.mounts, mp);
    await forceDetach(this.ctx.exec, this.ctx.mounts, dir);
    for (const l of loops) {
      await detachLoop(this.ctx.exec, l).catch((e: Error) => this.ctx.log.warn({ volume: vol.name, loop: l, err: e.message }, 'could not detach the loop device of a fenced rbd image; the kernel frees it when its last user lets go'));
    }
    this.ctx.log.warn({ volume: vol.name, mountpoint: mp, rbdFuse: killed, loops: [...loops] }, 'fenced: rbd-fuse killed, filesystem and rbd-fuse mount detached lazily, without a flush');
  }

  probe(_vol: VolumeRecord, stagingPath: string, snap: HostSnapshot): 'mounted' | 'unmounted' {
    return probeMountpoint(snap, stagingPath);
  }

  /** rbd-fuse's health (its mount under fuse/), whatever the staging path. */
  async checkHealth(vol: VolumeRecord, _stagingPath: string): Promise<{ healthy: boolean; reason?: string }> {
    const r = await mountAlive(this.ctx.exec, this.fuseDirOf(vol));
    return { healthy: r.alive, reason: r.reason };
  }

  status(vol: VolumeRecord): Record<string, unknown> {
    const s = this.spec(vol);
    return { pool: this.pool, image: this.imageOf(vol), fstype: s.fstype, ...(s.size ? { size: formatSize(s.size), sizeBytes: s.size } : {}), mountopts: s.mountopts.join(','), existing: s.existing, lock: this.lockId };
  }
}

/** The advisory lock id of a node: `ballast-<node>`. */
export function lockIdOf(node: string): string {
  return `ballast-${node.replace(/[^a-zA-Z0-9_.-]/g, '_').slice(0, 64)}`;
}

export const rbdFactory: BackendFactory = {
  type: 'rbd',
  configKeys: [...CEPH_CONFIG_KEYS, 'pool', 'defaultFstype', 'opTimeoutSec', 'fenceExpirySec'],
  create: (instance, config, ctx) => new RbdBackend(instance, config, ctx),
};
