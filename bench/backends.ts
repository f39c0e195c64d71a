/**
 * Ballast backend benchmark: fio inside a container on a volume of each backend (local, block,
 * sshfs, glusterfs, cephfs, rbd, s3) against a bind-mounted host directory on the same disk, and
 * the time from `docker volume create` to a running container against Docker's own local driver,
 * all in one run against servers started on loopback (test/servers).
 *
 *   npm run bench:backends [-- --out FILE] [-- --backends host-dir,local,block,...] [-- --reps N]
 *
 * One JSON object goes to stdout and to --out (default ./bench-backends.json); progress and the
 * table go to stderr. A part that cannot run here (not root, a package or server missing, another
 * Ceph on this machine) is skipped with the reason. Everything the run makes is undone on exit and
 * on Ctrl-C: containers, volumes, mounts, FUSE clients, servers, loop devices, directories.
 *
 * Method (also in the JSON under "method"):
 * - One container per fio job (image fio:local, made with `docker import` from the host's fio, its
 *   libraries and busybox), the volume at /data, so every job starts from a fresh mount of the
 *   volume (Ballast mounts on the first reference and unmounts on the last): FUSE clients begin with
 *   an empty cache.
 * - Sequential write: 1 MiB blocks, buffered, end_fsync=1 (the fsync is inside the measured time).
 * - Sequential read: 1 MiB blocks of the file the write left, buffered with --invalidate=1 (fio drops
 *   the file's cached pages first). Page caches cannot be dropped from inside a container; caches
 *   below the volume stay warm: the host page cache under a block volume's loop device and under the
 *   loopback servers' files, the OSD's BlueStore cache.
 * - Random read and write, 4 KiB, 10 s each: O_DIRECT with libaio at iodepth 16 where the filesystem
 *   takes O_DIRECT (probed per volume); otherwise buffered psync at depth 1 (read: --invalidate=1;
 *   write: end_fsync=1), marked in the table.
 * - Create-to-running: `docker volume create` then `docker run -d ... sleep` until `docker inspect`
 *   says running; one warm-up, then rounds in rotating order; median.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { cpus, release, totalmem } from 'node:os';
import { startDockerEngine, dockerSkipReason, type DockerEngine } from '../test/helpers/docker-engine.js';
import { sleep } from '../test/helpers/proc.js';
import { sshdSkipReason, startSshd } from '../test/servers/sshd.js';
import { glusterSkipReason, startGluster } from '../test/servers/gluster.js';
import { cephSkipReason, startCeph } from '../test/servers/ceph.js';
import { Cleanups, removeTree } from './lib/cleanup.js';
import { figure, type Figure } from './lib/report.js';
import { loadAvg } from './lib/proc-status.js';
import { median, round } from './lib/stats.js';
import { buildFioImage, fioSkipReason, JOB_LABEL, type JobName } from './lib/fio.js';
import {
  MiB, cephMonPids, fioTarget, startDaemon, startupRounds, startupSummary,
  type Env, type FioOutcome, type StartupSample, type StartupSubject, type Target,
} from './sections/backends.js';

const ALL = ['host-dir', 'local', 'block', 'sshfs', 'glusterfs', 'cephfs', 'rbd', 's3'] as const;
type Name = (typeof ALL)[number];
const CEPH: readonly Name[] = ['cephfs', 'rbd', 's3'];

interface Args { out: string; backends: Name[]; reps: number; cephWaitSec: number; seqMiB: number; randSec: number; s3SeqMiB: number }

function parseArgs(argv: string[]): Args {
  const a: Args = { out: 'bench-backends.json', backends: [...ALL], reps: 5, cephWaitSec: 600, seqMiB: 512, randSec: 10, s3SeqMiB: 64 };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const [flag, inline] = arg.includes('=') ? [arg.slice(0, arg.indexOf('=')), arg.slice(arg.indexOf('=') + 1)] : [arg, undefined];
    const val = () => { const v = inline ?? argv[++i]; if (v === undefined) throw new Error(`${flag} needs a value`); return v; };
    const num = (min: number) => { const n = Number(val()); if (!Number.isInteger(n) || n < min) throw new Error(`${flag} needs an integer >= ${min}`); return n; };
    if (flag === '--out') a.out = val();
    else if (flag === '--backends') {
      a.backends = val().split(',').map((s) => s.trim()).filter(Boolean) as Name[];
      for (const b of a.backends) if (!ALL.includes(b)) throw new Error(`unknown backend ${b}; choose from ${ALL.join(', ')}`);
    } else if (flag === '--reps') a.reps = num(5);
    else if (flag === '--ceph-wait-sec') a.cephWaitSec = num(0);
    else if (flag === '--seq-mib') a.seqMiB = num(8);
    else if (flag === '--s3-seq-mib') a.s3SeqMiB = num(8);
    else if (flag === '--rand-sec') a.randSec = num(1);
    else if (flag === '-h' || flag === '--help') {
      process.stderr.write(`usage: node dist/bench/backends.js [--out FILE] [--backends ${ALL.join(',')}] [--reps N>=5] [--ceph-wait-sec N] [--seq-mib N] [--s3-seq-mib N] [--rand-sec N]\n`);
      process.exit(0);
    } else throw new Error(`unknown argument ${arg}`);
  }
  a.out = resolve(a.out);
  return a;
}

function targetsOf(a: Args): Record<Name, Target> {
  const seq = a.seqMiB * MiB;
  const cap = 90;
  return {
    'host-dir': { name: 'host-dir', kind: 'bind', seqBytes: seq, seqCapSec: cap, randSec: a.randSec, note: 'bind mount of a directory under /var/tmp (same disk as every Ballast root): the baseline' },
    local: { name: 'local', kind: 'ballast', backend: 'local', seqBytes: seq, seqCapSec: cap, randSec: a.randSec },
    block: { name: 'block', kind: 'ballast', backend: 'block', opts: { size: '2G', fstype: 'ext4' }, seqBytes: seq, seqCapSec: cap, randSec: a.randSec,
      note: 'ext4 on a 2 GiB sparse image through a loop device, which does buffered I/O on the image: data just written is read back from the host page cache, and O_DIRECT writes end in it' },
    sshfs: { name: 'sshfs', kind: 'ballast', backend: 'sshfs', seqBytes: seq, seqCapSec: cap, randSec: a.randSec, note: 'sshd on 127.0.0.1 (test/servers/sshd.ts), export dir on the same disk' },
    glusterfs: { name: 'glusterfs', kind: 'ballast', backend: 'glusterfs', seqBytes: seq, seqCapSec: cap, randSec: a.randSec, note: 'one-brick volume on 127.0.0.1 (test/servers/gluster.ts), brick on the same disk' },
    cephfs: { name: 'cephfs', kind: 'ballast', backend: 'cephfs', seqBytes: seq, seqCapSec: cap, randSec: a.randSec, note: 'ceph-fuse; one-node Ceph on 127.0.0.1 (test/servers/ceph.ts), one BlueStore OSD on a sparse file on the same disk' },
    rbd: { name: 'rbd', kind: 'ballast', backend: 'rbd', opts: { size: '2G', fstype: 'ext4' }, seqBytes: seq, seqCapSec: cap, randSec: a.randSec, note: 'ext4 on a 2 GiB RBD image through rbd-fuse + a loop device (buffered, as for block), same cluster' },
    s3: { name: 's3', kind: 'ballast', backend: 's3', seqBytes: a.s3SeqMiB * MiB, seqCapSec: cap, randSec: null,
      randSkip: 's3fs stores whole objects: 4 KiB random writes re-upload the object and random reads are ranged GETs, so only sequential I/O of a smaller file is measured',
      note: `s3fs against radosgw on 127.0.0.1, same cluster; sequential only, ${a.s3SeqMiB} MiB` },
  };
}

class Interrupted extends Error { constructor() { super('interrupted'); } }

interface Row { fio?: FioOutcome; startup?: Record<string, unknown> & { medianMs: number; vsDockerLocal?: number; dockerLocalMedianMs?: number; phase: string }; note?: string }

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const t0 = performance.now();
  const log = (s: string) => process.stderr.write(`[${((performance.now() - t0) / 1000).toFixed(1).padStart(6)}s] ${s}\n`);
  const loadStart = loadAvg();
  const targets = targetsOf(args);
  const want = (n: Name) => args.backends.includes(n);
  const rows: Record<string, Row> = {};
  const skipped: { section: string; reason: string }[] = [];
  const errors: { section: string; error: string }[] = [];
  const skip = (section: string, reason: string) => { skipped.push({ section, reason }); log(`  ${section} skipped: ${reason}`); };
  const extra: Record<string, unknown> = {};
  const cephSeenAtStart = cephMonPids();
  const otherCephSeen = new Set<number>(cephSeenAtStart);

  const base = new Cleanups();
  let phase = new Cleanups();
  let interrupted = false;
  const live = () => { if (interrupted) throw new Interrupted(); };
  const halt = () => new Promise<never>(() => {});
  const onSignal = (sig: NodeJS.Signals) => {
    if (interrupted) return;
    interrupted = true;
    log(`${sig}: cleaning up`);
    void phase.runAll(log).then(() => base.runAll(log)).finally(() => { log('cleaned up; exiting'); process.exit(130); });
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const why = dockerSkipReason();
  let tmpBase = '';
  if (why) skip('all', why);
  else {
    tmpBase = mkdtempSync('/var/tmp/ballast-bench-backends-');
    base.add(`bench dir ${tmpBase}`, () => removeTree(tmpBase));
  }

  const fioFor = async (env: Env, t: Target, driver: string | undefined, daemon?: Parameters<typeof fioTarget>[3]) => {
    log(`  fio on ${t.name}`);
    try {
      const r = await fioTarget(env, t, driver, daemon);
      (rows[t.name] ??= {}).fio = r;
      log(`  fio on ${t.name} took ${r.wallSec} s`);
    } catch (e) {
      if (e instanceof Interrupted || interrupted) throw new Interrupted();
      errors.push({ section: `${t.name} fio`, error: (e as Error).message });
      log(`  fio on ${t.name} FAILED: ${(e as Error).stack ?? String(e)}`);
    }
  };
  const startupFor = async (env: Env, subjects: StartupSubject[], phaseName: string, localKey: string) => {
    if (!subjects.some((s) => s.kind !== 'docker-local')) return;
    log(`  create-to-running, ${args.reps} rounds: ${subjects.map((s) => s.name).join(', ')}`);
    let res: Record<string, StartupSample[]>;
    const load0 = loadAvg();
    try { res = await startupRounds(env, subjects, args.reps); } catch (e) {
      if (e instanceof Interrupted || interrupted) throw new Interrupted();
      errors.push({ section: `create-to-running (${phaseName})`, error: (e as Error).message });
      log(`  create-to-running (${phaseName}) FAILED: ${(e as Error).stack ?? String(e)}`);
      return;
    }
    ((extra.createToRunningLoadAvg1m ??= {}) as Record<string, unknown>)[phaseName] = { start: load0, end: loadAvg() };
    const localMed = median(res['docker-local'].map((x) => x.totalMs));
    for (const s of subjects) {
      const key = s.kind === 'docker-local' ? localKey : s.name;
      const sum = startupSummary(res[s.name]) as Row['startup'] & object;
      (rows[key] ??= {}).startup = { ...sum, phase: phaseName, ...(s.kind !== 'docker-local' ? { vsDockerLocal: round(sum.medianMs / localMed, 2), dockerLocalMedianMs: round(localMed, 1) } : {}) };
    }
  };

  let eng: DockerEngine | undefined;
  try {
    if (!why) {
      log('starting a private dockerd');
      eng = await startDockerEngine({ dir: join(tmpBase, 'dockerd') });
      const e = eng;
      base.add(`dockerd pid ${e.pid}`, () => e.stop());
      const env = (): Env => ({ eng: e, log, cleanups: phase, tmpBase, live });

      const fioWhy = fioSkipReason();
      let fioOk = !fioWhy;
      if (fioWhy) skip('fio', fioWhy);
      else {
        live();
        const f0 = performance.now();
        try {
          const img = await buildFioImage(e, tmpBase);
          extra.fioImage = { ...img, buildSec: round((performance.now() - f0) / 1000, 1), from: 'docker import of /usr/bin/fio + every library `ldd /usr/bin/fio` lists (and the loader) + busybox' };
          log(`  fio:local built in ${((performance.now() - f0) / 1000).toFixed(1)} s (${img.files} files, ${Math.round(img.bytes / 1e6)} MB); docker run --rm fio:local fio --version: ${img.version}`);
        } catch (err) {
          if (interrupted) throw new Interrupted();
          fioOk = false;
          skip('fio', `could not build the fio:local image: ${(err as Error).message}`);
        }
      }

      // ---- phase 1: host dir, local, block, sshfs, glusterfs --------------------------------------
      /** A phase: its own cleanups, torn down at its end; a failure is recorded and the next phase runs. */
      const runPhase = async (name: string, fn: () => Promise<void>) => {
        phase = new Cleanups();
        const p0 = performance.now();
        try { await fn(); } catch (err) {
          if (err instanceof Interrupted || interrupted) throw new Interrupted();
          errors.push({ section: name, error: (err as Error).message });
          log(`${name} FAILED: ${(err as Error).stack ?? String(err)}`);
        }
        log(`${name}: tearing down`);
        await phase.runAll(log);
        live();
        log(`${name} took ${((performance.now() - p0) / 1000).toFixed(1)} s`);
      };

      const p1 = (['host-dir', 'local', 'block', 'sshfs', 'glusterfs'] as Name[]).filter(want);
      if (p1.length) await runPhase('phase 1', async () => {
        log('phase 1: host dir, local, block, sshfs, glusterfs');
        const backends: Record<string, Record<string, unknown>> = {};
        if (want('local')) backends.local = { type: 'local' };
        if (want('block')) backends.block = { type: 'block' };
        const [sshR, glR] = await Promise.allSettled([
          (async () => {
            if (!want('sshfs')) return undefined;
            const w = sshdSkipReason();
            if (w) { skip('sshfs', w); return undefined; }
            live();
            const s = await startSshd({ dir: mkdtempSync(join(tmpBase, 'sshd-')) });
            phase.add(`sshd pid ${s.pid()}`, () => s.stop());
            return s;
          })(),
          (async () => {
            if (!want('glusterfs')) return undefined;
            const w = glusterSkipReason();
            if (w) { skip('glusterfs', w); return undefined; }
            live();
            const g = await startGluster({ dir: mkdtempSync(join(tmpBase, 'gluster-')) });
            phase.add(`glusterd pid ${g.glusterdPid()}`, () => g.stop());
            return g;
          })(),
        ]);
        live();
        if (sshR.status === 'rejected') skip('sshfs', `the test sshd did not start: ${(sshR.reason as Error).message.slice(0, 400)}`);
        else if (sshR.value) {
          const s = sshR.value;
          backends.sshfs = { type: 'sshfs', host: s.host, port: s.port, user: s.user, path: s.exportDir, identityFile: s.clientKey, knownHostsFile: s.knownHostsFile, mountTimeoutSec: 30 };
        }
        if (glR.status === 'rejected') skip('glusterfs', `the test glusterd did not start: ${(glR.reason as Error).message.slice(0, 400)}`);
        else if (glR.value) backends.glusterfs = { type: 'glusterfs', servers: ['127.0.0.1'], volume: glR.value.volume, mountTimeoutSec: 30 };

        const ts = p1.map((n) => targets[n]).filter((t) => t.kind === 'bind' || backends[t.backend!]);
        let daemon: Awaited<ReturnType<typeof startDaemon>> | undefined;
        if (Object.keys(backends).length) daemon = await startDaemon(env(), join(tmpBase, 'ballast-1'), backends);
        if (fioOk) for (const t of ts) await fioFor(env(), t, daemon?.driver, daemon);
        const subjects: StartupSubject[] = [{ name: 'docker-local', kind: 'docker-local' }];
        for (const t of ts) subjects.push(t.kind === 'bind' ? { name: t.name, kind: 'bind' } : { name: t.name, kind: 'ballast', target: t, driver: daemon!.driver, daemon: daemon! });
        await startupFor(env(), subjects, 'phase 1', 'docker-local');
      });

      // ---- phase 2: Ceph (cephfs, rbd, s3) ------------------------------------------------------
      const p2 = CEPH.filter(want);
      const cephWhy = p2.length ? cephSkipReason() : undefined;
      if (p2.length && cephWhy) for (const n of p2) skip(n, cephWhy);
      else if (p2.length) {
        // Only when no other Ceph runs on this machine (the e2e suite starts one): wait for it, bounded.
        const deadline = Date.now() + args.cephWaitSec * 1000 - (cephSeenAtStart.length ? performance.now() - t0 : 0);
        let others = cephMonPids();
        if (others.length) log(`phase 2: another Ceph is running (ceph-mon pid ${others.join(', ')}); waiting up to ${Math.max(0, Math.round((deadline - Date.now()) / 1000))} s more for it to stop`);
        while (others.length && Date.now() < deadline) {
          for (const p of others) otherCephSeen.add(p);
          live();
          await sleep(5000);
          others = cephMonPids();
        }
        if (others.length) {
          const reason = `another Ceph cluster was still running on this machine (ceph-mon pid ${others.join(', ')}) after waiting up to ${args.cephWaitSec} s (counted from the bench's start when it was already running then); test/servers/ceph.ts is only started when no ceph-mon runs`;
          for (const n of p2) skip(n, reason);
        } else await runPhase('phase 2', async () => {
          log('phase 2: starting a one-node Ceph (mon, mgr, osd, mds, radosgw) on 127.0.0.1');
          const cephDir = join(tmpBase, 'ceph');
          let cluster: Awaited<ReturnType<typeof startCeph>> | undefined;
          try {
            live();
            // startCeph stops what it started when it fails; once up, its stop() is registered.
            cluster = await startCeph(cephDir, { osdSizeGiB: 8, monPort: 3390, rgwPort: 7490 });
            const c = cluster;
            phase.add('ceph cluster', () => c.stop());
            extra.ceph = { startSec: round(c.startMs / 1000, 1), laps: c.laps, monPort: c.monPort, rgwUrl: c.rgwUrl };
            log(`  Ceph healthy in ${(c.startMs / 1000).toFixed(1)} s`);
          } catch (err) {
            if (interrupted) throw new Interrupted();
            for (const n of p2) skip(n, `the test Ceph cluster did not start: ${(err as Error).message.slice(0, 400)}`);
          }
          if (cluster) {
            const c = cluster;
            const cephCfg = { conf: c.conf, keyring: c.keyring, timeoutSec: 60 };
            const backends: Record<string, Record<string, unknown>> = {};
            if (want('cephfs')) backends.cephfs = { type: 'cephfs', ...cephCfg };
            if (want('rbd')) backends.rbd = { type: 'rbd', ...cephCfg };
            if (want('s3')) backends.s3 = { type: 's3', url: c.rgwUrl, bucket: c.bucket, passwdFile: c.passwdFile, mountTimeoutSec: 60 };
            const daemon = await startDaemon(env(), join(tmpBase, 'ballast-2'), backends);
            const ts = p2.map((n) => targets[n]);
            if (fioOk) for (const t of ts) await fioFor(env(), t, daemon.driver, daemon);
            const subjects: StartupSubject[] = [{ name: 'docker-local', kind: 'docker-local' }, ...ts.map((t) => ({ name: t.name, kind: 'ballast' as const, target: t, driver: daemon.driver, daemon }))];
            await startupFor(env(), subjects, 'phase 2 (Ceph)', 'docker-local (phase 2)');
          }
        });
      }
    }
  } catch (e) {
    if (e instanceof Interrupted || interrupted) return halt();
    errors.push({ section: 'run', error: (e as Error).message });
    log(`FAILED: ${(e as Error).stack ?? String(e)}`);
  } finally {
    if (!interrupted) {
      await phase.runAll(log);
      await base.runAll(log);
    }
  }
  if (interrupted) return halt();
  if (tmpBase) rmSync(tmpBase, { recursive: true, force: true });

  // ---- results -----------------------------------------------------------------------------------
  const jobs: JobName[] = ['seqwrite', 'seqread', 'randread', 'randwrite'];
  const hostJobs = rows['host-dir']?.fio?.jobs ?? {};
  const ratio = (n: string, j: JobName): number | undefined => {
    const r = rows[n]?.fio?.jobs[j];
    const h = hostJobs[j];
    if (!r || !h) return undefined;
    return j.startsWith('seq') ? round(r.MiBps / h.MiBps, 2) : round(r.iops / h.iops, 2);
  };
  const figures: Figure[] = [];
  const order = [...ALL, 'docker-local', 'docker-local (phase 2)'];
  for (const n of order) {
    const row = rows[n];
    if (!row) continue;
    for (const j of jobs) {
      const r = row.fio?.jobs[j];
      if (!r) continue;
      const seq = j.startsWith('seq');
      const x = ratio(n, j);
      figures.push(figure(n, `${JOB_LABEL[j]}${seq ? '' : ` (${r.mode})`}`, seq ? r.MiBps : r.iops, seq ? 'MiB/s' : 'IOPS', undefined,
        `${r.ioengine} depth ${r.iodepth}, ${Math.round(r.ioBytes / MiB)} MiB in ${(r.runtimeMs / 1000).toFixed(1)} s, ${r.MiBps} MiB/s, ${r.iops} IOPS, mean latency ${r.latMeanUs} us`));
      if (x !== undefined && n !== 'host-dir') figures.push(figure(n, `${JOB_LABEL[j]} ratio to host dir`, x, 'x'));
    }
    if (row.startup) {
      figures.push(figure(n, 'create to running, median', row.startup.medianMs, 'ms'));
      if (row.startup.vsDockerLocal !== undefined) figures.push(figure(n, 'create to running, ratio to docker local', row.startup.vsDockerLocal, 'x'));
    }
  }
  for (const n of Object.keys(rows)) {
    const t = (targets as Record<string, Target | undefined>)[n];
    if (t?.note) rows[n].note = t.note;
  }
  const loadEnd = loadAvg();
  const result = {
    benchmark: 'ballast-backends',
    startedAt: new Date(Date.now() - (performance.now() - t0)).toISOString(),
    durationSec: round((performance.now() - t0) / 1000, 1),
    host: {
      loadAvg1m: { start: loadStart, end: loadEnd }, node: process.version, kernel: release(), cpus: cpus().length, cpuModel: cpus()[0]?.model,
      memGB: Math.round(totalmem() / 1e8) / 10, root: process.getuid?.() === 0,
      otherCephMonPidsSeen: [...otherCephSeen],
    },
    method: {
      container: 'one `docker run --rm -v VOLUME:/data fio:local fio ...` per job on a private dockerd; each job mounts the volume afresh (Ballast unmounts on the last reference), so FUSE clients start cold',
      seqwrite: `1 MiB blocks, psync, buffered, --end_fsync=1 (fsync inside the measured time), --fallocate=none; ${args.seqMiB} MiB (s3: ${args.s3SeqMiB} MiB), capped at 90 s`,
      seqread: '1 MiB blocks, psync, buffered with --invalidate=1 (fio drops the file\'s cached pages first), reading the file the write job left; caches below the volume are not dropped (host page cache under loop devices and loopback servers, BlueStore cache)',
      randread: `4 KiB, ${args.randSec} s time-based over the same file; O_DIRECT + libaio iodepth 16 where the filesystem takes O_DIRECT (probed per volume), else buffered psync depth 1 with --invalidate=1`,
      randwrite: `4 KiB, ${args.randSec} s time-based over the same file; O_DIRECT + libaio iodepth 16, else buffered psync depth 1 with --end_fsync=1`,
      ratios: 'backend / host-dir: MiB/s for sequential jobs, IOPS for random jobs; create-to-running: backend / Docker\'s local driver, measured in the same rounds',
      createToRunning: `docker volume create (bind mount: none) + docker run -d --name C -v VOL:/data busybox:local sleep 3600, then docker inspect -f {{.State.Running}} every 20 ms until true; 1 warm-up, then ${args.reps} rounds in rotating order; teardown untimed`,
    },
    ...extra,
    figures,
    backends: rows,
    skipped, errors,
  };
  const json = JSON.stringify(result, null, 2);
  writeFileSync(args.out, `${json}\n`);
  process.stdout.write(`${json}\n`);
  process.stderr.write(`\nBallast backend benchmark (${result.durationSec} s, ${result.host.cpus} CPUs, 1-min load average ${loadStart} at start, ${loadEnd} at end)\n\n${matrix(rows, ratio, order)}\n`);
  if (skipped.length) process.stderr.write(`\nskipped:\n${skipped.map((s) => `  ${s.section}: ${s.reason}`).join('\n')}\n`);
  for (const e of errors) process.stderr.write(`\n${e.section} failed: ${e.error}\n`);
  process.stderr.write(`\nresults written to ${args.out}\n`);
  if (errors.length) process.exitCode = 1;
}

function fmtNum(v: number): string {
  return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
}

/** The table: one row per backend, one column per figure, each value with its ratio. */
function matrix(rows: Record<string, Row>, ratio: (n: string, j: JobName) => number | undefined, order: string[]): string {
  const head = ['BACKEND', 'SEQ WRITE 1M', 'SEQ READ 1M', 'RAND READ 4K', 'RAND WRITE 4K', 'CREATE->RUNNING'];
  const out: string[][] = [head, ['', 'MiB/s (x host)', 'MiB/s (x host)', 'IOPS (x host) mode', 'IOPS (x host) mode', 'median ms (x docker local)']];
  for (const n of order) {
    const row = rows[n];
    if (!row) continue;
    const cell = (j: JobName): string => {
      const r = row.fio?.jobs[j];
      if (!r) return row.fio?.skippedJobs[j] ? 'not run' : '-';
      const x = ratio(n, j);
      const v = j.startsWith('seq') ? fmtNum(r.MiBps) : String(r.iops);
      return `${v}${x !== undefined ? ` (${x.toFixed(2)})` : ''}${j.startsWith('rand') ? ` ${r.mode === 'direct' ? 'D' : 'B'}` : ''}`;
    };
    const st = row.startup;
    const stCell = st ? `${fmtNum(st.medianMs)}${st.vsDockerLocal !== undefined ? ` (${st.vsDockerLocal.toFixed(2)})` : ''}` : '-';
    out.push([n, cell('seqwrite'), cell('seqread'), cell('randread'), cell('randwrite'), stCell]);
  }
  const w = head.map((_, i) => Math.max(...out.map((r) => r[i].length)));
  const lines = out.map((r) => r.map((c, i) => (i === 0 ? c.padEnd(w[i]) : c.padStart(w[i]))).join('  ').trimEnd());
  lines.splice(2, 0, w.map((n) => '-'.repeat(n)).join('  '));
  const notes = order.filter((n) => rows[n]?.note).map((n) => `  ${n}: ${rows[n].note}`);
  const od = order.filter((n) => rows[n]?.fio).map((n) => `  ${n}: ${rows[n].fio!.odirectProbe}`);
  return [
    ...lines, '',
    'D = O_DIRECT, libaio, iodepth 16; B = buffered, psync, depth 1 (the filesystem refused O_DIRECT).',
    'host-dir create->running has no volume create (a bind mount); docker-local rows are Docker\'s own local driver.',
    ...(notes.length ? ['', 'backends:', ...notes] : []),
    ...(od.length ? ['', 'O_DIRECT probe:', ...od] : []),
  ].join('\n');
}

main().catch((e) => { process.stderr.write(`bench:backends: ${(e as Error).stack ?? String(e)}\n`); process.exit(1); });
