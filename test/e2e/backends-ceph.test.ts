/**
 * End-to-end: the Ceph-backed backends against a real one-node Ceph 16 (test/servers/ceph.ts: mon,
 * mgr, osd, mds, radosgw on 127.0.0.1, started once for the whole file): CephFS subvolumes through
 * ceph-fuse (`cephfs`), RBD images through rbd-fuse + loop (`rbd`) and S3 through s3fs against
 * radosgw (`s3`). A private dockerd and a Ballast daemon (node-a) configured by a config file; a
 * second Ballast daemon (node-b) with its own root and socket in its own mount namespace stands for a
 * second host and is driven through its plugin socket (its mounts are read with nsenter).
 *
 * Behaviour observed here, as the tests assert it:
 * - Restarting mds.a stalls CephFS I/O for a few seconds, restarting osd.0 for ~10 s, restarting
 *   radosgw fails s3fs requests made while it is down (EIO after s3fs's retries) and later ones work:
 *   the FUSE clients reconnect by themselves, nothing needs remounting.
 * - A FUSE client killed with SIGKILL leaves "Transport endpoint is not connected"; the reconciler
 *   mounts the volume again in place ('remount-dead') and new containers see the data; containers
 *   started before keep the dead mount.
 *   CephFS: what the dead client held capabilities on (here its directory: creating a file there)
 *   stays blocked for other clients until the MDS times the dead session out (session_timeout, 60 s
 *   by default, 30 s in the test cluster).
 *   RBD: the dead rbd-fuse mount cannot be unmounted while the old container's ext4 still holds its
 *   loop device: it is detached lazily; `rbd lock rm/add` wait ~5 s each on the dead client's watch,
 *   so that repair takes ~10 s, and `rbd rm` (docker volume rm) refuses until the OSD expires the
 *   watch (osd client watch timeout: 30 s by default, 10 s in the test cluster).
 * - s3fs exits 0 and mounts even when radosgw is down, then exits a moment later: Ballast probes the
 *   server through a fresh mount before handing it out, so Create/Mount fail with the server named.
 * - s3fs refuses chmod/chown of its mount root (EIO), and dockerd chmods an empty volume's root to
 *   match the image's directory: the s3 volume is a bind mount of its directory under an s3fs mount
 *   of the parent, so `docker run -v vol:/data` works on an empty volume.
 * - An RBD image attached read-write on node-a cannot be mounted (nor adopted) on node-b: the advisory
 *   lock names node-a. Once node-a's containers stop, node-b mounts it and sees the data.
 *
 * Needs root, dockerd, busybox-static and the Ceph, rbd-fuse, s3fs packages; skipped otherwise.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import { dockerSkipReason, startDockerEngine, type DockerEngine } from '../helpers/docker-engine.js';
import { startBallast, uniqueName, type BallastProc } from '../helpers/ballast.js';
import { pidAlive, run, sleep, waitFor } from '../helpers/proc.js';
import { cephSkipReason, startCeph, type CephCluster } from '../servers/ceph.js';
import { parseMountinfo } from '../../src/host/mountinfo.js';
import { teardownSuite } from '../helpers/leftovers.js';
import { spawn, type ChildProcess } from 'node:child_process';
import pino from 'pino';
import { rbdFactory, type RbdBackend } from '../../src/backends/rbd/index.js';
import { hostExec } from '../../src/host/exec.js';
import { ProcMountTable } from '../../src/host/mountinfo.js';
import type { VolumeRecord } from '../../src/core/types.js';

const SKIP = dockerSkipReason() ?? cephSkipReason();
const IMAGE = 'busybox:local';
const IDLE = ['sh', '-c', 'trap "exit 0" TERM; while :; do sleep 0.1; done'];
/** Appends a numbered line to /data/log every 0.1 s. */
const WRITER = ['sh', '-c', 'trap "exit 0" TERM; i=0; while :; do echo "line $i" >> /data/log; i=$((i+1)); sleep 0.1; done'];
const FUSE_TOOLS = ['ceph-fuse', 'rbd-fuse', 's3fs'];

let ceph: CephCluster | undefined;
let eng: DockerEngine | undefined;
let b1: BallastProc | undefined;
let b2: BallastProc | undefined;
let scratch = '';
let root1 = '';
let root2 = '';
let configFile = '';
let deadMonPort = 0;
let deadS3Port = 0;
const containers = new Set<string>();
const volumes = new Set<string>();
/** Volumes of node-b (plugin API only), unmounted and removed by the after hook. */
const b2Mounts = new Map<string, string>();
const b2Volumes = new Set<string>();
const timings: string[] = [];

function c(): CephCluster { assert.ok(ceph, 'ceph is not running (before hook failed)'); return ceph; }
function e(): DockerEngine { assert.ok(eng, 'dockerd is not running (before hook failed)'); return eng; }
function a(): BallastProc { assert.ok(b1, 'ballast node-a is not running (before hook failed)'); return b1; }
function b(): BallastProc { assert.ok(b2, 'ballast node-b is not running (before hook failed)'); return b2; }
const t = (name: string, fn: () => Promise<void>, timeoutMs = 150_000) => test(name, { skip: SKIP ?? false, timeout: timeoutMs }, async () => {
  const t0 = Date.now();
  try { await fn(); } finally { timings.push(`${((Date.now() - t0) / 1000).toFixed(1)} s  ${name}`); }
});

// ---- helpers -------------------------------------------------------------------------------------

function volName(prefix: string): string { const n = uniqueName(`${prefix}-`); volumes.add(n); return n; }
function ctrName(prefix: string): string { const n = uniqueName(`${prefix}-`); containers.add(n); return n; }
const mountId = () => randomBytes(32).toString('hex');

async function createVolume(name: string, opts: Record<string, string>): Promise<void> {
  const args = ['volume', 'create', '-d', a().driver];
  for (const [k, v] of Object.entries(opts)) args.push('-o', `${k}=${v}`);
  assert.equal(await e().ok([...args, name]), name);
}
async function createFails(name: string, opts: Record<string, string>): Promise<string> {
  const args = ['volume', 'create', '-d', a().driver];
  for (const [k, v] of Object.entries(opts)) args.push('-o', `${k}=${v}`);
  const r = await e().docker([...args, name], 150_000);
  assert.notEqual(r.code, 0, `docker volume create ${name} ${JSON.stringify(opts)} should fail; it printed ${r.stdout}`);
  return r.stderr.trim();
}
async function removeVolume(name: string): Promise<void> {
  assert.equal(await e().ok(['volume', 'rm', name], 120_000), name);
  volumes.delete(name);
}
async function inContainer(vol: string, script: string): Promise<string> {
  return e().ok(['run', '--rm', '-v', `${vol}:/data`, IMAGE, 'sh', '-c', script]);
}
async function runDetached(name: string, vol: string, cmd: string[] = IDLE): Promise<void> {
  assert.match(await e().ok(['run', '-d', '--name', name, '-v', `${vol}:/data`, IMAGE, ...cmd]), /^[0-9a-f]{64}$/);
}
async function execIn(name: string, script: string, timeoutMs = 120_000): Promise<string> {
  return e().ok(['exec', name, 'sh', '-c', script], timeoutMs);
}
async function removeContainer(name: string): Promise<void> {
  await e().ok(['rm', '-f', name]);
  containers.delete(name);
}
interface DockerVolume { Name: string; Mountpoint: string; Status: Record<string, unknown> }
async function inspectVolume(name: string): Promise<DockerVolume> {
  return (JSON.parse(await e().ok(['volume', 'inspect', name])) as DockerVolume[])[0];
}
async function lineCount(ctr: string): Promise<number> {
  return Number(await execIn(ctr, 'wc -l < /data/log'));
}
/** The writer container keeps appending: its line count grows by at least `by` within the bound. */
async function keepsWriting(ctr: string, by = 5, timeoutMs = 60_000): Promise<void> {
  const n0 = await lineCount(ctr);
  await waitFor(async () => (await lineCount(ctr)) >= n0 + by, `${ctr} to append ${by} more lines`, timeoutMs, 300);
}

function mountinfo() { return parseMountinfo(readFileSync('/proc/self/mountinfo', 'utf8')); }
function mountsAt(path: string) { return mountinfo().filter((m) => m.mountpoint === path); }

interface Proc { pid: number; argv: string[] }
/** FUSE clients (ceph-fuse, rbd-fuse, s3fs) whose command line names a path under dir. */
function fuseClients(dir: string): Proc[] {
  const out: Proc[] = [];
  for (const p of readdirSync('/proc').filter((x) => /^\d+$/.test(x))) {
    let raw = '';
    try { raw = readFileSync(`/proc/${p}/cmdline`, 'utf8'); } catch { continue; }
    const argv = raw.split('\0').filter(Boolean);
    if (!argv.length || !FUSE_TOOLS.includes(argv[0].split('/').pop()!)) continue;
    if (/\) Z /.test(readFileSync(`/proc/${p}/stat`, 'utf8'))) continue;
    if (argv.some((x) => x.startsWith(dir + '/'))) out.push({ pid: Number(p), argv });
  }
  return out;
}
/** The FUSE client of one mountpoint (its argv names it). */
function clientOf(mountpoint: string): Proc {
  const all = fuseClients(scratch).filter((p) => p.argv.includes(mountpoint));
  assert.equal(all.length, 1, `one FUSE client for ${mountpoint}, got ${JSON.stringify(all)}`);
  return all[0];
}

/** Reads a file in node-b's mount namespace. */
async function catOnB(path: string): Promise<string> {
  const r = await run(['nsenter', '-t', String(b().pid()), '-m', 'cat', path], { timeoutMs: 60_000 });
  assert.equal(r.code, 0, `cat ${path} on node-b: ${r.stderr}`);
  return r.stdout;
}
async function shOnB(script: string): Promise<string> {
  const r = await run(['nsenter', '-t', String(b().pid()), '-m', 'sh', '-c', script], { timeoutMs: 60_000 });
  assert.equal(r.code, 0, `${script} on node-b: ${r.stderr}`);
  return r.stdout;
}
async function bCall(method: string, body: Record<string, unknown>): Promise<Record<string, unknown>> {
  return (await b().plugin(`VolumeDriver.${method}`, body)).body;
}
async function bCreate(name: string, opts: Record<string, string>): Promise<void> {
  const r = await bCall('Create', { Name: name, Opts: opts });
  assert.equal(r.Err ?? '', '', `node-b Create ${name}: ${String(r.Err)}`);
  b2Volumes.add(name);
}
async function bMount(name: string): Promise<string> {
  const id = mountId();
  const r = await bCall('Mount', { Name: name, ID: id });
  assert.equal(r.Err ?? '', '', `node-b Mount ${name}: ${String(r.Err)}`);
  b2Mounts.set(name, id);
  return r.Mountpoint as string;
}
async function bUnmount(name: string): Promise<void> {
  const id = b2Mounts.get(name);
  assert.ok(id);
  const r = await bCall('Unmount', { Name: name, ID: id });
  assert.equal(r.Err ?? '', '', `node-b Unmount ${name}: ${String(r.Err)}`);
  b2Mounts.delete(name);
}
async function bRemove(name: string): Promise<void> {
  const r = await bCall('Remove', { Name: name });
  assert.equal(r.Err ?? '', '', `node-b Remove ${name}: ${String(r.Err)}`);
  b2Volumes.delete(name);
}

async function subvolumes(): Promise<string[]> {
  return (JSON.parse(await c().ok('ceph', ['fs', 'subvolume', 'ls', 'cephfs', '--format', 'json'])) as { name: string }[]).map((s) => s.name);
}
async function rbdImages(): Promise<string[]> {
  return (JSON.parse(await c().ok('rbd', ['ls', 'rbd', '--format', 'json'])) as string[]);
}
async function rbdLocks(image: string): Promise<{ id: string; locker: string }[]> {
  return JSON.parse(await c().ok('rbd', ['lock', 'ls', `rbd/${image}`, '--format', 'json'])) as { id: string; locker: string }[];
}
async function bucketDirs(): Promise<string[]> {
  return [...new Set((await c().listObjects()).map((k) => k.split('/')[0]))];
}

/** A repair of the given kind for the volume shows up in node-a's log (after `since` lines). */
async function waitRepair(vol: string, kind: string, since: number, timeoutMs = 30_000): Promise<void> {
  await waitFor(() => a().logs().split('\n').slice(since).some((l) => l.includes('"op":"repair"') && l.includes(`"kind":"${kind}"`) && l.includes(`"volume":"${vol}"`)),
    `node-a's reconciler to log a ${kind} repair of ${vol}`, timeoutMs, 200);
}
function logLines(p: BallastProc): number { return p.logs().split('\n').length - 1; }

/** A TCP port on 127.0.0.1 that nothing listens on (the kernel picks it; closed again at once). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Runs node-b under a wrapper: its own mount namespace, where copies of mounts it inherited from the
 * host (other daemons' FUSE clients, loop-backed filesystems, container layers) are detached first,
 * so they stay alive only as long as the host keeps them.
 */
const NS_WRAP = ['unshare', '-m', '--propagation', 'private', 'sh', '-c',
  `awk '{ split($0, h, " - "); split(h[1], l, " "); split(h[2], r, " "); mp = l[5];
         if (r[1] ~ /^fuse/ || r[2] ~ /^\\/dev\\/loop/ || r[1] == "overlay" || mp ~ /^\\/var\\/tmp\\// || mp ~ /^\\/tmp\\//) print mp }' /proc/self/mountinfo \
   | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done; exec "$@"`, 'ballast-node-b'];


// ---- RBD fencing: two RbdBackend instances in this process stand for node a and node b ------------

/** An RbdBackend of its own (own root dir), as node `node` of a cluster would have it. */
function rbdNode(node: string): RbdBackend {
  const root = join(scratch, `fence-${node}`);
  mkdirSync(root, { recursive: true });
  return rbdFactory.create('rbd', { conf: c().conf, keyring: c().keyring, timeoutSec: 30 }, {
    root, exec: hostExec, mounts: new ProcMountTable(), log: pino({ level: 'silent' }), node, cluster: true,
  }) as RbdBackend;
}
/** The record node `b` would read from the store for volume `name` (paths placed by that node). */
function rbdRecord(b: RbdBackend, name: string, size = '64M'): VolumeRecord {
  const pl = b.place(name);
  return { name, backend: 'rbd', spec: b.parseOptions({ size }), mountpoint: pl.mountpoint, createdAt: new Date().toISOString(), state: 'ready', details: pl.details ?? {}, revision: 1 };
}
const fuseDirOfRec = (v: VolumeRecord) => v.details.fuseDir as string;
/** The rbd-fuse process of a fuse dir (its argv names it), if any. */
function rbdFuseAt(dir: string): Proc[] { return fuseClients(join(dir, '..')).filter((p) => p.argv[0].endsWith('rbd-fuse') && p.argv.includes(dir)); }
/** Loop devices whose backing file lies under dir (sysfs via losetup -l; never a stat of the file). */
async function loopsUnder(dir: string): Promise<string[]> {
  const r = await run(['losetup', '-J', '-l', '-O', 'NAME,BACK-FILE'], { timeoutMs: 10_000 });
  if (!r.stdout.trim()) return [];
  return (JSON.parse(r.stdout) as { loopdevices: { name: string; 'back-file': string | null }[] }).loopdevices
    .filter((d) => (d['back-file'] ?? '').startsWith(dir + '/')).map((d) => d.name);
}
async function rbdWatchers(image: string): Promise<string[]> {
  return (JSON.parse(await c().ok('rbd', ['status', `rbd/${image}`, '--format', 'json'])) as { watchers: { address: string }[] }).watchers.map((w) => w.address);
}
/** Appends n to <dir>/counter and fsyncs it, n = 1, 2, ...; logs "ok n ms" or "err n ms CODE" per try to `log`. */
const COUNTER_WRITER = `
const fs = require('fs'); const [dir, log] = process.argv.slice(-2); const L = fs.openSync(log, 'a'); const nap = new Int32Array(new SharedArrayBuffer(4));
for (let n = 1; ; n++) {
  try { const fd = fs.openSync(dir + '/counter', 'a'); try { fs.writeSync(fd, n + '\\n'); fs.fsyncSync(fd); fs.writeSync(L, 'ok ' + n + ' ' + Date.now() + '\\n'); } finally { fs.closeSync(fd); } }
  catch (e) { fs.writeSync(L, 'err ' + n + ' ' + Date.now() + ' ' + e.code + '\\n'); }
  Atomics.wait(nap, 0, 0, 50);
}`;
interface WriterLine { kind: 'ok' | 'err'; n: number; ms: number; code?: string }
function writerLog(file: string): WriterLine[] {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => { const [kind, n, ms, code] = l.split(' '); return { kind: kind as 'ok' | 'err', n: Number(n), ms: Number(ms), code }; });
}
async function stopChild(ch: ChildProcess | undefined): Promise<void> {
  if (!ch || ch.exitCode !== null || ch.signalCode !== null) return;
  const gone = new Promise((r) => ch.once('exit', r));
  ch.kill('SIGKILL');
  await Promise.race([gone, sleep(5_000)]);
}
/** e2fsck -fn of the image, through a read-only loop device on an rbd-fuse of its own; returns e2fsck's rc and output. */
async function fsckImage(image: string): Promise<{ code: number; out: string }> {
  const dir = mkdtempSync(join(scratch, 'fsck-'));
  const r = await run(['rbd-fuse', '-c', c().conf, '--keyring', c().keyring, '-p', 'rbd', '-r', image, dir], { timeoutMs: 30_000 });
  assert.equal(r.code, 0, `rbd-fuse for fsck: ${r.stderr}`);
  let loop = '';
  try {
    await waitFor(() => existsSync(join(dir, image)), `rbd-fuse to show ${image}`, 10_000);
    loop = (await run(['losetup', '-f', '--show', '-r', join(dir, image)], { timeoutMs: 10_000 })).stdout.trim();
    assert.match(loop, /^\/dev\/loop\d+$/);
    const f = await run(['e2fsck', '-fn', loop], { timeoutMs: 60_000 });
    return { code: f.code, out: f.stdout + f.stderr };
  } finally {
    if (loop) await run(['losetup', '-d', loop], { timeoutMs: 10_000 });
    await run(['umount', dir], { timeoutMs: 10_000 });
    await waitFor(() => rbdFuseAt(dir).length === 0 || undefined, 'the fsck rbd-fuse to exit', 10_000).catch(() => undefined);
  }
}

// ---- suite ---------------------------------------------------------------------------------------

describe('Ceph backends: cephfs, rbd, s3 on radosgw (e2e)', () => {
  before(async () => {
    if (SKIP) return;
    scratch = mkdtempSync('/var/tmp/ballast-ceph-e2e-');
    root1 = join(scratch, 'node-a');
    root2 = join(scratch, 'node-b');
    const t0 = Date.now();
    const [cl, en] = await Promise.allSettled([startCeph(join(scratch, 'ceph'), { osdSizeGiB: 4 }), startDockerEngine()]);
    if (cl.status === 'fulfilled') ceph = cl.value;
    if (en.status === 'fulfilled') eng = en.value;
    if (cl.status === 'rejected') throw cl.reason;
    if (en.status === 'rejected') throw en.reason;
    timings.push(`${((Date.now() - t0) / 1000).toFixed(1)} s  before: Ceph (${(ceph!.startMs / 1000).toFixed(1)} s: ${ceph!.laps.join(', ')}) and dockerd in parallel`);

    // A cluster that is down: the same keyring, a monitor address nothing listens on.
    deadMonPort = await freePort();
    deadS3Port = await freePort();
    const deadConf = join(scratch, 'dead-ceph.conf');
    writeFileSync(deadConf, readFileSync(ceph!.conf, 'utf8').replace(/^mon host = .*$/m, `mon host = v2:127.0.0.1:${deadMonPort}`));
    configFile = join(scratch, 'ballast.json');
    const resticPw = join(scratch, 'restic-password');
    writeFileSync(resticPw, `${randomBytes(16).toString('hex')}\n`, { mode: 0o600 });
    const cephCfg = { conf: ceph!.conf, keyring: ceph!.keyring, timeoutSec: 30 };
    writeFileSync(configFile, JSON.stringify({
      backends: {
        cephfs: { type: 'cephfs', ...cephCfg },
        rbd: { type: 'rbd', ...cephCfg },
        s3: { type: 's3', url: ceph!.rgwUrl, bucket: ceph!.bucket, passwdFile: ceph!.passwdFile, mountTimeoutSec: 30 },
        'cephfs-down': { type: 'cephfs', conf: deadConf, keyring: ceph!.keyring, timeoutSec: 10 },
        'rbd-down': { type: 'rbd', conf: deadConf, keyring: ceph!.keyring, timeoutSec: 10 },
        's3-down': { type: 's3', url: `http://127.0.0.1:${deadS3Port}`, bucket: ceph!.bucket, passwdFile: ceph!.passwdFile, mountTimeoutSec: 10 },
      },
      // Backups to radosgw, in a bucket of their own (restic makes it at init).
      backupTargets: { rgw: { type: 's3', url: ceph!.rgwUrl, bucket: `${ceph!.bucket}-restic`, prefix: 'ballast', credentialsFile: ceph!.passwdFile, passwordFile: resticPw } },
    }, null, 2));
    const env = { BALLAST_RECONCILE_INTERVAL_SEC: '1' };
    // node-b first, while nothing of ours is mounted, then node-a (dockerd's plugin).
    mkdirSync(root2, { recursive: true });
    b2 = await startBallast({ root: root2, configFile, env, wrap: NS_WRAP, extraArgs: ['--node', 'node-b', '--docker-host', `unix://${join(root2, 'no-dockerd.sock')}`] });
    b1 = await startBallast({ root: root1, configFile, env, extraArgs: ['--node', 'node-a', '--docker-host', eng!.host] });
    assert.notEqual(readFileSync(`/proc/${b2.pid()}/mountinfo`, 'utf8'), readFileSync('/proc/self/mountinfo', 'utf8'));
  });

  after(async () => {
    if (SKIP) return;
    // node-b's own mounts and volumes first (dockerd does not know it).
    const problems: string[] = [];
    if (b2 && pidAlive(b2.pid())) {
      for (const [v, id] of b2Mounts) await b2.plugin('VolumeDriver.Unmount', { Name: v, ID: id }).catch((err) => problems.push(`node-b unmount ${v}: ${err}`));
      for (const v of b2Volumes) await b2.plugin('VolumeDriver.Remove', { Name: v }).catch((err) => problems.push(`node-b remove ${v}: ${err}`));
    }
    try {
      // node-b's mount namespace is read while it lives; the Ceph data dir is under scratch too.
      await teardownSuite({
        suite: 'ceph e2e', roots: [scratch], engine: eng, containers, volumes, daemons: [b1, b2], problems,
        stopAfter: [
          ...(eng ? [{ what: 'dockerd', stop: () => eng!.stop() }] : []),
          ...(ceph ? [{ what: 'ceph', stop: () => ceph!.stop() }] : []),
        ],
      });
    } finally {
      console.error(`ceph e2e timings:\n  ${timings.join('\n  ')}`);
    }
  });

  // (a)+(b) ---------------------------------------------------------------------------------------
  t('cephfs: containers share a subvolume one after the other and at the same time; a second host mounts it and sees the data', async () => {
    const v = volName('cfs');
    await createVolume(v, { backend: 'cephfs' });
    const st = (await inspectVolume(v)).Status;
    assert.equal(st.type, 'cephfs');
    assert.equal(st.subvolume, v);
    assert.ok((await subvolumes()).includes(v), 'the subvolume exists in the cluster');
    await inContainer(v, 'echo "one after the other" > /data/seq && sync');
    assert.equal(await inContainer(v, 'cat /data/seq'), 'one after the other');

    const w = ctrName('cfs-w');
    const r = ctrName('cfs-r');
    await runDetached(w, v, WRITER);
    await runDetached(r, v);
    await execIn(r, 'echo "from reader" > /data/from-r');
    await waitFor(async () => Number(await execIn(r, 'wc -l < /data/log')) >= 5, 'the reader to see the writer\'s lines');
    assert.equal(await execIn(w, 'cat /data/from-r'), 'from reader');
    assert.equal(fuseClients(root1).filter((p) => p.argv.includes(st.path as string)).length, 1, 'one ceph-fuse for both containers');

    // node-b adopts the same subvolume and mounts it while node-a's containers write.
    await bCreate(v, { backend: 'cephfs', existing: v });
    const mp = await bMount(v);
    assert.ok(mp.startsWith(root2 + '/'));
    assert.deepEqual(mountsAt(mp), [], 'node-b\'s mount is not in node-a\'s mount namespace');
    assert.equal(await catOnB(join(mp, 'seq')), 'one after the other\n');
    assert.match(await catOnB(join(mp, 'log')), /^line 0\nline 1\n/);
    await shOnB(`echo "from node-b" > ${mp}/from-b`);
    await waitFor(async () => (await execIn(r, 'cat /data/from-b 2>/dev/null || true')) === 'from node-b', 'node-a to see node-b\'s file');
    await bUnmount(v);
    await bRemove(v);
    assert.ok((await subvolumes()).includes(v), 'node-b\'s adopted volume: removing it kept the subvolume');
    await removeContainer(w);
    await removeContainer(r);
    await removeVolume(v);
    assert.ok(!(await subvolumes()).includes(v), 'docker volume rm deleted the subvolume Ballast made');
  });

  t('rbd: ballast volume expand grows the image and its xfs filesystem while a container has it mounted (its df shows it); ext4 grows at its next mount where the kernel refuses online resize', async () => {
    const v = volName('rbdx');
    await createVolume(v, { backend: 'rbd', size: '320M', fstype: 'xfs' });
    const w = ctrName('rbdx');
    await runDetached(w, v);
    await execIn(w, 'echo kept > /data/k && sync');
    const df = async (ctr: string) => Number((await execIn(ctr, 'df -B1 /data | tail -n 1')).split(/\s+/)[1]);
    const before = await df(w);
    const r = await a().cli(['volume', 'expand', v, '704M']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /grew from 320 ?MiB to 704 ?MiB; its xfs filesystem grew online/);
    assert.ok((await df(w)) > before + 300 * 1024 * 1024, `df in the running container grew: ${before} -> ${await df(w)}`);
    assert.equal((await c().ok('rbd', ['info', `rbd/${v}`, '--format', 'json'])).includes(`"size":${704 * 1024 * 1024}`), true, 'the image is 704 MiB');
    assert.equal(await execIn(w, 'cat /data/k'), 'kept');
    const shrink = await a().cli(['volume', 'expand', v, '512M']);
    assert.notEqual(shrink.code, 0);
    assert.match(shrink.stderr, /shrinking it to 512 ?MiB is refused/);
    await removeContainer(w);
    // ext4, mounted: online where the kernel allows resize2fs, otherwise at the next mount.
    const e4 = volName('rbdx4');
    await createVolume(e4, { backend: 'rbd', size: '128M' });
    const w4 = ctrName('rbdx4');
    await runDetached(w4, e4);
    const r4 = await a().cli(['volume', 'expand', e4, '512M']);
    assert.equal(r4.code, 0, r4.stderr);
    if (/could not grow online/.test(r4.stdout)) {
      await removeContainer(w4);
      assert.ok(Number((await inContainer(e4, 'df -B1 /data | tail -n 1')).split(/\s+/)[1]) > 400 * 1024 * 1024, 'grown at the next mount');
    } else {
      assert.ok((await df(w4)) > 400 * 1024 * 1024);
      await removeContainer(w4);
    }
    await removeVolume(v);
    await removeVolume(e4);
  });

  t('rbd: containers share an image one after the other; a second host is refused while the first holds it, then mounts it and sees the data', async () => {
    const v = volName('rbd');
    await createVolume(v, { backend: 'rbd', size: '128M' });
    const st = (await inspectVolume(v)).Status;
    assert.equal(st.image, v);
    assert.equal(st.fstype, 'ext4');
    assert.ok((await rbdImages()).includes(v));
    assert.deepEqual(await rbdLocks(v), [], 'create leaves the image unlocked');
    await inContainer(v, 'echo "written on node-a" > /data/a && sync');
    assert.equal(await inContainer(v, 'cat /data/a'), 'written on node-a');

    // node-b adopts it while nobody holds it.
    await bCreate(v, { backend: 'rbd', existing: v });
    const holder = ctrName('rbd-hold');
    await runDetached(holder, v);
    const locks = await rbdLocks(v);
    assert.deepEqual(locks.map((l) => l.id), ['ballast-node-a']);
    // node-b: Mount refused, naming node-a; so is adopting it under another name.
    const refused = await bCall('Mount', { Name: v, ID: mountId() });
    assert.match(String(refused.Err), new RegExp(`volume ${v} \\(rbd image rbd/${v}\\) is attached read-write by node node-a \\(client\\.\\d+ at [^)]+\\); an RBD volume is not shareable`));
    const adopt = await bCall('Create', { Name: `${v}-again`, Opts: { backend: 'rbd', existing: v } });
    assert.match(String(adopt.Err), /is attached read-write by node node-a/);
    assert.ok(!fuseClients(root2).length, 'node-b attached nothing');
    assert.deepEqual((await rbdLocks(v)).map((l) => l.id), ['ballast-node-a'], 'node-a still holds the lock');
    assert.equal(await execIn(holder, 'cat /data/a'), 'written on node-a');

    // node-a releases it; node-b mounts it and sees the data; now node-a is refused, naming node-b.
    await removeContainer(holder);
    await waitFor(async () => (await rbdLocks(v)).length === 0, 'node-a to release the lock', 20_000);
    const mp = await bMount(v);
    assert.equal(await catOnB(join(mp, 'a')), 'written on node-a\n');
    await shOnB(`echo "written on node-b" > ${mp}/b && sync`);
    const r = await e().docker(['run', '--rm', '--name', ctrName('rbd-refused'), '-v', `${v}:/data`, IMAGE, 'true']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /is attached read-write by node node-b/);
    await bUnmount(v);
    assert.deepEqual(await rbdLocks(v), []);
    assert.equal(await inContainer(v, 'cat /data/b'), 'written on node-b');
    await bRemove(v);
    assert.ok((await rbdImages()).includes(v), 'node-b\'s adopted volume: removing it kept the image');
    await removeVolume(v);
    assert.ok(!(await rbdImages()).includes(v), 'docker volume rm deleted the image Ballast made');
  });

  t('s3: containers share a bucket prefix one after the other and at the same time; a second host mounts it and sees the data', async () => {
    const v = volName('s3');
    await createVolume(v, { backend: 's3' });
    const st = (await inspectVolume(v)).Status;
    assert.equal(st.bucket, c().bucket);
    assert.equal(st.dir, v);
    assert.ok((await bucketDirs()).includes(v), 'the prefix exists in the bucket');
    await inContainer(v, 'echo "one after the other" > /data/seq');
    assert.equal(await inContainer(v, 'cat /data/seq'), 'one after the other');
    assert.ok((await c().listObjects(`${v}/`)).includes(`${v}/seq`), 'the file is an object in the bucket');

    const w = ctrName('s3-w');
    const r = ctrName('s3-r');
    await runDetached(w, v);
    await runDetached(r, v);
    await execIn(w, 'echo "from w" > /data/from-w');
    await execIn(r, 'echo "from r" > /data/from-r');
    assert.equal(await execIn(r, 'cat /data/from-w'), 'from w');
    assert.equal(await execIn(w, 'cat /data/from-r'), 'from r');

    await bCreate(v, { backend: 's3', existing: v });
    const mp = await bMount(v);
    assert.equal(await catOnB(join(mp, 'seq')), 'one after the other\n');
    assert.equal(await catOnB(join(mp, 'from-w')), 'from w\n');
    await shOnB(`echo "from node-b" > ${mp}/from-b`);
    assert.equal(await execIn(r, 'cat /data/from-b'), 'from node-b');
    await bUnmount(v);
    await bRemove(v);
    assert.ok((await bucketDirs()).includes(v), 'node-b\'s adopted volume: removing it kept the prefix');
    await removeContainer(w);
    await removeContainer(r);
    await removeVolume(v);
    assert.deepEqual(await c().listObjects(`${v}/`), [], 'docker volume rm deleted the prefix Ballast made');
  });

  // (c) -------------------------------------------------------------------------------------------
  t('server restarts while mounted: mds and osd (cephfs, rbd), radosgw (s3); containers keep working, new ones see the data', async () => {
    const cv = volName('rs-cfs');
    const rv = volName('rs-rbd');
    const sv = volName('rs-s3');
    await createVolume(cv, { backend: 'cephfs' });
    await createVolume(rv, { backend: 'rbd', size: '128M' });
    await createVolume(sv, { backend: 's3' });
    const cw = ctrName('rs-cfs-w');
    const rw = ctrName('rs-rbd-w');
    const sw = ctrName('rs-s3-w');
    await runDetached(cw, cv, WRITER);
    await runDetached(rw, rv, WRITER);
    await runDetached(sw, sv);
    const clients = fuseClients(root1).map((p) => p.pid).sort();

    let t0 = Date.now();
    await c().kill('mds');
    await c().start('mds');
    await execIn(cw, 'echo after-mds > /data/after-mds && sync');
    await keepsWriting(cw);
    timings.push(`   mds.a SIGKILL + restart: CephFS writes go on after ${((Date.now() - t0) / 1000).toFixed(1)} s`);

    t0 = Date.now();
    await c().kill('osd');
    await sleep(1000);
    await c().start('osd');
    await execIn(cw, 'echo after-osd > /data/after-osd && sync /data/after-osd', 120_000);
    await execIn(rw, 'echo after-osd > /data/after-osd && sync', 120_000);
    await keepsWriting(cw);
    await keepsWriting(rw);
    timings.push(`   osd.0 SIGKILL + restart: CephFS and RBD writes (with sync) go on after ${((Date.now() - t0) / 1000).toFixed(1)} s`);

    // radosgw down: a create fails within its bound naming the backend and the server; then restarted.
    t0 = Date.now();
    await c().kill('rgw');
    const down = volName('rs-s3-down');
    const t1 = Date.now();
    const err = await createFails(down, { backend: 's3' });
    const ms = Date.now() - t1;
    volumes.delete(down);
    assert.ok(ms < 60_000, `create failed after ${ms} ms`);
    assert.match(err, new RegExp(`s3 backend s3 \\(bucket ${c().bucket} at ${c().rgwUrl.replace(/\./g, '\\.')}\\): .*(server did not answer|could not mount)`));
    timings.push(`   radosgw down: docker volume create -o backend=s3 failed after ${(ms / 1000).toFixed(1)} s: ${err.slice(0, 300)}`);
    await c().start('rgw');
    await execIn(sw, 'echo after-rgw > /data/after-rgw');
    timings.push(`   radosgw SIGKILL + create attempt + restart: s3 writes go on after ${((Date.now() - t0) / 1000).toFixed(1)} s`);

    // The same clients throughout; new containers read what was written across the restarts.
    assert.deepEqual(fuseClients(root1).map((p) => p.pid).sort(), clients, 'no FUSE client was replaced');
    assert.equal(await inContainer(cv, 'cat /data/after-mds /data/after-osd'), 'after-mds\nafter-osd');
    assert.equal(await execIn(rw, 'cat /data/after-osd'), 'after-osd');
    assert.equal(await inContainer(sv, 'cat /data/after-rgw'), 'after-rgw');
    assert.ok((await c().listObjects(`${sv}/`)).includes(`${sv}/after-rgw`));
    await c().waitHealthy(60_000);
    for (const x of [cw, rw, sw]) await removeContainer(x);
    for (const x of [cv, rv, sv]) await removeVolume(x);
  }, 240_000);

  t('dead FUSE clients (SIGKILL of ceph-fuse, s3fs, rbd-fuse) are mounted again in place by the reconciler; new containers see the data', async () => {
    const cases = (['cephfs', 's3', 'rbd'] as const).map((backend) => ({ backend, v: volName(`dead-${backend}`), holder: ctrName(`dead-${backend}`), mp: '', fuseMp: '', old: { pid: 0, argv: [] } as Proc }));
    for (const x of cases) {
      await createVolume(x.v, x.backend === 'rbd' ? { backend: x.backend, size: '128M' } : { backend: x.backend });
      await runDetached(x.holder, x.v);
      await execIn(x.holder, 'echo "before the crash" > /data/f && sync');
      x.mp = (await inspectVolume(x.v)).Mountpoint;
      // The FUSE client's own mountpoint: rbd-fuse's directory holding the image, s3fs's parent of the volume's directory.
      x.fuseMp = x.backend === 'cephfs' ? x.mp : join(root1, 'backends', x.backend, 'fuse', x.v);
      x.old = clientOf(x.fuseMp);
    }
    const since = logLines(a());
    const t0 = Date.now();
    for (const x of cases) process.kill(x.old.pid, 'SIGKILL');
    await Promise.all(cases.map(async (x) => {
      await waitRepair(x.v, 'remount-dead', since, 60_000);
      timings.push(`   ${x.backend}: ${x.old.argv[0]} SIGKILL -> remount-dead logged after ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    }));
    for (const x of cases) {
      assert.notEqual(clientOf(x.fuseMp).pid, x.old.pid, `${x.backend}: a new client`);
      assert.equal(mountsAt(x.mp).length, 1, `${x.backend}: mounted once`);
      // The holder still has the old, dead mount (documented); new containers get the new one. (For
      // rbd the holder's ext4 still answers reads from its page cache; its device is dead.)
      if (x.backend !== 'rbd') {
        const r = await e().docker(['exec', x.holder, 'cat', '/data/f']);
        assert.notEqual(r.code, 0, `${x.backend}: the old container's mount is dead`);
        assert.match(r.stderr, /Transport endpoint is not connected/);
      }
      const tr = Date.now();
      assert.equal(await inContainer(x.v, 'cat /data/f'), 'before the crash', x.backend);
      const tw = Date.now();
      await inContainer(x.v, 'echo "after the repair" > /data/g && sync');
      // CephFS: the dead client's capabilities (on the directory) hold other clients' writes off until
      // the MDS times its session out (session_timeout: 60 s by default, 30 s in the test cluster).
      timings.push(`   ${x.backend}: a new container read a file written before the crash in ${((tw - tr) / 1000).toFixed(1)} s, wrote a new one in ${((Date.now() - tw) / 1000).toFixed(1)} s (done ${((Date.now() - t0) / 1000).toFixed(1)} s after the SIGKILL)`);
    }
    for (const x of cases) await removeContainer(x.holder);
    for (const x of cases) {
      await waitFor(() => mountsAt(x.mp).length === 0 && mountsAt(x.fuseMp).length === 0, `${x.v} released`, 30_000);
      assert.equal(await inContainer(x.v, 'cat /data/g'), 'after the repair', x.backend);
    }
    // The old loop device (under the old container's dead mount) went with that container.
    const loops = await run(['losetup', '-l', '-n', '-O', 'BACK-FILE'], { timeoutMs: 10_000 });
    assert.ok(!loops.stdout.includes(cases[2].v), `no loop device left on ${cases[2].v}: ${loops.stdout}`);
    // A killed rbd-fuse stays a watcher of its image until the OSD times it out (30 s by default, 10 s
    // in the test cluster): until then
    // `rbd rm` refuses, and so does docker volume rm, saying so.
    for (const x of cases) {
      if (x.backend !== 'rbd') { await removeVolume(x.v); continue; }
      let last = '';
      await waitFor(async () => {
        const r = await e().docker(['volume', 'rm', x.v], 120_000);
        if (r.code === 0) return true;
        last = r.stderr;
        assert.match(r.stderr, /image still has watchers/);
        return false;
      }, `docker volume rm ${x.v} once the dead client's watch expired (${last})`, 60_000, 2000);
      volumes.delete(x.v);
      timings.push(`   rbd: removable ${((Date.now() - t0) / 1000).toFixed(1)} s after the SIGKILL (the dead watcher's timeout)`);
    }
  }, 180_000);

  // (d) -------------------------------------------------------------------------------------------
  t('Ballast restart while mounted: FUSE clients survive, running containers keep writing, ledger and mounts agree with no repair', async () => {
    const vs = { cephfs: volName('rb-cfs'), rbd: volName('rb-rbd'), s3: volName('rb-s3') };
    await createVolume(vs.cephfs, { backend: 'cephfs' });
    await createVolume(vs.rbd, { backend: 'rbd', size: '128M' });
    await createVolume(vs.s3, { backend: 's3' });
    const ws = { cephfs: ctrName('rb-cfs-w'), rbd: ctrName('rb-rbd-w'), s3: ctrName('rb-s3-w') };
    for (const k of ['cephfs', 'rbd', 's3'] as const) await runDetached(ws[k], vs[k], k === 's3' ? IDLE : WRITER);
    const clients = fuseClients(root1).map((p) => p.pid).sort();
    assert.equal(clients.length, 3);

    const before = a().pid();
    await a().kill9();
    // While node-a is gone: the clients and the containers go on.
    for (const p of clients) assert.ok(pidAlive(p), `FUSE client ${p} survives`);
    await keepsWriting(ws.cephfs);
    await keepsWriting(ws.rbd);
    await execIn(ws.s3, 'echo "while ballast was down" > /data/down');
    await a().restart();
    assert.notEqual(a().pid(), before);
    const serving = a().logs().split('\n').filter((l) => l.includes('"msg":"ballast serving"')).pop()!;
    assert.match(serving, /"recovered":0,"repairs":0/, 'start-up found nothing to recover or repair');
    await sleep(2500); // a few reconciler passes
    const since = a().logs().split('\n').filter((l) => l.includes(`"pid":${a().pid()}`));
    assert.ok(!since.some((l) => l.includes('"op":"repair"')), `no repair after the restart: ${since.filter((l) => l.includes('repair')).join('\n')}`);
    assert.deepEqual(fuseClients(root1).map((p) => p.pid).sort(), clients, 'the same FUSE clients');
    for (const k of ['cephfs', 'rbd', 's3'] as const) {
      const iv = await inspectVolume(vs[k]);
      assert.equal(iv.Status.mounts, 1, `${k}: the ledger holds the running container's mount`);
      assert.equal(mountsAt(iv.Mountpoint).length, 1, `${k}: mounted once`);
    }
    await keepsWriting(ws.cephfs);
    await keepsWriting(ws.rbd);
    assert.equal(await inContainer(vs.s3, 'cat /data/down'), 'while ballast was down');
    for (const k of ['cephfs', 'rbd', 's3'] as const) await removeContainer(ws[k]);
    for (const k of ['cephfs', 'rbd', 's3'] as const) await removeVolume(vs[k]);
  });

  // (e) -------------------------------------------------------------------------------------------
  t('bad options fail with clear messages and create nothing in the cluster', async () => {
    const subs0 = await subvolumes();
    const imgs0 = await rbdImages();
    const dirs0 = await bucketDirs();
    const cases: [Record<string, string>, RegExp][] = [
      [{ backend: 'cephfs', colour: 'red' }, /unknown option "colour" for backend cephfs; accepted options: backend, size, existing/],
      [{ backend: 'rbd', size: '64M', colour: 'red' }, /unknown option "colour" for backend rbd; accepted options: backend, size, fstype, mountopts, existing/],
      [{ backend: 's3', size: '1G' }, /unknown option "size" for backend s3; accepted options: backend, existing/],
      [{ backend: 's3', existing: '../x' }, /existing "\.\.\/x" must be a relative path inside the share/],
      [{ backend: 'cephfs', existing: '../x' }, /existing="\.\.\/x" is not a subvolume name/],
      [{ backend: 'rbd', existing: '../x' }, /existing="\.\.\/x" is not an RBD image name/],
      [{ backend: 'rbd', size: '64M', fstype: 'ntfs' }, /fstype "ntfs" is not supported; choose one of ext4, xfs, btrfs/],
      [{ backend: 'rbd' }, /backend rbd needs a size, e\.g\. -o size=10G \(or -o existing=IMAGE\)/],
      [{ backend: 'cephfs', size: 'lots' }, /size "lots" is not a size; use a positive number with an optional unit/],
      [{ backend: 'cephfs', existing: 'no-such-subvolume' }, /existing=no-such-subvolume is not a subvolume of cephfs/],
      [{ backend: 'rbd', existing: 'no-such-image' }, /existing=no-such-image is not an image of pool rbd/],
      [{ backend: 's3', existing: 'no-such-prefix' }, /existing=no-such-prefix is not a directory of the share/],
    ];
    const names: string[] = [];
    for (const [opts, re] of cases) {
      const n = volName('bad');
      names.push(n);
      assert.match(await createFails(n, opts), re, JSON.stringify(opts));
      volumes.delete(n);
    }
    assert.deepEqual(await subvolumes(), subs0, 'no subvolume made');
    assert.deepEqual(await rbdImages(), imgs0, 'no image made');
    assert.deepEqual(await bucketDirs(), dirs0, 'no prefix made in the bucket');
    const ls = await e().ok(['volume', 'ls', '--format', '{{.Name}}']);
    for (const n of names) assert.ok(!ls.includes(n), `${n} is not listed`);
    assert.equal(readdirSync(join(root1, 'backends', 's3', 'tmp')).length, 0, 'no temporary share mount left');
  });

  // (f) -------------------------------------------------------------------------------------------
  t('cephfs -o size= is a quota the cluster enforces: writing past it fails with "Disk quota exceeded"', async () => {
    const v = volName('quota');
    await createVolume(v, { backend: 'cephfs', size: '20M' });
    const st = (await inspectVolume(v)).Status;
    assert.equal(st.sizeBytes, 20 * 1024 ** 2);
    const info = JSON.parse(await c().ok('ceph', ['fs', 'subvolume', 'info', 'cephfs', v, '--format', 'json'])) as { bytes_quota: number };
    assert.equal(info.bytes_quota, 20 * 1024 ** 2);
    const df = await inContainer(v, 'df -k /data | tail -1');
    assert.match(df, /\s20480\s/, `df shows the 20 MiB quota: ${df}`);
    await inContainer(v, 'dd if=/dev/zero of=/data/small bs=1M count=5 conv=fsync 2>/dev/null');
    const r = await e().docker(['run', '--rm', '-v', `${v}:/data`, IMAGE, 'sh', '-c', 'dd if=/dev/zero of=/data/big bs=1M count=60 conv=fsync']);
    assert.notEqual(r.code, 0, 'writing 60 MiB into a 20 MiB quota fails');
    assert.match(r.stderr, /Disk quota exceeded/);
    const size = Number(await inContainer(v, 'stat -c %s /data/big'));
    assert.ok(size < 40 * 1024 ** 2, `the file stopped near the quota (${size} bytes)`);
    await removeVolume(v);
  });

  // (g) -------------------------------------------------------------------------------------------
  t('-o existing= adopts an existing subvolume, rbd image and bucket prefix; docker volume rm keeps them', async () => {
    const sub = uniqueName('adopt-sub-');
    const img = uniqueName('adopt-img-');
    const pre = uniqueName('adopt-pre-');
    await c().ok('ceph', ['fs', 'subvolume', 'create', 'cephfs', sub]);
    await c().ok('rbd', ['create', `rbd/${img}`, '--size', '64M', '--image-feature', 'layering']);
    const put = await c().s3('PUT', `/${c().bucket}/${pre}/hello.txt`, { body: 'hello from s3' });
    assert.match(put.stdout, /\n200$/);
    try {
      const vc = volName('adopt-c');
      const vr = volName('adopt-r');
      const vs = volName('adopt-s');
      await createVolume(vc, { backend: 'cephfs', existing: sub });
      await createVolume(vr, { backend: 'rbd', existing: img });
      await createVolume(vs, { backend: 's3', existing: pre });
      assert.equal((await inspectVolume(vc)).Status.existing, true);
      assert.equal((await inspectVolume(vr)).Status.fstype, 'ext4', 'a blank adopted image is formatted once');
      assert.equal(await inContainer(vs, 'ls /data && cat /data/hello.txt'), 'hello.txt\nhello from s3', 'the prefix\'s objects are the volume\'s files');
      for (const v of [vc, vr, vs]) await inContainer(v, 'echo "kept" > /data/kept && sync');
      for (const v of [vc, vr, vs]) await removeVolume(v);
      assert.ok((await subvolumes()).includes(sub), 'the subvolume is kept');
      assert.ok((await rbdImages()).includes(img), 'the image is kept');
      assert.deepEqual((await c().listObjects(`${pre}/`)).sort(), [`${pre}/hello.txt`, `${pre}/kept`], 'the prefix is kept');
      // Adopted again: the data is still there (and the image is not formatted again).
      const vc2 = volName('adopt-c2');
      const vr2 = volName('adopt-r2');
      await createVolume(vc2, { backend: 'cephfs', existing: sub });
      await createVolume(vr2, { backend: 'rbd', existing: img });
      assert.equal(await inContainer(vc2, 'cat /data/kept'), 'kept');
      assert.equal(await inContainer(vr2, 'cat /data/kept'), 'kept');
      await removeVolume(vc2);
      await removeVolume(vr2);
      assert.ok((await subvolumes()).includes(sub) && (await rbdImages()).includes(img));
    } finally {
      await c().tool('ceph', ['fs', 'subvolume', 'rm', 'cephfs', sub]);
      await c().tool('rbd', ['rm', '--no-progress', `rbd/${img}`]);
      for (const k of await c().listObjects(`${pre}/`)) await c().s3('DELETE', `/${c().bucket}/${k}`);
    }
  });

  // (i) -------------------------------------------------------------------------------------------
  t('a cluster that is down: create on cephfs, rbd and s3 instances with a dead monitor / url fails within the bound, naming backend and server', async () => {
    const cases = [
      ['cephfs-down', new RegExp(`^.*cephfs backend cephfs-down \\(ceph cluster with monitors v2:127\\.0\\.0\\.1:${deadMonPort} of .*dead-ceph\\.conf, client\\.admin\\): the cluster did not answer within 10 s`)],
      ['rbd-down', new RegExp(`^.*rbd backend rbd-down \\(ceph cluster with monitors v2:127\\.0\\.0\\.1:${deadMonPort} of .*dead-ceph\\.conf, client\\.admin\\): the cluster did not answer within 10 s`)],
      ['s3-down', new RegExp(`^.*s3 backend s3-down \\(bucket ${c().bucket} at http://127\\.0\\.0\\.1:${deadS3Port}\\): mounted the share but the server did not answer through it`)],
    ] as const;
    const subs0 = await subvolumes();
    await Promise.all(cases.map(async ([backend, re]) => {
      const n = volName('down');
      const t0 = Date.now();
      const err = await createFails(n, backend === 'rbd-down' ? { backend, size: '64M' } : { backend });
      const ms = Date.now() - t0;
      volumes.delete(n);
      timings.push(`   ${backend}: create failed after ${(ms / 1000).toFixed(1)} s: ${err.slice(0, 400)}`);
      assert.match(err, re);
      assert.ok(ms < 40_000, `${backend}: failed after ${ms} ms, within the configured 10 s plus overhead`);
    }));
    assert.deepEqual(await subvolumes(), subs0);
    assert.equal(readdirSync(join(root1, 'backends', 's3-down', 'tmp')).length, 0, 'nothing was made on the local disk under the dead share\'s mountpoint');
    // s3fs still inside its server check when unmounted exits once the check gives up.
    await waitFor(() => fuseClients(root1).length === 0, 'no FUSE client left behind', 30_000);
  });

  // (h) -------------------------------------------------------------------------------------------
  t('rbd: a snapshot of a running xfs volume (frozen for it), a copy-on-write clone mounted beside its source, flattened when the snapshot goes', async () => {
    const v = volName('rbds');
    await createVolume(v, { backend: 'rbd', size: '320M', fstype: 'xfs' });
    const w = ctrName('rbds');
    await runDetached(w, v, WRITER);
    await execIn(w, 'dd if=/dev/urandom of=/data/r bs=1M count=16 2>/dev/null && sync');
    const sum = await execIn(w, 'sha256sum /data/r');
    await keepsWriting(w);
    const snap = `${v}-s`;
    const out = await a().cli(['snapshot', 'create', v, snap]);
    assert.equal(out.code, 0, out.stderr);
    assert.match(out.stdout, /\(rbd snapshot, frozen [\d.]+ ms\)/);
    const snaps = JSON.parse(await c().ok('rbd', ['snap', 'ls', `rbd/${v}`, '--format', 'json'])) as { name: string }[];
    assert.deepEqual(snaps.map((x) => x.name), [`ballast.${snap}`], 'an RBD snapshot of the image');
    await keepsWriting(w);
    const clone = volName('rbdc');
    await createVolume(clone, { 'from-snapshot': snap });
    const info = JSON.parse(await c().ok('rbd', ['info', `rbd/${clone}`, '--format', 'json'])) as { parent?: { image: string; snapshot: string } };
    assert.equal(info.parent?.image, v, 'the clone is a child of the source image');
    assert.equal(info.parent?.snapshot, `ballast.${snap}`);
    const r = ctrName('rbdc');
    await runDetached(r, clone);
    assert.equal(await execIn(r, 'sha256sum /data/r'), sum, 'the clone, mounted beside its source, holds its data');
    const cloneLines = Number(await execIn(r, 'wc -l < /data/log'));
    assert.ok(cloneLines < (await lineCount(w)), 'the source went on writing after the snapshot');
    await removeContainer(w);
    const rm = await e().docker(['volume', 'rm', v]);
    assert.match(rm.stderr, new RegExp(`volume ${v} has 1 snapshot \\(${snap}\\)`));
    const gone = await a().cli(['snapshot', 'rm', snap]);
    assert.equal(gone.code, 0, gone.stderr);
    assert.match(gone.stdout, new RegExp(`its clone ${clone} was flattened first`));
    assert.equal((JSON.parse(await c().ok('rbd', ['info', `rbd/${clone}`, '--format', 'json'])) as { parent?: unknown }).parent, undefined, 'flattened: no parent any more');
    assert.equal(await execIn(r, 'sha256sum /data/r'), sum, 'the mounted clone kept its data through the flatten');
    await removeContainer(r);
    await removeVolume(clone);
    await removeVolume(v);
  }, 240_000);

  t('cephfs: a subvolume snapshot, a clone of it copied by the mgr holds the data as it was; the quota grows with volume expand', async () => {
    const v = volName('cfss');
    await createVolume(v, { backend: 'cephfs', size: '64M' });
    await inContainer(v, 'mkdir -p /data/d && echo before > /data/d/f && dd if=/dev/urandom of=/data/r bs=1M count=4 2>/dev/null && sync');
    const sum = await inContainer(v, 'sha256sum /data/r');
    const snap = `${v}-s`;
    const out = await a().cli(['snapshot', 'create', v, snap]);
    assert.equal(out.code, 0, out.stderr);
    assert.match(out.stdout, /\(cephfs snapshot\)/);
    await inContainer(v, 'echo after > /data/d/f');
    const clone = volName('cfsc');
    await createVolume(clone, { 'from-snapshot': snap });
    assert.ok((await subvolumes()).includes(clone), 'the clone is a subvolume');
    assert.equal(await inContainer(clone, 'cat /data/d/f'), 'before', 'the clone holds the data as it was at the snapshot');
    assert.equal(await inContainer(clone, 'sha256sum /data/r'), sum);
    assert.equal(await inContainer(v, 'cat /data/d/f'), 'after');
    const ex = await a().cli(['volume', 'expand', v, '256M']);
    assert.equal(ex.code, 0, ex.stderr);
    assert.match(ex.stdout, /now has a quota of 256 ?MiB/);
    const df = Number((await inContainer(v, 'df -B1 /data | tail -n 1')).split(/\s+/)[1]);
    assert.equal(df, 256 * 1024 * 1024, 'ceph-fuse reports the grown quota as the size');
    assert.equal((await a().cli(['snapshot', 'rm', snap])).code, 0);
    assert.equal(await inContainer(clone, 'cat /data/d/f'), 'before', 'the clone does not depend on the snapshot');
    await removeVolume(clone);
    await removeVolume(v);
  }, 240_000);

  t('credentials never appear in docker volume inspect, the daemon logs or the FUSE clients\' argv', async () => {
    const secrets = { 'client.admin key': c().adminKey, 's3 secret key': c().secretKey, 's3 access key': c().accessKey };
    for (const s of Object.values(secrets)) assert.ok(s.length >= 16);
    const vs = { cephfs: volName('cred-c'), rbd: volName('cred-r'), s3: volName('cred-s') };
    await createVolume(vs.cephfs, { backend: 'cephfs' });
    await createVolume(vs.rbd, { backend: 'rbd', size: '64M' });
    await createVolume(vs.s3, { backend: 's3' });
    const hs = { cephfs: ctrName('cred-c'), rbd: ctrName('cred-r'), s3: ctrName('cred-s') };
    for (const k of ['cephfs', 'rbd', 's3'] as const) await runDetached(hs[k], vs[k]);
    const procs = fuseClients(root1);
    assert.deepEqual(procs.map((p) => p.argv[0]).sort(), ['ceph-fuse', 'rbd-fuse', 's3fs']);
    const inspect = await e().ok(['volume', 'inspect', ...Object.values(vs)]);
    const texts: [string, string][] = [
      ['docker volume inspect', inspect],
      ['node-a log', a().logs()], ['node-b log', b().logs()], ['dockerd log', readFileSync(join(e().dir, 'dockerd.log'), 'utf8')],
      ...procs.map((p) => [`${p.argv[0]} argv`, readFileSync(`/proc/${p.pid}/cmdline`, 'utf8')] as [string, string]),
    ];
    for (const [where, text] of texts) {
      for (const [what, s] of Object.entries(secrets)) assert.ok(!text.includes(s), `${where} holds the ${what}`);
    }
    // What the clients get instead: the keyring's and the passwd file's paths.
    for (const p of procs) {
      if (p.argv[0] === 's3fs') assert.ok(p.argv.some((x) => x.includes(`passwd_file=${c().passwdFile}`)), p.argv.join(' '));
      else assert.ok(p.argv.includes('--keyring') && p.argv.includes(c().keyring), p.argv.join(' '));
    }
    for (const k of ['cephfs', 'rbd', 's3'] as const) await removeContainer(hs[k]);
    for (const k of ['cephfs', 'rbd', 's3'] as const) await removeVolume(vs[k]);
    assert.ok(existsSync(c().passwdFile));
  });

  // RBD fencing (the Fencer ability), against the real cluster -----------------------------------
  t('rbd: claim names the address of this node\'s rbd-fuse client, which rbd status lists as the image\'s watcher; rbd-fuse runs with the cache off and bounded op timeouts', async () => {
    const na = rbdNode('a');
    const v = rbdRecord(na, uniqueName('rbdc-'));
    let staged = false;
    const laps: string[] = [];
    let l0 = Date.now();
    const lap = (what: string) => { laps.push(`${what} ${Date.now() - l0} ms`); l0 = Date.now(); };
    try {
      await na.provision(v);
      lap('provision');
      assert.deepEqual(await rbdWatchers(v.name), [], 'create leaves no client');
      await na.stage(v, v.mountpoint, { attachment: await na.attach(v, 'a') });
      staged = true;
      lap('attach+stage');
      const claim = await na.claim(v, v.mountpoint);
      lap('claim');
      assert.ok(claim, 'a claim after a read-write stage');
      assert.match(claim.clients, /^127\.0\.0\.1:0\/\d+$/, 'one client, IP:0/nonce');
      assert.deepEqual(await rbdWatchers(v.name), [claim.clients], 'rbd status lists exactly the claimed client');
      // The settings as rbd-fuse runs with them (its admin socket), whatever ceph.conf says.
      const [p] = rbdFuseAt(fuseDirOfRec(v));
      assert.ok(p, 'rbd-fuse runs');
      const asok = p.argv.find((x) => x.startsWith('--admin_socket='))!.slice('--admin_socket='.length);
      const get = async (k: string) => (JSON.parse((await run(['ceph', '--admin-daemon', asok, 'config', 'get', k], { timeoutMs: 10_000 })).stdout) as Record<string, string>)[k];
      assert.deepEqual({ cache: await get('rbd_cache'), osd: await get('rados_osd_op_timeout'), mon: await get('rados_mon_op_timeout'), mount: await get('client_mount_timeout'), ms: await get('debug_ms') },
        { cache: 'false', osd: '10', mon: '10', mount: '10', ms: '0/0' });
      await na.unstage(v, v.mountpoint);
      staged = false;
      lap('unstage');
      assert.equal(await na.claim(v, v.mountpoint), undefined, 'nothing to claim once unstaged');
      await waitFor(async () => (await rbdWatchers(v.name)).length === 0 || undefined, 'the watch to go with rbd-fuse', 15_000);
      lap('watch gone');
    } finally {
      if (staged) await na.unstage(v, v.mountpoint).catch(() => undefined);
      await na.deprovision(v).catch((err) => console.error(`rbd claim test cleanup: ${err}`));
      lap('deprovision');
      timings.push(`rbd claim: ${laps.join(', ')}`);
    }
  });

  t('rbd: fence cuts a writing node off within a second; the new node finds every fsync\'d counter and nothing after; unstageFenced leaves no mount, loop device or rbd-fuse', async () => {
    const na = rbdNode('a');
    const nb = rbdNode('b');
    const name = uniqueName('rbdf-');
    const va = rbdRecord(na, name);
    const vb = rbdRecord(nb, name);
    const log = join(scratch, `${name}-writer.log`);
    let writer: ChildProcess | undefined;
    let aStaged = false;
    let bStaged = false;
    try {
      await na.provision(va);
      await na.stage(va, va.mountpoint, { attachment: await na.attach(va, 'a') });
      aStaged = true;
      const claim = await na.claim(va, va.mountpoint);
      assert.ok(claim);
      writer = spawn(process.execPath, ['-e', COUNTER_WRITER, va.mountpoint, log], { stdio: 'ignore', cwd: scratch });
      await waitFor(() => writerLog(log).filter((l) => l.kind === 'ok').length >= 20 || undefined, 'the writer to fsync 20 counters', 30_000);
      assert.deepEqual(writerLog(log).filter((l) => l.kind === 'err'), [], 'no error before the fence');

      const t0 = Date.now();
      const said = await nb.fence(vb, { node: 'a', claim }, []);
      const fenced = Date.now();
      assert.match(said, new RegExp(`^volume ${name} \\(rbd image rbd/${name}\\): node a is cut off at the OSDs \\(blocklisted ${claim.clients.replace(/[./]/g, '\\$&')} for 3600 s\\); its lock ballast-a is removed$`));
      assert.deepEqual(await rbdLocks(name), [], 'a\'s lock is gone');
      const firstErr = await waitFor(() => writerLog(log).find((l) => l.kind === 'err'), 'the writer\'s first error after the fence', 5_000, 10);
      const errAfterMs = firstErr.ms - fenced;
      timings.push(`rbd fence: fence() (rbd status, ceph osd blocklist add, rbd lock ls + rm) took ${fenced - t0} ms; the writer's first error (${firstErr.code}) came ${firstErr.ms - t0} ms after fence() started, ${errAfterMs} ms after it resolved`);
      assert.ok(errAfterMs <= 2_000, `the writer's next fsync fails within 2 s of the fence (took ${errAfterMs} ms)`);
      assert.equal(firstErr.code, 'EIO');
      const okBefore = writerLog(log).filter((l) => l.kind === 'ok' && l.ms <= firstErr.ms);

      // The fenced writer keeps trying for 2 s more; none of it may succeed or reach the image.
      await sleep(2_000);
      await stopChild(writer);
      const acked = writerLog(log).filter((l) => l.kind === 'ok').map((l) => l.n);
      assert.deepEqual(acked, okBefore.map((l) => l.n), 'no fsync of a succeeded after its first error');
      assert.ok(writerLog(log).filter((l) => l.kind === 'err').length >= 10, 'the fenced writer kept trying');

      // a learns it was fenced: its staging goes, without a flush, within a bound. (Here, before b
      // stages: on one host a fenced rbd-fuse that still lives hangs every scan of the loop devices,
      // mount -o loop's included, in LOOP_GET_STATUS's getattr of its image file.)
      const u0 = Date.now();
      await na.unstageFenced(va, va.mountpoint);
      const unstageMs = Date.now() - u0;
      aStaged = false;
      timings.push(`rbd unstageFenced: ${unstageMs} ms`);
      assert.ok(unstageMs < 15_000, `unstageFenced returns within 15 s (took ${unstageMs} ms)`);
      assert.deepEqual(mountsAt(va.mountpoint), [], 'a\'s filesystem is detached');
      assert.deepEqual(mountsAt(fuseDirOfRec(va)), [], 'a\'s rbd-fuse mount is detached');
      assert.deepEqual(rbdFuseAt(fuseDirOfRec(va)), [], 'a\'s rbd-fuse is gone');
      await waitFor(async () => (await loopsUnder(fuseDirOfRec(va))).length === 0 || undefined, 'a\'s loop device to go', 10_000);
      await na.unstageFenced(va, va.mountpoint); // idempotent: nothing staged is success

      // b takes over and finds exactly what a's fsyncs acknowledged.
      await nb.stage(vb, vb.mountpoint, { attachment: await nb.attach(vb, 'b') });
      bStaged = true;
      const seen = readFileSync(join(vb.mountpoint, 'counter'), 'utf8').split('\n').filter(Boolean).map(Number);
      const lastOk = acked[acked.length - 1];
      assert.deepEqual(seen, Array.from({ length: lastOk }, (_, i) => i + 1), `b sees counters 1..${lastOk}, the last one a's fsync acknowledged, and nothing after`);
      writeFileSync(join(vb.mountpoint, 'counter'), 'b\n', { flag: 'a' });
      const fd = await run(['sync', join(vb.mountpoint, 'counter')], { timeoutMs: 20_000 });
      assert.equal(fd.code, 0, 'the new owner writes and syncs');

      await nb.unstage(vb, vb.mountpoint);
      bStaged = false;
      await nb.detach(vb, 'b');
      const fsck = await fsckImage(name);
      assert.equal(fsck.code, 0, `e2fsck -fn is clean after b's mount replayed the journal:\n${fsck.out}`);
    } finally {
      await stopChild(writer);
      if (aStaged) await na.unstageFenced(va, va.mountpoint).catch((err) => console.error(`rbd fence test cleanup (a): ${err}`));
      if (bStaged) await nb.unstage(vb, vb.mountpoint).catch((err) => console.error(`rbd fence test cleanup (b): ${err}`));
      await nb.detach(vb, 'b').catch(() => undefined);
      await waitFor(async () => (await rbdWatchers(name)).length === 0 || undefined, 'the image\'s watchers to go', 30_000).catch(() => undefined);
      await nb.deprovision(vb).catch((err) => console.error(`rbd fence test cleanup: ${err}`));
    }
  });
});
