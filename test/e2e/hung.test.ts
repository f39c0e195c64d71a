/**
 * End-to-end: hung servers and hung clients (issue 7). A real Ballast daemon driven over its plugin
 * socket as dockerd drives it (POST, no content type), with an sshfs backend against a private sshd
 * (test/servers/sshd.ts) and a glusterfs backend against a private glusterd + brick
 * (test/servers/gluster.ts), both on loopback. "Hung" is SIGSTOP: the process keeps its sockets, so
 * connections open and then nothing answers, as with a server that froze or a client stuck in the
 * kernel. Every process this suite stops is continued or killed, by PID, in a finally block.
 *
 * (1) baseline latency of Get/Create/Mount on local volumes; (2) the same while the sshd, and then
 * the gluster brick, is stopped, with creates, a mount and a remove on the hung backend in flight: the
 * local calls keep their speed and the hung ones fail within their mount timeout with a sentence that
 * names the backend; (3) a mounted volume whose own FUSE client is stopped: Unmount answers within
 * 15 s and Remove then succeeds; (4) nothing is left behind, and after a restart the reconciler cleans
 * a leftover temporary share mount of a hung client that the test planted.
 *
 * Needs root, openssh-server + sshfs and glusterfs-server + glusterfs-client (scripts/install-test-deps.sh);
 * each backend's part is skipped with the reason when what it needs is missing. No dockerd: the test
 * sends the plugin requests itself.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { startBallast, uniqueName, type BallastProc } from '../helpers/ballast.js';
import { run, sleep, waitFor } from '../helpers/proc.js';
import { parseMountinfo } from '../../src/host/mountinfo.js';
import { sshdSkipReason, startSshd, type SshServer } from '../servers/sshd.js';
import { glusterSkipReason, startGluster, type GlusterServer } from '../servers/gluster.js';
import { descendants, gone } from '../servers/common.js';

/** Short, so the hung creates fail quickly; the sentence and the bound are what is checked. */
const MOUNT_TIMEOUT_SEC = 6;
/** A hung create, mount or remove must fail within its mount timeout plus this (cleanup, the probe). */
const HUNG_SLACK_MS = 5_000;
/** dockerd gives up on Unmount after 60 s; Ballast must answer well within that. */
const UNMOUNT_BOUND_MS = 15_000;
const N = 50;

type Kind = 'ssh' | 'gluster';
const SKIP_ROOT = process.getuid?.() === 0 ? undefined : 'needs root (FUSE mounts, SIGSTOP of servers)';
const SKIP: Record<Kind, string | undefined> = { ssh: SKIP_ROOT ?? sshdSkipReason(), gluster: SKIP_ROOT ?? glusterSkipReason() };
const FUSE_CLIENTS = ['sshfs', 'glusterfs'];

let d: BallastProc | undefined;
let sshd: SshServer | undefined;
let gluster: GlusterServer | undefined;
let root = '';
let scratch = '';
/** Every PID this suite stopped: continued (or killed) in every outcome. */
const stoppedPids = new Set<number>();
const volumes = new Set<string>();
const figures: string[] = [];
let baselineP99 = 0;
/** Test (4) stops the daemon to plant leftovers; the after hook starts it again if the test failed meanwhile. */
let daemonDown = false;

function daemon(): BallastProc { assert.ok(d, 'ballast is not running (before hook failed)'); return d; }
function note(s: string): void { figures.push(s); }

function stop(pids: readonly number[]): void {
  for (const p of pids) { try { process.kill(p, 'SIGSTOP'); stoppedPids.add(p); } catch { /* gone */ } }
}
function cont(pids: readonly number[]): void {
  for (const p of pids) { try { process.kill(p, 'SIGCONT'); } catch { /* gone */ } stoppedPids.delete(p); }
}

const under = (p: string) => p === root || p.startsWith(`${root}/`);
function mountsUnderRoot() { return parseMountinfo(readFileSync('/proc/self/mountinfo', 'utf8')).filter((m) => under(m.mountpoint)); }
function mountsAt(path: string) { return parseMountinfo(readFileSync('/proc/self/mountinfo', 'utf8')).filter((m) => m.mountpoint === path); }
function argvOf(pid: number): string[] { try { return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean); } catch { return []; } }
function pids(): number[] { return readdirSync('/proc').filter((x) => /^\d+$/.test(x)).map(Number).filter((p) => p !== process.pid); }
/** Live FUSE clients (and mount helpers) whose command line names a path under the suite's root. */
function clientsUnderRoot(): { pid: number; argv: string[] }[] {
  return pids().map((pid) => ({ pid, argv: argvOf(pid) }))
    .filter(({ pid, argv }) => argv.length > 0 && FUSE_CLIENTS.includes(argv[0].split('/').pop()!) && argv.slice(1).some((a) => a.includes(`${root}/`)) && !gone(pid));
}
function clientOf(mp: string, comm: string): number {
  const found = pids().filter((p) => argvOf(p).includes(mp) && !gone(p) && readFileSync(`/proc/${p}/comm`, 'utf8').trim() === comm);
  assert.equal(found.length, 1, `one ${comm} serves ${mp}: ${JSON.stringify(found)}`);
  return found[0];
}
function tmpEntries(kind: Kind): string[] {
  const t = join(root, 'backends', kind, 'tmp');
  return existsSync(t) ? readdirSync(t) : [];
}
/** Where the test sees a volume's directory on the server (the sshd's export, the gluster brick). */
function onServer(kind: Kind, dir: string): string {
  return kind === 'ssh' ? join(sshd!.exportDir, dir) : join(gluster!.brickDir, dir);
}

function serverLog(kind: Kind): string {
  try { return kind === 'ssh' ? readFileSync(sshd!.logFile, 'utf8').split('\n').slice(-12).join(' | ') : ''; } catch { return ''; }
}

interface Answer { ms: number; status: number; err: string; body: Record<string, unknown> }
async function call(method: string, body: Record<string, unknown>): Promise<Answer> {
  const t0 = performance.now();
  const r = await daemon().plugin(`VolumeDriver.${method}`, body);
  return { ms: performance.now() - t0, status: r.status, err: typeof r.body.Err === 'string' ? r.body.Err : '', body: r.body };
}
async function ok(method: string, body: Record<string, unknown>): Promise<Answer> {
  const a = await call(method, body);
  assert.ok(a.status === 200 && !a.err, `${method} ${JSON.stringify(body)}: ${a.status} ${JSON.stringify(a.body)}`);
  return a;
}
function volName(prefix: string): string { const n = uniqueName(`hg-${prefix}-`); volumes.add(n); return n; }
const mountId = () => randomBytes(32).toString('hex');

function p99(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.max(0, Math.ceil(s.length * 0.99) - 1)];
}
const r1 = (x: number) => Math.round(x * 10) / 10;

/**
 * N rounds of Create, Get and Mount of a fresh local volume, one call at a time, timed from the client
 * side; then (untimed) each is unmounted and removed. Returns the p99 of all 3N calls and per call.
 */
async function localWorkload(tag: string): Promise<{ all: number; create: number; get: number; mount: number }> {
  const t = { create: [] as number[], get: [] as number[], mount: [] as number[] };
  const made: { name: string; id: string }[] = [];
  try {
    for (let i = 0; i < N; i++) {
      const name = volName(`l${tag}`);
      t.create.push((await ok('Create', { Name: name, Opts: {} })).ms);
      made.push({ name, id: '' });
      t.get.push((await ok('Get', { Name: name })).ms);
      const id = mountId();
      t.mount.push((await ok('Mount', { Name: name, ID: id })).ms);
      made[made.length - 1].id = id;
    }
  } finally {
    for (const m of made) {
      if (m.id) await call('Unmount', { Name: m.name, ID: m.id });
      if (!(await call('Remove', { Name: m.name })).err) volumes.delete(m.name);
    }
  }
  return { all: p99([...t.create, ...t.get, ...t.mount]), create: p99(t.create), get: p99(t.get), mount: p99(t.mount) };
}

/** The p99 under a hang may not exceed twice the baseline; with a tiny baseline, baseline + 20 ms (noise). */
function latencyLimit(base: number): number { return Math.max(2 * base, base + 20); }

function label(kind: Kind): RegExp {
  return kind === 'ssh' ? /sshfs backend ssh \(server root@127\.0\.0\.1:\d+\)/ : /glusterfs backend gluster \(volume gv0 on 127\.0\.0\.1\)/;
}

// ---- suite ---------------------------------------------------------------------------------------

describe('hung servers and hung clients (e2e)', () => {
  before(async () => {
    if (SKIP.ssh && SKIP.gluster) return;
    root = mkdtempSync('/var/tmp/ballast-hung-');
    scratch = mkdtempSync('/var/tmp/ballast-hung-scratch-');
    const backends: Record<string, Record<string, unknown>> = { local: { type: 'local' } };
    if (!SKIP.ssh) {
      sshd = await startSshd();
      backends.ssh = { type: 'sshfs', host: '127.0.0.1', port: sshd.port, user: 'root', path: sshd.exportDir, identityFile: sshd.clientKey, knownHostsFile: sshd.knownHostsFile, mountTimeoutSec: MOUNT_TIMEOUT_SEC };
    }
    if (!SKIP.gluster) {
      gluster = await startGluster();
      backends.gluster = { type: 'glusterfs', servers: ['127.0.0.1'], volume: gluster.volume, mountTimeoutSec: MOUNT_TIMEOUT_SEC };
    }
    const configFile = join(scratch, 'ballast.json');
    writeFileSync(configFile, JSON.stringify({ defaultBackend: 'local', backends }, null, 2));
    d = await startBallast({
      root, configFile,
      // No Docker engine: leaked references are not checked, nothing else changes.
      extraArgs: ['--docker-host', `unix://${join(scratch, 'no-dockerd.sock')}`, '--node', 'hung'],
      env: { BALLAST_RECONCILE_INTERVAL_SEC: '2' },
    });
  });

  after(async () => {
    if (SKIP.ssh && SKIP.gluster) return;
    const problems: string[] = [];
    // Whatever happened: nothing stays stopped.
    cont([...stoppedPids]);
    if (d && daemonDown) await d.restart().then(() => { daemonDown = false; }, (e: Error) => problems.push(`restart for cleanup: ${e.message}`));
    if (d && !daemonDown) {
      for (const v of volumes) {
        const r = await d.plugin('VolumeDriver.Remove', { Name: v }).catch((e) => ({ status: 0, body: { Err: String(e) } }));
        if (r.status !== 200 && !/not found|no such volume|does not exist/i.test(String(r.body.Err))) problems.push(`remove ${v}: ${JSON.stringify(r.body)}`);
      }
      await d.stop();
    }
    // Clean (and report) whatever is left under the root, by path and PID.
    for (const c of clientsUnderRoot()) { problems.push(`left process ${c.pid}: ${c.argv.join(' ')}`); try { process.kill(c.pid, 'SIGKILL'); } catch { /* gone */ } }
    for (const m of mountsUnderRoot().reverse()) { problems.push(`left mount ${m.mountpoint} (${m.fstype})`); await run(['umount', '-l', '-c', '--', m.mountpoint], { timeoutMs: 10_000 }); }
    try {
      if (sshd) await sshd.stop();
      if (gluster) await gluster.stop();
    } finally {
      if (mountsUnderRoot().length === 0) rmSync(root, { recursive: true, force: true });
      rmSync(scratch, { recursive: true, force: true });
      if (figures.length) console.error(`hung e2e figures:\n  ${figures.join('\n  ')}`);
    }
    assert.deepEqual(problems, [], 'the suite left things behind');
  });

  test('(1) baseline: Get, Create and Mount of local volumes', { skip: SKIP.ssh && SKIP.gluster ? 'no sshd and no glusterd here' : false, timeout: 120_000 }, async () => {
    await localWorkload('warm'); // JIT, SQLite page cache
    const b = await localWorkload('base');
    baselineP99 = b.all;
    note(`baseline p99 over ${3 * N} calls: ${r1(b.all)} ms (create ${r1(b.create)}, get ${r1(b.get)}, mount ${r1(b.mount)})`);
  });

  for (const kind of ['ssh', 'gluster'] as const) {
    const what = kind === 'ssh' ? 'the sshd' : 'the gluster brick (glusterfsd)';
    test(`(2) ${kind}: while ${what} is stopped, local calls keep their speed and the hung backend's create, mount and remove fail in time`, { skip: SKIP[kind] ?? false, timeout: 180_000 }, async () => {
      assert.ok(baselineP99 > 0, 'the baseline ran');
      const forMount = volName(`${kind}-m`);
      const forRemove = volName(`${kind}-r`);
      await ok('Create', { Name: forMount, Opts: { backend: kind } });
      await ok('Create', { Name: forRemove, Opts: { backend: kind } });
      await waitFor(() => existsSync(onServer(kind, forRemove)), `${forRemove} on the server`, 10_000);
      const hungCreates = [0, 1, 2].map(() => volName(`${kind}-c`));
      const target = kind === 'ssh' ? [sshd!.pid(), ...descendants(sshd!.pid())] : gluster!.brickPids();
      assert.ok(target.length > 0, `${what} runs`);
      let local: Awaited<ReturnType<typeof localWorkload>>;
      let creates: Answer[]; let mount: Answer; let remove: Answer;
      stop(target);
      try {
        const inFlight = Promise.all([
          Promise.all(hungCreates.map((n) => call('Create', { Name: n, Opts: { backend: kind } }))),
          call('Mount', { Name: forMount, ID: mountId() }),
          call('Remove', { Name: forRemove }),
        ]);
        await sleep(300); // the hung calls are in the kernel and on the wire before the local ones start
        local = await localWorkload(kind);
        [creates, mount, remove] = await inFlight;
        // Still hung: nothing of the failed calls is left on this host.
        assert.deepEqual(tmpEntries(kind), [], 'no temporary share mountpoint is left');
        assert.deepEqual(mountsUnderRoot().map((m) => m.mountpoint), [], 'no mount is left');
        assert.deepEqual(clientsUnderRoot(), [], 'no FUSE client or mount helper is left');
        assert.ok(existsSync(onServer(kind, forRemove)), 'a share Ballast cannot see is not deleted');
      } finally {
        cont(target);
      }
      const limit = latencyLimit(baselineP99);
      note(`${kind} hung: p99 ${r1(local.all)} ms (create ${r1(local.create)}, get ${r1(local.get)}, mount ${r1(local.mount)}); limit ${r1(limit)} ms = max(2 x ${r1(baselineP99)}, ${r1(baselineP99)} + 20)`);
      note(`${kind} hung: creates failed after ${creates.map((c) => Math.round(c.ms)).join(', ')} ms, mount after ${Math.round(mount.ms)} ms, remove after ${Math.round(remove.ms)} ms (mount timeout ${MOUNT_TIMEOUT_SEC} s)`);
      for (const [a, op] of [...creates.map((c) => [c, 'create'] as const), [mount, 'mount'] as const, [remove, 'remove'] as const]) {
        assert.ok(a.err, `${op} on the hung backend fails: ${JSON.stringify(a.body)}`);
        assert.match(a.err, label(kind), `${op}: the sentence names the backend and its server`);
        assert.match(a.err, /could not mount|did not answer/, `${op}: says what failed`);
        assert.ok(a.ms < MOUNT_TIMEOUT_SEC * 1000 + HUNG_SLACK_MS, `${op} failed within its mount timeout (+${HUNG_SLACK_MS} ms): ${Math.round(a.ms)} ms`);
      }
      assert.ok(local.all <= limit, `local p99 ${r1(local.all)} ms while ${what} is stopped, baseline ${r1(baselineP99)} ms`);

      // Back up: the volume whose removal was refused is removed now, with its directory.
      let last = '';
      await waitFor(async () => { last = (await call('Remove', { Name: forRemove })).err; return !last; }, `removal of ${forRemove} once the server answers`, 30_000, 1_000)
        .catch((e: Error) => { throw new Error(`${e.message}; last error: ${last}; server log: ${serverLog(kind)}`); });
      volumes.delete(forRemove);
      assert.ok(!existsSync(onServer(kind, forRemove)));
      await ok('Remove', { Name: forMount });
      volumes.delete(forMount);
      for (const n of hungCreates) assert.ok(!existsSync(onServer(kind, n)), `the failed create of ${n} made nothing on the server`);
    });
  }

  for (const kind of ['ssh', 'gluster'] as const) {
    const comm = kind === 'ssh' ? 'sshfs' : 'glusterfs';
    test(`(3) ${kind}: a mounted volume whose ${comm} client is stopped unmounts within ${UNMOUNT_BOUND_MS / 1000} s and is then removed`, { skip: SKIP[kind] ?? false, timeout: 120_000 }, async () => {
      const vol = volName(`${kind}-h`);
      await ok('Create', { Name: vol, Opts: { backend: kind } });
      const id = mountId();
      const mp = String((await ok('Mount', { Name: vol, ID: id })).body.Mountpoint);
      const w = await run(['sh', '-c', `echo kept > "${mp}/f"`], { timeoutMs: 10_000 });
      assert.equal(w.code, 0, w.stderr);
      const pid = clientOf(mp, comm);
      stop([pid]);
      try {
        const u = await call('Unmount', { Name: vol, ID: id });
        note(`${kind} stopped client: Unmount answered in ${Math.round(u.ms)} ms (${u.err ? `error: ${u.err}` : 'ok'})`);
        assert.equal(u.err, '', 'Unmount succeeds');
        assert.ok(u.ms < UNMOUNT_BOUND_MS, `Unmount took ${Math.round(u.ms)} ms`);
        assert.deepEqual(mountsAt(mp), [], 'the mount is detached');
        await waitFor(() => gone(pid), `the stopped ${comm} (pid ${pid}) to be ended by Ballast`, 5_000);
      } finally {
        if (!gone(pid)) { cont([pid]); try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
        stoppedPids.delete(pid);
      }
      // The share itself answers (only the client was hung): Remove deletes the directory Ballast made.
      const r = await call('Remove', { Name: vol });
      note(`${kind} stopped client: Remove then answered in ${Math.round(r.ms)} ms (${r.err ? `error: ${r.err}` : 'ok'})`);
      assert.equal(r.err, '', 'Remove succeeds');
      assert.ok(r.ms < MOUNT_TIMEOUT_SEC * 1000 + HUNG_SLACK_MS, `Remove took ${Math.round(r.ms)} ms`);
      volumes.delete(vol);
      await waitFor(() => !existsSync(onServer(kind, vol)), `${vol} deleted on the server`, 10_000);
    });
  }

  for (const kind of ['ssh', 'gluster'] as const) {
    const what = kind === 'ssh' ? 'the sshd' : 'the gluster brick';
    const comm = kind === 'ssh' ? 'sshfs' : 'glusterfs';
    test(`(3b) ${kind}: a mounted volume whose server (${what}) is stopped unmounts within ${UNMOUNT_BOUND_MS / 1000} s; Remove is refused in time and keeps the data until the server answers`, { skip: SKIP[kind] ?? false, timeout: 120_000 }, async () => {
      const vol = volName(`${kind}-s`);
      await ok('Create', { Name: vol, Opts: { backend: kind } });
      const id = mountId();
      const mp = String((await ok('Mount', { Name: vol, ID: id })).body.Mountpoint);
      const w = await run(['sh', '-c', `echo kept > "${mp}/f"`], { timeoutMs: 10_000 });
      assert.equal(w.code, 0, w.stderr);
      const client = clientOf(mp, comm);
      const target = kind === 'ssh' ? [sshd!.pid(), ...descendants(sshd!.pid())] : gluster!.brickPids();
      stop(target);
      try {
        const u = await call('Unmount', { Name: vol, ID: id });
        note(`${kind} stopped server: Unmount of a mounted volume answered in ${Math.round(u.ms)} ms (${u.err ? `error: ${u.err}` : 'ok'})`);
        assert.equal(u.err, '', 'Unmount succeeds');
        assert.ok(u.ms < UNMOUNT_BOUND_MS, `Unmount took ${Math.round(u.ms)} ms`);
        assert.deepEqual(mountsAt(mp), [], 'the mount is detached');
        await waitFor(() => gone(client), `the ${comm} client (pid ${client}) to be gone`, 5_000);
        // Ballast cannot see the share: it deletes nothing and says so.
        const r = await call('Remove', { Name: vol });
        note(`${kind} stopped server: Remove answered in ${Math.round(r.ms)} ms: ${r.err || 'ok'}`);
        assert.match(r.err, label(kind));
        assert.match(r.err, /could not mount the share|did not answer/);
        assert.ok(r.ms < MOUNT_TIMEOUT_SEC * 1000 + HUNG_SLACK_MS, `Remove took ${Math.round(r.ms)} ms`);
        assert.equal(readFileSync(join(onServer(kind, vol), 'f'), 'utf8'), 'kept\n', 'the data is kept');
        assert.deepEqual(tmpEntries(kind), []);
        assert.deepEqual(clientsUnderRoot(), []);
      } finally {
        cont(target);
      }
      let last = '';
      await waitFor(async () => { last = (await call('Remove', { Name: vol })).err; return !last; }, `removal of ${vol} once the server answers`, 30_000, 1_000)
        .catch((e: Error) => { throw new Error(`${e.message}; last error: ${last}; server log: ${serverLog(kind)}`); });
      volumes.delete(vol);
      assert.ok(!existsSync(onServer(kind, vol)));
    });
  }

  test('(4) nothing is left behind; after a restart the reconciler cleans a leftover tmp share mount of a hung client', { skip: SKIP.ssh ?? false, timeout: 120_000 }, async () => {
    assert.deepEqual(mountsUnderRoot().map((m) => m.mountpoint), [], 'no mount under the root');
    assert.deepEqual(clientsUnderRoot(), [], 'no FUSE client under the root');
    for (const k of ['ssh', 'gluster'] as const) assert.deepEqual(tmpEntries(k), [], `${k}: no temporary directory`);

    // What a crash in the middle of a create leaves: a share mount under tmp/ whose client hangs, and
    // an empty temporary mountpoint. Planted while the daemon is down.
    const b = daemon();
    await b.stop();
    daemonDown = true;
    const tmp = join(root, 'backends', 'ssh', 'tmp');
    mkdirSync(tmp, { recursive: true, mode: 0o700 });
    const planted = join(tmp, `share-${randomBytes(6).toString('hex')}`);
    const empty = join(tmp, `share-${randomBytes(6).toString('hex')}`);
    mkdirSync(planted);
    mkdirSync(empty);
    const opts = `port=${sshd!.port},IdentityFile=${sshd!.clientKey},IdentitiesOnly=yes,BatchMode=yes,UserKnownHostsFile=${sshd!.knownHostsFile},StrictHostKeyChecking=yes,allow_other`;
    const m = await run(['sshfs', `root@127.0.0.1:${sshd!.exportDir}`, planted, '-o', opts], { timeoutMs: 20_000 });
    assert.equal(m.code, 0, `${m.stderr}; server log: ${serverLog('ssh')}`);
    assert.equal(mountsAt(planted).length, 1);
    const pid = clientOf(planted, 'sshfs');
    stop([pid]);
    try {
      const from = b.logs().length;
      await b.restart();
      daemonDown = false;
      await waitFor(() => mountsAt(planted).length === 0 && gone(pid) && !existsSync(planted) && !existsSync(empty),
        'the reconciler to clean the planted leftovers', 30_000, 200);
      const cleaned = b.logs().slice(from).split('\n').filter((l) => l.includes('"orphan-cleaned"'));
      assert.ok(cleaned.some((l) => l.includes(planted)), `the cleaning of ${planted} is logged: ${cleaned.join('\n')}`);
      assert.ok(cleaned.some((l) => l.includes(empty)), `the cleaning of ${empty} is logged`);
      const doc = await b.cli(['doctor', '--json']);
      const checks = (JSON.parse(doc.stdout) as { checks: { name: string; detail: string }[] }).checks;
      const repairs = checks.find((c) => c.name === 'repairs since start');
      assert.match(repairs?.detail ?? '', /orphan-cleaned=[1-9]/, `doctor shows the cleaning: ${JSON.stringify(checks)}`);
      note(`planted leftovers cleaned after restart; doctor: ${repairs?.detail}`);
    } finally {
      if (!gone(pid)) { cont([pid]); try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
      stoppedPids.delete(pid);
    }
    assert.deepEqual(mountsUnderRoot().map((x) => x.mountpoint), []);
    assert.deepEqual(clientsUnderRoot(), []);
  });
});
