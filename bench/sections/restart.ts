import { mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { startBallast } from '../../test/helpers/ballast.js';
import { median, round } from '../lib/stats.js';
import { figure } from '../lib/report.js';
import { loopsUnder, mountsUnder, removeTree } from '../lib/cleanup.js';
import type { BenchContext, SectionResult } from '../lib/context.js';

export const RESTART_DEFAULTS = { local: 500, block: 500, mountedLocal: 250, mountedBlock: 250, restarts: 5 };
export type RestartOptions = typeof RESTART_DEFAULTS;

/**
 * Issue 3's restart figure: a daemon with 1,000 volumes (local and block), 500 of them mounted, is
 * stopped and started again. Measured: the wall time from spawn until the plugin socket answers
 * (recovery and the first reconcile pass run before it serves), the daemon's own timings from its
 * "serving" log line, and the repairs it needed (zero on a clean restart).
 */
export async function restartSection(ctx: BenchContext, o: RestartOptions = RESTART_DEFAULTS): Promise<SectionResult> {
  if (process.getuid?.() !== 0) return { figures: [], details: {}, skipped: 'needs root (block volumes: loop devices and mounts)' };
  const dir = mkdtempSync(join(ctx.tmpBase, 'restart-'));
  ctx.cleanups.add(`restart dir ${dir}`, () => removeTree(dir));
  const b = await startBallast({ root: join(dir, 'root'), socket: join(dir, 'p.sock'), extraArgs: ['--log-level', 'info', '--docker-host', `unix://${join(dir, 'no-docker.sock')}`] });
  ctx.cleanups.add(`ballast daemon pid ${b.pid()}`, async () => { await b.stop(); });

  const t0 = performance.now();
  const names: { name: string; block: boolean; mount: boolean }[] = [];
  for (let i = 0; i < o.local; i++) names.push({ name: `rl${i}`, block: false, mount: i < o.mountedLocal });
  for (let i = 0; i < o.block; i++) names.push({ name: `rb${i}`, block: true, mount: i < o.mountedBlock });
  const inFlight = 8;
  for (let i = 0; i < names.length; i += inFlight) {
    await Promise.all(names.slice(i, i + inFlight).map(async (v) => {
      const c = await b.plugin('VolumeDriver.Create', { Name: v.name, Opts: v.block ? { backend: 'block', size: '16M' } : {} });
      if (c.status !== 200) throw new Error(`create ${v.name}: ${JSON.stringify(c.body)}`);
      if (v.mount) {
        const m = await b.plugin('VolumeDriver.Mount', { Name: v.name, ID: `bench-${v.name}` });
        if (m.status !== 200) throw new Error(`mount ${v.name}: ${JSON.stringify(m.body)}`);
      }
    }));
  }
  ctx.log(`  restart: ${names.length} volumes made, ${o.mountedLocal + o.mountedBlock} mounted, in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

  const serve: number[] = [];
  const own: { serveMs: number; reconciledMs: number; reconcilePassMs: number; repairs: number; recovered: number; volumes: number }[] = [];
  for (let r = 0; r < o.restarts; r++) {
    const code = await b.stop('SIGTERM');
    if (code !== 0) throw new Error(`daemon exited ${code} on SIGTERM`);
    const mark = b.logs().length;
    const s0 = performance.now();
    await b.restart();
    serve.push(performance.now() - s0);
    const line = b.logs().slice(mark).split('\n').find((l) => l.includes('"ballast serving"'));
    if (!line) throw new Error('no "ballast serving" line after restart');
    const j = JSON.parse(line);
    own.push({ serveMs: j.serveMs, reconciledMs: j.reconciledMs, reconcilePassMs: j.reconcilePassMs, repairs: j.repairs, recovered: j.recovered, volumes: j.volumes });
  }
  const mountedNow = mountsUnder(dir).length;
  const loops = (await loopsUnder(dir)).length;
  const repairs = own.reduce((n, x) => n + x.repairs, 0);
  ctx.log(`  restart: spawn-to-serve median ${median(serve).toFixed(0)} ms; reconcile pass median ${median(own.map((x) => x.reconcilePassMs)).toFixed(0)} ms; repairs ${repairs}`);

  // Tidy up the 500 mounts before the temp dir goes (the cleanup unmounts anything left).
  for (const v of names.filter((x) => x.mount)) await b.plugin('VolumeDriver.Unmount', { Name: v.name, ID: `bench-${v.name}` });

  const figures = [
    figure('restart', `restart with ${names.length} volumes, ${o.mountedLocal + o.mountedBlock} mounted: spawn until the socket serves, median of ${o.restarts}`, round(median(serve) / 1000, 3), 's', { op: '<', value: 2 }),
    figure('restart', 'daemon start to reconciliation done (its own clock), median', round(median(own.map((x) => x.reconciledMs)) / 1000, 3), 's', { op: '<', value: 5 }),
    figure('restart', 'first reconcile pass, median', round(median(own.map((x) => x.reconcilePassMs)), 1), 'ms'),
    figure('restart', `repairs needed over ${o.restarts} clean restarts`, repairs, '', { op: '<=', value: 0 }),
  ];
  return {
    figures,
    details: { volumes: names.length, mounted: o.mountedLocal + o.mountedBlock, mountsSeen: mountedNow, loopDevices: loops, spawnToServeMs: serve.map((x) => round(x, 1)), daemon: own },
  };
}
