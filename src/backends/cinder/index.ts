import { rmdir } from 'node:fs/promises';
import { detailPath, mountpointOf, probeMountpoint, stagingPathOf, MULTI_NODE_SINGLE_WRITER, type AccessMode, type AttachInfo, type Attacher, type Backend, type BackendContext, type BackendFactory, type Fencer, type HealthChecker, type HostSnapshot, type OptionDoc, type Orphan, type OrphanFinder, type Placement, type ProvisionContext, type StageOptions } from '../types.js';
import type { VolumeRecord } from '../../core/types.js';
import { BallastError, BusyError, ConflictError, FailedPreconditionError, InternalError, InvalidArgumentError, NotFoundError, ResourceExhaustedError, UnavailableError } from '../../core/errors.js';
import { checkOptionKeys } from '../options.js';
import { ConfigReader } from '../config-values.js';
import { formatSize, parseSize } from '../../core/validate.js';
import { within } from '../../host/paths.js';
import { FSTYPES, MIN_SIZE, type FsType } from '../../host/blockdev.js';
import { stageBlockFilesystem } from '../../host/filesystem.js';
import { MOUNT_OPTION_ALLOWLIST, parseFsMountOptions } from '../block/index.js';
import { CephClient } from '../ceph/client.js';
import { RbdFuse, monAddrs, type RbdTarget } from '../ceph/rbd-fuse.js';
import { rbdFuseOf } from '../rbd/index.js';
import { AUTH_CONFIG_KEYS, CinderApi, KeystoneSession, OpenStackHttpError, authSettings, type CinderAttachment, type CinderVolume } from './api.js';
import { connectIscsi, disconnectIscsi, iscsiTargetOf, type IscsiTarget } from './iscsi.js';

const UUID = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;
const GiB = 1024 ** 3;

const OPTIONS: readonly OptionDoc[] = [
  { name: 'size', help: 'size of the Cinder volume, rounded up to whole GiB (e.g. 10G); required unless existing=, snapshot= or source=' },
  { name: 'type', help: 'Cinder volume type (default: the backend\'s volumeType, else Cinder\'s default type)' },
  { name: 'availability-zone', help: 'Cinder availability zone (default: the backend\'s availabilityZone)' },
  { name: 'snapshot', help: 'create from this Cinder snapshot (its id)' },
  { name: 'source', help: 'create as a clone of this Cinder volume (its id)' },
  { name: 'multiattach', help: 'true: a multiattach volume (needs a volume type that allows it); other nodes may then mount it read-only while one writes' },
  { name: 'fstype', help: `filesystem: ${FSTYPES.join(', ')} (default ext4); formatted at the first mount only when the volume is blank` },
  { name: 'mountopts', help: `comma-separated mount options from: ${MOUNT_OPTION_ALLOWLIST.join(', ')}` },
  { name: 'existing', help: 'adopt this existing Cinder volume (its id) instead of creating one; Ballast never deletes it' },
];

interface CinderSpec {
  size?: number; type?: string; zone?: string; snapshot?: string; source?: string; multiattach: boolean;
  fstype: FsType; mountopts: string[]; existing?: string;
}

/** Cinder metadata keys Ballast writes on the volumes it owns or adopted. */
export const META = {
  backend: 'ballast.backend',
  volume: 'ballast.volume',
  createdBy: 'ballast.created-by',
  spec: 'ballast.spec',
  formatted: 'ballast.formatted',
  rbd: 'ballast.rbd',
  /** `ballast.attachment.<attachment id>` = `<node> <ISO time>`: which node made the attachment, and when. */
  attachmentPrefix: 'ballast.attachment.',
} as const;

/** An attachment made less recently than this is never taken for a crash's leftover (a Mount may be between create and complete). */
const ATTACH_GRACE_MS = 120_000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** What the node needs of an attachment, from Cinder's connection_info (flattened or not: Debian's build flattens it). */
export interface Connection {
  readonly driver: string;
  readonly rbd?: { readonly pool: string; readonly image: string; readonly monitors?: string; readonly user?: string };
  readonly iscsi?: IscsiTarget;
}

/** Reads connection_info as Cinder returns it; refuses a driver Ballast cannot connect. Never holds a secret (a keyring is dropped). */
export function connectionOf(info: Readonly<Record<string, unknown>> | null | undefined, what: string): Connection {
  if (!info) throw new UnavailableError(`Cinder returned no connection_info for ${what}; the attachment has no connector (was it made by something else?)`);
  const driver = String(info.driver_volume_type ?? '');
  const data = (info.data && typeof info.data === 'object' ? info.data : info) as Record<string, unknown>;
  if (driver === 'rbd') {
    const name = String(data.name ?? '');
    const m = /^([a-zA-Z0-9_.-]+)\/([a-zA-Z0-9_.-]+)$/.exec(name);
    if (!m) throw new UnavailableError(`Cinder's connection_info for ${what} names RBD image ${JSON.stringify(name.slice(0, 80))}, not POOL/IMAGE`);
    const hosts = Array.isArray(data.hosts) ? data.hosts : [];
    const ports = Array.isArray(data.ports) ? data.ports : [];
    const user = typeof data.auth_username === 'string' && /^[a-zA-Z0-9_.-]+$/.test(data.auth_username) ? data.auth_username : undefined;
    return { driver, rbd: { pool: m[1], image: m[2], monitors: monAddrs(hosts, ports), ...(user ? { user } : {}) } };
  }
  if (driver === 'iscsi') return { driver, iscsi: iscsiTargetOf(data, what) };
  throw new UnavailableError(`Cinder attaches ${what} with driver_volume_type ${JSON.stringify(driver.slice(0, 40))}, which Ballast cannot connect (it connects rbd and iscsi)`);
}

/** The connection as AttachInfo carries it (strings only; stored and logged, so no secret). */
function encodeConnection(c: Connection, formatted: string | undefined): Record<string, string> {
  return {
    driver: c.driver,
    ...(c.rbd ? { pool: c.rbd.pool, image: c.rbd.image, ...(c.rbd.monitors ? { monitors: c.rbd.monitors } : {}) } : {}),
    ...(c.iscsi ? { portal: c.iscsi.portal, iqn: c.iscsi.iqn, lun: String(c.iscsi.lun) } : {}),
    ...(formatted ? { formatted } : {}),
  };
}

function decodeConnection(r: Readonly<Record<string, string>>): Connection {
  if (r.driver === 'rbd') return { driver: 'rbd', rbd: { pool: r.pool, image: r.image, monitors: r.monitors } };
  return { driver: r.driver, iscsi: { portal: r.portal, iqn: r.iqn, lun: Number(r.lun) } };
}

/**
 * OpenStack Cinder: each volume is a Cinder volume, created through the API (Keystone v3 auth or
 * noauth) and attached with the attachments API (3.27 create, 3.44 complete): attach creates an
 * attachment for this node with its connector and reads connection_info; stage connects by driver
 * (rbd: rbd-fuse and a loop device with the rbd backend's client settings; iscsi: iscsiadm), formats
 * only a blank volume, mounts, then completes the attachment; unstage and detach undo it in reverse
 * (unmount, disconnect, delete the attachment). Cinder's own rule stands: a volume that is not
 * multiattach has one attachment. Ballast marks what it owns with Cinder metadata (`ballast.*`), so a
 * lost store can be rebuilt from Cinder (`ballast repair` adopts them back), and labels each attachment
 * with the node that made it (Cinder shows an attachment's host to admins only, and only once
 * complete). A node that died is taken over in cluster mode only after its rbd client is blocklisted
 * at Ceph (the Fencer): Cinder's RBD driver does nothing when an attachment is deleted, so deleting it
 * alone would leave the old writer writing.
 */
export class CinderBackend implements Backend, Attacher, Fencer, HealthChecker, OrphanFinder {
  readonly type = 'cinder';
  readonly access = MULTI_NODE_SINGLE_WRITER;
  readonly optionDocs = OPTIONS;
  private readonly api: CinderApi;
  private readonly ceph: CephClient;
  private readonly fuse: RbdFuse;
  private readonly base: string;
  private readonly defaultFstype: FsType;
  private readonly volumeType?: string;
  private readonly zone?: string;
  private readonly createTimeoutMs: number;
  private readonly label: string;
  private readonly node: string;
  /** The connection of each volume attached here, learnt at attach (after a restart: read back from Cinder when needed). */
  private readonly conns = new Map<string, Connection>();

  constructor(readonly name: string, config: Readonly<Record<string, unknown>>, private readonly ctx: BackendContext) {
    const c = new ConfigReader(name, config);
    const auth = authSettings(name, config);
    this.label = `cinder backend ${name}`;
    this.api = new CinderApi(new KeystoneSession(auth, name), auth.requestTimeoutMs);
    this.base = within(ctx.root, 'backends', name);
    this.node = ctx.node ?? 'node';
    this.defaultFstype = c.str('defaultFstype', { def: 'ext4', re: /^(ext4|xfs|btrfs)$/, hint: FSTYPES.join(', ') }) as FsType;
    this.volumeType = c.str('volumeType', { re: /^[^\s"]{1,255}$/, hint: 'a Cinder volume type' });
    this.zone = c.str('availabilityZone', { re: /^[^\s"]{1,255}$/, hint: 'an availability zone' });
    this.createTimeoutMs = c.int('createTimeoutSec', 90, 5, 110) * 1000;
    // The node's Ceph identity: rbd-fuse's client (Cinder returns no keyring), and `rbd status` and the
    // OSD blocklist of a fence (needs a key allowed `osd blocklist`).
    this.ceph = new CephClient(name, 'cinder', { conf: config.cephConf, user: config.cephUser, keyring: config.cephKeyring, timeoutSec: config.cephTimeoutSec }, ctx.exec);
    this.fuse = rbdFuseOf(name, c, this.ceph, this.base, ctx);
  }

  parseOptions(opts: Readonly<Record<string, string>>): Record<string, unknown> {
    checkOptionKeys(this.name, opts, OPTIONS);
    const fstype = (opts.fstype ?? this.defaultFstype) as FsType;
    if (!FSTYPES.includes(fstype)) throw new InvalidArgumentError(`fstype ${JSON.stringify(opts.fstype)} is not supported; choose one of ${FSTYPES.join(', ')}`);
    const id = (k: 'existing' | 'snapshot' | 'source') => {
      const v = opts[k];
      if (v !== undefined && !UUID.test(v)) throw new InvalidArgumentError(`${k}=${JSON.stringify(v.slice(0, 80))} is not a Cinder ${k === 'snapshot' ? 'snapshot' : 'volume'} id (a UUID)`);
      return v?.toLowerCase();
    };
    const existing = id('existing');
    const snapshot = id('snapshot');
    const source = id('source');
    if ([existing, snapshot, source].filter(Boolean).length > 1) throw new InvalidArgumentError('choose at most one of existing=, snapshot= and source=');
    if (!existing && !snapshot && !source && opts.size === undefined) throw new InvalidArgumentError(`backend ${this.name} needs a size, e.g. -o size=10G (or -o existing=ID, snapshot=ID, source=ID)`);
    if (existing && (opts.size !== undefined || opts.type !== undefined || opts['availability-zone'] !== undefined || opts.multiattach !== undefined)) {
      throw new InvalidArgumentError('existing= adopts a Cinder volume as it is: size, type, availability-zone and multiattach cannot be given with it');
    }
    let size: number | undefined;
    if (opts.size !== undefined) {
      const bytes = parseSize(opts.size);
      if (bytes < MIN_SIZE[fstype]) throw new InvalidArgumentError(`size ${opts.size} is too small for ${fstype}; the minimum is ${formatSize(MIN_SIZE[fstype])}`);
      size = Math.ceil(bytes / GiB);
      if (size > 65536) throw new InvalidArgumentError(`size ${opts.size} is more than Ballast asks of Cinder (at most 64 TiB)`);
    }
    const text = (k: 'type' | 'availability-zone') => {
      const v = opts[k];
      if (v !== undefined && !/^[a-zA-Z0-9_.:-]{1,255}$/.test(v)) throw new InvalidArgumentError(`${k}=${JSON.stringify(v.slice(0, 80))} is not a Cinder ${k === 'type' ? 'volume type' : 'availability zone'} name`);
      return v;
    };
    const type = text('type') ?? (existing ? undefined : this.volumeType);
    const zone = text('availability-zone') ?? (existing ? undefined : this.zone);
    const ma = opts.multiattach;
    if (ma !== undefined && !/^(true|false)$/.test(ma)) throw new InvalidArgumentError(`multiattach=${JSON.stringify(ma.slice(0, 20))} must be true or false`);
    const spec: CinderSpec = {
      ...(size !== undefined ? { size } : {}), ...(type ? { type } : {}), ...(zone ? { zone } : {}),
      ...(snapshot ? { snapshot } : {}), ...(source ? { source } : {}), ...(existing ? { existing } : {}),
      multiattach: ma === 'true', fstype, mountopts: parseFsMountOptions(opts.mountopts),
    };
    return spec as unknown as Record<string, unknown>;
  }

  place(name: string): Placement {
    return { mountpoint: within(this.base, 'mounts', name), details: { fuseDir: within(this.base, 'fuse', name) } };
  }

  private spec(vol: VolumeRecord): CinderSpec { return vol.spec as unknown as CinderSpec; }
  private fuseDirOf(vol: VolumeRecord): string { return detailPath(vol, 'fuseDir', () => within(this.base, 'fuse', vol.name)); }
  private what(vol: VolumeRecord): string { return `volume ${vol.name}${vol.details.cinderId ? ` (Cinder volume ${String(vol.details.cinderId)})` : ''}`; }

  /** The Cinder id of a provisioned volume. */
  private idOf(vol: VolumeRecord): string {
    const id = String(vol.details.cinderId ?? this.spec(vol).existing ?? '');
    if (!UUID.test(id)) throw new InternalError(`volume ${vol.name} has no Cinder volume id in its record; it was not created completely. Remove it and create it again`);
    return id;
  }

  /** Cinder's and Keystone's errors as sentences a user can act on, with the service's own message. */
  private failure(e: unknown, doing: string): BallastError {
    if (e instanceof BallastError) return e;
    if (e instanceof OpenStackHttpError) {
      const msg = `${this.label}: ${doing} failed: ${e.what.replace(/^Cinder: /, 'Cinder ')} answered ${e.status}: ${e.serviceMessage}`;
      if (e.status === 413 || /quota|exceeded|maximum/i.test(e.serviceMessage)) return new ResourceExhaustedError(`${msg}. Free space in the project's quota or ask for a larger one`, { cause: e });
      if (e.status === 404) return new NotFoundError(msg, { cause: e });
      if (e.status === 401 || e.status === 403) return new FailedPreconditionError(`${msg}. Check the backend's credentials and roles`, { cause: e });
      if (e.status === 409 || /in-use|attached|status must be|must not be|being/i.test(e.serviceMessage)) return new BusyError(msg, { cause: e });
      if (e.status >= 500) return new UnavailableError(msg, { cause: e, retryable: true });
      return new InvalidArgumentError(msg, { cause: e });
    }
    return new InternalError(`${this.label}: ${doing} failed: ${(e as Error).message}`, { cause: e });
  }

  private async guard<T>(doing: string, fn: () => Promise<T>): Promise<T> {
    try { return await fn(); } catch (e) { throw this.failure(e, doing); }
  }

  /** Polls the volume until `done` says so (bounded); `error` states end the wait with Cinder's own user message. */
  private async waitFor(id: string, what: string, done: (v: CinderVolume | undefined) => boolean, timeoutMs: number): Promise<CinderVolume | undefined> {
    const deadline = Date.now() + timeoutMs;
    let delay = 100;
    for (;;) {
      const v = await this.api.getVolume(id);
      if (done(v)) return v;
      if (v && /^error/.test(v.status)) {
        const why = (await this.api.messagesAbout(id))[0];
        throw new UnavailableError(`${this.label}: Cinder volume ${id} for ${what} went to status ${v.status}${why ? `: ${why}` : ''}. Check the Cinder volume service's log; remove the volume and create it again`);
      }
      if (Date.now() + delay > deadline) throw new UnavailableError(`${this.label}: Cinder volume ${id} for ${what} is still ${v?.status ?? 'absent'} after ${Math.round(timeoutMs / 1000)} s; is cinder-volume running? (createTimeoutSec)`);
      await sleep(delay);
      delay = Math.min(1_000, delay * 1.5);
    }
  }

  private ownedMetadata(vol: VolumeRecord, createdByBallast: boolean): Record<string, string> {
    const spec = this.spec(vol);
    return {
      [META.backend]: this.name, [META.volume]: vol.name, [META.spec]: JSON.stringify(spec).slice(0, 255),
      ...(createdByBallast ? { [META.createdBy]: 'ballast' } : {}),
    };
  }

  async provision(vol: VolumeRecord, pc?: ProvisionContext): Promise<Record<string, unknown>> {
    const spec = this.spec(vol);
    const what = `volume ${vol.name}`;
    return this.guard(`creating ${what}`, async () => {
      if (spec.existing) {
        const v = await this.api.getVolume(spec.existing);
        if (!v) throw new InvalidArgumentError(`${this.label}: existing=${spec.existing} is not a Cinder volume of this project`);
        const owner = v.metadata?.[META.volume];
        if (owner && owner !== vol.name && v.metadata?.[META.backend] === this.name) throw new ConflictError(`${this.label}: Cinder volume ${v.id} is Ballast volume ${owner} already; use that volume, or remove it first`);
        if (!/^(available|in-use)$/.test(v.status)) throw new BusyError(`${this.label}: Cinder volume ${v.id} is ${v.status}; it can be adopted once it is available or in-use`);
        await this.api.setMetadata(v.id, this.ownedMetadata(vol, false), `marking Cinder volume ${v.id} as ${what}`);
        return { cinderId: v.id, createdByBallast: false, sizeGiB: v.size, ...(v.volume_type ? { cinderType: v.volume_type } : {}) };
      }
      // multiattach comes from the volume type (Cinder removed the create flag); checked once it is made.
      // A create that crashed after Cinder made the volume finds it by its marker instead of making a second one.
      const mine = (await this.api.listVolumes({ [META.backend]: this.name, [META.volume]: vol.name })).filter((v) => v.metadata?.[META.createdBy] === 'ballast');
      let v: CinderVolume | undefined = mine[0];
      if (v && !pc?.resumed) throw new ConflictError(`${this.label}: Cinder volume ${v.id} is marked as Ballast volume ${vol.name} already, but the store has no such volume (it was lost?); run ballast repair to adopt it back, or delete the Cinder volume`);
      // Cinder on SQLite can answer 500 for a moment; whether the volume was made then is read from its marker.
      for (let attempt = 0; !v; attempt++) {
        try {
          v = await this.api.createVolume({
            name: vol.name, description: `Ballast volume ${vol.name}`, ...(spec.size ? { size: spec.size } : {}),
          ...(spec.type ? { volume_type: spec.type } : {}), ...(spec.zone ? { availability_zone: spec.zone } : {}),
          ...(spec.snapshot ? { snapshot_id: spec.snapshot } : {}), ...(spec.source ? { source_volid: spec.source } : {}),
          metadata: this.ownedMetadata(vol, true),
          }, `creating ${what}`);
        } catch (e) {
          if (!(e instanceof OpenStackHttpError) || e.status < 500 || attempt >= 2) throw e;
          await sleep(300 * (attempt + 1));
          v = (await this.api.listVolumes({ [META.backend]: this.name, [META.volume]: vol.name })).find((x) => x.metadata?.[META.createdBy] === 'ballast');
        }
      }
      const made: CinderVolume = v;
      let ready: CinderVolume | undefined;
      try {
        ready = await this.waitFor(made.id, what, (x) => x?.status === 'available', this.createTimeoutMs);
      } catch (e) {
        // A volume that went to error is Ballast's own and holds nothing: it is deleted, not left behind.
        await this.api.deleteVolume(made.id, `deleting the failed Cinder volume ${made.id}`).catch(() => undefined);
        throw e;
      }
      if (spec.multiattach && !ready?.multiattach) {
        await this.api.deleteVolume(made.id, `deleting Cinder volume ${made.id}`).catch(() => undefined);
        throw new InvalidArgumentError(`${this.label}: Cinder made ${what} without multiattach; create it with a volume type whose extra spec multiattach is "<is> True" (-o type=...)`);
      }
      return { cinderId: made.id, createdByBallast: true, sizeGiB: ready?.size ?? spec.size, ...(ready?.volume_type ? { cinderType: ready.volume_type } : {}) };
    });
  }

  async deprovision(vol: VolumeRecord): Promise<void> {
    const mp = mountpointOf(vol);
    if (vol.details.cinderId === undefined && !this.spec(vol).existing) return; // never made it to Cinder
    await this.unstage(vol, mp);
    await this.detach(vol, this.node);
    for (const d of [mp, this.fuseDirOf(vol)]) if (!(await this.ctx.mounts.at(d))) await rmdir(d).catch(() => undefined);
    const id = this.idOf(vol);
    await this.guard(`removing volume ${vol.name}`, async () => {
      if (vol.details.createdByBallast !== true) {
        const v = await this.api.getVolume(id);
        if (!v) return;
        for (const k of Object.keys(v.metadata ?? {}).filter((k) => k.startsWith('ballast.'))) {
          await this.api.call('DELETE', `/volumes/${id}/metadata/${encodeURIComponent(k)}`, `unmarking Cinder volume ${id}`, undefined, [404]);
        }
        this.ctx.log.info({ volume: vol.name, cinderId: id }, 'adopted Cinder volume released (not deleted)');
        return;
      }
      await this.api.deleteVolume(id, `deleting Cinder volume ${id} of volume ${vol.name}`);
      await this.waitFor(id, `volume ${vol.name}`, (v) => v === undefined || v.status === 'deleted', this.createTimeoutMs);
    });
  }

  /** The volume's attachments as Cinder lists them, each with the node that made it (from the label) and since when. */
  private async attachments(id: string, known?: CinderVolume): Promise<{ atts: (CinderAttachment & { node?: string; madeAt?: number })[]; volume: CinderVolume }> {
    const volume = known ?? await this.api.getVolume(id);
    if (!volume) throw new NotFoundError(`${this.label}: Cinder volume ${id} is gone (deleted outside Ballast?); remove the Ballast volume`);
    const list = (await this.api.call<{ attachments: CinderAttachment[] }>('GET', `/attachments?volume_id=${id}`, `listing the attachments of Cinder volume ${id}`)).json.attachments;
    const labels = volume.metadata ?? {};
    const atts = list.filter((a) => a.status !== 'detached' && a.status !== 'deleted').map((a) => {
      const label = labels[META.attachmentPrefix + a.id];
      const [node, when] = (label ?? '').split(' ');
      return { ...a, ...(node ? { node } : {}), ...(when ? { madeAt: Date.parse(when) } : {}) };
    });
    return { atts, volume };
  }

  private async deleteAttachment(id: string, a: { id: string }, what: string): Promise<void> {
    await this.api.deleteAttachment(a.id, `deleting attachment ${a.id} of ${what}`);
    await this.api.call('DELETE', `/volumes/${id}/metadata/${encodeURIComponent(META.attachmentPrefix + a.id)}`, `unlabeling attachment ${a.id}`, undefined, [404]);
  }

  /**
   * Controller side: an attachment of the volume for `node` with its connector; this node's existing one
   * is reused (idempotent). Another node's attachment of a volume that is not multiattach is refused,
   * naming that node (Cinder would refuse too). Returns the connection the node stages with.
   */
  async attach(vol: VolumeRecord, node: string, mode: AccessMode = 'rw'): Promise<AttachInfo> {
    const id = this.idOf(vol);
    const what = this.what(vol);
    return this.guard(`attaching ${what} to node ${node}`, async () => {
      // Fast path: the volume's own record says who holds it (its labels and status), one GET. Only
      // when it shows an attachment is Cinder's list of them read, to tell live ones from stale labels.
      const volume = await this.api.getVolume(id);
      if (!volume) throw new NotFoundError(`${this.label}: Cinder volume ${id} of volume ${vol.name} is gone (deleted outside Ballast?); remove the Ballast volume`);
      const labelled = Object.keys(volume.metadata ?? {}).some((k) => k.startsWith(META.attachmentPrefix));
      if (labelled || volume.status !== 'available') {
        const r = await this.attachments(id, volume);
        const formattedNow = volume.metadata?.[META.formatted];
        const mine = r.atts.find((a) => a.node === node);
        if (mine) {
          const full = await this.api.getAttachment(mine.id);
          if (full) return this.attachInfo(vol, full, formattedNow);
        }
        // An attachment with no label that never completed is what a crash (or a create Cinder answered
        // 500 to) left between the create and the label. The caller holds the volume (the only node
        // attaching it: cluster mode attached it in etcd first), so on a volume that is not multiattach
        // it is this attach's own, and is adopted instead of blocking every later attach.
        const stray = r.atts.filter((a) => !a.node && a.status !== 'attached');
        if (!mine && !volume.multiattach && stray.length === 1 && r.atts.length === 1) {
          const full = await this.api.getAttachment(stray[0].id);
          if (full) {
            await this.labelAttachment(id, full, node);
            return this.attachInfo(vol, full, formattedNow);
          }
        }
        const others = r.atts.filter((a) => a.node !== node);
        if (others.length > 0 && !volume.multiattach) {
          const who = others.map((a) => `${a.node ? `node ${a.node}` : 'a host Ballast does not know'} (attachment ${a.id}, ${a.status})`).join(', ');
          throw new BusyError(`${what} is attached to ${who} in Cinder, and it is not multiattach. Stop its containers there first; a node that died is taken over in cluster mode once its lease expired`);
        }
      }
      const formatted = volume.metadata?.[META.formatted];
      // An attachment deleted a moment ago (the last Unmount) is let go by cinder-volume asynchronously:
      // until then Cinder refuses a new one ("status must be available ... is in-use"). With no other
      // attachment left, that is waited out (bounded); another one appearing is refused as above.
      let att: CinderAttachment | undefined;
      for (const deadline = Date.now() + 15_000; !att;) {
        try {
          att = await this.api.createAttachment(id, this.connector(node, mode), `attaching ${what} to node ${node}`);
        } catch (e) {
          // A 500 may or may not have made the attachment: one that appeared unlabeled is this one.
          if (e instanceof OpenStackHttpError && e.status >= 500 && !volume.multiattach) {
            const made = (await this.attachments(id)).atts.filter((a) => !a.node && a.status !== 'attached');
            if (made.length === 1) { att = await this.api.getAttachment(made[0].id); if (att) break; }
          }
          if (!(e instanceof OpenStackHttpError) || e.status !== 400 || !/status must be/.test(e.serviceMessage) || Date.now() > deadline) throw e;
          await sleep(200);
          const again = await this.attachments(id);
          if (again.atts.some((a) => a.node !== node) && !again.volume.multiattach) throw e;
        }
      }
      await this.labelAttachment(id, att, node);
      this.ctx.fault?.('cinder.attachment-created');
      return this.attachInfo(vol, att, formatted);
    });
  }

  /** Writes which node made the attachment (and, for rbd, the image) into the volume's metadata. */
  private async labelAttachment(id: string, att: CinderAttachment, node: string): Promise<void> {
    const conn = connectionOf(att.connection_info, `Cinder volume ${id}`);
    await this.api.setMetadata(id, { [META.attachmentPrefix + att.id]: `${node} ${new Date().toISOString()}`, ...(conn.rbd ? { [META.rbd]: `${conn.rbd.pool}/${conn.rbd.image}` } : {}) }, `labeling attachment ${att.id}`);
  }

  private attachInfo(vol: VolumeRecord, att: CinderAttachment, formatted: string | undefined): AttachInfo {
    const conn = connectionOf(att.connection_info, this.what(vol));
    this.conns.set(vol.name, conn);
    return { attachmentId: att.id, connection: encodeConnection(conn, formatted) };
  }

  /** os-brick's connector, as far as Cinder's drivers read it (rbd reads none of it; iscsi needs the initiator). */
  private connector(node: string, mode: AccessMode): Record<string, unknown> {
    return { host: node, platform: process.arch === 'x64' ? 'x86_64' : process.arch, os_type: 'linux', multipath: false, mode, initiator: `iqn.2026-12.io.ballast:${node.toLowerCase().replace(/[^a-z0-9.-]/g, '-')}` };
  }

  /** Deletes `node`'s attachments of the volume (and its labels); none is success. */
  async detach(vol: VolumeRecord, node: string): Promise<void> {
    if (vol.details.cinderId === undefined && !this.spec(vol).existing) return;
    const id = this.idOf(vol);
    const what = this.what(vol);
    await this.guard(`detaching ${what} from node ${node}`, async () => {
      // The labels say which attachments are this node's: one GET, then the deletes (a gone one is success).
      const volume = await this.api.getVolume(id);
      if (!volume) return;
      for (const [k, v] of Object.entries(volume.metadata ?? {})) {
        if (k.startsWith(META.attachmentPrefix) && v.split(' ')[0] === node) await this.deleteAttachment(id, { id: k.slice(META.attachmentPrefix.length) }, what);
      }
    });
    this.conns.delete(vol.name);
  }

  /** The connection of the volume on this node: as attach learnt it, else read back from this node's attachment in Cinder. */
  private async connectionHere(vol: VolumeRecord): Promise<Connection | undefined> {
    const known = this.conns.get(vol.name);
    if (known) return known;
    const id = this.idOf(vol);
    const { atts, volume } = await this.attachments(id);
    const mine = atts.find((a) => a.node === this.node);
    const full = mine ? await this.api.getAttachment(mine.id) : undefined;
    if (full?.connection_info) {
      const c = connectionOf(full.connection_info, this.what(vol));
      this.conns.set(vol.name, c);
      return c;
    }
    const rbd = volume.metadata?.[META.rbd]?.split('/');
    return rbd?.length === 2 ? { driver: 'rbd', rbd: { pool: rbd[0], image: rbd[1] } } : undefined;
  }

  private target(vol: VolumeRecord, c: Connection): RbdTarget {
    return { volume: vol.name, pool: c.rbd!.pool, image: c.rbd!.image, fuseDir: this.fuseDirOf(vol), ...(c.rbd!.monitors ? { monitors: c.rbd!.monitors } : {}) };
  }

  /**
   * Node side: connects the volume by its driver, mounts its filesystem at the staging path (formatted
   * first only when blkid finds it blank and Ballast never formatted it: `ballast.formatted` in its
   * metadata), then completes the attachment, which makes the volume `in-use` in Cinder.
   */
  async stage(vol: VolumeRecord, stagingPath: string, opts: StageOptions = {}): Promise<void> {
    const mp = stagingPathOf(stagingPath);
    const spec = this.spec(vol);
    const what = this.what(vol);
    const att = opts.attachment;
    if (!att?.connection) {
      // Already staged (a second reference): nothing to connect.
      const cur = await this.ctx.mounts.at(mp);
      if (cur && cur.fstype === spec.fstype) return;
      throw new InternalError(`${what} must be attached to this node (a Cinder attachment) before it is staged`);
    }
    const conn = decodeConnection(att.connection);
    const formatted = att.connection.formatted;
    const mayFormat = formatted === undefined;
    if (conn.driver === 'rbd') {
      await this.fuse.stage(this.target(vol, conn), mp, { fstype: spec.fstype, mountopts: spec.mountopts, readOnly: opts.readOnly, mayFormat, label: vol.name.slice(0, 16) });
    } else {
      const dev = await connectIscsi(this.ctx.exec, conn.iscsi!, what);
      try {
        await stageBlockFilesystem(this.ctx.exec, this.ctx.mounts, { source: dev, loop: false, fstype: spec.fstype, what: `Cinder volume ${String(vol.details.cinderId)}`, volume: vol.name, stagingPath: mp, mountopts: spec.mountopts, readOnly: opts.readOnly, mayFormat, likelyBlank: mayFormat, label: vol.name.slice(0, 16), localSource: false });
      } catch (e) {
        await disconnectIscsi(this.ctx.exec, conn.iscsi!).catch(() => undefined);
        throw e;
      }
    }
    const id = this.idOf(vol);
    await this.guard(`completing the attachment of ${what}`, async () => {
      this.ctx.fault?.('cinder.staged');
      // Both idempotent, so they go out together.
      await Promise.all([
        mayFormat && !opts.readOnly ? this.api.setMetadata(id, { [META.formatted]: spec.fstype }, `marking ${what} formatted`) : undefined,
        att.attachmentId ? this.api.completeAttachment(att.attachmentId, `completing attachment ${att.attachmentId} of ${what}`) : undefined,
      ]);
    });
  }

  /** Unmounts and disconnects (bounded for rbd: RbdFuse.unstage); the attachment goes with detach. Not staged is success. */
  async unstage(vol: VolumeRecord, stagingPath: string): Promise<void> {
    const mp = stagingPathOf(stagingPath);
    const fuseMounted = !!(await this.ctx.mounts.at(this.fuseDirOf(vol)));
    const known = this.conns.get(vol.name);
    if (fuseMounted || known?.driver === 'rbd' || (!known && !(await this.ctx.mounts.at(mp)))) {
      // rbd (or nothing staged): unstage needs only the paths, no Cinder call.
      await this.fuse.unstage({ volume: vol.name, pool: known?.rbd?.pool ?? '-', image: known?.rbd?.image ?? '-', fuseDir: this.fuseDirOf(vol) }, mp);
      return;
    }
    const conn = known ?? await this.guard(`reading the connection of ${this.what(vol)}`, () => this.connectionHere(vol));
    if (await this.ctx.mounts.at(mp)) await this.ctx.exec(['umount', '-c', '--', mp], { timeoutMs: 60_000 });
    if (conn?.iscsi) await disconnectIscsi(this.ctx.exec, conn.iscsi);
  }

  async claim(vol: VolumeRecord, stagingPath: string): Promise<Readonly<Record<string, string>> | undefined> {
    const c = await this.guard(`reading the connection of ${this.what(vol)}`, () => this.connectionHere(vol));
    if (!c?.rbd) return undefined;
    return this.fuse.claim(this.target(vol, c), stagingPathOf(stagingPath));
  }

  /**
   * Takeover from a node whose lease expired: its rbd client is blocklisted at the OSDs first (Cinder's
   * RBD driver does nothing when an attachment is deleted), then its attachments are deleted, so this
   * node can attach (Cinder allows one attachment of a volume that is not multiattach).
   */
  async fence(vol: VolumeRecord, holder: { readonly node: string; readonly claim?: Readonly<Record<string, string>> }, keep: readonly { readonly node: string; readonly claim?: Readonly<Record<string, string>> }[]): Promise<string> {
    const id = this.idOf(vol);
    const what = this.what(vol);
    const fail = (step: string, e: unknown) => new UnavailableError(`could not fence node ${holder.node} off ${what}: ${step}: ${(e as Error).message}; run the operation again once Ceph and Cinder answer`, { cause: e });
    let atts: Awaited<ReturnType<CinderBackend['attachments']>>;
    try { atts = await this.attachments(id); } catch (e) { throw fail('its attachments could not be read from Cinder', e); }
    const theirs = atts.atts.filter((a) => a.node === holder.node || (!a.node && !keep.some((k) => k.node === a.node)));
    let conn: Connection | undefined;
    for (const a of theirs) {
      const full = await this.api.getAttachment(a.id).catch(() => undefined);
      if (full?.connection_info) { conn = connectionOf(full.connection_info, what); break; }
    }
    const rbd = atts.volume.metadata?.[META.rbd]?.split('/');
    conn ??= rbd?.length === 2 ? { driver: 'rbd', rbd: { pool: rbd[0], image: rbd[1] } } : undefined;
    let cut = 'it had no rbd client of the volume';
    if (conn?.rbd) {
      const targets = await this.fuse.blocklist(this.target(vol, conn), holder.claim, keep.map((k) => k.claim), fail);
      if (targets.length) cut = `blocklisted ${targets.join(', ')} for ${this.fuse.fenceExpirySec} s`;
    } else if (theirs.length > 0) {
      throw new FailedPreconditionError(`${what} is attached to node ${holder.node} with driver ${conn?.driver ?? 'unknown'}, which Ballast cannot cut off at the storage; it is not taken over automatically. If that node is down for good, run ballast node fence ${holder.node}`);
    }
    for (const a of theirs) {
      try { await this.deleteAttachment(id, a, what); } catch (e) { throw fail(`its attachment ${a.id} could not be deleted`, e); }
    }
    return `${what}: node ${holder.node} is cut off at the OSDs (${cut}); its Cinder attachment${theirs.length === 1 ? '' : 's'} ${theirs.map((a) => a.id).join(', ') || '(none)'} deleted`;
  }

  async unstageFenced(vol: VolumeRecord, stagingPath: string): Promise<void> {
    const c = this.conns.get(vol.name);
    await this.fuse.unstageFenced({ volume: vol.name, pool: c?.rbd?.pool ?? '-', image: c?.rbd?.image ?? '-', fuseDir: this.fuseDirOf(vol) }, stagingPathOf(stagingPath));
    this.conns.delete(vol.name);
  }

  probe(_vol: VolumeRecord, stagingPath: string, snap: HostSnapshot): 'mounted' | 'unmounted' {
    return probeMountpoint(snap, stagingPath);
  }

  async checkHealth(vol: VolumeRecord, _stagingPath: string): Promise<{ healthy: boolean; reason?: string }> {
    if (!(await this.ctx.mounts.at(this.fuseDirOf(vol)))) return { healthy: true };
    return this.fuse.health({ volume: vol.name, pool: '-', image: '-', fuseDir: this.fuseDirOf(vol) });
  }

  /**
   * What Cinder holds that the store does not account for: volumes marked as this backend's whose
   * Ballast volume the store lacks (reported, with what `ballast repair` adopts back), and this node's
   * attachments that nothing staged here uses any more (a crash between attach and stage, or between
   * unstage and detach): deleted on every pass once older than ATTACH_GRACE_MS; an attachment of a
   * volume staged here that a crash left incomplete is completed.
   */
  async findOrphans(known: ReadonlySet<string>, snap: HostSnapshot): Promise<Orphan[]> {
    const out: Orphan[] = [];
    const vols = await this.api.listVolumes({ [META.backend]: this.name });
    for (const v of vols) {
      const name = v.metadata?.[META.volume];
      if (!name) continue;
      if (!known.has(name)) {
        const adopt = this.adoptable(v, name);
        out.push({ backend: this.name, kind: 'volume', path: `cinder:${v.id}`, detail: `Cinder volume ${v.id} (${v.size} GiB, ${v.status}) is marked as Ballast volume ${name}, which the store lacks${adopt ? '; ballast repair adopts it back' : ''}`, cleanable: false, ...(adopt ? { adopt } : {}) });
        continue;
      }
      const labels = Object.entries(v.metadata ?? {}).filter(([k, val]) => k.startsWith(META.attachmentPrefix) && val.split(' ')[0] === this.node);
      if (labels.length === 0) continue;
      const p = this.place(name);
      const staged = snap.mounts.some((m) => m.mountpoint === p.mountpoint || m.mountpoint === p.details.fuseDir);
      for (const [k, val] of labels) {
        const attId = k.slice(META.attachmentPrefix.length);
        const madeAt = Date.parse(val.split(' ')[1] ?? '');
        if (!staged && Date.now() - madeAt > ATTACH_GRACE_MS) {
          out.push({ backend: this.name, kind: 'attachment', path: `cinder:${v.id}/${attId}`, detail: `attachment ${attId} of volume ${name} for node ${this.node}, which has nothing of it staged`, cleanable: true, autoClean: true });
        } else if (staged) {
          const a = await this.api.getAttachment(attId).catch(() => undefined);
          if (a && a.status !== 'attached') out.push({ backend: this.name, kind: 'attachment', path: `cinder:${v.id}/${attId}`, detail: `attachment ${attId} of volume ${name}, staged here, was left ${a.status} by a crash: complete it`, cleanable: true, autoClean: true });
        }
      }
    }
    return out;
  }

  /** A record for a Cinder volume the store lost, from its metadata; undefined when the metadata cannot be trusted. */
  private adoptable(v: CinderVolume, name: string): Orphan['adopt'] {
    let spec: Record<string, unknown>;
    try { spec = JSON.parse(v.metadata?.[META.spec] ?? '') as Record<string, unknown>; } catch { return undefined; }
    if (!/^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,254}$/.test(name) || !FSTYPES.includes(spec.fstype as FsType)) return undefined;
    const p = this.place(name);
    return { name, spec, mountpoint: p.mountpoint, details: { ...p.details, cinderId: v.id, createdByBallast: v.metadata?.[META.createdBy] === 'ballast', sizeGiB: v.size }, createdAt: v.created_at ? new Date(`${v.created_at.replace(/Z?$/, 'Z')}`).toISOString() : new Date().toISOString() };
  }

  async cleanOrphan(o: Orphan): Promise<void> {
    const m = /^cinder:([0-9a-fA-F-]{36})\/([0-9a-fA-F-]{36})$/.exec(o.path);
    if (o.kind !== 'attachment' || !m) throw new InvalidArgumentError(`${o.path} is not something Ballast cleans`);
    const [, id, attId] = m;
    if (/left .* by a crash/.test(o.detail)) {
      await this.guard(`completing attachment ${attId}`, () => this.api.completeAttachment(attId, `completing attachment ${attId}`));
      return;
    }
    await this.guard(`deleting attachment ${attId}`, () => this.deleteAttachment(id, { id: attId }, `Cinder volume ${id}`));
  }

  status(vol: VolumeRecord): Record<string, unknown> {
    const s = this.spec(vol);
    const c = this.conns.get(vol.name);
    return {
      cinderId: vol.details.cinderId ?? s.existing, sizeGiB: vol.details.sizeGiB ?? s.size, ...(vol.details.cinderType ? { type: vol.details.cinderType } : s.type ? { type: s.type } : {}),
      fstype: s.fstype, mountopts: s.mountopts.join(','), multiattach: s.multiattach, createdByBallast: vol.details.createdByBallast === true,
      ...(c ? { driver: c.driver, ...(c.rbd ? { image: `${c.rbd.pool}/${c.rbd.image}` } : {}) } : {}),
    };
  }
}

export const cinderFactory: BackendFactory = {
  type: 'cinder',
  configKeys: [...AUTH_CONFIG_KEYS, 'volumeType', 'availabilityZone', 'createTimeoutSec', 'defaultFstype', 'cephConf', 'cephUser', 'cephKeyring', 'cephTimeoutSec', 'opTimeoutSec', 'fenceExpirySec'],
  create: (instance, config, ctx) => new CinderBackend(instance, config, ctx),
};
