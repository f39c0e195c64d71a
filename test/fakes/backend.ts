import type { Backend, BackendContext, BackendFactory, OptionDoc } from '../../src/backends/types.js';
import type { VolumeRecord } from '../../src/core/types.js';
import { checkOptionKeys } from '../../src/backends/options.js';
import { parseSize } from '../../src/core/validate.js';

/** A backend that keeps its "storage" in memory and records every call; for unit tests of the core. */
export class FakeBackend implements Backend {
  readonly type = 'fake';
  readonly shareable = true;
  readonly optionDocs: readonly OptionDoc[] = [{ name: 'size', help: 'size' }, { name: 'color', help: 'a color' }];
  readonly calls: string[] = [];
  readonly provisioned = new Set<string>();
  readonly published = new Set<string>();
  failNext: Partial<Record<'provision' | 'publish' | 'unpublish' | 'deprovision', Error>> = {};
  delayMs = 0;
  /** Highest number of calls in flight at once, per volume and over all volumes. */
  maxInFlight = 0;
  readonly maxInFlightPerVolume = new Map<string, number>();
  private inFlight = 0;
  private readonly inFlightPer = new Map<string, number>();

  constructor(readonly name = 'fake') {}

  parseOptions(opts: Readonly<Record<string, string>>) {
    checkOptionKeys(this.name, opts, this.optionDocs);
    return { ...(opts.size ? { size: parseSize(opts.size) } : {}), color: opts.color ?? 'blue' };
  }
  place(name: string) { return { mountpoint: `/fake/${name}`, details: {} }; }
  private async step(kind: keyof FakeBackend['failNext'], name: string) {
    this.calls.push(`${kind}:${name}`);
    this.inFlight++; this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    const per = (this.inFlightPer.get(name) ?? 0) + 1;
    this.inFlightPer.set(name, per);
    this.maxInFlightPerVolume.set(name, Math.max(per, this.maxInFlightPerVolume.get(name) ?? 0));
    try {
      if (this.delayMs) await new Promise((r) => setTimeout(r, this.delayMs));
    } finally {
      this.inFlight--; this.inFlightPer.set(name, per - 1);
    }
    const e = this.failNext[kind];
    if (e) { delete this.failNext[kind]; throw e; }
  }
  async provision(v: VolumeRecord) { await this.step('provision', v.name); this.provisioned.add(v.name); return { made: true }; }
  async deprovision(v: VolumeRecord) { await this.step('deprovision', v.name); this.provisioned.delete(v.name); }
  async publish(v: VolumeRecord) {
    await this.step('publish', v.name);
    if (!this.provisioned.has(v.name)) throw new Error(`fake: ${v.name} not provisioned`);
    this.published.add(v.name);
  }
  async unpublish(v: VolumeRecord) { await this.step('unpublish', v.name); this.published.delete(v.name); }
  probe(v: VolumeRecord): 'mounted' | 'unmounted' { return this.published.has(v.name) ? 'mounted' : 'unmounted'; }
  status(v: VolumeRecord) { return { color: v.spec.color }; }
}

export function fakeFactory(backend: FakeBackend): BackendFactory {
  return { type: 'fake', configKeys: [], create: (_i: string, _c: unknown, _ctx: BackendContext) => backend };
}
