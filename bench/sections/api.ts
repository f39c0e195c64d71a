import { mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { startBallast } from '../../test/helpers/ballast.js';
import { sleep } from '../../test/helpers/proc.js';
import { PluginClient } from '../lib/plugin-client.js';
import { summarize, round } from '../lib/stats.js';
import { figure, type Figure } from '../lib/report.js';
import { cpuMsOf, loadAvg, memoryOf, mb } from '../lib/proc-status.js';
import { removeTree } from '../lib/cleanup.js';
import type { BenchContext, SectionResult } from '../lib/context.js';

export const API_DEFAULTS = {
  volumes: 10_000,
  /** Creates sent one at a time (as dockerd does) before the rest go in parallel to fill the store quickly. */
  sequentialCreates: 1_000,
  createConcurrency: 16,
  warmupGets: 3_000,
  warmupLists: 20,
  /** Per connection mode; the two modes alternate request by request so both see the same host load. */
  gets: 5_000,
  lists: 200,
  /** Lists each right after a Create (untimed, removed again untimed): nothing cached can answer them. */
  coldLists: 30,
  stormGets: 20_000,
  stormConcurrency: 64,
};
export type ApiOptions = typeof API_DEFAULTS;

/** A variant launch of the same workload, reported for its memory only (no targets). */
export interface ApiVariant { label: string; env: NodeJS.ProcessEnv }

const volName = (i: number) => `bench-${String(i).padStart(5, '0')}`;

/**
 * Section 1 (plugin API latency with 10,000 volumes) and section 4 (daemon RSS). One daemon:
 * its idle RSS is read on the fresh, empty daemon, then the store is filled through
 * VolumeDriver.Create, and the loaded RSS is read after the Get/List runs.
 */
export async function apiSection(ctx: BenchContext, o: ApiOptions = API_DEFAULTS, variant?: ApiVariant): Promise<{ api: SectionResult; rss: SectionResult }> {
  const root = mkdtempSync(join(ctx.tmpBase, 'api-'));
  ctx.cleanups.add(`api root ${root}`, () => removeTree(root));
  // Socket inside the root: no dockerd takes part here, so nothing needs to find it in /run/docker/plugins.
  const b = await startBallast({ root, socket: join(root, 'plugin.sock'), extraArgs: ['--log-level', 'info'], env: variant?.env });
  const stopDaemon = ctx.cleanups.add(`api daemon pid ${b.pid()}`, async () => { await b.stop(); });
  const pid = b.pid();
  const fresh = new PluginClient(b.socket, 'fresh');
  const keep = new PluginClient(b.socket, 'keepAlive');
  const api: Figure[] = [];
  const rss: Figure[] = [];
  const load: Record<string, number> = { start: loadAvg() };

  // ---- section 4, idle: fresh daemon, empty store, startup settled.
  await sleep(1000);
  const idle = memoryOf(pid);
  ctx.log(`  idle daemon RSS ${mb(idle.rss)} MB`);

  // ---- fill the store through the plugin API.
  const createMs: number[] = [];
  const tSeq = performance.now();
  for (let i = 0; i < o.sequentialCreates; i++) {
    const t = performance.now();
    await fresh.ok('VolumeDriver.Create', { Name: volName(i), Opts: null });
    createMs.push(performance.now() - t);
  }
  const seqSec = (performance.now() - tSeq) / 1000;
  let next = o.sequentialCreates;
  const tPar = performance.now();
  await Promise.all(Array.from({ length: o.createConcurrency }, async () => {
    while (next < o.volumes) await fresh.ok('VolumeDriver.Create', { Name: volName(next++), Opts: null });
  }));
  const parSec = (performance.now() - tPar) / 1000;
  const seqRate = o.sequentialCreates / seqSec;
  const parRate = (o.volumes - o.sequentialCreates) / parSec;
  ctx.log(`  created ${o.volumes} volumes: ${seqRate.toFixed(0)}/s sequential, ${parRate.toFixed(0)}/s with ${o.createConcurrency} in flight (${(seqSec + parSec).toFixed(1)} s)`);

  // Sanity: the store holds exactly what we made, and Get answers the right volume.
  const listed = JSON.parse((await fresh.timed('VolumeDriver.List')).res.body.toString('utf8')) as { Volumes: { Name: string }[] };
  if (listed.Volumes.length !== o.volumes) throw new Error(`List returned ${listed.Volumes.length} volumes, expected ${o.volumes}`);
  const probe = volName(4242 % o.volumes);
  const got = JSON.parse((await fresh.timed('VolumeDriver.Get', { Name: probe })).res.body.toString('utf8')) as { Volume?: { Name: string } };
  if (got.Volume?.Name !== probe) throw new Error(`Get returned ${JSON.stringify(got).slice(0, 200)}`);

  const randomName = () => volName(Math.floor(Math.random() * o.volumes));

  // ---- warm-up (JIT of daemon and client; a long-running daemon is warm), untimed.
  for (let i = 0; i < o.warmupGets; i++) await (i % 2 ? keep : fresh).timed('VolumeDriver.Get', { Name: randomName() });
  for (let i = 0; i < o.warmupLists; i++) await (i % 2 ? keep : fresh).timed('VolumeDriver.List');
  load.measured = loadAvg();

  // ---- Get latency: new connection per request and keep-alive, alternating.
  const getF: number[] = [];
  const getK: number[] = [];
  let cpu0 = cpuMsOf(pid);
  for (let i = 0; i < o.gets; i++) {
    getF.push((await fresh.timed('VolumeDriver.Get', { Name: randomName() })).ms);
    getK.push((await keep.timed('VolumeDriver.Get', { Name: randomName() })).ms);
  }
  const getCpuMs = (cpuMsOf(pid) - cpu0) / (2 * o.gets);
  const getFresh = summarize(getF);
  const getKeep = summarize(getK);
  ctx.log(`  Get  p50 ${getFresh.p50} ms  p99 ${getFresh.p99} ms (new connection each); keep-alive p50 ${getKeep.p50} ms  p99 ${getKeep.p99} ms`);

  // ---- List of all volumes, alternating modes; the store does not change in between.
  const listF: number[] = [];
  const listK: number[] = [];
  let bytes = 0;
  cpu0 = cpuMsOf(pid);
  for (let i = 0; i < o.lists; i++) {
    const r = await fresh.timed('VolumeDriver.List');
    listF.push(r.ms); bytes = r.res.body.length;
    listK.push((await keep.timed('VolumeDriver.List')).ms);
  }
  const listCpuMs = (cpuMsOf(pid) - cpu0) / (2 * o.lists);
  const listFresh = summarize(listF);
  const listKeep = summarize(listK);
  ctx.log(`  List p50 ${listFresh.p50} ms  p99 ${listFresh.p99} ms (${(bytes / 1e6).toFixed(2)} MB response); keep-alive p99 ${listKeep.p99} ms`);

  // ---- List right after a change: Create (untimed), List (timed), Remove (untimed).
  const listC: number[] = [];
  for (let i = 0; i < o.coldLists; i++) {
    const name = `cold-${i}`;
    await fresh.ok('VolumeDriver.Create', { Name: name, Opts: null });
    listC.push((await fresh.timed('VolumeDriver.List')).ms);
    await fresh.ok('VolumeDriver.Remove', { Name: name });
  }
  const listCold = summarize(listC);
  ctx.log(`  List right after a Create: p50 ${listCold.p50} ms  p99 ${listCold.p99} ms`);

  // ---- 64-way concurrent Get storm, new connection per request.
  let issued = 0;
  const stormMs: number[] = [];
  cpu0 = cpuMsOf(pid);
  const tStorm = performance.now();
  await Promise.all(Array.from({ length: o.stormConcurrency }, async () => {
    while (issued < o.stormGets) {
      issued++;
      stormMs.push((await fresh.timed('VolumeDriver.Get', { Name: randomName() })).ms);
    }
  }));
  const stormSec = (performance.now() - tStorm) / 1000;
  const stormCpuMs = (cpuMsOf(pid) - cpu0) / o.stormGets;
  const storm = { ...summarize(stormMs), opsPerSec: round(o.stormGets / stormSec, 0) };
  ctx.log(`  Get storm ${storm.opsPerSec} ops/s with ${o.stormConcurrency} in flight`);

  // ---- section 4, loaded: after the Get/List runs, 10,000 volumes in the store.
  const loaded = memoryOf(pid);
  load.end = loadAvg();
  ctx.log(`  loaded daemon RSS ${mb(loaded.rss)} MB (peak ${mb(loaded.hwm)} MB)`);

  fresh.close(); keep.close();
  await stopDaemon();

  if (variant) {
    const tag = ` [${variant.label}]`;
    rss.push(figure('rss', `daemon RSS idle${tag}`, mb(idle.rss), 'MB', undefined, 'variant launch, for comparison only; the targets apply to the default launch above'));
    rss.push(figure('rss', `daemon RSS with ${o.volumes} volumes${tag}`, mb(loaded.rss), 'MB'));
    return {
      api: { figures: [], details: {} },
      rss: { figures: rss, details: { variant: variant.label, env: variant.env, idle: { rssMB: mb(idle.rss), hwmMB: mb(idle.hwm) }, loaded: { rssMB: mb(loaded.rss), hwmMB: mb(loaded.hwm) }, getMs: { freshConnection: getFresh, keepAlive: getKeep }, listMs: { freshConnection: listFresh }, storm } },
    };
  }

  const fresh1 = 'new unix-socket connection per request (node http, agent:false); keep-alive = one reused connection (the dockerd here was seen reusing one)';
  api.push(figure('api', `Create throughput, sequential (first ${o.sequentialCreates})`, round(seqRate, 0), 'ops/s'));
  api.push(figure('api', `Create throughput, ${o.createConcurrency} in flight (next ${o.volumes - o.sequentialCreates})`, round(parRate, 0), 'ops/s'));
  api.push(figure('api', `time to create ${o.volumes} volumes via the API`, round(seqSec + parSec, 1), 's', { op: '<', value: 60 }));
  api.push(figure('api', `Get p50, new connection (${o.gets})`, getFresh.p50, 'ms', undefined, fresh1));
  api.push(figure('api', `Get p99, new connection (${o.gets})`, getFresh.p99, 'ms', { op: '<', value: 2 }));
  api.push(figure('api', `Get p99, keep-alive (${o.gets})`, getKeep.p99, 'ms', { op: '<', value: 2 }));
  api.push(figure('api', 'daemon CPU per Get', round(getCpuMs, 3), 'ms', undefined, 'from /proc/<pid>/stat utime+stime over the sequential Gets (10 ms ticks)'));
  api.push(figure('api', `List of ${o.volumes} p50, new connection (${o.lists})`, listFresh.p50, 'ms'));
  api.push(figure('api', `List of ${o.volumes} p99, new connection (${o.lists})`, listFresh.p99, 'ms', { op: '<', value: 20 }));
  api.push(figure('api', `List of ${o.volumes} p99, keep-alive (${o.lists})`, listKeep.p99, 'ms', { op: '<', value: 20 }));
  api.push(figure('api', `List right after a change p50 (${o.coldLists})`, listCold.p50, 'ms', undefined, 'each List follows a Create, so the store re-reads and the frontend re-encodes all rows'));
  api.push(figure('api', `List right after a change p99 (${o.coldLists})`, listCold.p99, 'ms', { op: '<', value: 20 }));
  api.push(figure('api', `Get storm, ${o.stormConcurrency} in flight (${o.stormGets} Gets)`, storm.opsPerSec, 'ops/s'));
  api.push(figure('api', 'Get storm p99 latency', storm.p99, 'ms'));
  rss.push(figure('rss', 'daemon RSS idle (empty store, 1 s after start)', mb(idle.rss), 'MB', { op: '<', value: 70 }));
  rss.push(figure('rss', `daemon RSS with ${o.volumes} volumes (after Get/List runs)`, mb(loaded.rss), 'MB', { op: '<', value: 120 }));
  rss.push(figure('rss', 'daemon peak RSS (VmHWM) over the API runs', mb(loaded.hwm), 'MB'));
  return {
    api: {
      figures: api,
      details: {
        volumes: o.volumes, options: o, client: fresh1, loadAvg1m: load,
        create: {
          sequential: { n: o.sequentialCreates, seconds: round(seqSec), opsPerSec: round(seqRate, 1), latencyMs: summarize(createMs) },
          parallel: { n: o.volumes - o.sequentialCreates, concurrency: o.createConcurrency, seconds: round(parSec), opsPerSec: round(parRate, 1) },
        },
        getMs: { freshConnection: getFresh, keepAlive: getKeep, daemonCpuMsPerGet: round(getCpuMs, 3) },
        listMs: { responseBytes: bytes, freshConnection: listFresh, keepAlive: listKeep, afterChange: listCold, daemonCpuMsPerList: round(listCpuMs, 3) },
        storm: { ...storm, concurrency: o.stormConcurrency, total: o.stormGets, seconds: round(stormSec), daemonCpuMsPerGet: round(stormCpuMs, 3) },
      },
    },
    rss: {
      figures: rss,
      details: { pid, unit: 'MB = 10^6 bytes, VmRSS/VmHWM from /proc/<pid>/status', idle: { rssMB: mb(idle.rss), hwmMB: mb(idle.hwm) }, loaded: { volumes: o.volumes, rssMB: mb(loaded.rss), hwmMB: mb(loaded.hwm) } },
    },
  };
}
