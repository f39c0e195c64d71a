/**
 * End-to-end recovery: what happens to volumes when the pieces around them fail, driven through a
 * private dockerd and a `ballast daemon` child process. Every check reads the real host:
 * /proc/self/mountinfo, `losetup -j`, `blkid -p`, the daemon's SQLite file and logs, dockerd's log.
 *
 * The daemons run with a short leak grace period and reconcile interval (BALLAST_LEAK_GRACE_SEC=1,
 * BALLAST_RECONCILE_INTERVAL_SEC=0.5) so leaked references are dropped within seconds.
 *
 * What dockerd 20.10 does, as observed here (each test asserts it):
 * - A plugin call that cannot connect is retried inside that one call with backoff 1+2+4+8 s, then
 *   given up (~15 s). On container exit dockerd first Gets the volume, so with Ballast down the
 *   cleanup logs "cleanup: Failed to umount volumes" after ~15 s and never sends that Unmount again.
 * - SIGKILL of dockerd takes containerd with it (parent-death signal) but not the shims: containers
 *   keep running, with their mounts. While dockerd is down Ballast cannot ask it, so it drops nothing.
 *   A dockerd started again WITHOUT --live-restore shuts those containers down and marks them exited
 *   without sending Unmount: their references leak and only the reconciler drops them. WITH
 *   --live-restore it adopts them (same PID, still writing); a later stop sends a normal Unmount.
 *   (Killing containerd and the shims too, as the helper's kill9() does, orphans the container
 *   processes instead: dockerd then reports them exited while they still run and hold their volumes.)
 * - A daemon stopped with SIGTERM finishes the operation in flight and answers it, so dockerd sees
 *   the create succeed; mounts stay in place and containers keep using them.
 * - After its record is deleted, dockerd still has the volume cached; `docker volume create` asks the
 *   driver (Get: not found), drops the stale entry and sends Create, which adopts the image.
 * - A volume list (GET /volumes) makes dockerd scan /run/docker/plugins and activate every legacy
 *   plugin there; only then does GET /info list the driver in Plugins.Volume.
 *
 * Needs root, dockerd, busybox-static, xfsprogs and btrfs-progs; skipped otherwise.
 */
import { test, describe, before, after, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, watch } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { dockerSkipReason, startDockerEngine, type DockerEngine } from '../helpers/docker-engine.js';
import { startBallast, uniqueName, type BallastProc } from '../helpers/ballast.js';
import { IMAGE, Scenario } from '../helpers/scenario.js';
import { pidAlive, run, sleep, waitFor, type RunResult } from '../helpers/proc.js';
import { parseMountinfo } from '../../src/host/mountinfo.js';
import { teardownSuite } from '../helpers/leftovers.js';
import { unixRequest } from '../../src/host/unix-http.js';
import type { PassReport } from '../../src/reconciler/index.js';

const SKIP = dockerSkipReason();
/** A container that appends a numbered line to /data/log every 0.1 s. */
const WRITER = ['sh', '-c', 'trap "exit 0" TERM; i=0; while :; do echo "line $i" >> /data/log; i=$((i+1)); sleep 0.1; done'];
const ENV = { BALLAST_LEAK_GRACE_SEC: '1', BALLAST_RECONCILE_INTERVAL_SEC: '0.5' };

let eng: DockerEngine | undefined;
let b: BallastProc | undefined;
let root = '';
let scratch = '';
/** Engines and daemons a single test starts (test 5), stopped by the after hook if the test did not. */
const extraEngines: DockerEngine[] = [];
const extraDaemons: BallastProc[] = [];

function e(): DockerEngine { assert.ok(eng, 'dockerd is not running (before hook failed)'); return eng; }
function bl(): BallastProc { assert.ok(b, 'ballast is not running (before hook failed)'); return b; }
const t = (name: string, fn: (ctx: TestContext) => Promise<void>) => test(name, { skip: SKIP ?? false, timeout: 120_000 }, fn);

// ---- helpers -------------------------------------------------------------------------------------

const sc = new Scenario('rec', e, bl);
const volName = (p: string) => sc.volName(p);
const ctrName = (p: string) => sc.ctrName(p);
const createVolume = (name: string, opts: Record<string, string> = {}) => sc.createVolume(name, opts);
const inContainer = (vol: string, script: string) => sc.inContainer(vol, script);
const runDetached = (name: string, vol: string, cmd?: string[]) => sc.runDetached(name, vol, cmd);
const removeContainer = (name: string) => sc.removeContainer(name);
const removeVolume = (name: string) => sc.removeVolume(name);
const { containers, volumes } = sc;

const inspectVolume = (name: string) => sc.inspectVolume(name);
async function ledgerMounts(name: string): Promise<number> { return (await inspectVolume(name)).Status.mounts as number; }

async function containerState(name: string): Promise<{ Running: boolean; Pid: number; ExitCode: number; Status: string }> {
  return JSON.parse(await e().ok(['inspect', '-f', '{{json .State}}', name]));
}

function mountinfo() { return parseMountinfo(readFileSync('/proc/self/mountinfo', 'utf8')); }
function mountsAt(path: string) { return mountinfo().filter((m) => m.mountpoint === path); }

interface Loop { name: string; 'back-file': string }
async function loopsOf(file: string): Promise<Loop[]> {
  const r = await run(['losetup', '-J', '-O', 'NAME,BACK-FILE', '-j', file], { timeoutMs: 10_000 });
  assert.equal(r.code, 0, `losetup -j ${file}: ${r.stderr}`);
  return r.stdout.trim() ? (JSON.parse(r.stdout) as { loopdevices: Loop[] }).loopdevices : [];
}

async function blkid(image: string, tag: 'TYPE' | 'UUID'): Promise<string> {
  const r = await run(['blkid', '-p', '-o', 'value', '-s', tag, image], { timeoutMs: 10_000 });
  assert.equal(r.code, 0, `blkid -p ${image} exited ${r.code}: ${r.stderr}`);
  return r.stdout.trim();
}

async function md5(file: string): Promise<string> {
  const r = await run(['md5sum', file], { timeoutMs: 60_000 });
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.split(' ')[0];
}

/** Reads a file from an unmounted ext4 image without mounting it (debugfs, read-only). */
async function debugfsCat(image: string, path: string): Promise<string> {
  const r = await run(['debugfs', '-R', `cat ${path}`, image], { timeoutMs: 20_000 });
  assert.equal(r.code, 0, `debugfs cat ${path} on ${image}: ${r.stderr}`);
  return r.stdout;
}

async function assertReleased(mountpoint: string, image: string): Promise<void> {
  await waitFor(async () => mountsAt(mountpoint).length === 0 && (await loopsOf(image)).length === 0,
    `${mountpoint} unmounted and ${image} detached`, 10_000);
  assert.ok(!mountinfo().some((m) => m.source === image), 'image is not a mount source');
}

async function assertMountedOnce(mountpoint: string, image: string, fstype: string): Promise<void> {
  const at = mountsAt(mountpoint);
  assert.equal(at.length, 1, `expected one mount at ${mountpoint}, got ${JSON.stringify(at)}`);
  assert.equal(at[0].fstype, fstype);
  const loops = await loopsOf(image);
  assert.equal(loops.length, 1, `expected one loop device on ${image}, got ${JSON.stringify(loops)}`);
  assert.equal(at[0].source, loops[0].name);
}

interface LogLine { time: number; msg?: string; op?: string; kind?: string; volume?: string; outcome?: string; err?: string; reason?: string }
/** The daemon's JSON log lines, from byte `from` of its log file on. */
function logLines(p: BallastProc, from = 0): LogLine[] {
  return p.logs().slice(from).split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as LogLine);
}
function repairsOf(p: BallastProc, vol: string, from = 0): string[] {
  return logLines(p, from).filter((l) => l.op === 'repair' && l.volume === vol).map((l) => l.kind!);
}
function opsOf(p: BallastProc, vol: string, from = 0): string[] {
  return logLines(p, from).filter((l) => l.volume === vol && l.outcome && l.op && l.op !== 'repair').map((l) => `${l.op}:${l.outcome}`);
}

function dockerdLog(en: DockerEngine = e()): string { return readFileSync(join(en.dir, 'dockerd.log'), 'utf8'); }

/** Runs fn on the daemon's SQLite file (the daemon must be stopped when fn writes). */
function withDb<T>(fn: (db: Database.Database) => T): T {
  const db = new Database(join(root, 'ballast.db'));
  try { return fn(db); } finally { db.close(); }
}
function ledgerRows(vol: string): number {
  return withDb((db) => (db.prepare('SELECT COALESCE(SUM(count), 0) FROM mounts WHERE volume = ?').pluck().get(vol) as number));
}

interface Check { name: string; ok: boolean; warn?: boolean; detail: string }
async function doctor(p: BallastProc = bl()): Promise<Map<string, Check>> {
  const r = await p.cli(['doctor', '--json'], 120_000);
  const checks = (JSON.parse(r.stdout) as { checks: Check[] }).checks;
  return new Map(checks.map((c) => [c.name, c]));
}

/**
 * SIGKILL of dockerd alone, as a crash of dockerd looks. (The helper's kill9() also kills containerd
 * and the shims; with the shims gone the container processes are orphaned and keep running out of
 * any engine's sight, holding their volumes' filesystems, which is a different failure.)
 */
async function killDockerd(en: DockerEngine): Promise<void> {
  const pid = en.pid;
  const containerd = containerdPids(en);
  assert.equal(containerd.length, 1, `one containerd for ${en.dir}`);
  process.kill(pid, 'SIGKILL');
  await waitFor(() => !pidAlive(pid), 'dockerd to vanish', 10_000);
  // containerd dies with it (dockerd starts it with a parent-death signal). A dockerd started before it
  // is gone would find its pid file, try to reuse it, and fail with "timeout waiting for containerd".
  await waitFor(() => !pidAlive(containerd[0]), 'containerd to follow dockerd', 10_000);
}

/** The containerd daemon (not the shims) that dockerd `en` started. */
function containerdPids(en: DockerEngine): number[] {
  const out: number[] = [];
  for (const p of readdirSync('/proc').filter((x) => /^\d+$/.test(x))) {
    let argv: string[];
    try { argv = readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0'); } catch { continue; }
    if (argv[0] === 'containerd' && argv.includes(join(en.dir, 'exec', 'containerd', 'containerd.toml'))) out.push(Number(p));
  }
  return out;
}

/** Graceful stop of dockerd (keeping its directory), then a start with `extra` flags. */
async function restartDockerdGracefully(en: DockerEngine, extra: string[] = []): Promise<void> {
  const pid = en.pid;
  try { process.kill(pid, 'SIGTERM'); } catch { /* gone */ }
  await waitFor(() => !pidAlive(pid), 'dockerd to stop', 30_000);
  await en.restart(extra);
}

/** Waits until dockerd gave up the volume cleanup of container `id` (its plugin call failed after retries). */
async function waitCleanupFailed(id: string): Promise<void> {
  await waitFor(() => dockerdLog().includes(`${id} cleanup: Failed to umount volumes`),
    `dockerd to give up unmounting the volumes of ${id.slice(0, 12)}`, 45_000, 250);
}

/**
 * The report of the first reconcile pass that starts after this call (GET /v1/reconcile). Cheaper
 * than `ballast doctor`, whose volume list makes dockerd activate every socket in /run/docker/plugins
 * (a dead one, left by a killed daemon, costs ~15 s of retries).
 */
async function nextPass(p: BallastProc = bl()): Promise<PassReport> {
  const since = new Date().toISOString();
  return waitFor(async () => {
    const r = await unixRequest(p.adminSocket, 'GET', '/v1/reconcile', undefined, { timeoutMs: 5000 });
    const last = (r.body as { last?: PassReport }).last;
    return last && last.startedAt > since ? last : undefined;
  }, 'a reconcile pass', 10_000, 100);
}

function imagesDir(): string { return join(root, 'backends', 'block', 'images'); }
function mountsDir(): string { return join(root, 'backends', 'block', 'mounts'); }

// ---- suite ---------------------------------------------------------------------------------------

describe('ballast recovery (e2e)', () => {
  before(async () => {
    if (SKIP) return;
    root = mkdtempSync('/var/tmp/ballast-rec-');
    scratch = mkdtempSync('/var/tmp/ballast-rec-scratch-');
    eng = await startDockerEngine();
    b = await startBallast({ root, extraArgs: ['--docker-host', eng.host], env: ENV });
  });

  after(async () => {
    if (SKIP) return;
    await teardownSuite({
      suite: 'recovery e2e', roots: [root, scratch, ...extraDaemons.map((x) => x.root)], engine: eng, containers, volumes,
      daemons: [b, ...extraDaemons],
      stopAfter: [...extraEngines, ...(eng ? [eng] : [])].map((en) => ({ what: `dockerd ${en.dir}`, stop: () => en.stop() })),
    });
  });

  // 1 ------------------------------------------------------------------------------------------
  t('daemon down while a container stops: the leaked reference is dropped on restart, the volume released, rm works', async () => {
    const vol = volName('down');
    await createVolume(vol, { backend: 'block', size: '64M' });
    const v = await inspectVolume(vol);
    const image = v.Status.image as string;
    const c = ctrName('down');
    const id = await runDetached(c, vol);
    assert.equal(await ledgerMounts(vol), 1);
    await assertMountedOnce(v.Mountpoint, image, 'ext4');

    await bl().kill9();
    const stop = await e().docker(['stop', '-t', '1', c], 60_000);
    assert.equal(stop.code, 0, stop.stderr);
    assert.equal((await containerState(c)).Running, false);
    // dockerd retries the unreachable plugin inside this one cleanup for ~15 s, then gives up for good.
    await waitCleanupFailed(id);
    // "connection refused" on the killed daemon's socket, or "no such file" once another run's dockerd
    // start on this machine has swept that dead socket (sweepDeadTestSockets): unreachable either way.
    assert.match(dockerdLog(), new RegExp(`${id} cleanup: Failed to umount volumes.*${vol}.*(connection refused|no such file or directory)`));
    // Nobody unmounted: the host mount and the ledger reference are still there.
    await assertMountedOnce(v.Mountpoint, image, 'ext4');
    assert.equal(ledgerRows(vol), 1);

    const from = bl().logs().length;
    const t0 = Date.now();
    await bl().restart();
    await waitFor(async () => (await ledgerMounts(vol)) === 0, 'the leaked reference to be dropped', 5000);
    await assertReleased(v.Mountpoint, image);
    assert.ok(Date.now() - t0 < 8000, `released ${Date.now() - t0} ms after the restart`);
    assert.deepEqual(repairsOf(bl(), vol, from), ['leaked-reference']);
    const line = logLines(bl(), from).find((l) => l.op === 'repair' && l.volume === vol)!;
    assert.match(String((line as { detail?: string }).detail), /has no running container/);
    assert.deepEqual(opsOf(bl(), vol, from), [], 'dockerd never sent the Unmount again');
    assert.equal(ledgerRows(vol), 0);

    await removeContainer(c);
    await removeVolume(vol);
    assert.ok(!existsSync(image));
  });

  // 2 ------------------------------------------------------------------------------------------
  t('dockerd SIGKILLed: without --live-restore the containers are shut down and their references dropped; with it the reference is kept until stop', async (ctx) => {
    // -- without --live-restore --
    const vols = [volName('crash'), volName('crash')];
    const ctrs = [ctrName('crash'), ctrName('crash')];
    const info: { mp: string; image: string; pid: number }[] = [];
    for (let i = 0; i < 2; i++) {
      await createVolume(vols[i], { backend: 'block', size: '64M' });
      const v = await inspectVolume(vols[i]);
      await runDetached(ctrs[i], vols[i]);
      info.push({ mp: v.Mountpoint, image: v.Status.image as string, pid: (await containerState(ctrs[i])).Pid });
    }
    const from = bl().logs().length;
    await killDockerd(e());
    // The containers outlive dockerd (their shims do not depend on it).
    for (const x of info) assert.ok(pidAlive(x.pid), `container process ${x.pid} survives dockerd`);
    // With dockerd down Ballast cannot tell leaked references from live ones: it drops none, and says so.
    await sleep(2000); // > grace + several reconcile intervals
    const doc = await doctor();
    assert.equal(doc.get('leak detection')?.ok, false, JSON.stringify(doc.get('leak detection')));
    assert.match(doc.get('leak detection')!.detail, /not reachable/);
    for (const vol of vols) assert.equal(ledgerRows(vol), 1, `${vol} keeps its reference while dockerd is down`);
    for (const x of info) await assertMountedOnce(x.mp, x.image, 'ext4');

    await e().restart();
    // dockerd (no live-restore) shuts down the containers containerd still had, and marks them exited.
    for (let i = 0; i < 2; i++) {
      await waitFor(async () => !(await containerState(ctrs[i])).Running, `${ctrs[i]} to be stopped`, 20_000);
      await waitFor(() => !pidAlive(info[i].pid), `container process ${info[i].pid} to end`, 10_000);
    }
    for (let i = 0; i < 2; i++) {
      await waitFor(async () => (await ledgerMounts(vols[i])) === 0, `${vols[i]}'s leaked reference to be dropped`, 15_000);
      await assertReleased(info[i].mp, info[i].image);
      // dockerd sent no Unmount for them (its restore shuts the containers down before it has looked
      // their volumes up again, so its cleanup has no volume to unmount): the reconciler dropped the
      // references as leaked. (It logs its repairs at the end of its pass, a moment after the ledger
      // changed, hence the wait.)
      const how = await waitFor(() => {
        const h = [...repairsOf(bl(), vols[i], from), ...opsOf(bl(), vols[i], from)];
        return h.length > 0 ? h : undefined;
      }, `a log line for the release of ${vols[i]}`, 5000);
      ctx.diagnostic(`without --live-restore, ${vols[i]} was released by: ${how.join(', ')}`);
      assert.deepEqual(how, ['leaked-reference'], 'released by the reconciler, and no Unmount came from dockerd');
    }
    for (const c of ctrs) await removeContainer(c);
    for (const vol of vols) await removeVolume(vol);

    // -- with --live-restore --
    try {
      const vol = volName('live');
      await createVolume(vol, { backend: 'block', size: '64M' });
      const v = await inspectVolume(vol);
      const image = v.Status.image as string;
      const c = ctrName('live');
      await runDetached(c, vol, WRITER);
      const pid = (await containerState(c)).Pid;
      const from2 = bl().logs().length;
      await killDockerd(e());
      await e().restart(['--live-restore']);
      // dockerd adopts the running container: same process, still writing through the same mount.
      const st = await containerState(c);
      assert.ok(st.Running, 'the container survives the dockerd crash');
      assert.equal(st.Pid, pid);
      const lines = async () => Number(await e().ok(['exec', c, 'sh', '-c', 'wc -l < /data/log']));
      const n0 = await lines();
      // It is running, so in use: the reference is never taken for leaked, over many grace periods.
      const until = Date.now() + 4000;
      while (Date.now() < until) {
        assert.equal(await ledgerMounts(vol), 1, 'the running container keeps its reference');
        await sleep(400);
      }
      assert.ok((await lines()) > n0, 'the container kept writing');
      await assertMountedOnce(v.Mountpoint, image, 'ext4');
      assert.deepEqual(repairsOf(bl(), vol, from2), []);

      await e().ok(['stop', c], 30_000);
      await waitFor(async () => (await ledgerMounts(vol)) === 0, 'the reference to be released after stop', 10_000);
      await assertReleased(v.Mountpoint, image);
      // Released by dockerd's own Unmount (the restored container kept its mount ID), not by the reconciler.
      assert.deepEqual(opsOf(bl(), vol, from2), ['unmount:ok']);
      assert.deepEqual(repairsOf(bl(), vol, from2), []);
      await removeContainer(c);
      await removeVolume(vol);
    } finally {
      // The tests that follow expect a dockerd without --live-restore.
      await restartDockerdGracefully(e());
    }
  });

  // 3 ------------------------------------------------------------------------------------------
  t('host reboot: references leaked and mounts and loop devices gone behind Ballast\'s back; the next docker run mounts the same data', async () => {
    const vols = [volName('rebootA'), volName('rebootB')];
    const fstypes = ['ext4', 'btrfs'] as const;
    const sizes = ['64M', '128M'];
    const ctrs = [ctrName('reboot'), ctrName('reboot')];
    const info: { mp: string; image: string; id: string }[] = [];
    for (let i = 0; i < 2; i++) {
      await createVolume(vols[i], { backend: 'block', size: sizes[i], fstype: fstypes[i] });
      const v = await inspectVolume(vols[i]);
      assert.equal(await inContainer(vols[i], `echo "before reboot ${i}" > /data/f && sync && cat /data/f`), `before reboot ${i}`);
      const id = await runDetached(ctrs[i], vols[i]);
      info.push({ mp: v.Mountpoint, image: v.Status.image as string, id });
      await assertMountedOnce(v.Mountpoint, v.Status.image as string, fstypes[i]);
    }
    await bl().kill9();
    // Both containers stop while the daemon is down: their references leak.
    for (const r of await Promise.all(ctrs.map((c) => e().docker(['stop', '-t', '1', c], 60_000)))) assert.equal(r.code, 0, r.stderr);
    for (const x of info) await waitCleanupFailed(x.id);
    for (const vol of vols) assert.equal(ledgerRows(vol), 1);

    // The "reboot": A is unmounted and its loop device detached, B only unmounted.
    const loopsA = await loopsOf(info[0].image);
    assert.equal(loopsA.length, 1);
    assert.equal((await run(['umount', info[0].mp])).code, 0);
    // Ballast mounts through autoclear loop devices, so the umount usually detached it already.
    if ((await loopsOf(info[0].image)).length > 0) assert.equal((await run(['losetup', '-d', loopsA[0].name])).code, 0);
    assert.equal((await run(['umount', info[1].mp])).code, 0);
    for (const x of info) {
      assert.deepEqual(mountsAt(x.mp), []);
      assert.deepEqual(await loopsOf(x.image), []);
    }

    const from = bl().logs().length;
    await bl().restart();
    for (let i = 0; i < 2; i++) {
      // The leaked reference is dropped before anything is mounted for it again.
      await waitFor(async () => (await ledgerMounts(vols[i])) === 0, `${vols[i]}'s leaked reference to be dropped`, 5000);
      assert.deepEqual(repairsOf(bl(), vols[i], from), ['leaked-reference'], 'no remount for a reference no container owns');
      assert.deepEqual(mountsAt(info[i].mp), []);
      assert.equal(await e().ok(['run', '--rm', '-v', `${vols[i]}:/data`, IMAGE, 'cat', '/data/f']), `before reboot ${i}`);
      await assertReleased(info[i].mp, info[i].image);
      assert.equal(await ledgerMounts(vols[i]), 0);
      assert.equal(await blkid(info[i].image, 'TYPE'), fstypes[i]);
    }
    for (const c of ctrs) await removeContainer(c);
    for (const vol of vols) await removeVolume(vol);
  });

  // 4 ------------------------------------------------------------------------------------------
  t('record deleted from the store: doctor reports the orphan image; creating the volume again adopts it without formatting', async () => {
    const vol = volName('adopt');
    await createVolume(vol, { backend: 'block', size: '64M' });
    const image = (await inspectVolume(vol)).Status.image as string;
    assert.equal(await inContainer(vol, 'echo "keep me" > /data/f && sync && cat /data/f'), 'keep me');
    const uuid = await blkid(image, 'UUID');
    assert.match(uuid, /^[0-9a-f-]{36}$/);

    assert.equal(await bl().stop(), 0);
    assert.equal(withDb((db) => db.prepare('DELETE FROM volumes WHERE name = ?').run(vol).changes), 1);
    await bl().restart();

    const doc = await doctor();
    const data = doc.get('orphan data')!;
    assert.equal(data.ok, false);
    assert.equal(data.warn, true);
    assert.ok(data.detail.includes(`image ${image}: an image holding ext4 with no volume record`), data.detail);
    assert.ok(existsSync(image));
    // ...and is only reported: Ballast's List no longer names it.
    const ls = JSON.parse((await bl().cli(['volume', 'ls', '--json'])).stdout) as { name: string }[];
    assert.ok(!ls.some((x) => x.name === vol));

    const from = bl().logs().length;
    await createVolume(vol, { backend: 'block', size: '64M', fstype: 'ext4' });
    assert.equal(await blkid(image, 'UUID'), uuid, 'adopted, not formatted');
    assert.ok(logLines(bl(), from).some((l) => l.volume === vol && /adopting an existing image/.test(l.msg ?? '')));
    assert.equal(await inContainer(vol, 'cat /data/f'), 'keep me');
    assert.equal((await inspectVolume(vol)).Status.state, 'ready');
    assert.ok(!(await nextPass()).orphans.some((o) => o.path === image), 'no longer an orphan');
    await removeVolume(vol);
    assert.ok(!existsSync(image));
  });

  // 5 ------------------------------------------------------------------------------------------
  t('damaged record: the daemon serves, reports the volume damaged, refuses mount and rm, and leaves the data alone', async () => {
    const vol = volName('dmg');
    await createVolume(vol, { backend: 'block', size: '64M' });
    const v = await inspectVolume(vol);
    const image = v.Status.image as string;
    assert.equal(await inContainer(vol, 'echo "precious" > /data/f && sync && cat /data/f'), 'precious');
    const uuid = await blkid(image, 'UUID');

    assert.equal(await bl().stop(), 0);
    const spec = withDb((db) => db.prepare('SELECT spec FROM volumes WHERE name = ?').pluck().get(vol) as string);
    withDb((db) => db.prepare('UPDATE volumes SET spec = ? WHERE name = ?').run('{broken', vol));
    const sum = await md5(image);
    await bl().restart();

    const d = await inspectVolume(vol);
    assert.equal(d.Status.state, 'damaged');
    assert.match(String(d.Status.error), /record of volume .* is damaged/);
    const [adm] = JSON.parse((await bl().cli(['volume', 'inspect', vol])).stdout) as { state: string }[];
    assert.equal(adm.state, 'damaged');
    // The refusals end "see ballast doctor"; doctor names the volume and why.
    const dmg = (await doctor()).get('damaged records');
    assert.equal(dmg?.ok, false, JSON.stringify(dmg));
    assert.match(dmg!.detail, new RegExp(`^${vol}: the stored record does not decode \\(.*JSON.*\\): state="ready"`));

    const r = await e().docker(['run', '--rm', '-v', `${vol}:/data`, IMAGE, 'cat', '/data/f']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /damaged/);
    assert.deepEqual(mountsAt(v.Mountpoint), []);
    const rm = await e().docker(['volume', 'rm', vol]);
    assert.notEqual(rm.code, 0);
    assert.match(rm.stderr, /damaged/);
    const brm = await bl().cli(['volume', 'rm', vol]);
    assert.notEqual(brm.code, 0);
    assert.match(brm.stderr, /damaged/);
    // A repair pass leaves it alone too.
    assert.equal((await bl().cli(['repair'])).code, 0);

    assert.ok(existsSync(image));
    assert.equal(await md5(image), sum, 'the image is byte for byte untouched');
    assert.equal(await blkid(image, 'UUID'), uuid);
    assert.equal(await debugfsCat(image, '/f'), 'precious\n');
    assert.deepEqual(await loopsOf(image), []);

    // Mended by hand, the volume is ordinary again.
    assert.equal(await bl().stop(), 0);
    withDb((db) => db.prepare('UPDATE volumes SET spec = ? WHERE name = ?').run(spec, vol));
    await bl().restart();
    assert.equal(await inContainer(vol, 'cat /data/f'), 'precious');
    await removeVolume(vol);
  });

  // 6 ------------------------------------------------------------------------------------------
  t('activation on start: a fresh dockerd lists the plugin in /info without any docker volume command', async () => {
    const en = await startDockerEngine();
    extraEngines.push(en);
    const before = (await en.api('GET', '/info')).body as { Plugins: { Volume: string[] } };
    const driver = uniqueName('ballast-t');
    assert.ok(!before.Plugins.Volume.includes(driver));
    const r2 = mkdtempSync('/var/tmp/ballast-rec-act-');
    const t0 = Date.now();
    const d = await startBallast({ root: r2, driver, extraArgs: ['--docker-host', en.host], env: ENV });
    extraDaemons.push(d);
    // dockerd activates legacy plugins when it lists volumes; Ballast asks for that list at start.
    // (A stale socket of some other plugin in /run/docker/plugins can hold that list up to ~15 s.)
    const listed = await waitFor(async () => {
      const info = (await en.api('GET', '/info')).body as { Plugins: { Volume: string[] } };
      return info.Plugins.Volume.includes(driver) ? info.Plugins.Volume : undefined;
    }, `dockerd to list volume driver ${driver}`, 25_000, 100);
    const ms = Date.now() - t0;
    assert.ok(listed.includes('local'));
    assert.ok(logLines(d).some((l) => l.msg === 'asked dockerd to activate the plugin'));
    assert.ok(ms < 25_000, `listed ${ms} ms after start`);

    await d.stop();
    extraDaemons.splice(extraDaemons.indexOf(d), 1);
    rmSync(r2, { recursive: true, force: true });
    await en.stop();
    extraEngines.splice(extraEngines.indexOf(en), 1);
  });

  // 7 ------------------------------------------------------------------------------------------
  t('ballast repair: cleans a stray mount and a stray loop device, keeps the stray image', async () => {
    mkdirSync(imagesDir(), { recursive: true, mode: 0o700 });
    mkdirSync(mountsDir(), { recursive: true, mode: 0o755 });
    const stray = join(imagesDir(), `${uniqueName('stray-')}.img`);
    const other = join(scratch, 'other.img');
    const strayMp = join(mountsDir(), uniqueName('stray-mnt-'));
    for (const f of [stray, other]) {
      assert.equal((await run(['truncate', '-s', '32M', f])).code, 0);
      const mk = await run(['mkfs.ext4', '-q', f]);
      assert.equal(mk.code, 0, mk.stderr);
    }
    const strayUuid = await blkid(stray, 'UUID');
    const lo = await run(['losetup', '-f', '--show', stray]);
    assert.equal(lo.code, 0, lo.stderr);
    const loopDev = lo.stdout.trim();
    mkdirSync(strayMp);
    const mnt = await run(['mount', '-o', 'loop', other, strayMp]);
    assert.equal(mnt.code, 0, mnt.stderr);
    const otherLoop = mountsAt(strayMp)[0].source;
    try {
      // Doctor reads the last reconcile pass (it runs none): the next periodic pass sees the strays.
      const doc = await waitFor(async () => { const d = await doctor(); return d.get('orphan mounts/loops')?.ok === false ? d : undefined; }, 'a reconcile pass to see the stray mount and loop device', 15_000, 200);
      const ml = doc.get('orphan mounts/loops')!;
      assert.equal(ml.ok, false);
      assert.equal(ml.warn, true);
      assert.ok(ml.detail.includes(`mount ${strayMp} (${otherLoop} (ext4) is mounted here but no volume record names it)`), ml.detail);
      assert.ok(ml.detail.includes(`loop ${loopDev} (attached to ${stray} but not mounted)`), ml.detail);
      assert.ok(doc.get('orphan data')!.detail.includes(`image ${stray}: an image holding ext4 with no volume record`));

      const rep = await bl().cli(['repair']);
      assert.equal(rep.code, 0, rep.stdout + rep.stderr);
      assert.match(rep.stdout, new RegExp(`repaired\\s+orphan-cleaned\\s+mount ${strayMp}`));
      assert.match(rep.stdout, new RegExp(`repaired\\s+orphan-cleaned\\s+loop ${loopDev}`));
      assert.match(rep.stdout, new RegExp(`kept\\s+image\\s+${stray}`));

      assert.deepEqual(mountsAt(strayMp), []);
      assert.deepEqual(await loopsOf(stray), []);
      assert.deepEqual(await loopsOf(other), [], 'the autoclear loop of the stray mount went with it');
      assert.ok(existsSync(stray), 'the stray image is data: kept');
      assert.equal(await blkid(stray, 'UUID'), strayUuid);
      const after2 = await doctor();
      assert.equal(after2.get('orphan mounts/loops')!.ok, true, after2.get('orphan mounts/loops')!.detail);
      assert.equal(after2.get('orphan mounts/loops')!.detail, 'none');
      assert.ok(after2.get('orphan data')!.detail.includes(stray));
    } finally {
      if (mountsAt(strayMp).length) await run(['umount', strayMp]);
      for (const f of [stray, other]) for (const l of await loopsOf(f)) await run(['losetup', '-d', l.name]);
      rmSync(stray, { force: true });
      rmSync(other, { force: true });
      rmSync(strayMp, { recursive: true, force: true });
    }
    assert.deepEqual((await nextPass()).orphans, []);
  });

  // 8 ------------------------------------------------------------------------------------------
  t('graceful stop: a create in flight completes, the daemon exits 0 and removes its sockets, running containers keep their mounts', async () => {
    const used = volName('keep');
    await createVolume(used, { backend: 'block', size: '64M' });
    const u = await inspectVolume(used);
    const uImage = u.Status.image as string;
    const c = ctrName('keep');
    await runDetached(c, used, WRITER);
    await assertMountedOnce(u.Mountpoint, uImage, 'ext4');
    const lines = async () => Number(await e().ok(['exec', c, 'sh', '-c', 'wc -l < /data/log']));

    const vol = volName('slow');
    const image = join(imagesDir(), `${vol}.img`);
    mkdirSync(imagesDir(), { recursive: true, mode: 0o700 });
    const from = bl().logs().length;
    // SIGTERM the moment the create's image file appears (inotify): the create is then mid-way.
    let stopped: Promise<number | null> | undefined;
    const w = watch(imagesDir(), (_ev, f) => { if (f === `${vol}.img` && !stopped) stopped = bl().stop('SIGTERM'); });
    let create: RunResult | undefined;
    try {
      create = await e().docker(['volume', 'create', '-d', bl().driver, '-o', 'backend=block', '-o', 'size=1G', '-o', 'fstype=btrfs', vol], 60_000);
      assert.ok(stopped, `SIGTERM was sent when the image appeared (create: ${create.code} ${create.stderr})`);
    } finally { w.close(); }
    assert.equal(await stopped, 0, 'graceful stop exits 0');
    assert.equal(create?.code, 0, `the create in flight was answered: ${create?.stderr}`);
    const lg = logLines(bl(), from);
    const iStop = lg.findIndex((l) => l.msg === 'ballast stopping; mounts stay in place');
    const iCreate = lg.findIndex((l) => l.op === 'create' && l.volume === vol);
    assert.ok(iStop >= 0 && iCreate > iStop, `the create finished after the stop began: ${JSON.stringify(lg.slice(Math.max(0, iStop - 2)))}`);
    assert.equal(lg[iCreate].outcome, 'ok');
    assert.ok(lg.some((l) => l.msg === 'ballast stopped'));
    assert.ok(!existsSync(bl().socket), 'plugin socket removed');
    assert.ok(!existsSync(bl().adminSocket), 'admin socket removed');
    assert.ok(!existsSync(join(root, 'ballast.pid')), 'pid file removed');

    // The container's mount stayed in place while the daemon was gone, and it kept writing.
    await assertMountedOnce(u.Mountpoint, uImage, 'ext4');
    const n0 = await lines();
    await waitFor(async () => (await lines()) > n0 + 3, 'the container to keep writing with the daemon stopped', 10_000, 200);
    assert.equal(await blkid(image, 'TYPE'), 'btrfs');

    await bl().restart();
    const nv = await inspectVolume(vol);
    assert.equal(nv.Status.state, 'ready');
    assert.equal(nv.Status.fstype, 'btrfs');
    assert.equal(nv.Status.sizeBytes, 1024 ** 3);
    assert.equal(await inContainer(vol, 'echo usable > /data/u && cat /data/u'), 'usable');
    await assertReleased(nv.Mountpoint, image);
    // The running container's reference survived the restart untouched.
    await sleep(1500);
    assert.equal(await ledgerMounts(used), 1);
    assert.deepEqual(repairsOf(bl(), used, from), []);
    await assertMountedOnce(u.Mountpoint, uImage, 'ext4');

    await e().ok(['stop', c], 30_000);
    await waitFor(async () => (await ledgerMounts(used)) === 0, 'the reference to be released', 10_000);
    await assertReleased(u.Mountpoint, uImage);
    await removeContainer(c);
    await removeVolume(used);
    await removeVolume(vol);
  });
});
