import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { Etcd3, isRecoverableError, type Lease } from 'etcd3';
import type { IKeyValue, IOptions, IRequestOp, ICompare, ITxnResponse, IWatchResponse, IWatchRequest } from 'etcd3';
import { lostAttachRace, noAttachments, type MetadataStore } from './types.js';
import { BallastError, ConflictError, InternalError, InvalidArgumentError, UnavailableError } from '../core/errors.js';
import type { Attachment, AttachmentSet, MountRef, NewSnapshotRecord, NewVolumeRecord, OpRecord, SnapshotRecord, SnapshotState, VolumeRecord, VolumeState, VolumeSummary } from '../core/types.js';

/**
 * What the config's `store: { type: 'etcd', ... }` gives the store. Files (TLS, password) are named
 * here and read by `EtcdStore.open`, so that the config object never holds a secret.
 */
export interface EtcdStoreOptions {
  /** Client URLs, `http://host:port` or `https://host:port`; at least one. */
  readonly endpoints: readonly string[];
  /** Every key of this store starts with it (default `/ballast/`). */
  readonly prefix?: string;
  /** Bound on every write, and on opening the store (default 5 s). */
  readonly timeoutSec?: number;
  /**
   * How long reads keep answering from the local copy after the store last proved it in step with
   * etcd (default 60 s). Beyond it, reads throw an UnavailableError instead of answering old data.
   */
  readonly staleReadSec?: number;
  readonly tls?: { readonly ca: string; readonly cert?: string; readonly key?: string };
  readonly auth?: { readonly user: string; readonly passwordFile: string };
  /** How often an idle store checks that its copy is in step (default 2 s). */
  readonly probeMs?: number;
  /** Called with a sentence when the watch breaks, resumes or re-syncs (never with a secret). */
  readonly onEvent?: (event: 'watch-broken' | 'watch-resumed' | 'resync', detail: string) => void;
}

interface CachedVolume { readonly rec: VolumeRecord; readonly createRev: number }
/** `rec` undefined: the stored value does not decode (the key is kept, so that its revision still orders the changes of it). */
interface CachedSnapshot { readonly rec?: SnapshotRecord; readonly createRev: number; readonly modRev: number }
interface CachedMount { readonly count: number; readonly since: string; readonly w: string; readonly modRev: number }
interface CachedOp { readonly key: string; readonly rec: OpRecord }
/** A change of this store's own committed transaction, applied to the copy before the watch brings it. */
type Change =
  | { kind: 'put'; key: string; value: string; createRev: number; modRev: number }
  | { kind: 'del'; key: string }
  | { kind: 'delPrefix'; prefix: string };

/** Tries of a ledger transaction that loses its compare-and-swap to a concurrent writer of the same entry (with a jittered pause between). */
const MOUNT_RETRIES = 32;
const lostRacePause = (i: number) => sleep(Math.random() * Math.min(2 ** i, 40));

/**
 * The cluster store: volume records, the mount ledger and the journal in etcd (v3 API, the `etcd3`
 * client), for several hosts sharing one set of volumes.
 *
 * Key layout, under `prefix` (default `/ballast/`); every path element is URI-encoded:
 * - `volumes/<name>`: the record as JSON; its `revision` is the key's etcd mod_revision.
 * - `mounts/<volume>/<node>/<mountId>`: `{count, since, w}`, one ledger entry.
 * - `ops/<node>/<token>`: `{volume, op, mountId, startedAt}`, one journal entry; its id is the key's
 *   create_revision (the revision of the transaction that wrote it: unique, and increasing per node).
 * - `attach/<volume>`: `{epoch, holders, w}`, the nodes that hold the volume; its revision is the
 *   key's mod_revision (etcd revisions never repeat, so a set deleted with its volume and made again
 *   never reuses a revision a stale reader holds).
 * - `snapshots/<name>`: a snapshot record as JSON; its `revision` is the key's mod_revision. Its own
 *   namespace: a volume's delete leaves its snapshots (the service refuses such removals). A value
 *   that does not decode is neither a record nor an exception: getSnapshot answers undefined and
 *   listSnapshots leaves it out (as the SQLite store does).
 * - `_rev`: written by every transaction of this store, so that its mod_revision is the newest
 *   revision of anything under the prefix (deletes included); the freshness probe reads it.
 * `w` (in records and entries) is a token of the write that made the value: when a transaction's
 * answer is lost (a member died) and the retry finds the value with its own token, the first try
 * committed, and the write is not done twice (no mount counted twice).
 *
 * Reads come from a local copy: one range read of the prefix at open, then a watch from the next
 * revision. Writes are etcd transactions guarded on mod_revision (compare-and-swap); the store applies
 * a committed transaction to its copy at once (read-your-writes) and then, while the watch is up,
 * waits within the write's bound for the watch to pass its revision (so the copy is a consistent
 * snapshot again, and `total` of a ledger change counts every write before it). If the
 * watch breaks it is resumed from the last revision seen; if etcd compacted that away, the prefix is
 * read again (re-sync) and the watch starts after it.
 *
 * Staleness: the copy is "in step as of t" when a linearizable request sent at t (a write, or the
 * probe: a quorum read of `_rev`, sent every `probeMs` while nothing else proved it) returned a
 * revision the watch has since passed. Reads answer while that is at most `staleReadSec` old, so with
 * etcd unreachable mounted volumes keep being listed and inspected for a while (the last state this
 * node saw, which holds all of its own writes); beyond it every read throws an UnavailableError
 * naming the endpoints. Writes never wait longer than `timeoutSec`: with etcd unreachable they fail
 * with an UnavailableError naming the endpoints, and are retried inside the bound while a member
 * restarts or a leader is elected (one try gets a third of the bound, at most 2 s, so a request stuck
 * on a member that lost its leader is sent again elsewhere).
 */
export class EtcdStore implements MetadataStore {
  private readonly client: Etcd3;
  private readonly prefix: string;
  private readonly endpointsText: string;
  private readonly timeoutMs: number;
  private readonly staleMs: number;
  private readonly probeMs: number;
  /** Bound on one try of a request (a part of timeoutMs). */
  private readonly tryMs: number;
  private readonly onEvent?: EtcdStoreOptions['onEvent'];
  private readonly token = randomBytes(6).toString('hex');
  private writeSeq = 0;

  // The copy.
  private readonly volumes = new Map<string, CachedVolume>();
  private readonly ledger = new Map<string, Map<string, Map<string, CachedMount>>>();
  private readonly ops = new Map<string, Map<number, CachedOp>>();
  private readonly attachments = new Map<string, AttachmentSet>();
  private readonly snapshots = new Map<string, CachedSnapshot>();
  private summaries?: VolumeSummary[];
  private records?: VolumeRecord[];
  private snapshotRecords?: SnapshotRecord[];
  /** Revision the watch (or the last range read) has passed: everything up to it is in the copy. */
  private rev = 0;
  /** Own committed changes the watch has not brought yet, by revision; a watch event older than one of them for its key is skipped. */
  private readonly pending: { rev: number; changes: Change[] }[] = [];
  private readonly pendingKeys = new Map<string, number>();
  private readonly revWaiters: { rev: number; resolve: () => void }[] = [];
  /** Time (ms) as of which the copy is known to be in step; lastContact: last answer from etcd. */
  private freshAt = 0;
  private lastContact = 0;
  private freshCandidates: { rev: number; sentAt: number }[] = [];

  // The watch.
  private stream?: Awaited<ReturnType<Etcd3['watchClient']['watch']>>;
  private watchUp = false;
  private closed = false;
  private reconnectTimer?: NodeJS.Timeout;
  private probeTimer?: NodeJS.Timeout;
  private backoffMs = 100;

  private constructor(o: EtcdStoreOptions, credentials: { tls?: { ca: Buffer; cert?: Buffer; key?: Buffer }; password?: string }) {
    if (!o.endpoints.length) throw new InvalidArgumentError('the etcd store needs at least one endpoint');
    this.prefix = o.prefix ?? '/ballast/';
    this.endpointsText = o.endpoints.join(', ');
    this.timeoutMs = Math.round((o.timeoutSec ?? 5) * 1000);
    this.staleMs = Math.round((o.staleReadSec ?? 60) * 1000);
    this.probeMs = o.probeMs ?? Math.max(100, Math.min(2000, this.staleMs / 4));
    this.tryMs = Math.max(500, Math.min(2000, this.timeoutMs / 3));
    this.onEvent = o.onEvent;
    this.client = new Etcd3({
      hosts: [...o.endpoints],
      dialTimeout: this.timeoutMs,
      ...(credentials.tls ? { credentials: { rootCertificate: credentials.tls.ca, privateKey: credentials.tls.key, certChain: credentials.tls.cert } } : {}),
      ...(o.auth && credentials.password !== undefined ? { auth: { username: o.auth.user, password: credentials.password } } : {}),
      // Reconnects are retried at most every 2 s: gRPC's default backoff grows to 120 s, so a node whose
      // link was down for a minute would stay cut off from etcd long after the link came back.
      grpcOptions: { 'grpc.keepalive_time_ms': 6000, 'grpc.keepalive_timeout_ms': 3000, 'grpc.keepalive_permit_without_calls': 1, 'grpc.initial_reconnect_backoff_ms': 200, 'grpc.max_reconnect_backoff_ms': 2000 },
      faultHandling: { host: () => hostSkipPolicy(Math.min(1000, this.timeoutMs / 4)) },
    });
  }

  /**
   * Connects, reads the prefix once and starts the watch. Fails within `timeoutSec` with an
   * UnavailableError naming the endpoints when etcd does not answer.
   */
  static async open(o: EtcdStoreOptions): Promise<EtcdStore> {
    const read = (what: string, file: string): Buffer => {
      try { return readFileSync(file); } catch (e) { throw new InvalidArgumentError(`cannot read the etcd ${what} file ${file}: ${(e as Error).message}`); }
    };
    const tls = o.tls ? { ca: read('TLS CA', o.tls.ca), cert: o.tls.cert ? read('TLS certificate', o.tls.cert) : undefined, key: o.tls.key ? read('TLS key', o.tls.key) : undefined } : undefined;
    const password = o.auth ? read('password', o.auth.passwordFile).toString('utf8').replace(/\r?\n$/, '') : undefined;
    const s = new EtcdStore(o, { tls, password });
    try {
      await s.withDeadline('reading the volume list', Date.now() + s.timeoutMs, (deadline) => s.resync(deadline));
    } catch (e) {
      s.client.close();
      throw e;
    }
    s.connectWatch();
    s.probeTimer = setInterval(() => { void s.probe(); }, s.probeMs);
    s.probeTimer.unref();
    return s;
  }

  // ---------------------------------------------------------------- the node registry's access

  /**
   * For the node registry (src/cluster/membership.ts), on this store's client and under its prefix:
   * a lease of `ttlSec` kept alive by the client, and a bounded, linearizable read of the `nodes/` keys.
   */
  nodeLease(ttlSec: number): Lease { return this.client.namespace(this.prefix).lease(ttlSec, { autoKeepAlive: false }); }
  /**
   * Seconds etcd itself still counts on the lease that keeps `node` registered, or undefined when the
   * node is not registered (its lease expired or was revoked). A live node renews every few seconds, so
   * a count well below the TTL means it missed renewals: it is suspect, and soon down or back.
   */
  async nodeLeaseLeft(node: string): Promise<number | undefined> {
    return this.withDeadline(`reading the lease of node ${node}`, Date.now() + this.timeoutMs, async () => {
      const ns = this.client.namespace(this.prefix);
      const kv = (await ns.get(this.nodeKey(node)).exec()).kvs[0];
      if (!kv || kv.lease === '0') return undefined;
      const ttl = Number((await ns.leaseClient.leaseTimeToLive({ ID: kv.lease })).TTL);
      return ttl > 0 ? ttl : undefined;
    });
  }
  /** `nodes/<name>`: bound to the node's lease (present while it is up). */
  nodeKey(node: string): string { return `nodes/${enc(node)}`; }
  /** `known/<name>`: written at every start and never bound to a lease, so a node that is down is still listed. */
  async markKnown(node: string, value: string): Promise<void> {
    await this.withDeadline('registering this node', Date.now() + this.timeoutMs, () => this.client.namespace(this.prefix).put(`known/${enc(node)}`).value(value).exec());
  }
  async readNodes(): Promise<{ alive: Record<string, string>; known: Record<string, string> }> {
    return this.withDeadline('reading the node registry', Date.now() + this.timeoutMs, async () => {
      const ns = this.client.namespace(this.prefix);
      const [alive, known] = await Promise.all([ns.getAll().prefix('nodes/').strings(), ns.getAll().prefix('known/').strings()]);
      return { alive, known };
    });
  }

  // ---------------------------------------------------------------- reads (from the copy)

  async getVolume(name: string): Promise<VolumeRecord | undefined> {
    this.assertFresh(`read volume ${name}`);
    return this.volumes.get(name)?.rec;
  }
  async listVolumes(backend?: string): Promise<VolumeRecord[]> {
    this.assertFresh('list the volumes');
    if (!this.records) this.records = Object.freeze([...this.volumes.values()].map((v) => v.rec).sort(byName)) as VolumeRecord[];
    return backend === undefined ? this.records.slice() : this.records.filter((r) => r.backend === backend);
  }
  /**
   * The same frozen array while no record changed what List shows (the plugin frontend reuses its
   * encoded List for it); a change splices a copy.
   */
  async listSummaries(): Promise<VolumeSummary[]> {
    this.assertFresh('list the volumes');
    if (!this.summaries) this.summaries = Object.freeze([...this.volumes.values()].map((v) => summaryOf(v.rec)).sort(byName)) as VolumeSummary[];
    return this.summaries;
  }
  async mounts(volume: string): Promise<MountRef[]> {
    this.assertFresh(`read the mounts of volume ${volume}`);
    const out: MountRef[] = [];
    for (const [node, ids] of this.ledger.get(volume) ?? []) for (const [id, m] of ids) out.push({ volume, node, id, count: m.count, since: m.since });
    return out.sort((a, b) => cmp(a.since, b.since) || cmp(a.node, b.node) || cmp(a.id, b.id));
  }
  async nodeMounts(node: string): Promise<MountRef[]> {
    this.assertFresh(`read the mounts of node ${node}`);
    const out: MountRef[] = [];
    for (const volume of [...this.ledger.keys()].sort()) {
      const ids = this.ledger.get(volume)!.get(node);
      const refs: MountRef[] = [];
      for (const [id, m] of ids ?? []) refs.push({ volume, node, id, count: m.count, since: m.since });
      out.push(...refs.sort((a, b) => cmp(a.since, b.since) || cmp(a.id, b.id)));
    }
    return out;
  }
  async mountCount(volume: string, node: string): Promise<number> {
    this.assertFresh(`read the mounts of volume ${volume}`);
    return this.nodeTotal(volume, node);
  }
  async getAttachments(volume: string): Promise<AttachmentSet> {
    this.assertFresh(`read the attachments of volume ${volume}`);
    return this.attachments.get(volume) ?? noAttachments(volume);
  }
  async pendingOps(node: string): Promise<OpRecord[]> {
    this.assertFresh(`read the journal of node ${node}`);
    return [...(this.ops.get(node)?.values() ?? [])].map((o) => o.rec).sort((a, b) => a.id - b.id);
  }
  async getSnapshot(name: string): Promise<SnapshotRecord | undefined> {
    this.assertFresh(`read snapshot ${name}`);
    return this.snapshots.get(name)?.rec;
  }
  async listSnapshots(volume?: string): Promise<SnapshotRecord[]> {
    this.assertFresh(volume === undefined ? 'list the snapshots' : `list the snapshots of volume ${volume}`);
    if (!this.snapshotRecords) {
      const all: SnapshotRecord[] = [];
      for (const c of this.snapshots.values()) if (c.rec) all.push(c.rec);
      this.snapshotRecords = Object.freeze(all.sort(byName)) as SnapshotRecord[];
    }
    return volume === undefined ? this.snapshotRecords.slice() : this.snapshotRecords.filter((r) => r.volume === volume);
  }

  // ---------------------------------------------------------------- writes (transactions)

  async insertVolume(rec: NewVolumeRecord): Promise<VolumeRecord | undefined> {
    const key = this.volumeKey(rec.name);
    const w = this.nextToken();
    const value = encodeVolume(rec, w);
    return this.write(`creating volume ${rec.name}`, async (deadline) => {
      const r = await this.txn(deadline, [{ key: Buffer.from(key), target: 'Create', result: 'Equal', create_revision: 0 }],
        [put(key, value)], [range(key)]);
      if (r.succeeded) {
        const rev = Number(r.header.revision);
        this.commit(rev, [{ kind: 'put', key, value, createRev: rev, modRev: rev }]);
        return { done: rev, value: () => this.volumes.get(rec.name)?.rec ?? decodeVolume(rec.name, value, rev) };
      }
      const kv = r.responses[0]?.response_range?.kvs[0];
      if (kv && tokenOf(kv.value) === w) { // our own earlier try committed and its answer was lost
        const rev = Number(kv.mod_revision);
        return { done: rev, value: () => decodeVolume(rec.name, kv.value.toString(), rev) };
      }
      return { done: kv ? Number(kv.mod_revision) : 0, value: () => undefined };
    });
  }

  async updateVolume(rec: VolumeRecord): Promise<VolumeRecord> {
    const key = this.volumeKey(rec.name);
    const w = this.nextToken();
    const { revision, ...plain } = rec;
    const value = encodeVolume(plain, w);
    return this.write(`updating volume ${rec.name}`, async (deadline) => {
      const r = await this.txn(deadline, [{ key: Buffer.from(key), target: 'Mod', result: 'Equal', mod_revision: revision }],
        [put(key, value)], [range(key)]);
      if (r.succeeded) {
        const rev = Number(r.header.revision);
        this.commit(rev, [{ kind: 'put', key, value, createRev: this.volumes.get(rec.name)?.createRev ?? revision, modRev: rev }]);
        return { done: rev, value: () => this.volumes.get(rec.name)?.rec ?? decodeVolume(rec.name, value, rev) };
      }
      const kv = r.responses[0]?.response_range?.kvs[0];
      if (kv && tokenOf(kv.value) === w) return { done: Number(kv.mod_revision), value: () => decodeVolume(rec.name, kv.value.toString(), Number(kv.mod_revision)) };
      await this.catchUp(failRev(r), deadline);
      throw new ConflictError(kv
        ? `volume ${rec.name} was changed by another operation since it was read (revision ${revision}, now ${kv.mod_revision}); read it again and retry`
        : `volume ${rec.name} was removed by another operation since it was read (revision ${revision})`, { retryable: true });
    });
  }

  async deleteVolume(name: string, revision: number): Promise<void> {
    const key = this.volumeKey(name);
    const mountsPrefix = `${this.prefix}mounts/${enc(name)}/`;
    const akey = this.attachKey(name);
    await this.write(`removing volume ${name}`, async (deadline) => {
      const r = await this.txn(deadline, [{ key: Buffer.from(key), target: 'Mod', result: 'Equal', mod_revision: revision }],
        [{ request_delete_range: { key: Buffer.from(key) } }, { request_delete_range: { key: Buffer.from(mountsPrefix), range_end: prefixEnd(mountsPrefix) } },
          { request_delete_range: { key: Buffer.from(akey) } }],
        [range(key)]);
      if (r.succeeded) {
        const rev = Number(r.header.revision);
        this.commit(rev, [{ kind: 'del', key }, { kind: 'delPrefix', prefix: mountsPrefix }, { kind: 'del', key: akey }]);
        return { done: rev, value: () => undefined };
      }
      const kv = r.responses[0]?.response_range?.kvs[0];
      if (!kv) return { done: failRev(r), value: () => undefined }; // absent is fine (a lost answer of our own try, or removed by another)
      await this.catchUp(Number(kv.mod_revision), deadline);
      throw new ConflictError(`volume ${name} was changed by another operation since it was read (revision ${revision}, now ${kv.mod_revision}); it was not removed; read it again and retry`, { retryable: true });
    });
  }

  async insertSnapshot(rec: NewSnapshotRecord): Promise<SnapshotRecord | undefined> {
    const key = this.snapshotKey(rec.name);
    const w = this.nextToken();
    const value = encodeSnapshot(rec, w);
    return this.write(`recording snapshot ${rec.name}`, async (deadline) => {
      const r = await this.txn(deadline, [{ key: Buffer.from(key), target: 'Create', result: 'Equal', create_revision: 0 }],
        [put(key, value)], [range(key)]);
      if (r.succeeded) {
        const rev = Number(r.header.revision);
        this.commit(rev, [{ kind: 'put', key, value, createRev: rev, modRev: rev }]);
        return { done: rev, value: () => this.snapshots.get(rec.name)?.rec ?? ownSnapshot(rec, value, rev) };
      }
      const kv = r.responses[0]?.response_range?.kvs[0];
      if (kv && tokenOf(kv.value) === w) { // our own earlier try committed and its answer was lost
        const rev = Number(kv.mod_revision);
        return { done: rev, value: () => ownSnapshot(rec, kv.value.toString(), rev) };
      }
      return { done: kv ? Number(kv.mod_revision) : 0, value: () => undefined };
    });
  }

  async updateSnapshot(rec: SnapshotRecord): Promise<SnapshotRecord> {
    const key = this.snapshotKey(rec.name);
    const w = this.nextToken();
    const { revision, ...plain } = rec;
    const value = encodeSnapshot(plain, w);
    return this.write(`updating snapshot ${rec.name}`, async (deadline) => {
      const r = await this.txn(deadline, [{ key: Buffer.from(key), target: 'Mod', result: 'Equal', mod_revision: revision }],
        [put(key, value)], [range(key)]);
      if (r.succeeded) {
        const rev = Number(r.header.revision);
        this.commit(rev, [{ kind: 'put', key, value, createRev: this.snapshots.get(rec.name)?.createRev ?? revision, modRev: rev }]);
        return { done: rev, value: () => this.snapshots.get(rec.name)?.rec ?? ownSnapshot(plain, value, rev) };
      }
      const kv = r.responses[0]?.response_range?.kvs[0];
      if (kv && tokenOf(kv.value) === w) return { done: Number(kv.mod_revision), value: () => ownSnapshot(plain, kv.value.toString(), Number(kv.mod_revision)) };
      await this.catchUp(failRev(r), deadline);
      throw new ConflictError(kv
        ? `snapshot ${rec.name} was changed by another operation since it was read (revision ${revision}, now ${kv.mod_revision}); read it again and retry`
        : `snapshot ${rec.name} was removed by another operation since it was read (revision ${revision})`, { retryable: true });
    });
  }

  /** Only the snapshot's key: snapshots have no ledger or attachments. */
  async deleteSnapshot(name: string, revision: number): Promise<void> {
    const key = this.snapshotKey(name);
    await this.write(`removing snapshot ${name}`, async (deadline) => {
      const r = await this.txn(deadline, [{ key: Buffer.from(key), target: 'Mod', result: 'Equal', mod_revision: revision }],
        [{ request_delete_range: { key: Buffer.from(key) } }], [range(key)]);
      if (r.succeeded) {
        const rev = Number(r.header.revision);
        this.commit(rev, [{ kind: 'del', key }]);
        return { done: rev, value: () => undefined };
      }
      const kv = r.responses[0]?.response_range?.kvs[0];
      if (!kv) return { done: failRev(r), value: () => undefined }; // absent is fine (a lost answer of our own try, or removed by another)
      await this.catchUp(Number(kv.mod_revision), deadline);
      throw new ConflictError(`snapshot ${name} was changed by another operation since it was read (revision ${revision}, now ${kv.mod_revision}); it was not removed; read it again and retry`, { retryable: true });
    });
  }

  async addMountWithUndo(volume: string, node: string, id: string): Promise<{ total: number; undo: number }> {
    const mkey = this.mountKey(volume, node, id);
    const vkey = this.volumeKey(volume);
    const okey = `${this.prefix}ops/${enc(node)}/${this.nextToken()}`;
    const w = okey.slice(okey.lastIndexOf('/') + 1);
    const startedAt = new Date().toISOString();
    const opValue = JSON.stringify({ volume, op: 'unmount', mountId: id, startedAt });
    return this.write(`mounting volume ${volume}`, async (deadline) => {
      let cur = this.ledger.get(volume)?.get(node)?.get(id);
      let volCreate = this.volumes.get(volume)?.createRev ?? 0;
      for (let i = 0; i < MOUNT_RETRIES; i++) {
        const value = JSON.stringify({ count: (cur?.count ?? 0) + 1, since: cur?.since ?? startedAt, w });
        const compare: ICompare[] = [
          { key: Buffer.from(mkey), target: 'Mod', result: 'Equal', mod_revision: cur?.modRev ?? 0 },
          { key: Buffer.from(okey), target: 'Create', result: 'Equal', create_revision: 0 },
        ];
        if (volCreate) compare.push({ key: Buffer.from(vkey), target: 'Create', result: 'Equal', create_revision: volCreate });
        const r = await this.txn(deadline, compare, [put(mkey, value), put(okey, opValue)], [range(mkey), range(okey), range(vkey)]);
        if (r.succeeded) {
          const rev = Number(r.header.revision);
          this.commit(rev, [
            { kind: 'put', key: mkey, value, createRev: cur ? 0 : rev, modRev: rev },
            { kind: 'put', key: okey, value: opValue, createRev: rev, modRev: rev },
          ]);
          return { done: rev, value: () => ({ total: this.nodeTotal(volume, node), undo: rev }) };
        }
        const [mr, or, vr] = r.responses.map((x) => x.response_range?.kvs[0]);
        if (or) { // our lost try committed: its entries are in the failure read
          const rev = Number(or.mod_revision);
          this.commit(rev, [
            { kind: 'put', key: okey, value: or.value.toString(), createRev: Number(or.create_revision), modRev: rev },
            ...(mr ? [{ kind: 'put' as const, key: mkey, value: mr.value.toString(), createRev: 0, modRev: Number(mr.mod_revision) }] : []),
          ]);
          return { done: rev, value: () => ({ total: this.nodeTotal(volume, node), undo: Number(or.create_revision) }) };
        }
        if (volCreate && Number(vr?.create_revision ?? 0) !== volCreate) {
          await this.catchUp(failRev(r), deadline);
          throw new ConflictError(`volume ${volume} was removed or created again by another node while it was being mounted; nothing was recorded; retry the mount`, { retryable: true });
        }
        cur = mr ? mountOf(mr) : undefined;
        volCreate = Number(vr?.create_revision ?? 0);
        await lostRacePause(i);
      }
      throw new ConflictError(`the mount references of volume ${volume} on node ${node} kept changing under ${MOUNT_RETRIES} tries; nothing was recorded; retry the mount`, { retryable: true });
    });
  }

  async removeMount(volume: string, node: string, id: string, endOp?: number): Promise<{ removed: boolean; total: number }> {
    const mkey = this.mountKey(volume, node, id);
    const okey = endOp === undefined ? undefined : this.ops.get(node)?.get(endOp)?.key;
    const w = this.nextToken();
    let sent = false; // a try was sent whose answer was lost (the retry of write() calls us again)
    return this.write(`unmounting volume ${volume}`, async (deadline) => {
      const resent = sent;
      let cur = this.ledger.get(volume)?.get(node)?.get(id);
      for (let i = 0; i < MOUNT_RETRIES; i++) {
        if (!cur && !okey) return { done: 0, value: () => ({ removed: false, total: this.nodeTotal(volume, node) }) };
        const success: IRequestOp[] = [];
        const changes: Change[] = [];
        let value: string | undefined;
        if (cur && cur.count > 1) {
          value = JSON.stringify({ count: cur.count - 1, since: cur.since, w });
          success.push(put(mkey, value));
        } else if (cur) {
          success.push({ request_delete_range: { key: Buffer.from(mkey) } });
          changes.push({ kind: 'del', key: mkey });
        }
        if (okey) { success.push({ request_delete_range: { key: Buffer.from(okey) } }); changes.push({ kind: 'del', key: okey }); }
        sent = true;
        const r = await this.txn(deadline, [{ key: Buffer.from(mkey), target: 'Mod', result: 'Equal', mod_revision: cur?.modRev ?? 0 }], success, [range(mkey)]);
        if (r.succeeded) {
          const rev = Number(r.header.revision);
          if (value !== undefined) changes.push({ kind: 'put', key: mkey, value, createRev: 0, modRev: rev });
          this.commit(rev, changes);
          return { done: rev, value: () => ({ removed: cur !== undefined, total: this.nodeTotal(volume, node) }) };
        }
        const mr = r.responses[0]?.response_range?.kvs[0];
        const now = mr ? mountOf(mr) : undefined;
        if (now && now.w === w) { // our lost try committed
          await this.catchUp(now.modRev, deadline);
          return { done: now.modRev, value: () => ({ removed: true, total: this.nodeTotal(volume, node) }) };
        }
        if (!now && resent && i === 0 && cur?.count === 1) { // our lost try dropped the last reference (only this node writes its entries)
          return { done: failRev(r), value: () => ({ removed: true, total: this.nodeTotal(volume, node) }) };
        }
        cur = now;
        await lostRacePause(i);
      }
      throw new ConflictError(`the mount references of volume ${volume} on node ${node} kept changing under ${MOUNT_RETRIES} tries; nothing was changed; retry the unmount`, { retryable: true });
    });
  }

  async putAttachments(set: AttachmentSet): Promise<AttachmentSet> {
    const key = this.attachKey(set.volume);
    const w = this.nextToken();
    const value = JSON.stringify({ epoch: set.epoch, holders: set.holders, w });
    return this.write(`changing the attachments of volume ${set.volume}`, async (deadline) => {
      const r = await this.txn(deadline, [{ key: Buffer.from(key), target: 'Mod', result: 'Equal', mod_revision: set.revision }], [put(key, value)], [range(key)]);
      if (r.succeeded) {
        const rev = Number(r.header.revision);
        this.commit(rev, [{ kind: 'put', key, value, createRev: set.revision ? 0 : rev, modRev: rev }]);
        return { done: rev, value: () => this.attachments.get(set.volume) ?? decodeAttachments(set.volume, value, rev) };
      }
      const kv = r.responses[0]?.response_range?.kvs[0];
      if (kv && tokenOf(kv.value) === w) return { done: Number(kv.mod_revision), value: () => decodeAttachments(set.volume, kv.value.toString(), Number(kv.mod_revision)) };
      await this.catchUp(failRev(r), deadline);
      throw lostAttachRace(set.volume);
    });
  }

  async beginOp(op: Omit<OpRecord, 'id' | 'startedAt'>): Promise<number> {
    const okey = `${this.prefix}ops/${enc(op.node)}/${this.nextToken()}`;
    const value = JSON.stringify({ volume: op.volume, op: op.op, mountId: op.mountId, startedAt: new Date().toISOString() });
    return this.write(`journaling the ${op.op} of volume ${op.volume}`, async (deadline) => {
      const r = await this.txn(deadline, [{ key: Buffer.from(okey), target: 'Create', result: 'Equal', create_revision: 0 }], [put(okey, value)], [range(okey)]);
      if (r.succeeded) {
        const rev = Number(r.header.revision);
        this.commit(rev, [{ kind: 'put', key: okey, value, createRev: rev, modRev: rev }]);
        return { done: rev, value: () => rev };
      }
      const kv = r.responses[0]?.response_range?.kvs[0]!; // only our own lost try can have made this key
      return { done: Number(kv.mod_revision), value: () => Number(kv.create_revision) };
    });
  }

  async endOp(node: string, id: number): Promise<void> {
    const okey = this.ops.get(node)?.get(id)?.key;
    if (!okey) return; // absent is fine
    await this.write('closing a journal entry', async (deadline) => {
      const r = await this.txn(deadline, [], [{ request_delete_range: { key: Buffer.from(okey) } }], []);
      const rev = Number(r.header.revision);
      this.commit(rev, [{ kind: 'del', key: okey }]);
      return { done: rev, value: () => undefined };
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.probeTimer);
    clearTimeout(this.reconnectTimer);
    if (this.stream) stopStream(this.stream);
    this.stream = undefined;
    for (const w of this.revWaiters.splice(0)) w.resolve();
    this.client.close();
  }

  /** Revision the copy has reached (for tests and diagnostics). */
  get revision(): number { return this.rev; }
  /** Is the watch stream up right now? */
  get watching(): boolean { return this.watchUp; }

  // ---------------------------------------------------------------- machinery

  private volumeKey(name: string): string { return `${this.prefix}volumes/${enc(name)}`; }
  private attachKey(volume: string): string { return `${this.prefix}attach/${enc(volume)}`; }
  private snapshotKey(name: string): string { return `${this.prefix}snapshots/${enc(name)}`; }
  private mountKey(volume: string, node: string, id: string): string { return `${this.prefix}mounts/${enc(volume)}/${enc(node)}/${enc(id)}`; }
  private nextToken(): string { return `${this.token}${(++this.writeSeq).toString(36)}`; }

  private nodeTotal(volume: string, node: string): number {
    let t = 0;
    for (const m of this.ledger.get(volume)?.get(node)?.values() ?? []) t += m.count;
    return t;
  }

  /**
   * One transaction; every one also writes `_rev` (see the class comment), and its failure branch
   * ends with a read of `_rev` (see failRev).
   */
  private async txn(deadline: number, compare: ICompare[], success: IRequestOp[], failure: IRequestOp[]): Promise<ITxnResponse> {
    const r = await this.client.kv.txn({ compare, success: [...success, put(`${this.prefix}_rev`, '')], failure: [...failure, range(`${this.prefix}_rev`)] }, { deadline: new Date(deadline) });
    this.lastContact = Date.now();
    return r;
  }

  /**
   * Runs a write within the store's bound: `fn` is retried while etcd is unreachable or electing a
   * leader, until the deadline; then, after a successful `fn`, waits (within the bound) for the
   * watch to pass the write's revision. A write that committed is never reported as failed.
   */
  private async write<T>(what: string, fn: (deadline: number) => Promise<{ done: number; value: () => T }>): Promise<T> {
    if (this.closed) throw new UnavailableError(`the cluster store is closed; ${what} was not done`);
    const sentAt = Date.now();
    const deadline = sentAt + this.timeoutMs;
    const { done, value } = await this.withDeadline(what, deadline, fn);
    if (done > 0) {
      this.freshCandidates.push({ rev: done, sentAt });
      await this.catchUp(done, deadline);
      this.promoteFresh();
    }
    return value();
  }

  private async withDeadline<T>(what: string, deadline: number, fn: (deadline: number) => Promise<T>): Promise<T> {
    let delay = 50;
    let last: unknown;
    for (;;) {
      const left = deadline - Date.now();
      if (left <= 0) break;
      // One try gets a part of the bound: a request stuck on a member that lost its leader (etcd holds
      // it for its own request timeout, ~7 s) is abandoned and sent again, to a member that has one.
      // A try abandoned here may still commit: every transaction is guarded so that it commits once.
      const tryEnd = Math.min(deadline, Date.now() + this.tryMs);
      try {
        return await raceTimer(fn(tryEnd), tryEnd - Date.now());
      } catch (e) {
        if (e instanceof BallastError) throw e;
        last = e;
        if (!transient(e)) throw new InternalError(`the cluster store (etcd at ${this.endpointsText}) refused ${what}: ${errText(e)}`, { cause: e });
      }
      await sleep(Math.min(delay, Math.max(0, deadline - Date.now())));
      delay = Math.min(delay * 2, 500);
    }
    throw new UnavailableError(`the cluster store (etcd at ${this.endpointsText}) did not answer within ${fmtSec(this.timeoutMs)}${last ? ` (${errText(last)})` : ''}; ${what} was not done; check that a majority of the etcd members is up and reachable from this node`, { cause: last });
  }

  /**
   * Waits until the watch passed `rev`, or the deadline (the copy already holds our own writes). With
   * the watch down it does not wait: a write then costs no more than its transaction.
   */
  private catchUp(rev: number, deadline: number): Promise<void> {
    if (this.rev >= rev || this.closed || !this.watchUp) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const w = { rev, resolve: () => { clearTimeout(t); resolve(); } };
      const t = setTimeout(() => { const i = this.revWaiters.indexOf(w); if (i >= 0) this.revWaiters.splice(i, 1); resolve(); }, Math.max(0, deadline - Date.now()));
      this.revWaiters.push(w);
    });
  }

  private assertFresh(what: string): void {
    const now = Date.now();
    if (now - this.freshAt <= this.staleMs) return;
    const last = this.lastContact ? `; its last answer came at ${new Date(this.lastContact).toISOString()}` : '';
    throw new UnavailableError(`could not ${what}: Ballast's copy of the volume list was last confirmed in step with the cluster store (etcd at ${this.endpointsText}) ${fmtSec(now - this.freshAt)} ago, more than the ${fmtSec(this.staleMs)} it answers from${last}; check that a majority of the etcd members is up and reachable from this node`);
  }

  /**
   * Resolves once the copy holds every change committed before the call: a quorum read of `_rev`, then
   * the watch past it. Throws an UnavailableError within `timeoutSec` otherwise. For decisions that must
   * not rest on what the copy held while etcd was away (a self-fenced node deciding what it still holds).
   */
  async inStep(what: string): Promise<void> {
    const deadline = Date.now() + this.timeoutMs;
    const rev = await this.withDeadline(what, deadline, async (d) => {
      const kv = (await this.client.kv.range({ key: Buffer.from(`${this.prefix}_rev`) }, { deadline: new Date(d) })).kvs[0];
      return kv ? Number(kv.mod_revision) : 0;
    });
    while (this.rev < rev) {
      if (Date.now() >= deadline) throw new UnavailableError(`${what}: Ballast's copy of the cluster store (etcd at ${this.endpointsText}) did not catch up with revision ${rev} within ${fmtSec(this.timeoutMs)}; it is tried again`);
      await this.catchUp(rev, Math.min(deadline, Date.now() + 200));
      if (this.rev < rev) await sleep(50);
    }
  }

  /** A quorum read of `_rev` proves the copy in step once the watch passed it (sent only while idle). */
  private async probe(): Promise<void> {
    if (this.closed || Date.now() - this.freshAt < this.probeMs) return;
    const sentAt = Date.now();
    try {
      const r = await this.client.kv.range({ key: Buffer.from(`${this.prefix}_rev`) }, { deadline: new Date(sentAt + Math.min(this.timeoutMs, this.probeMs * 2)) });
      this.lastContact = Date.now();
      const kv = r.kvs[0];
      this.freshCandidates.push({ rev: kv ? Number(kv.mod_revision) : 0, sentAt });
      this.promoteFresh();
    } catch { /* etcd unreachable: freshAt stays, reads turn Unavailable after the bound */ }
  }

  private promoteFresh(): void {
    const keep: { rev: number; sentAt: number }[] = [];
    for (const c of this.freshCandidates) {
      if (c.rev <= this.rev) { if (c.sentAt > this.freshAt) this.freshAt = c.sentAt; } else keep.push(c);
    }
    this.freshCandidates = keep.length > 64 ? keep.slice(-64) : keep;
  }

  /** Reads the whole prefix at one revision and makes it the copy (at open, and when the watch history is compacted). */
  private async resync(deadline: number): Promise<void> {
    const sentAt = Date.now();
    const r = await this.client.kv.range({ key: Buffer.from(this.prefix), range_end: prefixEnd(this.prefix) }, { deadline: new Date(deadline) });
    this.lastContact = Date.now();
    const at = Number(r.header.revision);
    this.volumes.clear(); this.ledger.clear(); this.ops.clear(); this.attachments.clear(); this.snapshots.clear();
    this.summaries = undefined; this.records = undefined; this.snapshotRecords = undefined;
    for (const kv of r.kvs) this.applyPut(kv.key.toString(), kv.value.toString(), Number(kv.create_revision), Number(kv.mod_revision));
    this.rev = at;
    // Own writes committed after the read are applied again; older ones are in the read.
    for (const p of this.pending) if (p.rev > at) for (const c of p.changes) this.applyChange(c, p.rev);
    this.dropPendingUpTo(at);
    this.freshCandidates.push({ rev: at, sentAt });
    this.promoteFresh();
    this.wakeWaiters();
  }

  private connectWatch(): void {
    if (this.closed) return;
    void (async () => {
      let stream: Awaited<ReturnType<Etcd3['watchClient']['watch']>>;
      try {
        stream = await this.client.watchClient.watch();
      } catch (e) {
        this.watchBroken(`the watch could not be opened: ${errText(e)}`);
        return;
      }
      if (this.closed) { stopStream(stream); return; }
      this.stream = stream;
      let ended = false;
      const end = (why: string) => {
        if (ended) return;
        ended = true;
        stopStream(stream);
        if (this.stream === stream) this.stream = undefined;
        this.watchBroken(why);
      };
      stream.on('data', (res: IWatchResponse) => {
        if (res.created) { this.watchUp = true; this.backoffMs = 100; this.onEvent?.('watch-resumed', `watching from revision ${this.rev + 1}`); }
        if (res.canceled || Number(res.compact_revision) > 0) {
          if (Number(res.compact_revision) > 0) { // the history we need is gone: read the prefix again, then watch after it
            if (ended) return;
            ended = true;
            void this.resyncAfterCompaction(stream, Number(res.compact_revision));
            return;
          }
          end(`the watch was cancelled: ${res.cancel_reason || 'no reason given'}`);
          return;
        }
        this.lastContact = Date.now();
        this.applyWatch(res);
      });
      stream.on('error', (e: unknown) => end(`the watch stream failed: ${errText(e)}`));
      stream.on('end', () => end('the watch stream ended'));
      const req: IWatchRequest = { create_request: { key: Buffer.from(this.prefix), range_end: prefixEnd(this.prefix), start_revision: this.rev + 1 } };
      stream.write(req);
    })();
  }

  private async resyncAfterCompaction(stream: NonNullable<EtcdStore['stream']>, compacted: number): Promise<void> {
    stopStream(stream);
    if (this.stream === stream) this.stream = undefined;
    this.watchUp = false;
    this.onEvent?.('resync', `etcd compacted its history up to revision ${compacted}, past the ${this.rev} this copy holds; reading the volume list again`);
    try {
      await this.resync(Date.now() + this.timeoutMs);
    } catch (e) {
      this.watchBroken(`the re-sync failed: ${errText(e)}`);
      return;
    }
    this.connectWatch();
  }

  private watchBroken(why: string): void {
    if (this.closed) return;
    if (this.watchUp) this.onEvent?.('watch-broken', why);
    this.watchUp = false;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => this.connectWatch(), this.backoffMs);
    this.reconnectTimer.unref();
    this.backoffMs = Math.min(this.backoffMs * 2, 1000);
  }

  private applyWatch(res: IWatchResponse): void {
    let top = this.rev;
    for (const ev of res.events) {
      const kv = ev.kv;
      const mod = Number(kv.mod_revision);
      if (mod > top) top = mod;
      if (mod <= this.rev) continue; // already in the copy (a resumed watch)
      const key = kv.key.toString();
      if (this.shadowed(key, mod)) continue;
      if (ev.type === 'Delete') this.applyDelete(key);
      else this.applyPut(key, kv.value.toString(), Number(kv.create_revision), mod);
    }
    if (top > this.rev) {
      this.rev = top;
      this.dropPendingUpTo(top);
      this.promoteFresh();
      this.wakeWaiters();
    }
  }

  /** Is the key's copy newer than this watch event (a later own write applied ahead of the watch)? */
  private shadowed(key: string, mod: number): boolean {
    const p = this.pendingKeys.get(key);
    if (p !== undefined && p > mod) return true;
    for (const pend of this.pending) if (pend.rev > mod) for (const c of pend.changes) if (c.kind === 'delPrefix' && key.startsWith(c.prefix)) return true;
    return false;
  }

  /**
   * Applies a committed transaction of this store to the copy ahead of the watch. Answers of
   * concurrent transactions can arrive out of order: a change older than what the copy holds for its
   * key (or than a later own change of it) is skipped.
   */
  private commit(rev: number, changes: Change[]): void {
    if (rev <= this.rev) return; // the watch was faster
    this.pending.push({ rev, changes });
    this.pending.sort((x, y) => x.rev - y.rev);
    for (const c of changes) {
      if (c.kind !== 'delPrefix') {
        const later = (this.pendingKeys.get(c.key) ?? 0) > rev;
        this.pendingKeys.set(c.key, Math.max(rev, this.pendingKeys.get(c.key) ?? 0));
        if (later) continue;
      }
      this.applyChange(c, rev);
    }
  }

  private applyChange(c: Change, rev: number): void {
    if (c.kind === 'put') {
      if (this.modRevOf(c.key) >= c.modRev) return;
      const createRev = c.createRev || this.createRevOf(c.key) || rev;
      this.applyPut(c.key, c.value, createRev, c.modRev);
    } else if (c.kind === 'del') {
      if (this.modRevOf(c.key) < rev) this.applyDelete(c.key);
    } else {
      for (const k of this.keysUnder(c.prefix)) if (this.modRevOf(k) < rev) this.applyDelete(k);
    }
  }

  private modRevOf(key: string): number {
    const p = this.parseKey(key);
    if (p?.kind === 'volume') return this.volumes.get(p.name)?.rec.revision ?? 0;
    if (p?.kind === 'mount') return this.ledger.get(p.volume)?.get(p.node)?.get(p.id)?.modRev ?? 0;
    if (p?.kind === 'attach') return this.attachments.get(p.volume)?.revision ?? 0;
    if (p?.kind === 'snapshot') return this.snapshots.get(p.name)?.modRev ?? 0;
    return 0;
  }

  private dropPendingUpTo(rev: number): void {
    let n = 0;
    while (n < this.pending.length && this.pending[n].rev <= rev) n++;
    if (!n) return;
    this.pending.splice(0, n);
    for (const [k, r] of this.pendingKeys) if (r <= rev) this.pendingKeys.delete(k);
  }

  private wakeWaiters(): void {
    for (let i = this.revWaiters.length - 1; i >= 0; i--) {
      const w = this.revWaiters[i];
      if (w.rev <= this.rev) { this.revWaiters.splice(i, 1); w.resolve(); }
    }
  }

  private createRevOf(key: string): number {
    const p = this.parseKey(key);
    if (p?.kind === 'volume') return this.volumes.get(p.name)?.createRev ?? 0;
    if (p?.kind === 'snapshot') return this.snapshots.get(p.name)?.createRev ?? 0;
    return 0;
  }

  private keysUnder(prefix: string): string[] {
    const p = prefix.slice(this.prefix.length).split('/');
    if (p[0] !== 'mounts') return [];
    const volume = dec(p[1]);
    const out: string[] = [];
    for (const [node, ids] of this.ledger.get(volume) ?? []) for (const id of ids.keys()) out.push(this.mountKey(volume, node, id));
    return out;
  }

  private parseKey(key: string):
    | { kind: 'volume'; name: string } | { kind: 'mount'; volume: string; node: string; id: string } | { kind: 'op'; node: string }
    | { kind: 'attach'; volume: string } | { kind: 'snapshot'; name: string } | undefined {
    if (!key.startsWith(this.prefix)) return undefined;
    const p = key.slice(this.prefix.length).split('/');
    if (p[0] === 'volumes' && p.length === 2) return { kind: 'volume', name: dec(p[1]) };
    if (p[0] === 'mounts' && p.length === 4) return { kind: 'mount', volume: dec(p[1]), node: dec(p[2]), id: dec(p[3]) };
    if (p[0] === 'ops' && p.length === 3) return { kind: 'op', node: dec(p[1]) };
    if (p[0] === 'attach' && p.length === 2) return { kind: 'attach', volume: dec(p[1]) };
    if (p[0] === 'snapshots' && p.length === 2) return { kind: 'snapshot', name: dec(p[1]) };
    return undefined;
  }

  private applyPut(key: string, value: string, createRev: number, modRev: number): void {
    const p = this.parseKey(key);
    if (!p) return;
    if (p.kind === 'volume') {
      const rec = decodeVolume(p.name, value, modRev);
      const old = this.volumes.get(p.name)?.rec;
      this.volumes.set(p.name, { rec, createRev });
      this.records = undefined;
      if (!old || old.mountpoint !== rec.mountpoint || old.createdAt !== rec.createdAt) this.patchSummaries(p.name, summaryOf(rec));
    } else if (p.kind === 'mount') {
      let m: { count: number; since: string; w: string };
      try { m = JSON.parse(value); } catch { return; }
      let nodes = this.ledger.get(p.volume);
      if (!nodes) this.ledger.set(p.volume, (nodes = new Map()));
      let ids = nodes.get(p.node);
      if (!ids) nodes.set(p.node, (ids = new Map()));
      ids.set(p.id, { count: Number(m.count) || 0, since: String(m.since), w: String(m.w ?? ''), modRev });
    } else if (p.kind === 'attach') {
      this.attachments.set(p.volume, decodeAttachments(p.volume, value, modRev));
    } else if (p.kind === 'snapshot') {
      this.snapshots.set(p.name, { rec: decodeSnapshot(p.name, value, modRev), createRev, modRev });
      this.snapshotRecords = undefined;
    } else {
      let o: { volume: string; op: OpRecord['op']; mountId: string; startedAt: string };
      try { o = JSON.parse(value); } catch { return; }
      let ops = this.ops.get(p.node);
      if (!ops) this.ops.set(p.node, (ops = new Map()));
      ops.set(createRev, { key, rec: Object.freeze({ id: createRev, volume: o.volume, node: p.node, op: o.op, mountId: o.mountId, startedAt: o.startedAt }) });
    }
  }

  private applyDelete(key: string): void {
    const p = this.parseKey(key);
    if (!p) return;
    if (p.kind === 'volume') {
      if (this.volumes.delete(p.name)) { this.records = undefined; this.patchSummaries(p.name, undefined); }
    } else if (p.kind === 'mount') {
      const nodes = this.ledger.get(p.volume);
      const ids = nodes?.get(p.node);
      if (!ids) return;
      ids.delete(p.id);
      if (!ids.size) nodes!.delete(p.node);
      if (!nodes!.size) this.ledger.delete(p.volume);
    } else if (p.kind === 'attach') {
      this.attachments.delete(p.volume);
    } else if (p.kind === 'snapshot') {
      if (this.snapshots.delete(p.name)) this.snapshotRecords = undefined;
    } else {
      const ops = this.ops.get(p.node);
      if (!ops) return;
      for (const [id, o] of ops) if (o.key === key) { ops.delete(id); break; }
      if (!ops.size) this.ops.delete(p.node);
    }
  }

  /** Splices the cached summaries (a copy, frozen); `s` undefined removes the name. */
  private patchSummaries(name: string, s: VolumeSummary | undefined): void {
    const l = this.summaries;
    if (!l) return;
    let lo = 0; let hi = l.length;
    while (lo < hi) { const mid = (lo + hi) >>> 1; if (l[mid].name < name) lo = mid + 1; else hi = mid; }
    const here = l[lo]?.name === name;
    if (!s && !here) return;
    const next = l.slice();
    if (s) next.splice(lo, here ? 1 : 0, s); else next.splice(lo, 1);
    this.summaries = Object.freeze(next) as VolumeSummary[];
  }
}

// ---------------------------------------------------------------- helpers

const STATES: readonly string[] = ['creating', 'ready', 'removing'];

function encodeVolume(rec: NewVolumeRecord, w: string): string {
  return JSON.stringify({ name: rec.name, backend: rec.backend, spec: rec.spec, mountpoint: rec.mountpoint, createdAt: rec.createdAt, state: rec.state, details: rec.details, ...(rec.home !== undefined ? { home: rec.home } : {}), w });
}

/** An attachment set that does not decode holds no node (the reconciler then sees the volume as unattached). */
function decodeAttachments(volume: string, value: string, revision: number): AttachmentSet {
  let o: { epoch?: unknown; holders?: unknown } = {};
  try { o = JSON.parse(value); } catch { /* below */ }
  const holders = Array.isArray(o.holders) ? (o.holders as Attachment[]).map((h) => ({ node: String(h.node), mode: h.mode === 'ro' ? 'ro' as const : 'rw' as const, since: String(h.since), ...(claimOf(h.claim) ? { claim: claimOf(h.claim)! } : {}) })) : [];
  return deepFreeze({ volume, epoch: Number(o.epoch) || 0, holders, revision });
}

/** A value that does not decode becomes a `damaged` record (as in the SQLite store), never an exception. */
function decodeVolume(name: string, value: string, revision: number): VolumeRecord {
  let o: Record<string, unknown> | undefined;
  try {
    o = JSON.parse(value);
    const spec = o!.spec; const details = o!.details;
    if (!spec || typeof spec !== 'object' || !details || typeof details !== 'object' || !STATES.includes(o!.state as string)
      || typeof o!.backend !== 'string' || typeof o!.mountpoint !== 'string' || typeof o!.createdAt !== 'string') throw new Error('bad shape');
    return deepFreeze({
      name, backend: o!.backend as string, spec: spec as Record<string, unknown>, mountpoint: o!.mountpoint as string, createdAt: o!.createdAt as string,
      state: o!.state as VolumeState, details: details as Record<string, unknown>, ...(typeof o!.home === 'string' ? { home: o!.home } : {}), revision,
    });
  } catch (e) {
    return deepFreeze({
      name, backend: typeof o?.backend === 'string' ? o.backend : '', spec: {}, mountpoint: typeof o?.mountpoint === 'string' ? o.mountpoint : '',
      createdAt: typeof o?.createdAt === 'string' ? o.createdAt : '', state: 'damaged' as const, revision,
      details: { damage: `the stored record does not decode (${(e as Error).message})` },
    });
  }
}

function encodeSnapshot(rec: NewSnapshotRecord, w: string): string {
  return JSON.stringify({
    name: rec.name, volume: rec.volume, backend: rec.backend, spec: rec.spec, size: rec.size, createdAt: rec.createdAt, state: rec.state,
    node: rec.node, details: rec.details, ...(rec.home !== undefined ? { home: rec.home } : {}), w,
  });
}

const SNAPSHOT_STATES: readonly string[] = ['creating', 'ready', 'removing'];

/** A snapshot value that does not decode is undefined, never an exception (see the class comment). */
function decodeSnapshot(name: string, value: string, revision: number): SnapshotRecord | undefined {
  let o: Record<string, unknown>;
  try { o = JSON.parse(value); } catch { return undefined; }
  if (!o || typeof o !== 'object') return undefined;
  const { spec, details } = o;
  if (!spec || typeof spec !== 'object' || Array.isArray(spec) || !details || typeof details !== 'object' || Array.isArray(details)
    || !SNAPSHOT_STATES.includes(o.state as string) || typeof o.size !== 'number' || !Number.isFinite(o.size)
    || typeof o.volume !== 'string' || typeof o.backend !== 'string' || typeof o.createdAt !== 'string' || typeof o.node !== 'string') return undefined;
  return deepFreeze({
    name, volume: o.volume, backend: o.backend, spec: spec as Record<string, unknown>, size: o.size, createdAt: o.createdAt,
    state: o.state as SnapshotState, node: o.node, details: details as Record<string, unknown>, ...(typeof o.home === 'string' ? { home: o.home } : {}), revision,
  });
}

/** What an own write of a snapshot stored (the value it wrote; failing that, the record it was given). */
function ownSnapshot(rec: NewSnapshotRecord, value: string, revision: number): SnapshotRecord {
  return decodeSnapshot(rec.name, value, revision) ?? deepFreeze({ ...structuredClone(rec), revision });
}

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object' && !Object.isFrozen(o)) { Object.freeze(o); for (const v of Object.values(o)) deepFreeze(v); }
  return o;
}

/** The mod_revision of `_rev` read at the end of a failed transaction: every change under the prefix up to the failure is at or below it. */
function failRev(r: ITxnResponse): number {
  return Number(r.responses[r.responses.length - 1]?.response_range?.kvs[0]?.mod_revision ?? 0);
}

function mountOf(kv: IKeyValue): CachedMount | undefined {
  try {
    const m = JSON.parse(kv.value.toString());
    return { count: Number(m.count) || 0, since: String(m.since), w: String(m.w ?? ''), modRev: Number(kv.mod_revision) };
  } catch { return undefined; }
}

function tokenOf(value: Buffer): string | undefined {
  try { return JSON.parse(value.toString()).w; } catch { return undefined; }
}

function summaryOf(v: VolumeRecord): VolumeSummary { return Object.freeze({ name: v.name, mountpoint: v.mountpoint, createdAt: v.createdAt }); }
const byName = (a: { name: string }, b: { name: string }) => cmp(a.name, b.name);
const cmp = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
const enc = (s: string) => encodeURIComponent(s);
const dec = (s: string) => { try { return decodeURIComponent(s); } catch { return s; } };
const put = (key: string, value: string): IRequestOp => ({ request_put: { key: Buffer.from(key), value: Buffer.from(value) } });
const range = (key: string): IRequestOp => ({ request_range: { key: Buffer.from(key) } });

/** The first key after every key that starts with `prefix` (etcd's range_end for a prefix). */
function prefixEnd(prefix: string): Buffer {
  const b = Buffer.from(prefix);
  for (let i = b.length - 1; i >= 0; i--) if (b[i] < 0xff) { const e = Buffer.from(b.subarray(0, i + 1)); e[i]++; return e; }
  return Buffer.from([0]);
}

function transient(e: unknown): boolean {
  if (!(e instanceof Error)) return false;
  if (isRecoverableError(e)) return true;
  return /HostSkipped|BrokenCircuit|circuit breaker|DeadlineExceeded|Unavailable|ConnectFailed|TimedOut|Timeout|leader|ECONNREFUSED|ECONNRESET|Cancelled/i.test(`${e.name} ${e.message}`);
}

function errText(e: unknown): string {
  const s = e instanceof Error ? e.message : String(e);
  return s.replace(/\s+Please report this error.*$/s, '').slice(0, 200);
}

type HostPolicy = ReturnType<NonNullable<NonNullable<IOptions['faultHandling']>['host']>>;
class HostSkipped extends Error { constructor() { super('the etcd member failed just before and is skipped for a moment'); this.name = 'HostSkipped'; } }

/**
 * The client's per-member policy: a member whose call failed for a transport reason is skipped for
 * `ms`, and the call goes to the next member. (etcd3's default breaker stops calling a member for 5 s
 * after 3 failures, which during an election shuts out every member, and delays the first write after
 * a restart by as much.)
 */
function hostSkipPolicy(ms: number): HostPolicy {
  let skipUntil = 0;
  const policy = {
    async execute<T>(fn: (ctx: { signal: AbortSignal }) => PromiseLike<T> | T): Promise<T> {
      if (Date.now() < skipUntil) throw new HostSkipped();
      try {
        return await fn({ signal: new AbortController().signal });
      } catch (e) {
        if (e instanceof Error && isRecoverableError(e)) skipUntil = Date.now() + ms;
        throw e;
      }
    },
  };
  return policy as unknown as HostPolicy;
}

class TimerError extends Error { constructor() { super('no answer in time'); this.name = 'TimedOut'; } }

function raceTimer<T>(p: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new TimerError()), ms);
    p.then((v) => { clearTimeout(t); resolve(v); }, (e) => { clearTimeout(t); reject(e); });
  });
}

/** Cancels a watch stream (ending only our side would let the server go on sending). */
function stopStream(stream: { cancel(): void; end(): void }): void {
  try { stream.cancel(); } catch { /* already gone */ }
  try { stream.end(); } catch { /* already gone */ }
}

function sleep(ms: number): Promise<void> { return new Promise((r) => setTimeout(r, ms)); }
function fmtSec(ms: number): string { return `${Math.round(ms / 100) / 10} s`; }

/** A holder's stored claim: a map of strings, or nothing (anything else in the stored JSON is dropped). */
function claimOf(v: unknown): Record<string, string> | undefined {
  if (!v || typeof v !== 'object' || Array.isArray(v)) return undefined;
  const out: Record<string, string> = {};
  for (const [k, x] of Object.entries(v as Record<string, unknown>)) if (typeof x === 'string') out[k] = x;
  return Object.keys(out).length ? out : undefined;
}
