import { mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { startBallast } from '../../test/helpers/ballast.js';
import { dockerSkipReason, startDockerEngine } from '../../test/helpers/docker-engine.js';
import { median, percentile, round, summarize } from '../lib/stats.js';
import { figure } from '../lib/report.js';
import { removeTree } from '../lib/cleanup.js';
import type { BenchContext, SectionResult } from '../lib/context.js';

export const DOCKER_DEFAULTS = { warmup: 3, reps: 25 };
export type DockerOptions = typeof DOCKER_DEFAULTS;

/**
 * Section 3: `docker run --rm -v VOL:/data busybox:local true` with a Ballast local volume against a
 * volume of Docker's own local driver, on a private dockerd. Interleaved with the order flipping
 * every repetition, after warm-up runs of each. The time is the wall time of the docker CLI.
 */
export async function dockerSection(ctx: BenchContext, o: DockerOptions = DOCKER_DEFAULTS): Promise<SectionResult> {
  const skip = dockerSkipReason();
  if (skip) return { figures: [], details: {}, skipped: skip };

  const eng = await startDockerEngine({ dir: mkdtempSync(join(ctx.tmpBase, 'dockerd-')) });
  ctx.cleanups.add(`dockerd pid ${eng.pid}`, () => eng.stop());
  const root = mkdtempSync(join(ctx.tmpBase, 'docker-ballast-'));
  ctx.cleanups.add(`ballast root ${root}`, () => removeTree(root));
  // Default socket: /run/docker/plugins/<unique driver>.sock, where dockerd discovers plugins.
  const b = await startBallast({ root, extraArgs: ['--log-level', 'info'] });
  ctx.cleanups.add(`ballast daemon pid ${b.pid()}`, async () => { await b.stop(); });

  const ballastVol = `bench-ballast-${process.pid}`;
  const localVol = `bench-local-${process.pid}`;
  await eng.ok(['volume', 'create', '-d', b.driver, ballastVol]);
  ctx.cleanups.add(`docker volume ${ballastVol}`, async () => { await eng.docker(['volume', 'rm', '-f', ballastVol]); });
  await eng.ok(['volume', 'create', localVol]);
  ctx.cleanups.add(`docker volume ${localVol}`, async () => { await eng.docker(['volume', 'rm', '-f', localVol]); });
  const driverOf = async (v: string) => eng.ok(['volume', 'inspect', '-f', '{{.Driver}}', v]);
  if ((await driverOf(ballastVol)) !== b.driver || (await driverOf(localVol)) !== 'local') throw new Error('volumes do not have the expected drivers');

  const runOnce = async (vol: string): Promise<number> => {
    const t0 = performance.now();
    const r = await eng.docker(['run', '--rm', '-v', `${vol}:/data`, 'busybox:local', 'true']);
    const ms = performance.now() - t0;
    if (r.code !== 0) throw new Error(`docker run with ${vol} failed (${r.code}): ${r.stderr.trim()}`);
    return ms;
  };
  for (let i = 0; i < o.warmup; i++) { await runOnce(ballastVol); await runOnce(localVol); }
  const logMark = b.logs().length;
  const bal: number[] = [];
  const loc: number[] = [];
  for (let r = 0; r < o.reps; r++) {
    if (r % 2 === 0) { bal.push(await runOnce(ballastVol)); loc.push(await runOnce(localVol)); } else { loc.push(await runOnce(localVol)); bal.push(await runOnce(ballastVol)); }
  }
  ctx.log(`  docker run median: ballast ${median(bal).toFixed(0)} ms, local ${median(loc).toFixed(0)} ms`);
  // The plugin saw one Mount and one Unmount per run; a leaked reference would show here.
  const refs = await b.plugin('VolumeDriver.Get', { Name: ballastVol });
  const mounts = (refs.body.Volume as { Status?: { mounts?: number } } | undefined)?.Status?.mounts;

  // Server-side time of the Mount/Unmount operations dockerd sent during the measured runs (the
  // daemon logs one line per operation with its duration).
  const ops: Record<string, number[]> = {};
  for (const line of b.logs().slice(logMark).split('\n')) {
    let e: { op?: string; volume?: string; ms?: number };
    try { e = JSON.parse(line); } catch { continue; }
    if (e.volume === ballastVol && e.op && typeof e.ms === 'number') (ops[e.op] ??= []).push(e.ms);
  }
  const serverSide = Object.fromEntries(Object.entries(ops).map(([k, v]) => [k, { perRun: round(v.length / o.reps, 2), medianMs: round(median(v), 2), p90Ms: round(percentile(v, 90), 2) }]));
  const ratio = median(bal) / median(loc);
  return {
    figures: [
      figure('docker', 'docker run -v median, ballast volume', round(median(bal), 1), 'ms'),
      figure('docker', 'docker run -v median, docker local volume', round(median(loc), 1), 'ms'),
      figure('docker', 'ratio ballast/local', round(ratio, 3), '', { op: '<=', value: 1.05 }),
      figure('docker', 'difference of medians, ballast - local', round(median(bal) - median(loc), 1), 'ms', undefined,
        `daemon-side Mount/Unmount per run: ${Object.entries(serverSide).map(([k, v]) => `${v.perRun} x ${k} (median ${v.medianMs} ms)`).join(', ') || 'none logged'}`),
    ],
    details: {
      command: 'docker run --rm -v VOL:/data busybox:local true', warmup: o.warmup, reps: o.reps, interleaved: 'order flips every repetition',
      ballastMs: summarize(bal), localMs: summarize(loc), ratio: round(ratio, 3), ballastMountsAfter: mounts ?? null, ballastServerSideOps: serverSide,
      samples: { ballast: bal.map((v) => round(v, 1)), local: loc.map((v) => round(v, 1)) },
    },
  };
}
