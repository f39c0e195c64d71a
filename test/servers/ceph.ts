/**
 * A one-node Ceph 16 (Pacific) cluster for tests: mon.a, mgr.x, osd.0 (bluestore on a sparse file),
 * mds.a serving the CephFS `cephfs`, the pool `rbd`, and (unless `rgw: false`) radosgw (client.rgw.a)
 * on <addr>:7480 with one S3 user and one bucket. Everything lives under the caller's directory.
 * By default every daemon binds 127.0.0.1 in this process's network namespace. With `netns` (and an
 * `addr` on it, e.g. 10.99.0.1 in the cluster harness's hub), every daemon and every admin command runs
 * through `nsenter --net=/run/netns/<netns>` (shared/recipes/ceph-up-addr.sh): clients must then run in
 * that netns or one routed to it (a cluster node's), never in the host's.
 * Ported from shared/recipes/ceph-up.sh: every command is an argv array with a timeout, every daemon
 * runs in the foreground (`-f`) as a child of this process, so it is stopped by its PID and never by
 * name. Secrets (the S3 secret key) travel in files and on stdin, never in argv.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, openSync, closeSync, readFileSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes, randomUUID } from 'node:crypto';
import { createConnection } from 'node:net';
import { pidAlive, run, sleep, waitFor, type RunResult } from '../helpers/proc.js';

export type CephDaemon = 'mon' | 'mgr' | 'osd' | 'mds' | 'rgw';

export interface CephCluster {
  readonly dir: string;
  /** The address every daemon binds (127.0.0.1 by default). */
  readonly addr: string;
  /** The network namespace the daemons run in (ip netns name), or undefined for this process's own. */
  readonly netns?: string;
  /** ceph.conf for clients (mon host, [client] keyring, admin sockets and logs under dir). */
  readonly conf: string;
  /** client.admin's keyring. */
  readonly keyring: string;
  readonly monPort: number;
  /** http://<addr>:<port> of radosgw; '' (and bucket, keys and passwdFile too) when started with rgw: false. */
  readonly rgwUrl: string;
  readonly bucket: string;
  /** The S3 user's access key (not a secret on its own). */
  readonly accessKey: string;
  /** The S3 secret key: for asserting it never leaks. */
  readonly secretKey: string;
  /** The client.admin key: for asserting it never leaks. */
  readonly adminKey: string;
  /** s3fs passwd file, `ACCESS:SECRET`, mode 0600. */
  readonly passwdFile: string;
  /** Milliseconds from start until the cluster was healthy with the bucket made. */
  readonly startMs: number;
  /** Lap times of the start, for reports. */
  readonly laps: readonly string[];
  pid(d: CephDaemon): number | undefined;
  /** Any argv (ceph, rbd, rados, ceph-fuse...) run in the cluster's netns (or here without one), bounded; never throws. */
  exec(argv: string[], timeoutMs?: number): Promise<RunResult>;
  /** A ceph/rbd/radosgw-admin command as client.admin, bounded; never throws on a non-zero exit. */
  tool(tool: 'ceph' | 'rbd' | 'radosgw-admin' | 'rados', args: string[], timeoutMs?: number): Promise<RunResult>;
  /** Same; must exit 0; returns stdout. */
  ok(tool: 'ceph' | 'rbd' | 'radosgw-admin' | 'rados', args: string[], timeoutMs?: number): Promise<string>;
  /** A signed S3 request with curl (the credentials go on curl's stdin, not argv). */
  s3(method: string, path: string, opts?: { timeoutMs?: number; body?: string }): Promise<RunResult>;
  /** Object keys in the bucket, optionally under a prefix. */
  listObjects(prefix?: string): Promise<string[]>;
  /** SIGKILL (default) or SIGTERM a daemon and wait for it to be gone. */
  kill(d: CephDaemon, signal?: NodeJS.Signals): Promise<void>;
  /** Starts a daemon that was killed (same identity and data) and waits until it serves again. */
  start(d: CephDaemon): Promise<void>;
  /** Waits until the cluster reports HEALTH_OK and every PG is active+clean. */
  waitHealthy(timeoutMs?: number): Promise<void>;
  /** Kills every daemon by PID and removes dir. Unmount clients first. */
  stop(): Promise<void>;
}

/** Why a Ceph cluster cannot be started here, or undefined when it can. */
export function cephSkipReason(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (Ceph daemons, FUSE mounts)';
  const tools: [string, string][] = [
    ['ceph-mon', 'ceph-mon'], ['ceph-mgr', 'ceph-mgr'], ['ceph-osd', 'ceph-osd'], ['ceph-mds', 'ceph-mds'],
    ['radosgw', 'radosgw'], ['ceph', 'ceph-common'], ['rbd', 'ceph-common'], ['radosgw-admin', 'radosgw'],
    ['ceph-authtool', 'ceph-common'], ['monmaptool', 'ceph-common'], ['ceph-fuse', 'ceph-fuse'], ['rbd-fuse', 'rbd-fuse'],
    ['s3fs', 's3fs'], ['curl', 'curl'],
  ];
  const missing = tools.filter(([bin]) => !['/usr/bin', '/usr/sbin', '/bin', '/sbin'].some((d) => existsSync(join(d, bin))));
  if (missing.length) return `Ceph is not installed: missing ${missing.map(([b]) => b).join(', ')} (apt-get install ${[...new Set(missing.map(([, p]) => p))].join(' ')}, or run scripts/install-test-deps.sh)`;
  return undefined;
}

function portFree(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection({ host, port });
    s.setTimeout(1000);
    s.once('connect', () => { s.destroy(); resolve(false); });
    s.once('timeout', () => { s.destroy(); resolve(false); });
    s.once('error', () => resolve(true));
  });
}

/** Is something listening on addr:port in the netns (read from its /proc/net/tcp: no connection is made)? */
async function listeningInNetns(netns: string, addr: string, port: number): Promise<boolean> {
  const r = await run(['nsenter', `--net=/run/netns/${netns}`, 'cat', '/proc/net/tcp'], { timeoutMs: 10_000 });
  if (r.code !== 0) throw new Error(`cannot read /proc/net/tcp in netns ${netns}: ${r.stderr.trim()}`);
  const hexAddr = addr.split('.').map(Number).reverse().map((b) => b.toString(16).toUpperCase().padStart(2, '0')).join('');
  const want = [`${hexAddr}:${port.toString(16).toUpperCase().padStart(4, '0')}`, `00000000:${port.toString(16).toUpperCase().padStart(4, '0')}`];
  return r.stdout.split('\n').slice(1).some((l) => { const c = l.trim().split(/\s+/); return want.includes(c[1]) && c[3] === '0A'; });
}

export interface StartCephOptions {
  osdSizeGiB?: number;
  monPort?: number;
  rgwPort?: number;
  bucket?: string;
  /** The address every daemon binds and the mon map names (default 127.0.0.1). */
  addr?: string;
  /** `public network` of ceph.conf; must contain addr (default 127.0.0.0/8). */
  publicNetwork?: string;
  /** Run every daemon and admin command in this network namespace (`ip netns` name; it must hold addr). */
  netns?: string;
  /** Start radosgw with an S3 user and a bucket (default true). */
  rgw?: boolean;
  /**
   * Called once ceph.conf and client.admin's keyring are written (before any daemon runs), so a caller
   * can configure clients while the cluster still comes up; they fail or wait until it does.
   */
  onFiles?: (files: { conf: string; keyring: string }) => void;
}

/**
 * Starts the cluster under `dir` (created; should be empty). osdSizeGiB is a sparse file.
 * Throws with the daemon's log tail if anything does not come up within its bound.
 */
export async function startCeph(dir: string, opts: StartCephOptions = {}): Promise<CephCluster> {
  const t0 = Date.now();
  const laps: string[] = [];
  const lap = (what: string) => laps.push(`${what} at +${((Date.now() - t0) / 1000).toFixed(1)} s`);
  const monPort = opts.monPort ?? 3300;
  const rgwPort = opts.rgwPort ?? 7480;
  const addr = opts.addr ?? '127.0.0.1';
  const publicNetwork = opts.publicNetwork ?? '127.0.0.0/8';
  const netns = opts.netns;
  const withRgw = opts.rgw ?? true;
  if (!/^\d+\.\d+\.\d+\.\d+$/.test(addr)) throw new Error(`startCeph: addr must be an IPv4 address, not ${JSON.stringify(addr)}`);
  if (netns !== undefined && !/^[a-zA-Z0-9_.-]+$/.test(netns)) throw new Error(`startCeph: ${JSON.stringify(netns)} is not a netns name`);
  /** argv as it runs: through nsenter into the netns when there is one (nsenter --net execs: the PID is the command's). */
  const wrap = (argv: string[]) => (netns ? ['nsenter', `--net=/run/netns/${netns}`, ...argv] : argv);
  const bucket = withRgw ? opts.bucket ?? `ballast-${randomBytes(3).toString('hex')}` : '';
  for (const [what, port] of [['mon', monPort], ...(withRgw ? [['radosgw', rgwPort]] : [])] as [string, number][]) {
    const busy = netns ? await listeningInNetns(netns, addr, port) : !(await portFree(addr, port));
    if (busy) throw new Error(`port ${port} for the Ceph ${what} on ${addr}${netns ? ` in netns ${netns}` : ''} is already in use (a cluster left over from an earlier run? stop it by its PID)`);
  }
  for (const d of ['mon', 'mgr/ceph-x', 'mds/ceph-a', 'osd/ceph-0', 'rgw/ceph-rgw.a', 'run', 'log']) mkdirSync(join(dir, d), { recursive: true });
  const conf = join(dir, 'ceph.conf');
  const keyring = join(dir, 'ceph.client.admin.keyring');
  const fsid = randomUUID();
  const osdBytes = (opts.osdSizeGiB ?? 4) * 1024 ** 3;
  writeFileSync(conf, `[global]
fsid = ${fsid}
mon host = v2:${addr}:${monPort}
public network = ${publicNetwork}
ms bind ipv4 = true
ms bind ipv6 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
run dir = ${dir}/run
admin socket = ${dir}/run/$name.asok
pid file = ${dir}/run/$name.pid
log file = ${dir}/log/$name.log
mon data = ${dir}/mon/ceph-$id
mgr data = ${dir}/mgr/ceph-$id
mds data = ${dir}/mds/ceph-$id
osd data = ${dir}/osd/ceph-$id
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail warn = 5
auth allow insecure global id reclaim = false
mon warn on insecure global id reclaim allowed = false
# A client that dies (SIGKILL of rbd-fuse) stays a watcher of its image until the OSD times it out, and
# \`rbd rm\` refuses while it does: 10 s here instead of the default 30 s.
osd client watch timeout = 10
[osd]
osd objectstore = bluestore
bluestore block create = true
bluestore block size = ${osdBytes}
osd memory target = 1073741824
[mgr]
mgr initial modules = volumes
[client]
keyring = ${keyring}
log file = ${dir}/log/$name.$pid.log
admin socket = ${dir}/run/$name.$pid.asok
pid file =
[client.rgw.a]
keyring = ${dir}/rgw/ceph-rgw.a/keyring
rgw data = ${dir}/rgw/ceph-rgw.a
rgw frontends = beast endpoint=${addr}:${rgwPort}
pid file = ${dir}/run/client.rgw.a.pid
log file = ${dir}/log/client.rgw.a.log
`);
  const C = ['-c', conf];
  const must = async (argv: string[], timeoutMs = 60_000, input?: string): Promise<string> => {
    const r = await run(wrap(argv), { timeoutMs, input });
    if (r.code !== 0) throw new Error(`${argv.slice(0, 4).join(' ')} ... failed (${r.code}): ${(r.stderr || r.stdout).trim().slice(-1500)}`);
    return r.stdout;
  };

  const pids = new Map<CephDaemon, number>();
  const argvOf: Record<CephDaemon, string[]> = {
    mon: ['ceph-mon', '-f', ...C, '-i', 'a'],
    mgr: ['ceph-mgr', '-f', ...C, '-i', 'x'],
    osd: ['ceph-osd', '-f', ...C, '-i', '0'],
    mds: ['ceph-mds', '-f', ...C, '-i', 'a'],
    rgw: ['radosgw', '-f', ...C, '-n', 'client.rgw.a'],
  };
  const logOf: Record<CephDaemon, string> = { mon: 'mon.a', mgr: 'mgr.x', osd: 'osd.0', mds: 'mds.a', rgw: 'client.rgw.a' };
  const tail = (d: CephDaemon) => {
    const f = join(dir, 'log', `${logOf[d]}.log`);
    const out = join(dir, 'log', `${d}.out`);
    return [out, f].filter(existsSync).map((x) => readFileSync(x, 'utf8').slice(-1200)).join('\n');
  };
  const spawnDaemon = (d: CephDaemon) => {
    const fd = openSync(join(dir, 'log', `${d}.out`), 'a');
    const [cmd, ...args] = wrap(argvOf[d]);
    const c = spawn(cmd, args, { stdio: ['ignore', fd, fd], detached: true });
    closeSync(fd);
    c.on('error', () => undefined);
    c.unref();
    pids.set(d, c.pid!);
  };
  const alive = (d: CephDaemon) => { const p = pids.get(d); return p !== undefined && pidAlive(p); };
  const exec = (argv: string[], timeoutMs = 60_000) => run(wrap(argv), { timeoutMs });
  const tool = (t: string, args: string[], timeoutMs = 60_000) => exec([t, ...C, ...(t === 'ceph' ? ['--connect-timeout', String(Math.max(5, Math.ceil(timeoutMs / 1000) - 2))] : []), ...args], timeoutMs);
  const ok = async (t: string, args: string[], timeoutMs = 60_000) => {
    const r = await tool(t, args, timeoutMs);
    if (r.code !== 0) throw new Error(`${t} ${args.join(' ')} failed (${r.code}): ${(r.stderr || r.stdout).trim().slice(-1500)}`);
    return r.stdout;
  };
  /** Waits for cond, failing early with the daemon's log when it died. */
  const until = async (d: CephDaemon, what: string, cond: () => Promise<boolean>, timeoutMs: number) => {
    const end = Date.now() + timeoutMs;
    while (Date.now() < end) {
      if (!alive(d)) throw new Error(`ceph ${d} exited while waiting for ${what}:\n${tail(d)}`);
      if (await cond().catch(() => false)) return;
      await sleep(250);
    }
    throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}:\n${tail(d)}`);
  };
  const osdUp = async () => /"num_up_osds":\s*1/.test((await tool('ceph', ['osd', 'stat', '--format', 'json'], 10_000)).stdout);
  const mdsActive = async () => /up:active/.test((await tool('ceph', ['mds', 'stat'], 10_000)).stdout);
  const rgwAnswers = async () => (await exec(['curl', '-s', '-o', '/dev/null', '-m', '2', '-w', '%{http_code}', `http://${addr}:${rgwPort}/`], 5000)).stdout.trim() === '200';
  const mgrVolumes = async () => (await tool('ceph', ['fs', 'subvolume', 'ls', 'cephfs'], 10_000)).code === 0;
  const ready: Record<CephDaemon, [string, () => Promise<boolean>, number]> = {
    mon: ['the monitor to answer', async () => (await tool('ceph', ['mon', 'dump'], 10_000)).code === 0, 30_000],
    mgr: ['the mgr volumes module', mgrVolumes, 90_000],
    osd: ['osd.0 up', osdUp, 90_000],
    mds: ['mds.a active', mdsActive, 90_000],
    rgw: [`radosgw on ${addr}:${rgwPort}`, rgwAnswers, 90_000],
  };

  let cluster: CephCluster | undefined;
  const stopAll = async () => {
    // Dependants first, the monitor last; each by the PID this process started.
    for (const d of ['rgw', 'mds', 'mgr', 'osd', 'mon'] as CephDaemon[]) {
      const p = pids.get(d);
      if (p !== undefined && pidAlive(p)) { try { process.kill(p, 'SIGTERM'); } catch { /* gone */ } }
    }
    for (const d of ['rgw', 'mds', 'mgr', 'osd', 'mon'] as CephDaemon[]) {
      const p = pids.get(d);
      if (p === undefined) continue;
      await waitFor(() => !pidAlive(p), `ceph ${d} (pid ${p}) to exit`, 10_000).catch(() => { try { process.kill(p, 'SIGKILL'); } catch { /* gone */ } });
      await waitFor(() => !pidAlive(p), `ceph ${d} (pid ${p}) to die`, 5_000).catch(() => undefined);
    }
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    // Keys and the monitor map.
    const monKeyring = join(dir, 'mon.keyring');
    await must(['ceph-authtool', '--create-keyring', monKeyring, '--gen-key', '-n', 'mon.', '--cap', 'mon', 'allow *']);
    await must(['ceph-authtool', '--create-keyring', keyring, '--gen-key', '-n', 'client.admin', '--cap', 'mon', 'allow *', '--cap', 'osd', 'allow *', '--cap', 'mds', 'allow *', '--cap', 'mgr', 'allow *']);
    chmodSync(keyring, 0o600);
    opts.onFiles?.({ conf, keyring });
    await must(['ceph-authtool', monKeyring, '--import-keyring', keyring]);
    await must(['monmaptool', '--create', '--fsid', fsid, '--addv', 'a', `[v2:${addr}:${monPort}]`, join(dir, 'monmap')]);
    await must(['ceph-mon', ...C, '--mkfs', '-i', 'a', '--monmap', join(dir, 'monmap'), '--keyring', monKeyring]);
    spawnDaemon('mon');
    await until('mon', ...ready.mon);
    lap('mon up');

    // mgr, osd, mds and rgw keys; the OSD's store; then all four daemons at once.
    const osdKey = (await must(['ceph-authtool', '--gen-print-key'])).trim();
    const osdUuid = randomUUID();
    writeFileSync(join(dir, 'osd-secrets.json'), JSON.stringify({ cephx_secret: osdKey }), { mode: 0o600 });
    const [,, osdId] = await Promise.all([
      ok('ceph', ['auth', 'get-or-create', 'mgr.x', 'mon', 'allow profile mgr', 'osd', 'allow *', 'mds', 'allow *', '-o', join(dir, 'mgr/ceph-x/keyring')]),
      ok('ceph', ['auth', 'get-or-create', 'mds.a', 'mon', 'allow profile mds', 'osd', 'allow rwx', 'mds', 'allow *', 'mgr', 'allow profile mds', '-o', join(dir, 'mds/ceph-a/keyring')]),
      ok('ceph', ['osd', 'new', osdUuid, '-i', join(dir, 'osd-secrets.json')]),
      withRgw ? ok('ceph', ['auth', 'get-or-create', 'client.rgw.a', 'mon', 'allow rw', 'osd', 'allow rwx', 'mgr', 'allow rw', '-o', join(dir, 'rgw/ceph-rgw.a/keyring')]) : Promise.resolve(''),
    ]);
    if (osdId.trim() !== '0') throw new Error(`expected osd id 0, got ${osdId.trim()}`);
    spawnDaemon('mgr');
    await must(['ceph-authtool', '--create-keyring', join(dir, 'osd/ceph-0/keyring'), '--name', 'osd.0', '--add-key', osdKey]);
    rmSync(join(dir, 'osd-secrets.json'));
    await must(['ceph-osd', ...C, '-i', '0', '--mkfs', '--osd-uuid', osdUuid], 120_000);
    spawnDaemon('osd');
    spawnDaemon('mds');
    await until('osd', ...ready.osd);
    lap('osd up');

    await Promise.all([
      (async () => { await ok('ceph', ['osd', 'pool', 'create', 'rbd', '8', '8']); await ok('rbd', ['pool', 'init', 'rbd']); })(),
      (async () => {
        await ok('ceph', ['osd', 'pool', 'create', 'cephfs_metadata', '8', '8']);
        await ok('ceph', ['osd', 'pool', 'create', 'cephfs_data', '8', '8']);
        await ok('ceph', ['fs', 'new', 'cephfs', 'cephfs_metadata', 'cephfs_data']);
        // The capabilities of a client that died (SIGKILL of ceph-fuse) block other clients on those
        // files until the MDS times its session out: 30 s (the least it allows) here instead of the default 60 s.
        await ok('ceph', ['fs', 'set', 'cephfs', 'session_timeout', '30']);
      })(),
    ]);
    lap('pools and fs made');
    if (withRgw) spawnDaemon('rgw');
    await until('mds', ...ready.mds);
    lap('mds active');
    if (withRgw) {
      await until('rgw', ...ready.rgw);
      lap('rgw answering');
    }
    await until('mgr', ...ready.mgr);
    lap('mgr volumes module');

    // S3: a user with generated keys, and a bucket made by a signed request.
    const accessKey = withRgw ? randomBytes(10).toString('hex').toUpperCase() : '';
    const secretKey = withRgw ? randomBytes(20).toString('base64url') : '';
    const passwdFile = withRgw ? join(dir, 's3fs-passwd') : '';
    const rgwUrl = withRgw ? `http://${addr}:${rgwPort}` : '';
    const s3 = (method: string, path: string, o: { timeoutMs?: number; body?: string } = {}) => {
      // curl reads its options (the credentials among them) from stdin: -K -.
      const cfg = [`user = "${accessKey}:${secretKey}"`, 'aws-sigv4 = "aws:amz:us-east-1:s3"', 'header = "x-amz-content-sha256: UNSIGNED-PAYLOAD"',
        `request = "${method}"`, `url = "${rgwUrl}${path}"`, 'silent', 'show-error', `max-time = ${Math.ceil((o.timeoutMs ?? 20_000) / 1000)}`,
        'write-out = "\\n%{http_code}"', ...(o.body !== undefined ? [`data-raw = "${o.body.replace(/[\\"]/g, '\\$&')}"`] : [])].join('\n');
      if (!withRgw) return Promise.reject(new Error('this Ceph was started without radosgw (rgw: false)'));
      return run(wrap(['curl', '-K', '-']), { input: cfg, timeoutMs: (o.timeoutMs ?? 20_000) + 5000 });
    };
    if (withRgw) {
      // radosgw-admin takes the secret on argv: a short-lived setup command of the test, not Ballast.
      await ok('radosgw-admin', ['user', 'create', '--uid=ballast-test', '--display-name=ballast test', `--access-key=${accessKey}`, `--secret-key=${secretKey}`], 60_000);
      writeFileSync(passwdFile, `${accessKey}:${secretKey}\n`, { mode: 0o600 });
      chmodSync(passwdFile, 0o600);
      const mk = await s3('PUT', `/${bucket}`);
      if (!/\n200$/.test(mk.stdout)) throw new Error(`could not create bucket ${bucket}: ${mk.stdout} ${mk.stderr}`);
      lap('s3 user and bucket');
    }

    const waitHealthy = async (timeoutMs = 90_000) => {
      let last = '';
      await waitFor(async () => {
        const h = await tool('ceph', ['health', 'detail'], 10_000);
        const pg = await tool('ceph', ['pg', 'stat', '--format', 'json'], 10_000);
        last = `${h.stdout.trim()} ${pg.stdout.trim()}`;
        const st = JSON.parse(pg.stdout || '{}') as { pg_summary?: { num_pg_by_state?: { name: string; num: number }[]; num_pgs?: number } };
        const states = st.pg_summary?.num_pg_by_state ?? [];
        const clean = states.length === 1 && states[0].name === 'active+clean';
        return h.stdout.startsWith('HEALTH_OK') && clean;
      }, `HEALTH_OK and all PGs active+clean (last: ${last})`, timeoutMs, 500).catch((e: Error) => { throw new Error(`${e.message}; last seen: ${last.slice(0, 1500)}`); });
    };
    await waitHealthy();
    lap('HEALTH_OK, all PGs active+clean');

    const adminKey = (/key\s*=\s*(\S+)/.exec(readFileSync(keyring, 'utf8')) ?? [])[1] ?? '';
    cluster = {
      dir, addr, netns, conf, keyring, monPort, rgwUrl, bucket, accessKey, secretKey, adminKey, passwdFile, startMs: Date.now() - t0, laps,
      pid: (d) => pids.get(d),
      exec,
      tool: (t, args, timeoutMs) => tool(t, args, timeoutMs),
      ok: (t, args, timeoutMs) => ok(t, args, timeoutMs),
      s3,
      async listObjects(prefix = '') {
        const r = await s3('GET', `/${bucket}?list-type=2&max-keys=1000${prefix ? `&prefix=${encodeURIComponent(prefix)}` : ''}`);
        if (!/\n200$/.test(r.stdout)) throw new Error(`listing bucket ${bucket} failed: ${r.stdout} ${r.stderr}`);
        return [...r.stdout.matchAll(/<Key>([^<]*)<\/Key>/g)].map((m) => m[1]);
      },
      async kill(d, signal = 'SIGKILL') {
        const p = pids.get(d);
        if (p === undefined || !pidAlive(p)) return;
        process.kill(p, signal);
        await waitFor(() => !pidAlive(p), `ceph ${d} (pid ${p}) to exit`, 30_000);
      },
      async start(d) {
        if (alive(d)) return;
        if (d === 'rgw' && !withRgw) throw new Error('this Ceph was started without radosgw (rgw: false)');
        spawnDaemon(d);
        const [what, cond, ms] = ready[d];
        await until(d, what, cond, ms);
      },
      waitHealthy,
      stop: stopAll,
    };
    return cluster;
  } catch (e) {
    await stopAll().catch(() => undefined);
    throw e;
  }
}
