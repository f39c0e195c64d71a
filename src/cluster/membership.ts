import type { Logger } from 'pino';
import type { Lease } from 'etcd3';
import type { EtcdStore } from '../store/etcd.js';

/** A node as the registry knows it. */
export interface NodeInfo {
  readonly name: string;
  /** Does the node hold a live lease (its daemon runs and reaches etcd)? */
  readonly alive: boolean;
  /** When its daemon registered (RFC 3339), for a live node. */
  readonly since?: string;
  readonly pid?: number;
  readonly version?: string;
}

/** The lease this daemon keeps, as doctor and `ballast node ls` show it. */
export interface LeaseState {
  readonly ttlSec: number;
  readonly held: boolean;
  /** RFC 3339 of the last keepalive etcd answered. */
  readonly renewedAt?: string;
  readonly lostAt?: string;
  readonly error?: string;
}

/** A live peer as the registry last showed it, with the URL of its peer check (src/frontends/peer). */
export interface Peer { readonly name: string; readonly url?: string }

/**
 * The node registry: each daemon registers its node name under a lease it keeps alive, so every node
 * can tell which nodes are up. On one host (SQLite) there is only this node.
 */
export interface Membership {
  readonly node: string;
  start(): Promise<void>;
  /** Graceful stop: the lease is revoked, so the node shows as down at once (its volumes stay mounted). */
  stop(): Promise<void>;
  nodes(): Promise<NodeInfo[]>;
  lease(): LeaseState | undefined;
  /** Is `node` registered now (its lease alive, as etcd says)? */
  isAlive(node: string): Promise<boolean>;
  /** Seconds etcd still counts on `node`'s lease; undefined when it is not registered. */
  leaseLeft(node: string): Promise<number | undefined>;
  /**
   * This node's own view of its lease: does it reach etcd now (a keepalive answered within the last
   * two intervals), and until when (performance.now() milliseconds) it may count on its lease: the send
   * time of the last keepalive etcd answered plus the TTL. Undefined on one host.
   */
  health(): { readonly reachable: boolean; readonly heldUntilMs: number } | undefined;
  /** The other live nodes as of the last registry read, for the peer check. */
  peers(): readonly Peer[];
}

export class LocalMembership implements Membership {
  private readonly since = new Date().toISOString();
  constructor(readonly node: string, private readonly version: string) {}
  async start(): Promise<void> {}
  async stop(): Promise<void> {}
  async nodes(): Promise<NodeInfo[]> { return [{ name: this.node, alive: true, since: this.since, pid: process.pid, version: this.version }]; }
  lease(): undefined { return undefined; }
  async isAlive(node: string): Promise<boolean> { return node === this.node; }
  async leaseLeft(): Promise<undefined> { return undefined; }
  health(): undefined { return undefined; }
  peers(): readonly Peer[] { return []; }
}

export interface EtcdMembershipOptions {
  readonly ttlSec: number;
  readonly keepaliveSec: number;
  readonly version: string;
  /** URL of this node's peer check, advertised in its registry entry. */
  readonly peerUrl?: string;
}

/** How many keepalives between two reads of the registry (the peers' list). */
const PEERS_EVERY = 3;

/**
 * Registration in etcd: the key `nodes/<name>` under the store's prefix, bound to a lease of `ttlSec`.
 * The lease is renewed by this class, not by the etcd client's own loop, one keepalive every
 * `keepaliveSec`, each bounded by that interval, so that the node knows the send time of the last
 * keepalive etcd answered: etcd cannot expire the lease before that time plus the TTL, which is what the
 * self-fence deadline is computed from (src/cluster/self-fence.ts). When etcd says the lease is gone (it
 * expired while this node could not reach etcd), a new one is granted and the key written again, with a
 * log line; the time it was lost is kept for doctor.
 */
export class EtcdMembership implements Membership {
  private current?: Lease;
  private state: { held: boolean; renewedAt?: string; lostAt?: string; error?: string } = { held: false };
  private stopped = false;
  private readonly since = new Date().toISOString();
  private timer?: NodeJS.Timeout;
  /** performance.now() at the send of the last keepalive (or grant) etcd answered. */
  private ackSentAt = -Infinity;
  private beats = 0;
  private peerList: Peer[] = [];
  private readonly ttlMs: number;
  private readonly keepaliveMs: number;

  constructor(readonly node: string, private readonly store: EtcdStore, private readonly o: EtcdMembershipOptions, private readonly log: Logger) {
    this.ttlMs = o.ttlSec * 1000;
    this.keepaliveMs = Math.round(o.keepaliveSec * 1000);
  }

  async start(): Promise<void> {
    await this.register();
    this.schedule();
  }

  private value(): string {
    return JSON.stringify({ name: this.node, since: this.since, pid: process.pid, version: this.o.version, ...(this.o.peerUrl ? { peer: this.o.peerUrl } : {}) });
  }

  private async register(): Promise<void> {
    const lease = this.store.nodeLease(this.o.ttlSec);
    this.current = lease;
    lease.on('lost', () => undefined); // seen in beat(); without a listener the emitter would throw
    const sent = performance.now();
    await this.store.markKnown(this.node, this.value());
    await raceMs(lease.put(this.store.nodeKey(this.node)).value(this.value()).exec(), Math.max(this.keepaliveMs, 2000));
    this.acked(sent);
    this.log.info({ op: 'lease', node: this.node, ttlSec: this.o.ttlSec, keepaliveSec: this.o.keepaliveSec, outcome: 'ok' }, 'registered in the cluster');
    await this.refreshPeers();
  }

  private acked(sentAt: number): void {
    this.ackSentAt = Math.max(this.ackSentAt, sentAt);
    this.state = { ...this.state, held: true, renewedAt: new Date().toISOString(), error: undefined };
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => { void this.beat().finally(() => this.schedule()); }, this.keepaliveMs);
    this.timer.unref();
  }

  /** One keepalive (or, after the lease was lost, one try to register again), bounded by the interval. */
  private async beat(): Promise<void> {
    const lease = this.current;
    if (!lease) return;
    const sent = performance.now();
    try {
      if (!this.state.held) {
        await this.register();
        return;
      }
      await raceMs(lease.keepaliveOnce({ deadline: new Date(Date.now() + this.keepaliveMs) }), this.keepaliveMs);
      if (this.current !== lease || this.stopped) return;
      const wasDown = !this.reachableAt(sent);
      this.acked(sent);
      if (wasDown) this.log.info({ op: 'lease', node: this.node, outcome: 'ok' }, 'this node reaches etcd again; its lease is renewed');
      if (++this.beats % PEERS_EVERY === 0) await this.refreshPeers().catch(() => undefined);
    } catch (e) {
      if (this.stopped || this.current !== lease) return;
      const err = e as Error;
      if (/EtcdLeaseInvalid|lease not found|expired or revoked/i.test(`${err.name} ${err.message}`)) {
        this.state = { ...this.state, held: false, lostAt: new Date().toISOString(), error: err.message };
        this.log.error({ op: 'lease', node: this.node, ttlSec: this.o.ttlSec, err: err.message, outcome: 'lost' }, 'this node lost its etcd lease (it expired while etcd could not be reached); registering again');
        await this.register().catch((re: Error) => { this.state = { ...this.state, error: re.message }; });
        return;
      }
      if (this.state.error === undefined) this.log.warn({ op: 'lease', node: this.node, err: err.message, outcome: 'failed' }, 'a keepalive of this node\'s etcd lease failed');
      this.state = { ...this.state, error: err.message };
    }
  }

  private reachableAt(now: number): boolean { return now - this.ackSentAt <= 2 * this.keepaliveMs + 500; }

  private async refreshPeers(): Promise<void> {
    const { alive } = await this.store.readNodes();
    const out: Peer[] = [];
    for (const v of Object.values(alive)) {
      const o = parseNode(v);
      if (o && o.name !== this.node) out.push({ name: o.name, ...(typeof o.peer === 'string' ? { url: o.peer } : {}) });
    }
    this.peerList = out.sort((a, b) => (a.name < b.name ? -1 : 1));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.current?.revoke().catch(() => undefined);
  }

  /** Every node that ever registered: up while its lease-bound key exists, down otherwise. */
  async nodes(): Promise<NodeInfo[]> {
    const { alive, known } = await this.store.readNodes();
    const up = new Map<string, ParsedNode>();
    for (const v of Object.values(alive)) { const o = parseNode(v); if (o) up.set(o.name, o); }
    const out = new Map<string, NodeInfo>();
    for (const v of Object.values(known)) {
      const o = parseNode(v);
      if (o && !up.has(o.name)) out.set(o.name, { name: o.name, alive: false, version: o.version });
    }
    for (const o of up.values()) out.set(o.name, { name: o.name, alive: true, since: o.since, pid: o.pid, version: o.version });
    return [...out.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  lease(): LeaseState { return { ttlSec: this.o.ttlSec, ...this.state }; }
  async isAlive(node: string): Promise<boolean> { return (await this.store.nodeLeaseLeft(node)) !== undefined; }
  leaseLeft(node: string): Promise<number | undefined> { return this.store.nodeLeaseLeft(node); }
  health(): { reachable: boolean; heldUntilMs: number } {
    return { reachable: this.state.held && this.reachableAt(performance.now()), heldUntilMs: this.state.held ? this.ackSentAt + this.ttlMs : -Infinity };
  }
  peers(): readonly Peer[] { return this.peerList; }
}

interface ParsedNode { name: string; since?: string; pid?: number; version?: string; peer?: string }
function parseNode(v: string): ParsedNode | undefined {
  try { const o = JSON.parse(v) as Partial<ParsedNode>; return typeof o.name === 'string' ? o as ParsedNode : undefined; } catch { return undefined; }
}

function raceMs<T>(p: Promise<T>, ms: number): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<never>((_, reject) => { t = setTimeout(() => reject(new Error(`etcd did not answer the keepalive within ${ms} ms`)), ms); })]).finally(() => clearTimeout(t));
}
