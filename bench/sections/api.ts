import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NODE_FLAGS, startBallast } from '../../test/helpers/ballast.js';
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
  /** Per connection mode; the two modes alternate in blocks of BLOCK requests so both see the same host load. */
  gets: 5_000,
  lists: 200,
  /** Lists each right after a Create (untimed, removed again untimed): nothing cached can answer them. */
  coldLists: 30,
  /** Get storms, each this long, alternating Ballast and the bare node:http floor: A B B A A B B A. */
  stormSec: 1.5,
  stormRounds: 8,
  stormConcurrency: 64,
  /** Mount+Unmount pairs per connection mode that need no kernel mount (local dir; block already mounted). */
  hotMounts: 400,
};
export type ApiOptions = typeof API_DEFAULTS;

/** A variant launch of the same workload, reported for its memory only (no targets). */
export interface ApiVariant { label: string; env: NodeJS.ProcessEnv }

/** Requests per block when keep-alive and new-connection requests alternate (see the Get loop). */
const BLOCK = 20;

const volName = (i: number) => `bench-${String(i).padStart(5, '0')}`;

/**
 * Section 1 (plugin API latency with 10,000 volumes) and section 4 (daemon RSS). One daemon:
 * its idle RSS is read on the fresh, empty daemon, then the store is filled through
 * VolumeDriver.Create, and the loaded RSS is read after the Get/List runs. The hot path is measured
 * in the same run: Get latency, a 64-way Get storm against Ballast and against a bare node:http
 * server answering the same body (the floor of the runtime), List right after a change, and Mount /
 * Unmount that need no kernel mount.
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
  // The modes alternate in blocks (BLOCK requests each), not request by request: a request right after a
  // new-connection one pays that connection's teardown in both processes (measured at about 0.2 ms here),
  // which a client that keeps to one mode never sees. Blocks still spread host-load drift over both.
  for (let i = 0; i < o.gets; i += BLOCK) {
    const n = Math.min(BLOCK, o.gets - i);
    for (let j = 0; j < n; j++) getF.push((await fresh.timed('VolumeDriver.Get', { Name: randomName() })).ms);
    for (let j = 0; j < n; j++) getK.push((await keep.timed('VolumeDriver.Get', { Name: randomName() })).ms);
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

  // ---- 64-way concurrent Get storm, new connection per request, against Ballast and against a bare
  // node:http server (its own process, the daemon's V8 flags) answering the same body: the floor.
  const floor = await startBareServer(ctx, root, (await fresh.timed('VolumeDriver.Get', { Name: probe })).res.body);
  const floorClient = new PluginClient(floor.socket, 'fresh');
  // CPU of this (client) process and of the server during the storms: a client near 100% of a core
  // is the bottleneck, and then the ratio understates the gap between the two servers.
  type Storm = { ms: number[]; ops: number; sec: number; clientCpuMs: number; serverCpuMs: number };
  const runStorm = async (client: PluginClient, into: Storm, serverPid: number) => {
    const end = performance.now() + o.stormSec * 1000;
    const t = performance.now();
    const cu = process.cpuUsage();
    const sc = cpuMsOf(serverPid);
    await Promise.all(Array.from({ length: o.stormConcurrency }, async () => {
      while (performance.now() < end) {
        into.ms.push((await client.timed('VolumeDriver.Get', { Name: randomName() })).ms);
        into.ops++;
      }
    }));
    into.sec += (performance.now() - t) / 1000;
    const c = process.cpuUsage(cu);
    into.clientCpuMs += (c.user + c.system) / 1000;
    into.serverCpuMs += cpuMsOf(serverPid) - sc;
  };
  const newStorm = (): Storm => ({ ms: [], ops: 0, sec: 0, clientCpuMs: 0, serverCpuMs: 0 });
  const ballastStorm = newStorm();
  const floorStorm = newStorm();
  await runStorm(floorClient, newStorm(), floor.pid); // untimed warm-up of the floor server
  for (let r = 0; r < o.stormRounds; r++) {
    if (r % 4 === 0 || r % 4 === 3) await runStorm(fresh, ballastStorm, pid);
    else await runStorm(floorClient, floorStorm, floor.pid);
  }
  const stormCpuMs = ballastStorm.serverCpuMs / Math.max(1, ballastStorm.ops);
  const cpuShare = (x: Storm) => ({ clientCpuPctOfOneCore: round((100 * x.clientCpuMs) / (x.sec * 1000), 0), serverCpuPctOfOneCore: round((100 * x.serverCpuMs) / (x.sec * 1000), 0) });
  floorClient.close();
  await floor.stop();
  const storm = { ...summarize(ballastStorm.ms), opsPerSec: round(ballastStorm.ops / ballastStorm.sec, 0), ...cpuShare(ballastStorm) };
  const floorSum = { ...summarize(floorStorm.ms), opsPerSec: round(floorStorm.ops / floorStorm.sec, 0), ...cpuShare(floorStorm) };
  const stormRatio = storm.opsPerSec / floorSum.opsPerSec;
  ctx.log(`  Get storm ${storm.opsPerSec} ops/s with ${o.stormConcurrency} in flight; bare node:http floor ${floorSum.opsPerSec} ops/s; ratio ${stormRatio.toFixed(2)}; CPU % of a core client/server: ballast ${storm.clientCpuPctOfOneCore}/${storm.serverCpuPctOfOneCore}, bare ${floorSum.clientCpuPctOfOneCore}/${floorSum.serverCpuPctOfOneCore}`);

  // ---- section 4, loaded: after the Get/List runs, 10,000 volumes in the store.
  const loaded = memoryOf(pid);
  load.end = loadAvg();
  ctx.log(`  loaded daemon RSS ${mb(loaded.rss)} MB (peak ${mb(loaded.hwm)} MB)`);

  // ---- Mount and Unmount that need no kernel mount, as dockerd sends them (POST, no content type):
  // a local volume (a directory), and a block volume another reference already holds mounted.
  const hot = await hotMountPaths(ctx, fresh, keep, o.hotMounts, volName(7 % o.volumes));

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
  api.push(figure('api', `Get p99, new connection (${o.gets})`, getFresh.p99, 'ms', { op: '<', value: 0.5 }));
  api.push(figure('api', `Get p50, keep-alive (${o.gets})`, getKeep.p50, 'ms'));
  api.push(figure('api', `Get p99, keep-alive (${o.gets})`, getKeep.p99, 'ms', { op: '<', value: 0.5 }));
  api.push(figure('api', 'daemon CPU per Get', round(getCpuMs, 3), 'ms', undefined, 'from /proc/<pid>/stat utime+stime over the sequential Gets (10 ms ticks)'));
  api.push(figure('api', `List of ${o.volumes} p50, new connection (${o.lists})`, listFresh.p50, 'ms'));
  api.push(figure('api', `List of ${o.volumes} p99, new connection (${o.lists})`, listFresh.p99, 'ms', { op: '<', value: 20 }));
  api.push(figure('api', `List of ${o.volumes} p99, keep-alive (${o.lists})`, listKeep.p99, 'ms', { op: '<', value: 20 }));
  api.push(figure('api', `List right after a change p50 (${o.coldLists})`, listCold.p50, 'ms', undefined, 'each List follows a Create, so the store re-reads and the frontend re-encodes all rows'));
  api.push(figure('api', `List right after a change p99 (${o.coldLists})`, listCold.p99, 'ms', { op: '<', value: 20 }));
  const stormNote = `${o.stormRounds} storms of ${o.stormSec} s, ${o.stormConcurrency} in flight, new connection per request, same client, alternating A B B A A B B A`;
  api.push(figure('api', `Get storm, ballast (${storm.n} Gets)`, storm.opsPerSec, 'ops/s', undefined, stormNote));
  api.push(figure('api', `Get storm, bare node:http server answering the same body (${floorSum.n} Gets)`, floorSum.opsPerSec, 'ops/s', undefined,
    `its own process with the daemon's V8 flags (${NODE_FLAGS.join(' ') || 'none'}); reads the request, answers the ${floor.bodyBytes}-byte Get body Ballast returned`));
  api.push(figure('api', 'Get storm ratio ballast/bare node:http', round(stormRatio, 3), '', { op: '>=', value: 0.8 },
    `CPU, % of one core, client / server: ballast storm ${storm.clientCpuPctOfOneCore} / ${storm.serverCpuPctOfOneCore}, bare storm ${floorSum.clientCpuPctOfOneCore} / ${floorSum.serverCpuPctOfOneCore} (a client near 100 is the limit, and then the ratio understates the gap)`));
  const perGet = (x: Storm) => round(x.serverCpuMs / Math.max(1, x.ops), 3);
  api.push(figure('api', 'server CPU per Get in the storm, ballast', perGet(ballastStorm), 'ms', undefined,
    `bare node:http ${perGet(floorStorm)} ms (/proc/<pid>/stat, 10 ms ticks); the cost per request, whatever limits the throughput`));
  api.push(figure('api', 'Get storm p99 latency, ballast / bare', storm.p99, 'ms', undefined, `bare node:http p99 ${floorSum.p99} ms`));
  for (const h of hot.figures) api.push(h);
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
        storm: {
          concurrency: o.stormConcurrency, rounds: o.stormRounds, secondsEach: o.stormSec, order: 'A B B A repeated (A = ballast, B = bare node:http)',
          ballast: { ...storm, seconds: round(ballastStorm.sec), daemonCpuMsPerGet: round(stormCpuMs, 3) },
          bareNodeHttp: { ...floorSum, seconds: round(floorStorm.sec), bodyBytes: floor.bodyBytes, nodeFlags: NODE_FLAGS },
          ratio: round(stormRatio, 3),
        },
        mountUnmountNoKernelMount: hot.details,
      },
    },
    rss: {
      figures: rss,
      details: { pid, unit: 'MB = 10^6 bytes, VmRSS/VmHWM from /proc/<pid>/status', idle: { rssMB: mb(idle.rss), hwmMB: mb(idle.hwm) }, loaded: { volumes: o.volumes, rssMB: mb(loaded.rss), hwmMB: mb(loaded.hwm) } },
    },
  };
}

const BARE_SERVER = join(dirname(fileURLToPath(import.meta.url)), '..', 'lib', 'bare-http-server.js');

/** Starts bench/lib/bare-http-server.js on a socket in dir, answering `body`; stop() ends it by PID. */
async function startBareServer(ctx: BenchContext, dir: string, body: Buffer): Promise<{ socket: string; pid: number; bodyBytes: number; stop: () => Promise<void> }> {
  const socket = join(dir, 'bare.sock');
  const bodyFile = join(dir, 'bare-body.json');
  writeFileSync(bodyFile, body);
  const child = spawn(process.execPath, [...NODE_FLAGS, BARE_SERVER, socket, bodyFile], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const stop = ctx.cleanups.add(`bare node:http server pid ${child.pid}`, async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const t = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(t);
  });
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('bare node:http server did not start within 10 s')), 10_000);
    child.stdout!.on('data', (c: Buffer) => { if (c.toString().includes('listening')) { clearTimeout(t); resolve(); } });
    child.once('exit', (code) => { clearTimeout(t); reject(new Error(`bare node:http server exited with ${code}`)); });
  });
  return { socket, pid: child.pid!, bodyBytes: body.length, stop };
}

/**
 * Mount then Unmount pairs that need no kernel mount: a local volume (a directory: first reference,
 * nothing to mount), and, as root, a block volume whose first reference keeps it mounted, so a second
 * mount ID only adds and drops a reference. Keep-alive and new-connection pairs alternate in blocks; the
 * target is on keep-alive, the way dockerd's plugin client sends them (Go http.Transport keeps the
 * unix-socket connection open).
 */
async function hotMountPaths(ctx: BenchContext, fresh: PluginClient, keep: PluginClient, n: number, localName: string): Promise<{ figures: Figure[]; details: Record<string, unknown> }> {
  const figures: Figure[] = [];
  const details: Record<string, unknown> = { pairs: n, request: 'POST, content-length, no content type (as dockerd sends them)' };
  const measure = async (name: string, label: string) => {
    const ms = { mountKeep: [] as number[], unmountKeep: [] as number[], mountFresh: [] as number[], unmountFresh: [] as number[] };
    for (let i = 0; i < 50; i++) { await keep.ok('VolumeDriver.Mount', { Name: name, ID: `warm-${i}` }); await keep.ok('VolumeDriver.Unmount', { Name: name, ID: `warm-${i}` }); }
    const check = (r: { res: { body: Buffer } }) => { const e = JSON.parse(r.res.body.toString('utf8') || '{}') as { Err?: string }; if (e.Err) throw new Error(`${label} ${name}: ${e.Err}`); };
    const idOf = (i: number) => `hot-${i.toString(16).padStart(60, '0')}`;
    // Keep-alive and new-connection pairs alternate in blocks of BLOCK pairs (see the Get loop: a request
    // right after a new-connection one pays that connection's teardown).
    for (let i = 0; i < n; i += BLOCK) {
      const m = Math.min(BLOCK, n - i);
      for (let j = i; j < i + m; j++) {
        const k = await keep.timed('VolumeDriver.Mount', { Name: name, ID: idOf(j) }); ms.mountKeep.push(k.ms); check(k);
        const u = await keep.timed('VolumeDriver.Unmount', { Name: name, ID: idOf(j) }); ms.unmountKeep.push(u.ms); check(u);
      }
      for (let j = i; j < i + m; j++) {
        const f = await fresh.timed('VolumeDriver.Mount', { Name: name, ID: idOf(j) }); ms.mountFresh.push(f.ms); check(f);
        const g = await fresh.timed('VolumeDriver.Unmount', { Name: name, ID: idOf(j) }); ms.unmountFresh.push(g.ms); check(g);
      }
    }
    const s = { mountKeepAlive: summarize(ms.mountKeep), unmountKeepAlive: summarize(ms.unmountKeep), mountNewConnection: summarize(ms.mountFresh), unmountNewConnection: summarize(ms.unmountFresh) };
    details[label] = s;
    figures.push(figure('api', `Mount p50, ${label}, keep-alive (${n})`, s.mountKeepAlive.p50, 'ms', { op: '<', value: 0.3 }, label.startsWith('local') ? undefined : 'a second mount ID on a volume a first reference holds mounted'));
    figures.push(figure('api', `Unmount p50, ${label}, keep-alive (${n})`, s.unmountKeepAlive.p50, 'ms', { op: '<', value: 0.3 }));
    figures.push(figure('api', `Mount / Unmount p50, ${label}, new connection`, s.mountNewConnection.p50, 'ms', undefined, `Unmount p50 ${s.unmountNewConnection.p50} ms; keep-alive p99 Mount ${s.mountKeepAlive.p99} / Unmount ${s.unmountKeepAlive.p99} ms`));
    ctx.log(`  ${label}: Mount p50 ${s.mountKeepAlive.p50} ms, Unmount p50 ${s.unmountKeepAlive.p50} ms (keep-alive); new connection ${s.mountNewConnection.p50} / ${s.unmountNewConnection.p50} ms`);
  };
  await measure(localName, 'local volume');
  if (process.getuid?.() !== 0) {
    details.block = 'skipped: needs root (loop devices, mount)';
    return { figures, details };
  }
  const blockName = 'hot-block';
  await fresh.ok('VolumeDriver.Create', { Name: blockName, Opts: { backend: 'block', size: '64M' } });
  const holder = 'hot-holder-first-reference';
  await fresh.ok('VolumeDriver.Mount', { Name: blockName, ID: holder });
  const undo = ctx.cleanups.add(`hot-path block volume ${blockName}`, async () => {
    await fresh.post('VolumeDriver.Unmount', { Name: blockName, ID: holder });
    await fresh.post('VolumeDriver.Remove', { Name: blockName });
  });
  try { await measure(blockName, 'block volume already mounted'); } finally { await undo(); }
  return { figures, details };
}
