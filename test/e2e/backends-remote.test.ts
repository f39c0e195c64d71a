/**
 * End-to-end: the network backends whose volumes are directories of a share, against real servers
 * on loopback: sshfs (a private sshd, test/servers/sshd.ts) and GlusterFS (glusterd + one brick,
 * test/servers/gluster.ts). One private dockerd, one Ballast daemon driven through docker, and a
 * second Ballast daemon ("another host": own root, socket, node name and mount namespace) driven
 * through its plugin socket. Every check reads real state: the mount tables of both namespaces,
 * /proc/<pid>/cmdline of the FUSE clients, the files on the server, the daemons' logs.
 *
 * NFS: one test below runs wherever the kernel has an NFS client (mount.nfs comes with nfs-common, in
 * the test dependencies) and skips, saying why, where it has none; its argv is covered by the unit
 * tests in src/backends/remote-dir.test.ts.
 *
 * Needs root, dockerd, busybox-static, openssh-server + sshfs, glusterfs-server + glusterfs-client;
 * each backend's tests are skipped with the reason when what it needs is missing.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { release } from 'node:os';
import { dockerSkipReason, startDockerEngine, type DockerEngine } from '../helpers/docker-engine.js';
import { startBallast, uniqueName, type BallastProc } from '../helpers/ballast.js';
import { pidAlive, run, sleep, waitFor } from '../helpers/proc.js';
import { parseMountinfo } from '../../src/host/mountinfo.js';
import { teardownSuite } from '../helpers/leftovers.js';
import { sshdSkipReason, startSshd, type SshServer } from '../servers/sshd.js';
import { glusterSkipReason, startGluster, type GlusterServer } from '../servers/gluster.js';
import { freePort, gone } from '../servers/common.js';

const SKIP_ALL = dockerSkipReason();
const IMAGE = 'busybox:local';
const IDLE = ['sh', '-c', 'trap "exit 0" TERM; while :; do sleep 0.1; done'];
/** Appends a numbered line every 0.1 s to /data/<file>, until stopped. */
const WRITER = (file: string, tag: string) => ['sh', '-c', `trap "exit 0" TERM; i=0; while :; do echo "${tag} $i" >> /data/${file}; i=$((i+1)); sleep 0.1; done`];
/** Small, so a dead FUSE client is found and mounted again quickly. */
const RECONCILE_SEC = 1;
/** Per-instance mount timeout in the config: a server that is down fails a create within this. */
const MOUNT_TIMEOUT_SEC = 10;

type Kind = 'ssh' | 'gluster';
interface Remote {
  readonly kind: Kind;
  /** Backend instance name in the config. */
  readonly name: Kind;
  /** A second instance of the same type whose server is down. */
  readonly down: string;
  readonly skip: string | undefined;
  readonly fstype: string;
  /** The FUSE client's command name (/proc/<pid>/comm). */
  readonly client: string;
}
const REMOTES: readonly Remote[] = [
  { kind: 'ssh', name: 'ssh', down: 'ssh-down', skip: SKIP_ALL ?? sshdSkipReason(), fstype: 'fuse.sshfs', client: 'sshfs' },
  { kind: 'gluster', name: 'gluster', down: 'gluster-down', skip: SKIP_ALL ?? glusterSkipReason(), fstype: 'fuse.glusterfs', client: 'glusterfs' },
];

let eng: DockerEngine | undefined;
let b1: BallastProc | undefined;
let b2: BallastProc | undefined;
let sshd: SshServer | undefined;
let gluster: GlusterServer | undefined;
let sshDeadPort = 0;
let root1 = '';
let root2 = '';
let scratch = '';
let configFile = '';
/** Where the test sees the root of each share: the sshd's export dir, a test-owned glusterfs mount. */
const shareRoot: Partial<Record<Kind, string>> = {};
let glusterView = '';
const containers = new Set<string>();
const volumes = new Set<string>();
/** Volumes created on the second daemon: removed through its plugin socket in the after hook. */
const volumes2 = new Set<string>();
/** Mounts the test made through the second daemon's socket: undone in the after hook. */
const mounts2 = new Map<string, string>();
const timings: string[] = [];

function e(): DockerEngine { assert.ok(eng, 'dockerd is not running (before hook failed)'); return eng; }
function d1(): BallastProc { assert.ok(b1, 'ballast is not running (before hook failed)'); return b1; }
function d2(): BallastProc { assert.ok(b2, 'the second ballast is not running (before hook failed)'); return b2; }
function share(kind: Kind): string { const s = shareRoot[kind]; assert.ok(s, `${kind} share is not available (before hook failed)`); return s; }
function note(what: string, ms: number): void { timings.push(`${what}: ${Math.round(ms)} ms`); }

// ---- helpers -------------------------------------------------------------------------------------

function volName(prefix: string): string { const n = uniqueName(`rv-${prefix}-`); volumes.add(n); return n; }
function ctrName(prefix: string): string { const n = uniqueName(`rc-${prefix}-`); containers.add(n); return n; }
function mountId(): string { return randomBytes(32).toString('hex'); }

async function createVolume(name: string, opts: Record<string, string>): Promise<void> {
  const args = ['volume', 'create', '-d', d1().driver];
  for (const [k, v] of Object.entries(opts)) args.push('-o', `${k}=${v}`);
  assert.equal(await e().ok([...args, name], 130_000), name);
}
async function inContainer(vol: string, script: string): Promise<string> {
  return e().ok(['run', '--rm', '-v', `${vol}:/data`, IMAGE, 'sh', '-c', script]);
}
async function runDetached(name: string, vol: string, cmd: string[] = IDLE): Promise<void> {
  assert.match(await e().ok(['run', '-d', '--name', name, '-v', `${vol}:/data`, IMAGE, ...cmd]), /^[0-9a-f]{64}$/);
}
async function exec(c: string, script: string) { return e().docker(['exec', c, 'sh', '-c', script], 60_000); }
async function removeContainer(name: string): Promise<void> { await e().ok(['rm', '-f', name], 60_000); containers.delete(name); }
async function removeVolume(name: string): Promise<void> { assert.equal(await e().ok(['volume', 'rm', name], 130_000), name); volumes.delete(name); }

interface DockerVolume { Name: string; Driver: string; Mountpoint: string; Options: Record<string, string> | null; Status: Record<string, unknown> }
async function inspectVolume(name: string): Promise<DockerVolume> {
  const arr = JSON.parse(await e().ok(['volume', 'inspect', name])) as DockerVolume[];
  assert.equal(arr.length, 1);
  return arr[0];
}
/**
 * Names dockerd lists for our driver. Filtered by driver, so dockerd asks only our plugin: an
 * unfiltered list asks every socket in /run/docker/plugins, and a dead one left by another run
 * costs ~15 s of retries.
 */
async function dockerVolumeNames(): Promise<Set<string>> {
  return new Set((await e().ok(['volume', 'ls', '--filter', `driver=${d1().driver}`, '--format', '{{.Name}}'])).split('\n').filter(Boolean));
}
async function ballastVolumeNames(b: BallastProc): Promise<Set<string>> {
  const r = await b.cli(['volume', 'ls', '--json']);
  assert.equal(r.code, 0, r.stderr);
  return new Set((JSON.parse(r.stdout) as { name: string }[]).map((v) => v.name));
}
async function ledgerMounts(name: string): Promise<number> { return (await inspectVolume(name)).Status.mounts as number; }

function mountinfoOf(pid: number | 'self') { return parseMountinfo(readFileSync(`/proc/${pid}/mountinfo`, 'utf8')); }
function mountsAt(path: string, pid: number | 'self' = 'self') { return mountinfoOf(pid).filter((m) => m.mountpoint === path); }

/** Live (not zombie) processes with exactly `path` among their arguments: the FUSE client of a mountpoint. */
function clientsOf(path: string): number[] {
  const out: number[] = [];
  for (const p of readdirSync('/proc').filter((x) => /^\d+$/.test(x)).map(Number)) {
    if (p === process.pid) continue;
    let cmd = '';
    try { cmd = readFileSync(`/proc/${p}/cmdline`, 'utf8'); } catch { continue; }
    if (cmd.split('\0').includes(path) && !gone(p)) out.push(p);
  }
  return out;
}
function commOf(pid: number): string { try { return readFileSync(`/proc/${pid}/comm`, 'utf8').trim(); } catch { return ''; } }
/** Live processes whose command line contains `s` anywhere. */
function processesContaining(s: string): { pid: number; cmd: string }[] {
  const out: { pid: number; cmd: string }[] = [];
  for (const p of readdirSync('/proc').filter((x) => /^\d+$/.test(x)).map(Number)) {
    if (p === process.pid) continue;
    let cmd = '';
    try { cmd = readFileSync(`/proc/${p}/cmdline`, 'utf8'); } catch { continue; }
    if (cmd.includes(s) && !gone(p)) out.push({ pid: p, cmd: cmd.split('\0').join(' ') });
  }
  return out;
}

/** The one FUSE client serving a mounted volume on the first daemon, checked against the mount table. */
function clientOf(r: Remote, mp: string): number {
  const at = mountsAt(mp);
  assert.equal(at.length, 1, `one mount at ${mp}: ${JSON.stringify(at)}`);
  assert.equal(at[0].fstype, r.fstype);
  const pids = clientsOf(mp).filter((p) => commOf(p) === r.client);
  assert.equal(pids.length, 1, `one ${r.client} process serves ${mp}: ${JSON.stringify(pids)}`);
  return pids[0];
}

interface LogLine { op?: string; kind?: string; volume?: string; outcome?: string; msg?: string; repairs?: number; err?: string; detail?: string }
function logLines(b: BallastProc, from = 0): LogLine[] {
  return b.logs().slice(from).split('\n').filter((l) => l.startsWith('{')).map((l) => { try { return JSON.parse(l) as LogLine; } catch { return {}; } });
}
function repairsOf(b: BallastProc, vol: string, from = 0): LogLine[] { return logLines(b, from).filter((l) => l.op === 'repair' && l.volume === vol); }

async function nsenter(pid: number, script: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return run(['nsenter', '-t', String(pid), '-m', 'sh', '-c', script], { timeoutMs: 30_000 });
}

/**
 * A directory made on the share the way a user would, through the server, never through Ballast
 * (it goes with the server's directory when the server stops).
 */
function makeShareDir(kind: Kind, dir: string, files: Record<string, string> = {}): string {
  const p = join(share(kind), dir);
  mkdirSync(p, { recursive: true });
  for (const [f, c] of Object.entries(files)) writeFileSync(join(p, f), c);
  return p;
}
function shareList(kind: Kind): string[] { return readdirSync(share(kind)).filter((n) => !n.startsWith('.')).sort(); }

async function restartServer(r: Remote, downMs: number): Promise<void> {
  if (r.kind === 'ssh') { assert.ok(sshd); await sshd.restart({ downMs }); } else { assert.ok(gluster); await gluster.restart({ downMs }); }
}

function escape(s: string): string { return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'); }

// ---- suite ---------------------------------------------------------------------------------------

describe('remote-directory backends (sshfs, glusterfs) against real servers (e2e)', () => {
  before(async () => {
    if (SKIP_ALL || REMOTES.every((r) => r.skip)) return;
    const t0 = performance.now();
    scratch = mkdtempSync('/var/tmp/ballast-remote-scratch-');
    root1 = mkdtempSync('/var/tmp/ballast-remote-1-');
    root2 = mkdtempSync('/var/tmp/ballast-remote-2-');
    const backends: Record<string, Record<string, unknown>> = { local: { type: 'local' } };
    const [sshOn, glusterOn] = REMOTES.map((r) => !r.skip);
    eng = await startDockerEngine();
    if (sshOn) {
      const t = performance.now();
      sshd = await startSshd();
      note('sshd start', performance.now() - t);
      shareRoot.ssh = sshd.exportDir;
      sshDeadPort = await freePort();
      backends.ssh = { type: 'sshfs', host: '127.0.0.1', port: sshd.port, user: 'root', path: sshd.exportDir, identityFile: sshd.clientKey, knownHostsFile: sshd.knownHostsFile, mountTimeoutSec: MOUNT_TIMEOUT_SEC };
      // Nothing listens on this port; no knownHostsFile, so the default (accept-new, under the root) is used.
      backends['ssh-down'] = { type: 'sshfs', host: '127.0.0.1', port: sshDeadPort, path: '/srv/volumes', identityFile: sshd.clientKey, mountTimeoutSec: MOUNT_TIMEOUT_SEC };
    }
    if (glusterOn) {
      const t = performance.now();
      gluster = await startGluster();
      note('glusterd + brick start', performance.now() - t);
      backends.gluster = { type: 'glusterfs', servers: ['127.0.0.1'], volume: gluster.volume, mountTimeoutSec: MOUNT_TIMEOUT_SEC };
      // Loopback, but no glusterd listens there.
      backends['gluster-down'] = { type: 'glusterfs', servers: ['127.0.0.2'], volume: gluster.volume, mountTimeoutSec: MOUNT_TIMEOUT_SEC };
    }
    // For the NFS test, which runs only where the kernel has an NFS client; elsewhere it is a
    // configured instance that no volume names (nothing is mounted until one does).
    backends['nfs-down'] = { type: 'nfs', server: '127.0.0.2', export: '/exports/docker', mountTimeoutSec: MOUNT_TIMEOUT_SEC };
    configFile = join(scratch, 'ballast.json');
    writeFileSync(configFile, JSON.stringify({ defaultBackend: 'local', backends }, null, 2));
    b1 = await startBallast({ root: root1, configFile, extraArgs: ['--docker-host', eng.host, '--node', 'one'], env: { BALLAST_RECONCILE_INTERVAL_SEC: String(RECONCILE_SEC) } });
    // Started before anything of the first daemon or the test is mounted, so its private copy of the
    // mount table holds none of their FUSE mounts (which would keep those clients alive).
    b2 = await startBallast({
      root: root2, configFile, wrap: ['unshare', '-m', '--propagation', 'private'],
      extraArgs: ['--docker-host', `unix://${join(root2, 'no-dockerd.sock')}`, '--node', 'other'],
    });
    assert.notEqual(readlinkSync(`/proc/${b2.pid()}/ns/mnt`), readlinkSync('/proc/self/ns/mnt'), 'the second daemon has its own mount namespace');
    if (gluster) {
      // The test's own view of the gluster volume (to check and pre-make directories like a user would).
      glusterView = join(scratch, 'gluster-view');
      mkdirSync(glusterView);
      const m = await run(['mount', '-t', 'glusterfs', `127.0.0.1:/${gluster.volume}`, glusterView], { timeoutMs: 60_000 });
      assert.equal(m.code, 0, `mount the gluster volume for the test: ${m.stderr}`);
      shareRoot.gluster = glusterView;
    }
    note('suite setup (dockerd, servers, two daemons)', performance.now() - t0);
  });

  after(async () => {
    if (SKIP_ALL || REMOTES.every((r) => r.skip)) return;
    // The second daemon's own mounts and volumes first (dockerd does not know it).
    const problems: string[] = [];
    if (b2 && pidAlive(b2.pid())) {
      for (const [id, v] of mounts2) await b2.plugin('VolumeDriver.Unmount', { Name: v, ID: id }).catch(() => undefined);
      for (const v of volumes2) {
        const r = await b2.plugin('VolumeDriver.Remove', { Name: v }).catch((err) => ({ status: 0, body: { Err: String(err) } }));
        if (r.status !== 200) problems.push(`second daemon: remove ${v}: ${JSON.stringify(r.body)}`);
      }
    }
    try {
      await teardownSuite({
        suite: 'remote e2e', roots: [root1, root2, scratch], engine: eng, containers, volumes, daemons: [b1, b2], problems,
        ownMounts: glusterView ? [glusterView] : [],
        stopAfter: [
          ...(eng ? [{ what: 'dockerd', stop: () => eng!.stop() }] : []),
          ...(sshd ? [{ what: 'sshd', stop: () => sshd!.stop() }] : []),
          ...(gluster ? [{ what: 'gluster', stop: () => gluster!.stop() }] : []),
        ],
      });
    } finally {
      // glusterfs clients log to /var/log/glusterfs/<mountpoint with "-" for "/">.log: ours go.
      const logDir = '/var/log/glusterfs';
      if (existsSync(logDir)) {
        const prefixes = [root1, root2, scratch].filter(Boolean).map((p) => p.replace(/^\//, '').replace(/\//g, '-'));
        for (const f of readdirSync(logDir)) if (prefixes.some((p) => f.startsWith(p))) rmSync(join(logDir, f), { force: true });
      }
      if (timings.length) console.error(`remote e2e timings:\n  ${timings.join('\n  ')}`);
    }
  });

  for (const r of REMOTES) {
    const t = (name: string, fn: () => Promise<void>) => test(`${r.name}: ${name}`, { skip: r.skip ?? false, timeout: 120_000 }, fn);

    // (a) --------------------------------------------------------------------------------------
    t('two containers share data through the volume, one after the other and at the same time; rm deletes the directory Ballast made', async () => {
      const vol = volName(`${r.kind}-a`);
      let t0 = performance.now();
      await createVolume(vol, { backend: r.name });
      note(`${r.name} create`, performance.now() - t0);
      const v = await inspectVolume(vol);
      assert.equal(v.Status.backend, r.name);
      assert.equal(v.Status.dir, vol);
      assert.equal(v.Status.existing, false);
      assert.ok(v.Mountpoint.startsWith(`${root1}/backends/${r.name}/mounts/`), v.Mountpoint);
      assert.deepEqual(mountsAt(v.Mountpoint), [], 'create leaves nothing mounted');
      await waitFor(() => existsSync(join(share(r.kind), vol)), `directory ${vol} on the share`, 10_000);
      assert.deepEqual(readdirSync(join(`${root1}/backends/${r.name}/tmp`)), [], 'no temporary share mountpoint is left');

      t0 = performance.now();
      await inContainer(vol, 'echo "first container" > /data/one && sync');
      note(`${r.name} docker run (mount + unmount)`, performance.now() - t0);
      assert.equal(await inContainer(vol, 'cat /data/one'), 'first container');
      await waitFor(() => existsSync(join(share(r.kind), vol, 'one')) && readFileSync(join(share(r.kind), vol, 'one'), 'utf8') === 'first container\n', 'the file on the server', 10_000);
      await waitFor(() => mountsAt(v.Mountpoint).length === 0 && clientsOf(v.Mountpoint).length === 0, 'unmounted and its client gone after the containers exited', 15_000);

      // At the same time: each writer sees the other's lines in the one shared file.
      const ca = ctrName(`${r.kind}-wa`);
      const cb = ctrName(`${r.kind}-wb`);
      await runDetached(ca, vol, WRITER('log-a', 'A'));
      await runDetached(cb, vol, WRITER('log-b', 'B'));
      assert.equal(await ledgerMounts(vol), 2);
      clientOf(r, v.Mountpoint); // mounted once, one client, for both containers
      for (const [c, other] of [[ca, 'b'], [cb, 'a']] as const) {
        await waitFor(async () => {
          const x = await exec(c, `wc -l < /data/log-${other}`);
          return x.code === 0 && Number(x.stdout.trim()) >= 3;
        }, `${c} to see the lines of the other container`, 20_000, 200);
      }
      await e().ok(['stop', '-t', '5', ca, cb], 60_000);
      await waitFor(async () => (await ledgerMounts(vol)) === 0, 'the ledger to drop both', 15_000);
      await waitFor(() => mountsAt(v.Mountpoint).length === 0, 'unmounted after both stopped', 15_000);
      assert.match(readFileSync(join(share(r.kind), vol, 'log-a'), 'utf8'), /^A 2$/m);
      await removeContainer(ca);
      await removeContainer(cb);

      t0 = performance.now();
      await removeVolume(vol);
      note(`${r.name} rm`, performance.now() - t0);
      await waitFor(() => !existsSync(join(share(r.kind), vol)), `rm deletes ${vol} on the share`, 10_000);
      assert.ok(!(await dockerVolumeNames()).has(vol));
    });

    // (b) --------------------------------------------------------------------------------------
    t('a second daemon (own root, socket and mount namespace) mounts the same volume, sees the data, and its writes are seen', async () => {
      const vol = volName(`${r.kind}-b`);
      await createVolume(vol, { backend: r.name });
      const c = ctrName(`${r.kind}-b`);
      await runDetached(c, vol);
      assert.equal((await exec(c, 'echo "written on one" > /data/from-one && sync')).code, 0);

      // The second host has its own ledger: to it the directory is one it did not make. A plain create
      // is refused with the hint; existing= adopts it.
      const plain = await d2().plugin('VolumeDriver.Create', { Name: vol, Opts: { backend: r.name } });
      assert.equal(plain.status, 409, JSON.stringify(plain.body));
      assert.match(String(plain.body.Err), new RegExp(`already exists on the share; to use it, create the volume with -o existing=${vol}`));
      const cr = await d2().plugin('VolumeDriver.Create', { Name: vol, Opts: { backend: r.name, existing: vol } });
      assert.equal(cr.status, 200, JSON.stringify(cr.body));
      volumes2.add(vol);
      const id = mountId();
      mounts2.set(id, vol);
      const m = await d2().plugin('VolumeDriver.Mount', { Name: vol, ID: id });
      assert.equal(m.status, 200, JSON.stringify(m.body));
      const mp2 = String(m.body.Mountpoint);
      assert.ok(mp2.startsWith(`${root2}/backends/${r.name}/mounts/`), mp2);
      const pid2 = d2().pid();
      assert.equal(mountsAt(mp2, pid2).length, 1, 'mounted in the second daemon\'s namespace');
      assert.equal(mountsAt(mp2, pid2)[0].fstype, r.fstype);
      assert.deepEqual(mountsAt(mp2), [], 'and not in the first one\'s');

      const seen = await nsenter(pid2, `cat ${mp2}/from-one`);
      assert.equal(seen.code, 0, seen.stderr);
      assert.equal(seen.stdout, 'written on one\n');
      const w = await nsenter(pid2, `echo "written on other" > ${mp2}/from-other && sync`);
      assert.equal(w.code, 0, w.stderr);
      const t0 = performance.now();
      await waitFor(async () => (await exec(c, 'cat /data/from-other')).stdout === 'written on other\n', 'the running container on the first host to see the second\'s write', 30_000, 200);
      note(`${r.name} write on the second host seen by a running container on the first`, performance.now() - t0);

      // The second host lets go: its unmount leaves the first alone, its remove never deletes adopted data.
      assert.equal((await d2().plugin('VolumeDriver.Unmount', { Name: vol, ID: id })).status, 200);
      mounts2.delete(id);
      assert.deepEqual(mountsAt(mp2, pid2), []);
      assert.equal((await d2().plugin('VolumeDriver.Remove', { Name: vol })).status, 200);
      volumes2.delete(vol);
      assert.ok(existsSync(join(share(r.kind), vol, 'from-other')), 'the second host\'s remove kept the directory');
      assert.equal((await exec(c, 'cat /data/from-one /data/from-other')).stdout, 'written on one\nwritten on other\n');
      await removeContainer(c);
      await removeVolume(vol);
      await waitFor(() => !existsSync(join(share(r.kind), vol)), `${vol} deleted on the share`, 10_000);
    });

    // (c) --------------------------------------------------------------------------------------
    t('the server restarts while a volume is mounted: the same client reconnects, a running and a new container read and write again', async () => {
      const vol = volName(`${r.kind}-c`);
      await createVolume(vol, { backend: r.name });
      const v = await inspectVolume(vol);
      const c = ctrName(`${r.kind}-c`);
      await runDetached(c, vol);
      assert.equal((await exec(c, 'echo before > /data/before && sync')).code, 0);
      const client = clientOf(r, v.Mountpoint);
      const from = d1().logs().length;

      // Down for a few reconcile intervals: the reconciler must take a client whose server is away
      // for a live one (it reconnects by itself), not for a dead mount.
      const downMs = 4 * RECONCILE_SEC * 1000;
      const tr = performance.now();
      await restartServer(r, downMs);
      note(`${r.name} server stop + ${downMs} ms down + start until serving`, performance.now() - tr);
      const t0 = performance.now();
      let tries = 0;
      await waitFor(async () => {
        tries++;
        const x = await exec(c, 'cat /data/before && echo after > /data/after && cat /data/after');
        return x.code === 0 && x.stdout === 'before\nafter\n';
      }, 'the running container to read and write after the server restart', 45_000, 200);
      const back = performance.now() - t0;
      note(`${r.name} server restart (down ${downMs} ms): running container reads+writes again after`, back);
      assert.ok(back < 45_000);
      assert.equal(await inContainer(vol, 'cat /data/before /data/after && echo new > /data/new && cat /data/new'), 'before\nafter\nnew');
      assert.deepEqual(repairsOf(d1(), vol, from), [], 'no repair: the client was never dead');
      assert.equal(clientOf(r, v.Mountpoint), client, `the same ${r.client} process (pid ${client}) serves the volume after the restart (${tries} tries)`);
      await removeContainer(c);
      await removeVolume(vol);
    });

    // (d) --------------------------------------------------------------------------------------
    t('a dead FUSE client (SIGKILL) is mounted again by the reconciler (remount-dead); a new container sees the data', async () => {
      const vol = volName(`${r.kind}-d`);
      await createVolume(vol, { backend: r.name });
      const v = await inspectVolume(vol);
      const c = ctrName(`${r.kind}-d`);
      await runDetached(c, vol);
      assert.equal((await exec(c, 'echo "survives its client" > /data/f && sync')).code, 0);
      const client = clientOf(r, v.Mountpoint);
      const from = d1().logs().length;
      const t0 = performance.now();
      process.kill(client, 'SIGKILL');
      await waitFor(() => gone(client), 'the client to die', 5_000, 20);

      const rep = await waitFor(() => repairsOf(d1(), vol, from).find((l) => l.kind === 'remount-dead'), 'a remount-dead repair in the daemon log', 20_000, 100);
      note(`${r.name} dead client: SIGKILL to remount-dead repair`, performance.now() - t0);
      assert.equal(rep.outcome, 'ok');
      assert.match(String(rep.detail), /Transport endpoint is not connected/, 'the reconciler found the mount dead');
      const fresh = clientOf(r, v.Mountpoint);
      assert.notEqual(fresh, client);
      assert.equal(await inContainer(vol, 'cat /data/f && echo again >> /data/f && cat /data/f'), 'survives its client\nsurvives its client\nagain');
      // Observed: the container that was running keeps the dead mount (the kernel does not carry the
      // new mount into its namespace), as the repair's log line says.
      const old = await exec(c, 'cat /data/f');
      assert.notEqual(old.code, 0);
      assert.match(old.stderr, /not connected/);
      assert.deepEqual(repairsOf(d1(), vol, from).map((l) => l.kind), ['remount-dead'], 'repaired exactly once');
      await removeContainer(c);
      await waitFor(async () => (await ledgerMounts(vol)) === 0 && mountsAt(v.Mountpoint).length === 0, 'released after the container went', 15_000);
      await waitFor(() => clientsOf(v.Mountpoint).length === 0, 'the new client to exit after the unmount', 15_000);
      await removeVolume(vol);
    });

    // (e) --------------------------------------------------------------------------------------
    t('the Ballast daemon restarts (graceful, then SIGKILL) while a volume is mounted: clients keep their PIDs, the container keeps writing, no repairs', async () => {
      const vol = volName(`${r.kind}-e`);
      await createVolume(vol, { backend: r.name });
      const v = await inspectVolume(vol);
      const c = ctrName(`${r.kind}-e`);
      await runDetached(c, vol, WRITER('log', 'E'));
      const client = clientOf(r, v.Mountpoint);
      const lines = async () => Number((await exec(c, 'wc -l < /data/log')).stdout.trim());
      await waitFor(async () => (await lines()) > 0, 'the writer to start', 10_000);

      for (const how of ['graceful', 'SIGKILL'] as const) {
        const from = d1().logs().length;
        const pid = d1().pid();
        if (how === 'graceful') assert.equal(await d1().stop(), 0); else await d1().kill9();
        const during = await lines();
        await waitFor(async () => (await lines()) > during + 5, 'the container to keep writing while the daemon is down', 10_000);
        assert.equal(clientOf(r, v.Mountpoint), client, `${how}: the client survives the daemon`);
        await d1().restart();
        assert.notEqual(d1().pid(), pid);
        const serving = logLines(d1(), from).find((l) => l.msg === 'ballast serving');
        assert.equal(serving?.repairs, 0, `${how}: the start-up reconcile repaired nothing`);
        await sleep(3 * RECONCILE_SEC * 1000); // a few passes with health checks
        assert.equal(clientOf(r, v.Mountpoint), client, `${how}: same ${r.client} PID after the restart`);
        assert.deepEqual(repairsOf(d1(), vol, from), [], `${how}: no repairs after the restart`);
        const n = await lines();
        await waitFor(async () => (await lines()) > n + 5, 'the container to keep writing after the restart', 10_000);
        assert.equal(await ledgerMounts(vol), 1);
      }
      await removeContainer(c);
      const log = readFileSync(join(share(r.kind), vol, 'log'), 'utf8').trim().split('\n');
      assert.ok(log.length > 20);
      assert.deepEqual(log.map((l, i) => l === `E ${i}` ? '' : `line ${i}: ${l}`).filter(Boolean), [], 'no line was lost or repeated');
      await waitFor(() => mountsAt(v.Mountpoint).length === 0, 'released', 15_000);
      await removeVolume(vol);
    });

    // (f) --------------------------------------------------------------------------------------
    t('bad options and a name whose directory already exists are refused with clear messages, and nothing is created', async () => {
      const sharesBefore = shareList(r.kind);
      const taken = uniqueName(`rv-${r.kind}-taken-`);
      makeShareDir(r.kind, taken, { keep: 'user data\n' });
      const cases: { name: string; opts: Record<string, string>; re: RegExp }[] = [
        { name: uniqueName('rv-bad-'), opts: { backend: r.name, colour: 'blue' }, re: new RegExp(`unknown option "colour" for backend ${r.name}; accepted options: backend, existing`) },
        { name: uniqueName('rv-bad-'), opts: { backend: r.name, size: '1G' }, re: new RegExp(`unknown option "size" for backend ${r.name}; accepted options: backend, existing`) },
        { name: uniqueName('rv-bad-'), opts: { backend: r.name, existing: '../x' }, re: /existing "\.\.\/x" must be a relative path inside the share/ },
        { name: uniqueName('rv-bad-'), opts: { backend: r.name, existing: '/abs' }, re: /existing "\/abs" must be a relative path inside the share/ },
        { name: uniqueName('rv-bad-'), opts: { backend: r.name, existing: 'no-such-dir' }, re: /existing=no-such-dir is not a directory of the share/ },
        { name: taken, opts: { backend: r.name }, re: new RegExp(`a directory ${taken} already exists on the share; to use it, create the volume with -o existing=${taken} \\(Ballast then never deletes it\\)`) },
      ];
      for (const c of cases) {
        const args = ['volume', 'create', '-d', d1().driver, ...Object.entries(c.opts).flatMap(([k, v]) => ['-o', `${k}=${v}`]), c.name];
        const x = await e().docker(args, 130_000);
        assert.notEqual(x.code, 0, `${JSON.stringify(c.opts)} must fail`);
        assert.match(x.stderr, c.re, `${JSON.stringify(c.opts)}: ${x.stderr}`);
        assert.match(x.stderr, /VolumeDriver\.Create/);
      }
      const docker = await dockerVolumeNames();
      const ours = await ballastVolumeNames(d1());
      for (const c of cases) {
        assert.ok(!docker.has(c.name) && !ours.has(c.name), `${c.name} was not created`);
        assert.ok(!existsSync(join(root1, 'backends', r.name, 'mounts', c.name)));
      }
      assert.deepEqual(shareList(r.kind), [...sharesBefore, taken].sort(), 'no directory was made on the share');
      assert.equal(readFileSync(join(share(r.kind), taken, 'keep'), 'utf8'), 'user data\n', 'the existing directory is untouched');
      assert.deepEqual(readdirSync(join(root1, 'backends', r.name, 'tmp')), []);
      assert.deepEqual(clientsOf(join(root1, 'backends', r.name, 'tmp')), []);
    });

    // (g) --------------------------------------------------------------------------------------
    t('existing=<dir> adopts a directory made on the server; docker volume rm keeps it, while rm of a volume Ballast made deletes its directory', async () => {
      const dir = uniqueName(`team-${r.kind}-`);
      makeShareDir(r.kind, join(dir, 'db'), { 'seed.txt': 'made by a user\n' });
      const vol = volName(`${r.kind}-g`);
      await createVolume(vol, { backend: r.name, existing: `${dir}/db/` });
      const v = await inspectVolume(vol);
      assert.equal(v.Status.dir, `${dir}/db`);
      assert.equal(v.Status.existing, true);
      assert.equal(await inContainer(vol, 'cat /data/seed.txt && echo "added in a container" > /data/added.txt'), 'made by a user');
      assert.ok(!existsSync(join(share(r.kind), vol)), 'no directory named after the volume was made');
      await removeVolume(vol);
      await sleep(1500); // past the glusterfs view's attribute cache
      assert.equal(readFileSync(join(share(r.kind), dir, 'db', 'seed.txt'), 'utf8'), 'made by a user\n', 'adopted data is never deleted');
      assert.equal(readFileSync(join(share(r.kind), dir, 'db', 'added.txt'), 'utf8'), 'added in a container\n');

      const made = volName(`${r.kind}-g2`);
      await createVolume(made, { backend: r.name });
      await inContainer(made, 'echo x > /data/x');
      assert.ok(existsSync(join(share(r.kind), made, 'x')));
      await removeVolume(made);
      await waitFor(() => !existsSync(join(share(r.kind), made)), `rm deletes ${made} on the share`, 10_000);
    });

    // (h) --------------------------------------------------------------------------------------
    t(r.kind === 'ssh'
      ? 'no secret anywhere: the ssh key file is named in argv but its contents never are, nor in inspect or the logs'
      : 'no secret anywhere: Status and the client\'s argv hold only the servers, the Gluster volume and the directory', async () => {
      const vol = volName(`${r.kind}-h`);
      await createVolume(vol, { backend: r.name });
      const c = ctrName(`${r.kind}-h`);
      await runDetached(c, vol);
      const v = await inspectVolume(vol);
      const client = clientOf(r, v.Mountpoint);
      const argv = readFileSync(`/proc/${client}/cmdline`, 'utf8').split('\0');
      const inspectText = await e().ok(['volume', 'inspect', vol]);
      const cliText = (await d1().cli(['volume', 'inspect', vol])).stdout;
      const texts: [string, string][] = [['docker volume inspect', inspectText], ['ballast volume inspect', cliText], ['daemon log', d1().logs()], ['second daemon log', d2().logs()]];
      if (r.kind === 'ssh') {
        assert.ok(sshd);
        const key = readFileSync(sshd.clientKey, 'utf8');
        const body = key.split('\n').filter((l) => l && !l.startsWith('-----')).join('');
        assert.ok(body.length > 100);
        assert.ok(argv.join(' ').includes(`IdentityFile=${sshd.clientKey}`), 'the key is passed by its path');
        // Every process of the mount (sshfs and the ssh it runs) and everything Ballast shows or logs.
        for (const p of processesContaining(sshd.clientKey)) texts.push([`argv of pid ${p.pid}`, p.cmd]);
        assert.ok(texts.length >= 6, 'sshfs and its ssh child were found');
        for (const [what, text] of texts) {
          assert.ok(!text.includes('PRIVATE KEY'), `${what} holds no key`);
          for (let i = 0; i + 24 <= body.length; i += 12) assert.ok(!text.includes(body.slice(i, i + 24)), `${what} holds no part of the key`);
        }
        assert.deepEqual(Object.keys(v.Status).sort(), ['backend', 'dir', 'existing', 'mounts', 'path', 'server', 'state', 'type']);
        assert.equal(v.Status.server, `root@127.0.0.1:${sshd.port}`);
      } else {
        assert.deepEqual(Object.keys(v.Status).sort(), ['backend', 'dir', 'existing', 'glusterVolume', 'mounts', 'servers', 'state', 'type']);
        assert.deepEqual(argv.slice(1).filter((a) => /pass|secret|key|token/i.test(a)), [], `glusterfs argv: ${argv.join(' ')}`);
      }
      await removeContainer(c);
      await removeVolume(vol);
    });

    // (i) --------------------------------------------------------------------------------------
    t('a server that is down makes create fail within the mount timeout, naming the backend and the server; nothing is left behind', async () => {
      const vol = uniqueName(`rv-${r.kind}-down-`);
      const t0 = performance.now();
      const x = await e().docker(['volume', 'create', '-d', d1().driver, '-o', `backend=${r.down}`, vol], 130_000);
      const ms = performance.now() - t0;
      note(`${r.down} create refused after`, ms);
      assert.notEqual(x.code, 0);
      assert.ok(ms < 60_000 && ms < (MOUNT_TIMEOUT_SEC + 15) * 1000, `failed after ${Math.round(ms)} ms`);
      const server = r.kind === 'ssh' ? `sshfs backend ${r.down} (server root@127.0.0.1:${sshDeadPort})` : `glusterfs backend ${r.down} (volume gv0 on 127.0.0.2)`;
      assert.match(x.stderr, new RegExp(`${escape(server)}: could not mount the share`), x.stderr);
      assert.ok(!(await dockerVolumeNames()).has(vol));
      assert.ok(!(await ballastVolumeNames(d1())).has(vol));
      const tmp = join(root1, 'backends', r.down, 'tmp');
      await waitFor(() => processesContaining(tmp + '/').length === 0, `no client left trying to mount under ${tmp}`, 15_000);
      assert.deepEqual(existsSync(tmp) ? readdirSync(tmp) : [], []);
      assert.deepEqual(mountinfoOf('self').filter((m) => m.mountpoint.startsWith(tmp)), []);
    });
  }

  // NFS -------------------------------------------------------------------------------------------
  // The kernel's NFS client: registered already, or a module that mount.nfs makes the kernel load.
  const nfsModule = ['kernel/fs/nfs/nfs.ko', 'kernel/fs/nfs/nfs.ko.xz', 'kernel/fs/nfs/nfs.ko.zst'].some((f) => existsSync(join('/lib/modules', release(), f)));
  const nfsKernel = nfsModule || readFileSync('/proc/filesystems', 'utf8').split('\n').some((l) => /\bnfs4?$/.test(l.trim()));
  const nfsSkip = SKIP_ALL ?? (nfsKernel
    ? (existsSync('/sbin/mount.nfs') || existsSync('/usr/sbin/mount.nfs') ? undefined : 'mount.nfs is not installed (scripts/install-test-deps.sh installs nfs-common)')
    : `this kernel (${release()}) has no NFS client (nfs is not in /proc/filesystems and there is no nfs module), so an NFS mount cannot be exercised; the nfs argv is covered by the unit tests in src/backends/remote-dir.test.ts`);
  test('nfs: a server that is down makes create fail within the mount timeout, naming the backend and the server', { skip: nfsSkip ?? false, timeout: 120_000 }, async () => {
    const vol = uniqueName('rv-nfs-down-');
    const t0 = performance.now();
    const x = await e().docker(['volume', 'create', '-d', d1().driver, '-o', 'backend=nfs-down', vol], 130_000);
    assert.notEqual(x.code, 0);
    assert.ok(performance.now() - t0 < 60_000);
    assert.match(x.stderr, /nfs backend nfs-down \(server 127\.0\.0\.2:\/exports\/docker\): could not mount the share/);
    assert.ok(!(await dockerVolumeNames()).has(vol));
  });
});
