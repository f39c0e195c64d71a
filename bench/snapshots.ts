/**
 * `npm run bench:snapshots`: snapshots, clones and backups of block volumes, in one run, as root.
 * - Snapshot of a 1 GiB volume with 512 MiB written, mounted: on an image directory on xfs with
 *   reflink (a reflink) against one on ext4 (a sparse copy); the time the filesystem was frozen.
 * - Clone to mounted: `-o from-snapshot` create plus the first Mount (thin clone on xfs: a reflink).
 * - Backup with restic to a directory: a first backup and an incremental one after 1% of the data
 *   changed (MB/s of the volume's bytes), against restic run by hand on the same data (a copy of the
 *   volume's files in a directory, backed up to a repository of its own): target ratio at most 1.1.
 * - Restore into a new volume (MB/s).
 * Three runs of each, medians. Figures as JSON (stdout, bench-snapshots.json) and a table (stderr).
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { startBallast, type BallastProc } from '../test/helpers/ballast.js';
import { run } from '../test/helpers/proc.js';
import { PluginClient } from './lib/plugin-client.js';
import { figure, type Figure } from './lib/report.js';
import { writeResult, type BenchError } from './lib/result.js';
import { median } from './lib/stats.js';
import { loadAvg } from './lib/proc-status.js';

const RUNS = 3;
const MiB = 1024 * 1024;
const out = resolve(process.argv[2] ?? 'bench-snapshots.json');

async function must(argv: string[], timeoutMs = 600_000, env?: NodeJS.ProcessEnv, cwd?: string): Promise<string> {
  const r = await run(argv, { timeoutMs, ...(env ? { env } : {}), ...(cwd ? { cwd } : {}) });
  if (r.code !== 0) throw new Error(`${argv.join(' ')}: exit ${r.code}: ${r.stderr.slice(0, 500)}`);
  return r.stdout.trim();
}

async function main(): Promise<void> {
  const t0 = performance.now();
  const loadStart = loadAvg();
  const figures: Figure[] = [];
  const errors: BenchError[] = [];
  const scratch = mkdtempSync('/var/tmp/ballast-bench-snap-');
  const xfsImg = join(scratch, 'xfs.img');
  const xfsDir = join(scratch, 'xfs');
  mkdirSync(xfsDir);
  let b: BallastProc | undefined;
  const mounted: string[] = [];
  try {
    await must(['truncate', '-s', '12G', xfsImg]);
    await must(['mkfs.xfs', '-q', '-m', 'reflink=1', xfsImg]);
    await must(['mount', '-o', 'loop', xfsImg, xfsDir]);
    mounted.push(xfsDir);
    const pw = join(scratch, 'pw');
    writeFileSync(pw, `${randomBytes(16).toString('hex')}\n`, { mode: 0o600 });
    const cfg = join(scratch, 'config.json');
    writeFileSync(cfg, JSON.stringify({
      backends: { ext4host: { type: 'block', imageDir: join(scratch, 'images') }, xfshost: { type: 'block', imageDir: join(xfsDir, 'images') } },
      backupTargets: { repo: { type: 'dir', path: join(scratch, 'repo'), passwordFile: pw } },
    }));
    b = await startBallast({ root: join(scratch, 'root'), configFile: cfg, extraArgs: ['--log-level', 'warn'] });
    const pc = new PluginClient(b.socket);
    const plugin = { call: async (m: string, body: unknown) => { const r = await pc.post(m, body); const bd = JSON.parse(r.body.toString("utf8") || "{}") as Record<string, unknown>; if (bd.Err) throw new Error(`${m}: ${String(bd.Err)}`); return bd; } };
    const cli = async (args: string[]) => {
      const r = await b!.cli(args, 1_800_000);
      if (r.code !== 0) throw new Error(`ballast ${args.join(' ')}: ${r.stderr}`);
      return r.stdout.trim();
    };
    const raw: Record<string, number[]> = {};
    const add = (k: string, v: number) => { (raw[k] ??= []).push(v); };

    for (const backend of ['xfshost', 'ext4host'] as const) {
      const v = `src-${backend}`;
      await cli(['volume', 'create', v, '-b', backend, '-o', 'size=1G', '-o', 'provisioning=thin']);
      const mp = String((await plugin.call('VolumeDriver.Mount', { Name: v, ID: 'bench' })).Mountpoint);
      await must(['dd', 'if=/dev/urandom', `of=${mp}/data`, 'bs=1M', 'count=512', 'conv=fsync', 'status=none']);
      for (let i = 0; i < RUNS; i++) {
        const s0 = performance.now();
        const info = JSON.parse(await cli(['snapshot', 'create', v, `${v}-s${i}`, '--json'])) as { method: string; frozenMs: number };
        add(`${backend} snapshot`, performance.now() - s0);
        add(`${backend} frozen`, info.frozenMs);
        raw[`${backend} method`] = [info.method === 'reflink' ? 1 : 0];
        const c0 = performance.now();
        await cli(['volume', 'create', `${v}-c${i}`, '-o', `from-snapshot=${v}-s${i}`]);
        await plugin.call('VolumeDriver.Mount', { Name: `${v}-c${i}`, ID: 'bench' });
        add(`${backend} clone`, performance.now() - c0);
        await plugin.call('VolumeDriver.Unmount', { Name: `${v}-c${i}`, ID: 'bench' });
        await cli(['volume', 'rm', `${v}-c${i}`]);
        await cli(['snapshot', 'rm', `${v}-s${i}`]);
      }
      if (backend === 'ext4host') await plugin.call('VolumeDriver.Unmount', { Name: v, ID: 'bench' });
    }
    for (const backend of ['xfshost', 'ext4host'] as const) {
      const method = raw[`${backend} method`][0] ? 'reflink' : 'copy';
      const section = `snapshot of a mounted 1 GiB volume, 512 MiB written (image dir on ${backend === 'xfshost' ? 'xfs with reflink' : 'ext4'}: ${method})`;
      figures.push(figure(section, 'snapshot create, median', median(raw[`${backend} snapshot`]), 'ms'));
      figures.push(figure(section, 'filesystem frozen, median', median(raw[`${backend} frozen`]), 'ms'));
      figures.push(figure(section, 'clone to mounted (create -o from-snapshot + Mount), median', median(raw[`${backend} clone`]), 'ms'));
    }
    figures.push(figure('snapshot: reflink against copy', 'ratio copy / reflink (snapshot create)', Math.round((median(raw['ext4host snapshot']) / median(raw['xfshost snapshot'])) * 10) / 10, 'x'));

    // Backups of the xfs-host volume (still mounted): first, then incremental after 1% changed.
    const v = 'src-xfshost';
    const mp = String((await plugin.call('VolumeDriver.Path', { Name: v })).Mountpoint);
    const byHandDir = join(scratch, 'byhand-data');
    const env = { ...process.env, RESTIC_PASSWORD_FILE: pw, RESTIC_CACHE_DIR: join(scratch, 'byhand-cache') };
    for (let i = 0; i < RUNS; i++) {
      const repo = join(scratch, `byhand-repo-${i}`);
      // Ballast: a fresh repository per run, so each first backup is a first one.
      await must(['rm', '-rf', join(scratch, 'repo'), join(b.root, 'backups', 'cache')]);
      const f0 = performance.now();
      const first = JSON.parse(await cli(['backup', 'create', v, '--json'])) as { id: string; bytes: number };
      add('backup first', performance.now() - f0);
      await must(['dd', 'if=/dev/urandom', `of=${mp}/data`, 'bs=1M', 'count=5', `seek=${100 + i * 10}`, 'conv=notrunc,fsync', 'status=none']);
      const n0 = performance.now();
      const inc = JSON.parse(await cli(['backup', 'create', v, '--json'])) as { id: string; dataAdded: number };
      add('backup incremental', performance.now() - n0);
      add('incremental added', inc.dataAdded / MiB);
      // By hand: the same data as a plain directory, restic init + backup, then the same 1% change.
      await must(['rm', '-rf', byHandDir, repo, env.RESTIC_CACHE_DIR]);
      await must(['cp', '-a', `${mp}/.`, byHandDir]);
      await must(['restic', 'init', '-r', repo, '--quiet'], 60_000, env);
      const h0 = performance.now();
      await must(['restic', 'backup', '-r', repo, '--quiet', '.'], 600_000, env, byHandDir);
      add('byhand first', performance.now() - h0);
      await must(['dd', 'if=/dev/urandom', `of=${byHandDir}/data`, 'bs=1M', 'count=5', `seek=${100 + i * 10}`, 'conv=notrunc,fsync', 'status=none']);
      const h1 = performance.now();
      await must(['restic', 'backup', '-r', repo, '--quiet', '.'], 600_000, env, byHandDir);
      add('byhand incremental', performance.now() - h1);
      const r0 = performance.now();
      await cli(['backup', 'restore', first.id, '--into', `restored-${i}`, '-b', 'xfshost']);
      add('restore', performance.now() - r0);
      await cli(['volume', 'rm', `restored-${i}`]);
      raw.bytes = [first.bytes];
    }
    const mbps = (ms: number) => Math.round((raw.bytes[0] / 1e6) / (ms / 1000) * 10) / 10;
    const sec = 'backup with restic to a directory (512 MiB of random data, from a snapshot)';
    figures.push(figure(sec, 'first backup, median', median(raw['backup first']), 'ms', undefined, `${mbps(median(raw['backup first']))} MB/s`));
    figures.push(figure(sec, 'first, restic by hand on a copy of the files, median', median(raw['byhand first']), 'ms'));
    figures.push(figure(sec, 'ratio first ballast / by hand', Math.round((median(raw['backup first']) / median(raw['byhand first'])) * 100) / 100, 'x', { op: '<=', value: 1.1 }));
    figures.push(figure(sec, 'incremental after 5 MiB (1%) changed, median', median(raw['backup incremental']), 'ms'));
    figures.push(figure(sec, 'incremental, restic by hand, median', median(raw['byhand incremental']), 'ms'));
    figures.push(figure(sec, 'ratio incremental ballast / by hand', Math.round((median(raw['backup incremental']) / median(raw['byhand incremental'])) * 100) / 100, 'x', { op: '<=', value: 1.1 }));
    figures.push(figure(sec, 'data added by the incremental, median', median(raw['incremental added']), 'MiB'));
    figures.push(figure('restore of the first backup into a new xfs-host volume (1 GiB)', 'create -o from-backup, median', median(raw.restore), 'ms', undefined, `${mbps(median(raw.restore))} MB/s`));
    await plugin.call('VolumeDriver.Unmount', { Name: v, ID: 'bench' });
  } catch (e) {
    errors.push((e as Error).stack ?? String(e));
  } finally {
    await b?.stop().catch(() => undefined);
    for (const m of mounted.reverse()) await run(['umount', '-l', m], { timeoutMs: 60_000 });
    rmSync(scratch, { recursive: true, force: true });
  }
  writeResult({ benchmark: 'snapshots', title: 'Ballast snapshots, clones and backups', out, t0, loadStart, figures, errors });
}

void main();
