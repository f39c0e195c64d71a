/**
 * The backend benchmark's measurements: fio inside a container on each backend's volume (against
 * a bind-mounted host directory on the same disk), and the time from `docker volume create` to a
 * running container (against Docker's own local driver). Servers come from test/servers.
 */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { startBallast, type BallastProc } from '../../test/helpers/ballast.js';
import type { DockerEngine } from '../../test/helpers/docker-engine.js';
import { pidAlive, run, sleep, type RunResult } from '../../test/helpers/proc.js';
import { killPids } from '../../test/servers/common.js';
import { loopsUnder, mountsUnder, removeTree, type Cleanups } from '../lib/cleanup.js';
import { median, round, summarize } from '../lib/stats.js';
import { loadAvg } from '../lib/proc-status.js';
import { FIO_IMAGE, fioArgs, parseFio, type JobName, type JobResult, type JobSpec } from '../lib/fio.js';

export const MiB = 1024 * 1024;

export interface Target {
  /** Row name: host-dir, local, block, sshfs, glusterfs, cephfs, rbd, s3. */
  readonly name: string;
  readonly kind: 'bind' | 'ballast';
  /** Ballast backend instance (config name) and extra `-o` options. */
  readonly backend?: string;
  readonly opts?: Record<string, string>;
  /** Sequential jobs: bytes to write then read; capSec bounds each. */
  readonly seqBytes: number;
  readonly seqCapSec: number;
  /** Random jobs: seconds each, or null with the reason they are not run. */
  readonly randSec: number | null;
  readonly randSkip?: string;
  /** What to know when reading this row. */
  readonly note?: string;
}

export interface Env {
  readonly eng: DockerEngine;
  readonly log: (s: string) => void;
  /** Where this phase registers undo steps (LIFO). */
  readonly cleanups: Cleanups;
  readonly tmpBase: string;
  /** Throws once the run was interrupted, so no new containers or volumes are made. */
  readonly live: () => void;
}

export interface FioOutcome {
  odirect: boolean;
  odirectProbe: string;
  jobs: Partial<Record<JobName, JobResult>>;
  skippedJobs: Partial<Record<JobName, string>>;
  /** Wall time of the whole target (volume create, containers, jobs, volume rm), seconds. */
  wallSec: number;
  /** 1-minute load average before and after: other work on the host shows here. */
  loadAvg1m: { start: number; end: number };
}

export interface StartupSample { totalMs: number; createMs: number; runMs: number; untilRunningMs: number }

const uid = () => randomBytes(3).toString('hex');

/** `docker run --rm --name NAME ...`, the name registered for `docker rm -f` until it is gone. */
async function tryContainer(env: Env, name: string, args: string[], timeoutMs: number): Promise<RunResult> {
  env.live();
  const undo = env.cleanups.add(`container ${name}`, async () => { await env.eng.docker(['rm', '-f', name], 60_000); });
  const r = await env.eng.docker(['run', '--rm', '--name', name, ...args], timeoutMs);
  await undo();
  return r;
}

/** A container run that must succeed; returns its stdout. */
async function runContainer(env: Env, name: string, args: string[], timeoutMs: number): Promise<string> {
  const r = await tryContainer(env, name, args, timeoutMs);
  if (r.code !== 0) throw new Error(`docker run ${args.slice(0, 6).join(' ')} ... failed (${r.code}): ${(r.stderr || r.stdout).trim().slice(-800)}`);
  return r.stdout;
}

/** A volume for the target: a Ballast volume (created now, removed by the returned function) or a host directory. */
async function volumeFor(env: Env, t: Target, driver: string | undefined, prefix: string, daemon?: BallastProc): Promise<{ spec: string; remove: () => Promise<void> }> {
  env.live();
  if (t.kind === 'bind') {
    const dir = mkdtempSync(join(env.tmpBase, `${prefix}-hostdir-`));
    const rm = env.cleanups.add(`host dir ${dir}`, () => removeTree(dir));
    return { spec: `${dir}:/data`, remove: rm };
  }
  const vol = `${prefix}-${t.name}-${uid()}`;
  const args = ['volume', 'create', '-d', driver!, '-o', `backend=${t.backend}`];
  for (const [k, v] of Object.entries(t.opts ?? {})) args.push('-o', `${k}=${v}`);
  const rm = env.cleanups.add(`docker volume ${vol}`, async () => {
    // With the daemon gone dockerd would retry the plugin for ~15 s and fail anyway; the safety
    // net of the phase unmounts what the daemon left.
    if (daemon && !pidAlive(daemon.pid())) return;
    const r = await env.eng.docker(['volume', 'rm', '-f', vol], 150_000);
    if (r.code !== 0) throw new Error(`docker volume rm ${vol}: ${r.stderr.trim()}`);
  });
  await env.eng.ok([...args, vol], 150_000);
  return { spec: `${vol}:/data`, remove: rm };
}

/**
 * fio on one target: one container per job (each mounts the volume afresh, so FUSE clients start
 * with a cold cache), in order seq write, seq read of that file, random read, random write.
 */
export async function fioTarget(env: Env, t: Target, driver: string | undefined, daemon?: BallastProc): Promise<FioOutcome> {
  const t0 = performance.now();
  const load0 = loadAvg();
  const v = await volumeFor(env, t, driver, 'bbf', daemon);
  const jobs: Partial<Record<JobName, JobResult>> = {};
  const skippedJobs: Partial<Record<JobName, string>> = {};
  const fio = async (s: JobSpec): Promise<JobResult> => {
    const meta = fioArgs(s);
    const out = await runContainer(env, `bbf-${t.name}-${s.job}-${uid()}`, ['-v', v.spec, FIO_IMAGE, 'fio', ...meta.args], (s.runtimeSec + 120) * 1000);
    const r = parseFio(out, s, meta);
    env.log(`    ${t.name} ${s.job}: ${r.MiBps} MiB/s, ${r.iops} IOPS (${r.mode}, ${r.ioengine} depth ${r.iodepth}, ${Math.round(r.ioBytes / MiB)} MiB in ${(r.runtimeMs / 1000).toFixed(1)} s)`);
    return r;
  };

  // Does the filesystem take O_DIRECT? A 256 KiB direct write, then the probe file is removed.
  const probe = await tryContainer(env, `bbf-${t.name}-probe-${uid()}`, ['-v', v.spec, FIO_IMAGE, 'sh', '-c',
    'fio --name=probe --filename=/data/.odirect-probe --rw=write --bs=4k --size=256k --direct=1 --ioengine=psync --output-format=terse >/dev/null 2>/tmp/e; rc=$?; rm -f /data/.odirect-probe; cat /tmp/e >&2; exit $rc'], 120_000);
  const odirect = probe.code === 0;
  const odirectProbe = odirect ? 'O_DIRECT accepted' : `O_DIRECT refused: ${probe.stderr.trim().split('\n').filter(Boolean).slice(-2).join(' ').slice(0, 300)}`;
  env.log(`    ${t.name}: ${odirectProbe}`);

  const w = await fio({ job: 'seqwrite', sizeBytes: t.seqBytes, direct: false, runtimeSec: t.seqCapSec });
  jobs.seqwrite = w;
  // Read what was written (a cap may have cut the write short), whole MiB.
  const written = Math.floor(w.ioBytes / MiB) * MiB;
  if (written < MiB) throw new Error(`the write job wrote only ${w.ioBytes} bytes`);
  jobs.seqread = await fio({ job: 'seqread', sizeBytes: written, direct: false, runtimeSec: t.seqCapSec });
  if (t.randSec === null) {
    skippedJobs.randread = skippedJobs.randwrite = t.randSkip ?? 'not run';
  } else {
    jobs.randread = await fio({ job: 'randread', sizeBytes: written, direct: odirect, runtimeSec: t.randSec });
    jobs.randwrite = await fio({ job: 'randwrite', sizeBytes: written, direct: odirect, runtimeSec: t.randSec });
  }
  await v.remove();
  return { odirect, odirectProbe, jobs, skippedJobs, wallSec: round((performance.now() - t0) / 1000, 1), loadAvg1m: { start: load0, end: loadAvg() } };
}

/** What a startup sample is taken with: a Ballast target, Docker's local driver, or a bind mount (no volume). */
export type StartupSubject = { name: string; kind: 'ballast'; target: Target; driver: string; daemon: BallastProc } | { name: string; kind: 'docker-local' } | { name: string; kind: 'bind' };

/**
 * One sample: `docker volume create` (for a bind mount: nothing), `docker run -d ... sleep`, then
 * `docker inspect` every 20 ms until it says running. Teardown (rm -f, volume rm) is untimed.
 */
export async function startupSample(env: Env, s: StartupSubject): Promise<StartupSample> {
  env.live();
  const ctr = `bbs-${s.name}-${uid()}`;
  const vol = `bbs-${s.name}-${uid()}`;
  let spec: string;
  let removeVol: (() => Promise<void>) | undefined;
  let hostDir: string | undefined;
  if (s.kind === 'bind') {
    hostDir = mkdtempSync(join(env.tmpBase, 'bbs-hostdir-'));
    removeVol = env.cleanups.add(`host dir ${hostDir}`, () => removeTree(hostDir!));
    spec = `${hostDir}:/data`;
  } else {
    spec = `${vol}:/data`;
    removeVol = env.cleanups.add(`docker volume ${vol}`, async () => {
      if (s.kind === 'ballast' && !pidAlive(s.daemon.pid())) return;
      const r = await env.eng.docker(['volume', 'rm', '-f', vol], 150_000);
      if (r.code !== 0) throw new Error(`docker volume rm ${vol}: ${r.stderr.trim()}`);
    });
  }
  const removeCtr = env.cleanups.add(`container ${ctr}`, async () => { await env.eng.docker(['rm', '-f', ctr], 60_000); });

  const t0 = performance.now();
  if (s.kind === 'ballast') {
    const args = ['volume', 'create', '-d', s.driver, '-o', `backend=${s.target.backend}`];
    for (const [k, v] of Object.entries(s.target.opts ?? {})) args.push('-o', `${k}=${v}`);
    await env.eng.ok([...args, vol], 150_000);
  } else if (s.kind === 'docker-local') {
    await env.eng.ok(['volume', 'create', vol], 60_000);
  }
  const t1 = performance.now();
  await env.eng.ok(['run', '-d', '--name', ctr, '-v', spec, 'busybox:local', 'sleep', '3600'], 150_000);
  const t2 = performance.now();
  for (;;) {
    const r = await env.eng.docker(['inspect', '-f', '{{.State.Running}}', ctr], 30_000);
    if (r.code === 0 && r.stdout.trim() === 'true') break;
    if (performance.now() - t2 > 60_000) throw new Error(`container ${ctr} not running 60 s after docker run -d: ${r.stdout.trim()} ${r.stderr.trim()}`);
    await sleep(20);
  }
  const t3 = performance.now();
  await removeCtr();
  await removeVol();
  return { totalMs: t3 - t0, createMs: t1 - t0, runMs: t2 - t1, untilRunningMs: t3 - t2 };
}

/**
 * `reps` rounds over the subjects after one untimed warm-up each; the order rotates every round so
 * drift (other load on the host) spreads over all of them.
 */
export async function startupRounds(env: Env, subjects: StartupSubject[], reps: number): Promise<Record<string, StartupSample[]>> {
  const out: Record<string, StartupSample[]> = Object.fromEntries(subjects.map((s) => [s.name, []]));
  for (const s of subjects) await startupSample(env, s);
  for (let r = 0; r < reps; r++) {
    const order = subjects.map((_, i) => subjects[(i + r) % subjects.length]);
    for (const s of order) out[s.name].push(await startupSample(env, s));
    env.log(`    round ${r + 1}/${reps}: ${subjects.map((s) => `${s.name} ${out[s.name].at(-1)!.totalMs.toFixed(0)}`).join(', ')} ms`);
  }
  return out;
}

export function startupSummary(samples: StartupSample[]): Record<string, unknown> {
  const pick = (k: keyof StartupSample) => round(median(samples.map((x) => x[k])), 1);
  return {
    medianMs: pick('totalMs'), stepMediansMs: { create: pick('createMs'), run: pick('runMs'), untilRunning: pick('untilRunningMs') },
    totalMs: summarize(samples.map((x) => x.totalMs)), samplesMs: samples.map((x) => round(x.totalMs, 1)),
  };
}

// ---- daemons and the safety net ---------------------------------------------------------------------

/**
 * A Ballast daemon for dockerd with the given backend instances (config file under root). It runs
 * in its own session (setsid) so a Ctrl-C on the terminal reaches only this process, whose cleanups
 * then remove the volumes through dockerd before stopping it.
 */
export async function startDaemon(env: Env, root: string, backends: Record<string, Record<string, unknown>>): Promise<BallastProc> {
  env.live();
  mkdirSync(root, { recursive: true });
  const configFile = join(root, 'ballast.json');
  writeFileSync(configFile, `${JSON.stringify({ defaultBackend: Object.keys(backends)[0], backends }, null, 2)}\n`);
  // Registered before the start, so a daemon that failed half-way is still swept.
  env.cleanups.add(`mounts, loop devices and FUSE clients under ${root}`, () => sweep(root, env.log));
  const b = await startBallast({ root, configFile, wrap: ['setsid'], extraArgs: ['--log-level', 'info', '--docker-host', env.eng.host] });
  env.cleanups.add(`ballast daemon pid ${b.pid()}`, async () => { await b.stop(); });
  return b;
}

const FUSE_CLIENTS = new Set(['sshfs', 'glusterfs', 'ceph-fuse', 'rbd-fuse', 's3fs']);

/** Live FUSE clients (by command name) whose argv names a path under dir. */
export function fuseClientsUnder(dir: string): number[] {
  const out: number[] = [];
  for (const p of readdirSync('/proc').filter((x) => /^\d+$/.test(x))) {
    let argv: string[];
    try { argv = readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0').filter(Boolean); } catch { continue; }
    if (!argv.length || !FUSE_CLIENTS.has(argv[0].split('/').pop()!)) continue;
    if (argv.some((a) => a.startsWith(`${dir}/`))) out.push(Number(p));
  }
  return out;
}

/**
 * After the daemon stopped (it leaves mounts in place by design): unmount whatever is left under
 * root, detach its loop devices, stop FUSE clients serving it (by PID), and remove the tree.
 */
export async function sweep(root: string, log: (s: string) => void): Promise<void> {
  const left = mountsUnder(root);
  if (left.length) log(`  sweep: unmounting ${left.length} leftover mount(s) under ${root}`);
  for (const m of left) await run(['umount', '-l', '--', m], { timeoutMs: 30_000 });
  for (const d of await loopsUnder(root)) { log(`  sweep: detaching ${d}`); await run(['losetup', '-d', d], { timeoutMs: 15_000 }); }
  const pids = fuseClientsUnder(root);
  if (pids.length) { log(`  sweep: stopping FUSE client(s) ${pids.join(', ')}`); await killPids(pids, 'SIGTERM', 5_000); }
  await removeTree(root);
}

/** PIDs of running ceph-mon processes (by command name). */
export function cephMonPids(): number[] {
  const out: number[] = [];
  for (const p of readdirSync('/proc').filter((x) => /^\d+$/.test(x))) {
    try { if (readFileSync(`/proc/${p}/comm`, 'utf8').trim() === 'ceph-mon') out.push(Number(p)); } catch { /* gone */ }
  }
  return out;
}
