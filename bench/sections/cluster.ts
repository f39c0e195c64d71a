import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startBallast, type BallastProc } from '../../test/helpers/ballast.js';
import { run, sleep, waitFor } from '../../test/helpers/proc.js';
import { etcdSkipReason, startEtcd, type EtcdCluster } from '../../test/servers/etcd.js';
import { PluginClient } from '../lib/plugin-client.js';
import { median, round, summarize, type Summary } from '../lib/stats.js';
import { figure, type Figure } from '../lib/report.js';
import { loadAvg, mb, memoryOf } from '../lib/proc-status.js';
import { loopsUnder, mountsUnder, removeTree } from '../lib/cleanup.js';
import type { BenchContext, SectionResult } from '../lib/context.js';

export const CLUSTER_DEFAULTS = {
  volumes: 10_000,
  /** Creates in flight per daemon while filling its store (the two daemons are filled one after the other). */
  createConcurrency: 32,
  warmupGets: 2_000,
  warmupLists: 20,
  /** Per daemon and connection mode; daemons and modes alternate request by request (same host load). */
  gets: 5_000,
  /** 500: a p99 of 200 samples is the second-worst one, too noisy for a 1.2x comparison. */
  lists: 500,
  /** Rounds of Mount (first reference) + Unmount (last reference) of a 64M shared block volume, per daemon. */
  attachRounds: 15,
  /** Mount + Unmount pairs of a local volume (no kernel mount), per daemon, keep-alive. */
  localMounts: 300,
  /** 3 members at basePort + 1000*n (client) and +1 (peer): 63379/63380, 64379/64380, 65379/65380. */
  etcdBasePort: 62379,
};
export type ClusterOptions = typeof CLUSTER_DEFAULTS;

type Kind = 'sqlite' | 'etcd';
const KINDS: readonly Kind[] = ['sqlite', 'etcd'];

interface Daemon {
  kind: Kind;
  proc: BallastProc;
  fresh: PluginClient;
  keep: PluginClient;
  imageDir: string;
  mountDir: string;
}

const volName = (i: number) => `cl-${String(i).padStart(5, '0')}`;
const mountId = (tag: string, i: number) => `${tag}-${i.toString(16).padStart(60, '0')}`;

function mountedHere(mp: string): boolean {
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((l) => l.split(' ')[4] === mp);
}

/** Throws with the Err of a plugin answer that has one. */
function checkErr(what: string, body: Buffer): Record<string, unknown> {
  const parsed = JSON.parse(body.toString('utf8') || '{}') as Record<string, unknown>;
  if (parsed.Err) throw new Error(`${what}: ${String(parsed.Err)}`);
  return parsed;
}

/**
 * Cluster store benchmark (issue 8): a real 3-member etcd on loopback and two daemons started side by
 * side, one on the embedded SQLite store and one on the etcd store, each filled with the same 10,000
 * local volumes through VolumeDriver.Create. Then, alternating daemon and connection mode request by
 * request so that both see the same host load: Get and List latency (targets: etcd p99 within 1.2x of
 * SQLite's), Mount and Unmount of a 64M shared block volume (first reference: attach, loop, mount; last:
 * unmount, detach, release), and Mount/Unmount of a local volume (no kernel mount: only the ledger).
 */
export async function clusterSection(ctx: BenchContext, o: ClusterOptions = CLUSTER_DEFAULTS): Promise<Record<string, SectionResult>> {
  const skip = etcdSkipReason();
  if (skip) return { store: { figures: [], details: {}, skipped: skip } };
  const root = mkdtempSync(join(ctx.tmpBase, 'cluster-'));
  ctx.cleanups.add(`cluster root ${root}`, async () => {
    for (const m of mountsUnder(root)) await run(['umount', '-l', '--', m], { timeoutMs: 30_000 });
    for (const dev of await loopsUnder(root)) await run(['losetup', '-d', dev], { timeoutMs: 15_000 });
    await removeTree(root);
  });
  const load: Record<string, number> = { start: loadAvg() };

  // ---- etcd: 3 members on loopback, our children, stopped by PID.
  const tEtcd = performance.now();
  const etcd: EtcdCluster = await startEtcd({ members: 3, basePort: o.etcdBasePort, dir: mkdtempSync(join(root, 'etcd-')) });
  ctx.cleanups.add(`etcd members pids ${etcd.members.map((m) => m.pid()).join(',')}`, () => etcd.stop());
  ctx.log(`  etcd: 3 members healthy at ${etcd.endpoints.join(', ')} (${((performance.now() - tEtcd) / 1000).toFixed(1)} s)`);
  const prefix = `/ballast-bench-${process.pid}/`;

  // ---- two daemons, the same backends, one store each.
  const start = async (kind: Kind): Promise<Daemon> => {
    const dir = join(root, kind);
    const imageDir = join(dir, 'shared-images');
    const mountDir = join(dir, 'shared-mounts');
    mkdirSync(imageDir, { recursive: true });
    const configFile = join(dir, 'config.json');
    writeFileSync(configFile, JSON.stringify({
      node: `bench-${kind}`,
      ...(kind === 'etcd' ? { store: { type: 'etcd', endpoints: etcd.endpoints, prefix } } : { store: { type: 'sqlite' } }),
      defaultBackend: 'local',
      backends: {
        local: { type: 'local' },
        // On one machine this directory is storage "every node" reaches; shared: true makes the etcd
        // daemon attach the volume (compare-and-swap on its attachments) before it mounts it.
        shared: { type: 'block', shared: true, imageDir, mountDir },
      },
    }, null, 2));
    const proc = await startBallast({ root: join(dir, 'root'), socket: join(dir, 'plugin.sock'), configFile, extraArgs: ['--log-level', 'info'] });
    ctx.cleanups.add(`${kind} daemon pid ${proc.pid()}`, async () => { await proc.stop(); });
    return { kind, proc, fresh: new PluginClient(proc.socket, 'fresh'), keep: new PluginClient(proc.socket, 'keepAlive'), imageDir, mountDir };
  };
  const sq = await start('sqlite');
  const et = await start('etcd');
  const daemons: Record<Kind, Daemon> = { sqlite: sq, etcd: et };
  ctx.cleanups.add('plugin clients', () => { for (const d of [sq, et]) { d.fresh.close(); d.keep.close(); } });
  for (const d of [sq, et]) {
    const scope = (checkErr('Capabilities', (await d.fresh.timed('VolumeDriver.Capabilities')).res.body) as { Capabilities?: { Scope?: string } }).Capabilities?.Scope;
    ctx.log(`  ${d.kind} daemon pid ${d.proc.pid()} serving, Scope ${scope}`);
    if (scope !== (d.kind === 'etcd' ? 'global' : 'local')) throw new Error(`the ${d.kind} daemon answers Scope ${scope}: is it on the ${d.kind} store?`);
  }

  // ---- fill each store through VolumeDriver.Create, one daemon after the other.
  const fill: Record<Kind, { seconds: number; opsPerSec: number; latencyMs: Summary }> = {} as never;
  for (const d of [sq, et]) {
    const ms: number[] = [];
    let next = 0;
    const t0 = performance.now();
    let lastLog = t0;
    await Promise.all(Array.from({ length: o.createConcurrency }, async () => {
      while (next < o.volumes) {
        const i = next++;
        const r = await d.fresh.timed('VolumeDriver.Create', { Name: volName(i), Opts: null });
        checkErr(`${d.kind} Create ${volName(i)}`, r.res.body);
        ms.push(r.ms);
        if (performance.now() - lastLog > 10_000) { lastLog = performance.now(); ctx.log(`    ${d.kind}: ${ms.length} created`); }
      }
    }));
    const sec = (performance.now() - t0) / 1000;
    fill[d.kind] = { seconds: round(sec, 2), opsPerSec: round(o.volumes / sec, 0), latencyMs: summarize(ms) };
    ctx.log(`  ${d.kind}: created ${o.volumes} volumes in ${sec.toFixed(1)} s (${(o.volumes / sec).toFixed(0)}/s with ${o.createConcurrency} in flight; Create p50 ${fill[d.kind].latencyMs.p50} ms, p99 ${fill[d.kind].latencyMs.p99} ms)`);
  }

  // Sanity: each List holds exactly what was made, and Get answers the right volume.
  const listBytes: Record<Kind, number> = { sqlite: 0, etcd: 0 };
  for (const d of [sq, et]) {
    await waitFor(async () => {
      const r = await d.fresh.timed('VolumeDriver.List');
      const n = (checkErr('List', r.res.body) as { Volumes: unknown[] }).Volumes.length;
      if (n > o.volumes) throw new Error(`${d.kind} List returned ${n} volumes, expected ${o.volumes}`);
      listBytes[d.kind] = r.res.body.length;
      return n === o.volumes;
    }, `${d.kind} List to hold ${o.volumes} volumes`, 30_000, 200);
    const probe = volName(4242 % o.volumes);
    const got = checkErr('Get', (await d.fresh.timed('VolumeDriver.Get', { Name: probe })).res.body) as { Volume?: { Name: string } };
    if (got.Volume?.Name !== probe) throw new Error(`${d.kind} Get returned ${JSON.stringify(got).slice(0, 200)}`);
  }
  const randomName = () => volName(Math.floor(Math.random() * o.volumes));

  // ---- warm-up of both daemons and of this client, untimed.
  for (let i = 0; i < o.warmupGets; i++) for (const d of [sq, et]) await (i % 2 ? d.keep : d.fresh).timed('VolumeDriver.Get', { Name: randomName() });
  for (let i = 0; i < o.warmupLists; i++) for (const d of [sq, et]) await (i % 2 ? d.keep : d.fresh).timed('VolumeDriver.List');
  load.measured = loadAvg();

  // ---- Get and List: daemon order flips every iteration; within it, new connection then keep-alive.
  type Samples = Record<Kind, { fresh: number[]; keep: number[] }>;
  const empty = (): Samples => ({ sqlite: { fresh: [], keep: [] }, etcd: { fresh: [], keep: [] } });
  const order = (i: number) => (i % 2 ? [et, sq] : [sq, et]);
  const gets = empty();
  for (let i = 0; i < o.gets; i++) {
    for (const d of order(i)) {
      gets[d.kind].fresh.push((await d.fresh.timed('VolumeDriver.Get', { Name: randomName() })).ms);
      gets[d.kind].keep.push((await d.keep.timed('VolumeDriver.Get', { Name: randomName() })).ms);
    }
  }
  const lists = empty();
  for (let i = 0; i < o.lists; i++) {
    for (const d of order(i)) {
      lists[d.kind].fresh.push((await d.fresh.timed('VolumeDriver.List')).ms);
      lists[d.kind].keep.push((await d.keep.timed('VolumeDriver.List')).ms);
    }
  }
  // Heap size drives the GC pauses behind List's p99: the etcd daemon also holds the etcd client and its watch.
  const rss = Object.fromEntries(KINDS.map((k) => { const m = memoryOf(daemons[k].proc.pid()); return [k, { rssMB: mb(m.rss), hwmMB: mb(m.hwm) }]; })) as Record<Kind, { rssMB: number; hwmMB: number }>;
  const sum = (s: Samples) => ({
    sqlite: { freshConnection: summarize(s.sqlite.fresh), keepAlive: summarize(s.sqlite.keep) },
    etcd: { freshConnection: summarize(s.etcd.fresh), keepAlive: summarize(s.etcd.keep) },
  });
  const getMs = sum(gets);
  const listMs = sum(lists);
  for (const [what, s] of [['Get', getMs], ['List', listMs]] as const) {
    for (const mode of ['freshConnection', 'keepAlive'] as const) {
      ctx.log(`  ${what} ${mode === 'freshConnection' ? 'new connection' : 'keep-alive    '}: sqlite p50 ${s.sqlite[mode].p50} / p99 ${s.sqlite[mode].p99} ms, etcd p50 ${s.etcd[mode].p50} / p99 ${s.etcd[mode].p99} ms, p99 ratio ${(s.etcd[mode].p99 / s.sqlite[mode].p99).toFixed(2)}`);
    }
  }

  const store: Figure[] = [];
  const ratioOf = (a: number, b: number) => round(a / b, 3);
  store.push(figure('load', `time to create ${o.volumes} volumes, sqlite (${o.createConcurrency} in flight)`, fill.sqlite.seconds, 's', undefined, `${fill.sqlite.opsPerSec} ops/s; Create p50 ${fill.sqlite.latencyMs.p50} ms, p99 ${fill.sqlite.latencyMs.p99} ms`));
  store.push(figure('load', `time to create ${o.volumes} volumes, etcd (${o.createConcurrency} in flight)`, fill.etcd.seconds, 's', undefined, `${fill.etcd.opsPerSec} ops/s; Create p50 ${fill.etcd.latencyMs.p50} ms, p99 ${fill.etcd.latencyMs.p99} ms`));
  store.push(figure('load', 'create time ratio etcd/sqlite', ratioOf(fill.etcd.seconds, fill.sqlite.seconds), ''));
  for (const [what, s, n] of [['Get', getMs, o.gets], [`List of ${o.volumes}`, listMs, o.lists]] as const) {
    for (const [mode, label] of [['freshConnection', 'new connection'], ['keepAlive', 'keep-alive']] as const) {
      store.push(figure('store', `${what} p50, ${label}, sqlite (${n} each)`, s.sqlite[mode].p50, 'ms'));
      store.push(figure('store', `${what} p50, ${label}, etcd`, s.etcd[mode].p50, 'ms'));
      store.push(figure('store', `${what} p99, ${label}, sqlite`, s.sqlite[mode].p99, 'ms'));
      store.push(figure('store', `${what} p99, ${label}, etcd`, s.etcd[mode].p99, 'ms'));
      store.push(figure('store', `${what} p99 ratio etcd/sqlite, ${label}`, ratioOf(s.etcd[mode].p99, s.sqlite[mode].p99), '', { op: '<=', value: 1.2 },
        `p50 ratio ${ratioOf(s.etcd[mode].p50, s.sqlite[mode].p50)}, p90 ratio ${ratioOf(s.etcd[mode].p90, s.sqlite[mode].p90)}, mean ratio ${ratioOf(s.etcd[mode].mean, s.sqlite[mode].mean)}`));
    }
  }
  store.push(figure('store', `daemon RSS with ${o.volumes} volumes (after Get/List), sqlite`, rss.sqlite.rssMB, 'MB', undefined, `peak ${rss.sqlite.hwmMB} MB`));
  store.push(figure('store', `daemon RSS with ${o.volumes} volumes (after Get/List), etcd`, rss.etcd.rssMB, 'MB', undefined, `peak ${rss.etcd.hwmMB} MB`));

  // ---- attach + mount: a 64M shared block volume, Mount as the first reference and Unmount as the last.
  const attach: Figure[] = [];
  const attachDetails: Record<string, unknown> = {};
  if (process.getuid?.() !== 0) {
    attachDetails.block = 'skipped: needs root (loop devices, mount)';
  } else {
    const vol = 'cl-attach';
    for (const d of [sq, et]) {
      await d.fresh.ok('VolumeDriver.Create', { Name: vol, Opts: { backend: 'shared', size: '64M' } });
      ctx.cleanups.add(`${d.kind} volume ${vol}`, async () => {
        await d.fresh.post('VolumeDriver.Unmount', { Name: vol, ID: mountId('att', 0) }).catch(() => undefined);
        await d.fresh.post('VolumeDriver.Remove', { Name: vol }).catch(() => undefined);
      });
    }
    const ms: Record<Kind, { mount: number[]; unmount: number[] }> = { sqlite: { mount: [], unmount: [] }, etcd: { mount: [], unmount: [] } };
    let holders: unknown;
    // Round 0 is a warm-up (first mkfs'd mount, JIT), not counted.
    for (let r = 0; r <= o.attachRounds; r++) {
      for (const d of order(r)) {
        const id = mountId('att', 0);
        const m = await d.keep.timed('VolumeDriver.Mount', { Name: vol, ID: id });
        const mp = String(checkErr(`${d.kind} Mount ${vol}`, m.res.body).Mountpoint);
        if (!mountedHere(mp)) throw new Error(`${d.kind}: Mount of ${vol} answered ${mp}, which is not mounted`);
        if (d.kind === 'etcd' && r === 1) {
          const g = checkErr('Get', (await d.keep.timed('VolumeDriver.Get', { Name: vol })).res.body) as { Volume: { Status: { attachments?: unknown } } };
          holders = g.Volume.Status.attachments;
          if (!Array.isArray(holders) || holders.length !== 1) throw new Error(`etcd: ${vol} mounted but its attachments are ${JSON.stringify(holders)}`);
        }
        const u = await d.keep.timed('VolumeDriver.Unmount', { Name: vol, ID: id });
        checkErr(`${d.kind} Unmount ${vol}`, u.res.body);
        if (mountedHere(mp)) throw new Error(`${d.kind}: ${mp} is still mounted after the last Unmount`);
        if (r > 0) { ms[d.kind].mount.push(m.ms); ms[d.kind].unmount.push(u.ms); }
      }
      await sleep(20);
    }
    for (const d of [sq, et]) {
      await d.fresh.ok('VolumeDriver.Remove', { Name: vol });
      const left = await loopsUnder(d.imageDir);
      if (left.length) throw new Error(`${d.kind}: loop devices left on ${d.imageDir}: ${left.join(', ')}`);
    }
    const s = { sqlite: { mount: summarize(ms.sqlite.mount), unmount: summarize(ms.sqlite.unmount) }, etcd: { mount: summarize(ms.etcd.mount), unmount: summarize(ms.etcd.unmount) } };
    attachDetails.block = { volume: '64M block, shared: true, ext4, thick', rounds: o.attachRounds, warmupRounds: 1, request: 'keep-alive', etcdHoldersWhileMounted: holders, ...s };
    const mRatio = ratioOf(median(ms.etcd.mount), median(ms.sqlite.mount));
    const uRatio = ratioOf(median(ms.etcd.unmount), median(ms.sqlite.unmount));
    ctx.log(`  block Mount (first reference) median: sqlite ${s.sqlite.mount.p50} ms, etcd ${s.etcd.mount.p50} ms (attach + loop + mount), ratio ${mRatio}`);
    ctx.log(`  block Unmount (last reference) median: sqlite ${s.sqlite.unmount.p50} ms, etcd ${s.etcd.unmount.p50} ms (unmount + detach + release), ratio ${uRatio}`);
    attach.push(figure('attach', `block 64M Mount, first reference, median of ${o.attachRounds}, sqlite`, s.sqlite.mount.p50, 'ms', undefined, `p90 ${s.sqlite.mount.p90} ms; loop setup + mount`));
    attach.push(figure('attach', `block 64M Mount, first reference, median of ${o.attachRounds}, etcd`, s.etcd.mount.p50, 'ms', undefined, `p90 ${s.etcd.mount.p90} ms; attach (compare-and-swap in etcd) + loop setup + mount`));
    attach.push(figure('attach', 'block Mount ratio etcd/sqlite', mRatio, ''));
    attach.push(figure('attach', `block 64M Unmount, last reference, median of ${o.attachRounds}, sqlite`, s.sqlite.unmount.p50, 'ms', undefined, `p90 ${s.sqlite.unmount.p90} ms`));
    attach.push(figure('attach', `block 64M Unmount, last reference, median of ${o.attachRounds}, etcd`, s.etcd.unmount.p50, 'ms', undefined, `p90 ${s.etcd.unmount.p90} ms; unmount + loop detach + release in etcd`));
    attach.push(figure('attach', 'block Unmount ratio etcd/sqlite', uRatio, ''));
  }

  // ---- local volume Mount/Unmount: no kernel mount, only the ledger (and the journal) in the store.
  {
    const vol = volName(7 % o.volumes);
    const ms: Record<Kind, { mount: number[]; unmount: number[] }> = { sqlite: { mount: [], unmount: [] }, etcd: { mount: [], unmount: [] } };
    for (let i = 0; i < 30; i++) for (const d of [sq, et]) { await d.keep.ok('VolumeDriver.Mount', { Name: vol, ID: mountId('warm', i) }); await d.keep.ok('VolumeDriver.Unmount', { Name: vol, ID: mountId('warm', i) }); }
    for (let i = 0; i < o.localMounts; i++) {
      for (const d of order(i)) {
        const id = mountId('loc', i);
        const m = await d.keep.timed('VolumeDriver.Mount', { Name: vol, ID: id });
        checkErr(`${d.kind} Mount ${vol}`, m.res.body);
        const u = await d.keep.timed('VolumeDriver.Unmount', { Name: vol, ID: id });
        checkErr(`${d.kind} Unmount ${vol}`, u.res.body);
        ms[d.kind].mount.push(m.ms); ms[d.kind].unmount.push(u.ms);
      }
    }
    const s = { sqlite: { mount: summarize(ms.sqlite.mount), unmount: summarize(ms.sqlite.unmount) }, etcd: { mount: summarize(ms.etcd.mount), unmount: summarize(ms.etcd.unmount) } };
    attachDetails.local = { pairs: o.localMounts, request: 'keep-alive', ...s };
    const mRatio = ratioOf(s.etcd.mount.p50, s.sqlite.mount.p50);
    const uRatio = ratioOf(s.etcd.unmount.p50, s.sqlite.unmount.p50);
    ctx.log(`  local Mount p50: sqlite ${s.sqlite.mount.p50} ms, etcd ${s.etcd.mount.p50} ms, ratio ${mRatio}; Unmount p50 ${s.sqlite.unmount.p50} / ${s.etcd.unmount.p50} ms, ratio ${uRatio}`);
    attach.push(figure('attach', `local Mount p50, no kernel mount (${o.localMounts}), sqlite`, s.sqlite.mount.p50, 'ms', undefined, `p99 ${s.sqlite.mount.p99} ms`));
    attach.push(figure('attach', `local Mount p50, no kernel mount (${o.localMounts}), etcd`, s.etcd.mount.p50, 'ms', undefined, `p99 ${s.etcd.mount.p99} ms; the ledger entry is an etcd transaction`));
    attach.push(figure('attach', 'local Mount p50 ratio etcd/sqlite', mRatio, ''));
    attach.push(figure('attach', `local Unmount p50 (${o.localMounts}), sqlite`, s.sqlite.unmount.p50, 'ms', undefined, `p99 ${s.sqlite.unmount.p99} ms`));
    attach.push(figure('attach', `local Unmount p50 (${o.localMounts}), etcd`, s.etcd.unmount.p50, 'ms', undefined, `p99 ${s.etcd.unmount.p99} ms`));
    attach.push(figure('attach', 'local Unmount p50 ratio etcd/sqlite', uRatio, ''));
  }
  load.end = loadAvg();

  return {
    store: {
      figures: store,
      details: {
        volumes: o.volumes, options: o, loadAvg1m: load,
        etcd: { members: etcd.endpoints, version: (await run(['/usr/bin/etcd', '--version'], { timeoutMs: 10_000 })).stdout.split('\n')[0], prefix },
        daemons: Object.fromEntries(KINDS.map((k) => [k, { pid: daemons[k].proc.pid(), node: `bench-${k}` }])),
        client: 'POST with content-length and no content type, as dockerd sends; new unix-socket connection per request (agent:false) and one reused keep-alive connection; daemon order flips every request pair',
        create: fill, listResponseBytes: listBytes, getMs, listMs, daemonMemoryAfterGetList: rss,
      },
    },
    attach: { figures: attach, details: attachDetails },
  };
}
