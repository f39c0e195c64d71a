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
}

export class LocalMembership implements Membership {
  private readonly since = new Date().toISOString();
  constructor(readonly node: string, private readonly version: string) {}
  async start(): Promise<void> {}
  async stop(): Promise<void> {}
  async nodes(): Promise<NodeInfo[]> { return [{ name: this.node, alive: true, since: this.since, pid: process.pid, version: this.version }]; }
  lease(): undefined { return undefined; }
}

/**
 * Registration in etcd: the key `nodes/<name>` under the store's prefix, bound to a lease of `ttlSec`
 * that the etcd client keeps alive (it sends keepalives at a third of the TTL). When etcd says the
 * lease is gone (it expired while this node could not reach etcd), a new one is granted and the key
 * written again, with a log line; the time it was lost is kept for doctor.
 */
export class EtcdMembership implements Membership {
  private current?: Lease;
  private state: { held: boolean; renewedAt?: string; lostAt?: string; error?: string } = { held: false };
  private stopped = false;
  private readonly since = new Date().toISOString();
  private retry?: NodeJS.Timeout;

  constructor(readonly node: string, private readonly store: EtcdStore, private readonly ttlSec: number, private readonly version: string, private readonly log: Logger) {}

  async start(): Promise<void> { await this.register(); }

  private async register(): Promise<void> {
    const lease = this.store.nodeLease(this.ttlSec);
    this.current = lease;
    lease.on('keepaliveSucceeded', () => { this.state = { ...this.state, held: true, renewedAt: new Date().toISOString(), error: undefined }; });
    lease.on('lost', (err: Error) => {
      if (this.stopped || this.current !== lease) return;
      this.state = { ...this.state, held: false, lostAt: new Date().toISOString(), error: err.message };
      this.log.error({ op: 'lease', node: this.node, ttlSec: this.ttlSec, err: err.message, outcome: 'lost' }, 'this node lost its etcd lease; registering again');
      this.scheduleRetry(0);
    });
    const value = JSON.stringify({ name: this.node, since: this.since, pid: process.pid, version: this.version });
    await this.store.markKnown(this.node, value);
    await lease.put(this.store.nodeKey(this.node)).value(value);
    this.state = { ...this.state, held: true, renewedAt: new Date().toISOString(), error: undefined };
    this.log.info({ op: 'lease', node: this.node, ttlSec: this.ttlSec, outcome: 'ok' }, 'registered in the cluster');
  }

  private scheduleRetry(ms: number): void {
    if (this.stopped) return;
    clearTimeout(this.retry);
    this.retry = setTimeout(() => {
      this.register().catch((e: Error) => {
        this.state = { ...this.state, held: false, error: e.message };
        this.scheduleRetry(Math.min(5_000, Math.max(500, this.ttlSec * 250)));
      });
    }, ms);
    this.retry.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.retry);
    await this.current?.revoke().catch(() => undefined);
  }

  /** Every node that ever registered: up while its lease-bound key exists, down otherwise. */
  async nodes(): Promise<NodeInfo[]> {
    const { alive, known } = await this.store.readNodes();
    const parse = (v: string) => { try { const o = JSON.parse(v) as { name?: unknown; since?: string; pid?: number; version?: string }; return typeof o.name === 'string' ? o as { name: string; since?: string; pid?: number; version?: string } : undefined; } catch { return undefined; } };
    const up = new Map<string, { name: string; since?: string; pid?: number; version?: string }>();
    for (const v of Object.values(alive)) { const o = parse(v); if (o) up.set(o.name, o); }
    const out = new Map<string, NodeInfo>();
    for (const v of Object.values(known)) {
      const o = parse(v);
      if (o && !up.has(o.name)) out.set(o.name, { name: o.name, alive: false, version: o.version });
    }
    for (const o of up.values()) out.set(o.name, { name: o.name, alive: true, since: o.since, pid: o.pid, version: o.version });
    return [...out.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  lease(): LeaseState { return { ttlSec: this.ttlSec, ...this.state }; }
}
