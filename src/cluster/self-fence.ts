import type { Logger } from 'pino';
import type { Membership } from './membership.js';
import { askPeer, type PeerAnswer } from '../frontends/peer/server.js';

/**
 * Self-fencing of a live node that can no longer renew its lease (cluster mode).
 *
 * The node may count on its lease until the send time of the last keepalive etcd answered plus the TTL
 * (Membership.health().heldUntilMs): etcd cannot have expired it earlier, so no other node can have
 * seen it gone. At that time minus `marginMs` (the self-fence deadline) a node that still has no answer
 * from etcd decides:
 * - every live peer (as the registry last listed them) answered its peer check and none of them
 *   reaches etcd either: etcd is down for everyone. Nobody can take a volume over (a takeover is an etcd
 *   transaction), so the volumes stay mounted and writable; new mounts and creates fail within the
 *   store's bound. This is Patroni's failsafe mode: keep going only while every member confirms.
 * - otherwise (a peer reaches etcd, a peer does not answer, or there is no peer to ask): this node may
 *   be cut off alone, and the others may take its volumes over once its lease expired. It stops writing
 *   to its exclusive volumes (`fence`: the service freezes them) before that can happen, logs it, and
 *   doctor shows it.
 * When etcd answers again, `resume` thaws what this node still holds at the epoch it knew, and leaves
 * what another node took over (a newer epoch) to be torn down without a write.
 */
export type SelfFenceMode = 'ok' | 'etcd-unreachable' | 'etcd-down-everywhere' | 'fenced';

export interface SelfFenceDeps {
  readonly node: string;
  readonly membership: Membership;
  readonly marginMs: number;
  readonly peerTimeoutMs: number;
  readonly log: Logger;
  /** Stops writes to this node's exclusive volumes; returns their names. */
  readonly fence: (reason: string) => Promise<readonly string[]>;
  /** etcd answers again: thaw what this node still holds; returns one line per volume. */
  readonly resume: () => Promise<readonly string[]>;
  readonly ask?: (url: string, timeoutMs: number) => Promise<PeerAnswer | undefined>;
  readonly tickMs?: number;
  readonly now?: () => number;
}

export interface SelfFenceStatus {
  readonly mode: SelfFenceMode;
  readonly since?: string;
  readonly reason?: string;
  readonly volumes: readonly string[];
  /** Seconds until the self-fence deadline (negative: past it), while etcd is unreachable. */
  readonly deadlineInSec?: number;
}

interface Verdict { readonly at: number; readonly everyoneCut: boolean; readonly detail: string }

export class SelfFence {
  private mode: SelfFenceMode = 'ok';
  private since?: string;
  private reason?: string;
  private volumes: readonly string[] = [];
  private verdict?: Verdict;
  private checking?: Promise<void>;
  private busy = false;
  private timer?: NodeJS.Timeout;
  private readonly now: () => number;
  private readonly ask: (url: string, timeoutMs: number) => Promise<PeerAnswer | undefined>;

  constructor(private readonly d: SelfFenceDeps) {
    this.now = d.now ?? (() => performance.now());
    this.ask = d.ask ?? askPeer;
  }

  start(): void {
    this.timer = setInterval(() => { void this.tick(); }, this.d.tickMs ?? 200);
    this.timer.unref();
  }

  stop(): void { clearInterval(this.timer); }

  /** What this node answers a peer: does it reach etcd now? */
  reachesEtcd(): boolean { return this.d.membership.health()?.reachable ?? true; }

  status(): SelfFenceStatus {
    const h = this.d.membership.health();
    return {
      mode: this.mode, volumes: this.volumes,
      ...(this.since ? { since: this.since } : {}), ...(this.reason ? { reason: this.reason } : {}),
      ...(h && !h.reachable && Number.isFinite(h.heldUntilMs) ? { deadlineInSec: Math.round((h.heldUntilMs - this.d.marginMs - this.now()) / 100) / 10 } : {}),
    };
  }

  /** One decision (exported for tests: they drive it with a fake clock). */
  async tick(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try { await this.decide(); } catch (e) {
      this.d.log.error({ op: 'self-fence', node: this.d.node, err: (e as Error).message }, 'self-fence check failed');
    } finally { this.busy = false; }
  }

  private set(mode: SelfFenceMode, reason?: string): void {
    this.mode = mode;
    this.since = mode === 'ok' ? undefined : new Date().toISOString();
    this.reason = reason;
  }

  private async decide(): Promise<void> {
    const h = this.d.membership.health();
    if (!h) return;
    const now = this.now();
    if (h.reachable) {
      if (this.mode === 'fenced') {
        const lines = await this.d.resume();
        this.d.log.warn({ op: 'self-fence', node: this.d.node, outcome: 'resumed', volumes: lines }, 'this node reaches etcd again: self-fence lifted');
        this.volumes = [];
      } else if (this.mode !== 'ok') {
        this.d.log.info({ op: 'self-fence', node: this.d.node, outcome: 'ok' }, 'this node reaches etcd again');
      }
      if (this.mode !== 'ok') this.set('ok');
      this.verdict = undefined;
      return;
    }
    if (this.mode === 'ok') {
      this.set('etcd-unreachable', 'no keepalive of this node\'s lease was answered lately');
      this.d.log.warn({ op: 'self-fence', node: this.d.node, deadlineInSec: Math.round((h.heldUntilMs - this.d.marginMs - now) / 100) / 10 }, 'this node does not reach etcd; asking its peers whether they do');
    }
    if (this.mode === 'fenced') return;
    const fresh = () => (this.verdict && this.now() - this.verdict.at <= 3 * this.d.peerTimeoutMs + 500 ? this.verdict : undefined);
    if (!this.checking && (!this.verdict || now - this.verdict.at > this.d.peerTimeoutMs)) {
      this.checking = this.checkPeers().finally(() => { this.checking = undefined; });
    }
    if (now < h.heldUntilMs - this.d.marginMs) return;
    // At the deadline: decide on a fresh answer of the peers, waiting for the check under way (it is
    // bounded by the peer timeout, well inside the margin).
    if (!fresh() && this.checking) await this.checking;
    const v = fresh();
    if (v?.everyoneCut) {
      if (this.mode !== 'etcd-down-everywhere') {
        this.set('etcd-down-everywhere', v.detail);
        this.d.log.warn({ op: 'self-fence', node: this.d.node, outcome: 'not-fenced', reason: v.detail }, 'etcd is down for every node: nobody can take a volume over, so this node keeps its volumes writable; new mounts and creates fail until etcd is back');
      }
      return;
    }
    const reason = v ? v.detail : 'no peer answered in time';
    this.set('fenced', reason);
    this.volumes = await this.d.fence(reason);
    this.d.log.error({ op: 'self-fence', node: this.d.node, outcome: 'fenced', reason, volumes: this.volumes }, 'this node lost etcd while another node may reach it: writes to its exclusive volumes are stopped (frozen) before its lease can expire for the others');
  }

  private async checkPeers(): Promise<void> {
    const peers = this.d.membership.peers();
    const at = this.now();
    if (peers.length === 0) { this.verdict = { at, everyoneCut: false, detail: 'no other live node to ask whether etcd is down for everyone' }; return; }
    const answers = await Promise.all(peers.map((p) => (p.url ? this.ask(p.url, this.d.peerTimeoutMs) : Promise.resolve(undefined))));
    const parts = peers.map((p, i) => (answers[i] === undefined ? `node ${p.name} did not answer` : answers[i]!.etcd ? `node ${p.name} reaches etcd` : `node ${p.name} cannot reach etcd either`));
    const everyoneCut = answers.every((a) => a !== undefined && !a.etcd);
    this.verdict = { at, everyoneCut, detail: parts.join('; ') };
  }
}
