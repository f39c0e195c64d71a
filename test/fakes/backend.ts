import { MULTI_NODE_MULTI_WRITER, type AccessModes, type Backend, type BackendContext, type BackendFactory, type HostSnapshot, type OptionDoc } from '../../src/backends/types.js';
import type { VolumeRecord } from '../../src/core/types.js';
import { checkOptionKeys } from '../../src/backends/options.js';
import { parseSize } from '../../src/core/validate.js';

/**
 * A backend that keeps its "storage" in memory and records every call; for unit tests of the core.
 *
 * The call log and `failNext` use the Docker path's words: `publish:<name>` is a stage at the volume's
 * mountpoint (where the Docker path stages), `unpublish:<name>` its unstage; a stage or unstage at any
 * other path is logged as `stage:<name>@<path>` / `unstage:<name>@<path>`. `published` holds the volumes
 * staged at their mountpoint; `staged` every (volume, path) staged.
 */
export class FakeBackend implements Backend {
  readonly type = 'fake';
  access: AccessModes = MULTI_NODE_MULTI_WRITER;
  readonly optionDocs: readonly OptionDoc[] = [{ name: 'size', help: 'size' }, { name: 'color', help: 'a color' }];
  readonly calls: string[] = [];
  readonly provisioned = new Set<string>();
  readonly published = new Set<string>();
  /** `<name>@<path>` of every staging, at the mountpoint or elsewhere. */
  readonly staged = new Set<string>();
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
  private async step(kind: keyof FakeBackend['failNext'], name: string, label = `${kind}:${name}`) {
    this.calls.push(label);
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
  async stage(v: VolumeRecord, stagingPath: string) {
    const atMountpoint = stagingPath === v.mountpoint;
    await this.step('publish', v.name, atMountpoint ? `publish:${v.name}` : `stage:${v.name}@${stagingPath}`);
    if (!this.provisioned.has(v.name)) throw new Error(`fake: ${v.name} not provisioned`);
    this.staged.add(`${v.name}@${stagingPath}`);
    if (atMountpoint) this.published.add(v.name);
  }
  async unstage(v: VolumeRecord, stagingPath: string) {
    const atMountpoint = stagingPath === v.mountpoint;
    await this.step('unpublish', v.name, atMountpoint ? `unpublish:${v.name}` : `unstage:${v.name}@${stagingPath}`);
    this.staged.delete(`${v.name}@${stagingPath}`);
    if (atMountpoint) this.published.delete(v.name);
  }
  probe(v: VolumeRecord, stagingPath: string, _snap?: HostSnapshot): 'mounted' | 'unmounted' {
    if (stagingPath === v.mountpoint) return this.published.has(v.name) ? 'mounted' : 'unmounted';
    return this.staged.has(`${v.name}@${stagingPath}`) ? 'mounted' : 'unmounted';
  }
  status(v: VolumeRecord) { return { color: v.spec.color }; }
}

export function fakeFactory(backend: FakeBackend): BackendFactory {
  return { type: 'fake', configKeys: [], create: (_i: string, _c: unknown, _ctx: BackendContext) => backend };
}
