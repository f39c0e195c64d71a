/**
 * fio inside containers: the `fio:local` image (made with `docker import`, nothing is pulled) and
 * the jobs of the backend benchmark, run one container per job with the volume at /data.
 */
import { spawn } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { run } from '../../test/helpers/proc.js';
import type { DockerEngine } from '../../test/helpers/docker-engine.js';

export const FIO_IMAGE = 'fio:local';
const FIO = '/usr/bin/fio';
const BUSYBOX = '/bin/busybox';
/** The docker CLI the test harness uses (docker-engine.ts). */
const DOCKER = existsSync('/usr/bin/docker') ? '/usr/bin/docker' : 'docker';

/** Why the fio image cannot be made here, or undefined. */
export function fioSkipReason(): string | undefined {
  if (!existsSync(FIO)) return 'fio is not installed (apt-get install fio)';
  if (!existsSync(BUSYBOX)) return 'busybox-static is not installed (apt-get install busybox-static)';
  return undefined;
}

/** Absolute paths `ldd` lists for a binary: every library it resolves, and the dynamic loader. */
export async function lddPaths(binary: string): Promise<string[]> {
  const r = await run(['ldd', binary], { timeoutMs: 30_000 });
  if (r.code !== 0) throw new Error(`ldd ${binary} failed (${r.code}): ${r.stderr.trim()}`);
  const out = new Set<string>();
  for (const line of r.stdout.split('\n')) {
    if (/not found/.test(line)) throw new Error(`ldd ${binary}: ${line.trim()}`);
    const m = /=>\s*(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
    if (m) out.add(m[1]);
  }
  return [...out];
}

/**
 * Builds `fio:local` in the engine from a root filesystem holding /usr/bin/fio, every library ldd
 * lists for it (copied to the same paths, symlinks followed) with the dynamic loader, busybox with
 * its applets in /bin for a shell, and empty /tmp and /data. Returns the fio version the image runs.
 */
export async function buildFioImage(eng: DockerEngine, tmpDir: string): Promise<{ version: string; files: number; bytes: number }> {
  const rootfs = mkdtempSync(join(tmpDir, 'fio-rootfs-'));
  try {
    chmodSync(rootfs, 0o755);
    const files = [FIO, ...(await lddPaths(FIO))];
    let bytes = 0;
    for (const f of files) {
      const dest = join(rootfs, f);
      mkdirSync(dirname(dest), { recursive: true, mode: 0o755 });
      copyFileSync(f, dest); // follows symlinks: the image holds the real file under the listed name
      chmodSync(dest, 0o755);
      bytes += statSync(dest).size;
    }
    mkdirSync(join(rootfs, 'bin'), { recursive: true });
    copyFileSync(BUSYBOX, join(rootfs, 'bin', 'busybox'));
    chmodSync(join(rootfs, 'bin', 'busybox'), 0o755);
    const list = await run([BUSYBOX, '--list'], { timeoutMs: 10_000 });
    for (const a of list.stdout.split('\n').map((s) => s.trim()).filter((s) => s && s !== 'busybox')) {
      if (!existsSync(join(rootfs, 'bin', a))) symlinkSync('busybox', join(rootfs, 'bin', a));
    }
    mkdirSync(join(rootfs, 'tmp'), { mode: 0o1777 });
    chmodSync(join(rootfs, 'tmp'), 0o1777);
    mkdirSync(join(rootfs, 'data'));
    await importTree(eng, rootfs, FIO_IMAGE);
    const v = await eng.docker(['run', '--rm', FIO_IMAGE, 'fio', '--version'], 60_000);
    if (v.code !== 0 || !/^fio-/.test(v.stdout.trim())) throw new Error(`docker run --rm ${FIO_IMAGE} fio --version failed (${v.code}): ${v.stdout.trim()} ${v.stderr.trim()}`);
    const sh = await eng.docker(['run', '--rm', FIO_IMAGE, 'sh', '-c', 'echo ok'], 60_000);
    if (sh.stdout.trim() !== 'ok') throw new Error(`the ${FIO_IMAGE} shell does not work: ${sh.stderr.trim()}`);
    return { version: v.stdout.trim(), files: files.length + 1, bytes };
  } finally {
    rmSync(rootfs, { recursive: true, force: true });
  }
}

/** `tar -C dir -c . | docker import - tag`, streamed (the tree is ~200 MB). */
function importTree(eng: DockerEngine, dir: string, tag: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const tar = spawn('tar', ['--numeric-owner', '--owner=0', '--group=0', '-C', dir, '-c', '.'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const imp = spawn(DOCKER, ['-H', eng.host, 'import', '-', tag], { stdio: ['pipe', 'pipe', 'pipe'] });
    let err = '';
    tar.stderr.on('data', (b: Buffer) => { err += b.toString(); });
    imp.stderr.on('data', (b: Buffer) => { err += b.toString(); });
    imp.stdout.resume();
    imp.stdin.on('error', () => undefined);
    tar.stdout.pipe(imp.stdin);
    const t = setTimeout(() => { tar.kill('SIGKILL'); imp.kill('SIGKILL'); }, 300_000);
    let tarCode: number | null = null;
    tar.on('error', reject);
    imp.on('error', reject);
    tar.on('close', (c) => { tarCode = c; });
    imp.on('close', (c) => {
      clearTimeout(t);
      if (c === 0 && tarCode === 0) resolve();
      else reject(new Error(`tar | docker import ${tag} failed (tar ${tarCode}, import ${c}): ${err.trim().slice(-800)}`));
    });
  });
}

// ---- jobs -----------------------------------------------------------------------------------------

export type JobName = 'seqwrite' | 'seqread' | 'randread' | 'randwrite';
export const JOB_LABEL: Record<JobName, string> = {
  seqwrite: 'seq write 1M', seqread: 'seq read 1M', randread: 'rand read 4K', randwrite: 'rand write 4K',
};

export interface JobSpec {
  readonly job: JobName;
  /** Bytes to move (sequential) or the file size (random). */
  readonly sizeBytes: number;
  /** O_DIRECT (random jobs only, where the filesystem accepts it). */
  readonly direct: boolean;
  /** Random jobs: seconds, time-based. Sequential jobs: a cap (the job ends at size or at the cap). */
  readonly runtimeSec: number;
}

export interface JobResult {
  job: JobName;
  mode: 'direct' | 'buffered';
  ioengine: string;
  iodepth: number;
  sizeMiB: number;
  /** Bytes fio moved. */
  ioBytes: number;
  /** fio's runtime of the job, ms (for writes with end_fsync it includes the final fsync). */
  runtimeMs: number;
  MiBps: number;
  iops: number;
  /** Completion latency, microseconds. */
  latMeanUs: number;
  latP99Us: number | null;
  args: string[];
}

export const DATA_FILE = '/data/ballast-bench.dat';

/** fio's argv for a job (inside the container). */
export function fioArgs(s: JobSpec): { args: string[]; ioengine: string; iodepth: number } {
  const common = [`--name=${s.job}`, `--filename=${DATA_FILE}`, `--size=${s.sizeBytes}`, '--output-format=json', '--group_reporting'];
  switch (s.job) {
    case 'seqwrite':
      // Buffered writes, the final fsync inside the measured time: the data is on the backend's storage.
      return { ioengine: 'psync', iodepth: 1, args: [...common, '--rw=write', '--bs=1M', '--ioengine=psync', '--direct=0', '--end_fsync=1', '--fallocate=none', `--runtime=${s.runtimeSec}`] };
    case 'seqread':
      // Buffered reads with readahead, of the file the write job left; --invalidate=1 drops its pages first.
      return { ioengine: 'psync', iodepth: 1, args: [...common, '--rw=read', '--bs=1M', '--ioengine=psync', '--direct=0', '--invalidate=1', `--runtime=${s.runtimeSec}`] };
    case 'randread':
      return s.direct
        ? { ioengine: 'libaio', iodepth: 16, args: [...common, '--rw=randread', '--bs=4k', '--ioengine=libaio', '--iodepth=16', '--direct=1', `--runtime=${s.runtimeSec}`, '--time_based', '--randrepeat=0'] }
        : { ioengine: 'psync', iodepth: 1, args: [...common, '--rw=randread', '--bs=4k', '--ioengine=psync', '--direct=0', '--invalidate=1', `--runtime=${s.runtimeSec}`, '--time_based', '--randrepeat=0'] };
    case 'randwrite':
      return s.direct
        ? { ioengine: 'libaio', iodepth: 16, args: [...common, '--rw=randwrite', '--bs=4k', '--ioengine=libaio', '--iodepth=16', '--direct=1', `--runtime=${s.runtimeSec}`, '--time_based', '--randrepeat=0'] }
        : { ioengine: 'psync', iodepth: 1, args: [...common, '--rw=randwrite', '--bs=4k', '--ioengine=psync', '--direct=0', '--end_fsync=1', `--runtime=${s.runtimeSec}`, '--time_based', '--randrepeat=0'] };
  }
}

interface FioSide { io_bytes: number; bw: number; iops: number; runtime: number; clat_ns?: { mean: number; percentile?: Record<string, number> }; lat_ns?: { mean: number } }

/** Parses fio's JSON output (text before the first '{' or after the last '}' is ignored). */
export function parseFio(stdout: string, s: JobSpec, meta: { args: string[]; ioengine: string; iodepth: number }): JobResult {
  const a = stdout.indexOf('{');
  const b = stdout.lastIndexOf('}');
  if (a < 0 || b < a) throw new Error(`no JSON in fio's output: ${stdout.slice(0, 400)}`);
  const j = JSON.parse(stdout.slice(a, b + 1)) as { jobs: ({ error: number; read: FioSide; write: FioSide })[] };
  const job = j.jobs[0];
  if (job.error) throw new Error(`fio job ${s.job} reported error ${job.error}`);
  const side = s.job === 'seqwrite' || s.job === 'randwrite' ? job.write : job.read;
  const p99 = side.clat_ns?.percentile?.['99.000000'];
  return {
    job: s.job, mode: s.direct ? 'direct' : 'buffered', ioengine: meta.ioengine, iodepth: meta.iodepth,
    sizeMiB: Math.round(s.sizeBytes / 1048576), ioBytes: side.io_bytes, runtimeMs: side.runtime,
    MiBps: Math.round((side.bw / 1024) * 10) / 10, iops: Math.round(side.iops), latMeanUs: Math.round((side.clat_ns?.mean ?? side.lat_ns?.mean ?? 0) / 100) / 10,
    latP99Us: p99 !== undefined ? Math.round(p99 / 100) / 10 : null, args: meta.args,
  };
}
