/**
 * A real 3-node cluster on this one machine, for the cluster-mode suites (issue 8): a 3-member etcd,
 * three "nodes" each with its own dockerd and Ballast daemon, joined into a real Docker Swarm.
 * Adapted from shared/recipes/swarm-net-up.sh, swarm-node-up.sh and etcd-up.sh.
 *
 * - Network: a hub netns `<p>hub` holding a bridge `<p>br` with 10.99.0.1/24, and one netns per node
 *   (`<p>n1`..) joined to the bridge by a veth (`<p>v1`.. in the hub, `eth0` in the node) with
 *   10.99.0.11, .12, .13. `<p>` is a short prefix unique to the run, so runs never collide.
 * - etcd: 3 members inside the hub netns on 10.99.0.1 (client ports 12379/22379/32379, peer +1):
 *   reachable from every node, not from the host's loopback.
 * - A node is a "holder" process (`unshare -m -u --propagation private sleep infinity` inside the
 *   node's netns) that keeps the node's mount and UTS namespaces alive, so a node survives a killed
 *   dockerd or Ballast. In its mount namespace /run/docker, /run/containerd and /etc/docker are the
 *   node's own directories (so /run/docker/plugins is the node's own plugin directory), /sys is a
 *   fresh sysfs of the node's netns with the host's cgroup hierarchies moved back under it; the
 *   hostname is `sf-nI`. dockerd and the Ballast daemon run there (nsenter -t <holder> -m -n -u, which
 *   execs, so the spawned PID is the daemon's own). Every setup step is an argv, never a shell string.
 * - Ceph (`ceph: true`): a one-node Ceph (test/servers/ceph.ts: mon, mgr, osd, mds; no radosgw) whose
 *   daemons bind 10.99.0.1 inside the hub netns (shared/recipes/ceph-up-addr.sh), so every node reaches it
 *   and the host does not: its clients (`cluster.ceph.exec`, the nodes' rbd-fuse and ceph-fuse) run in the
 *   hub or a node netns. It comes up in parallel with etcd, the dockerds, Ballast and the Swarm.
 * - Ballast: `--root <dir>/nI/root`, `--socket /run/docker/plugins/ballast.sock` (driver `ballast`),
 *   `--node nI`, `--docker-host unix://<dir>/nI/docker.sock`, and a config file with backends `local`
 *   and `shared-block` (a block backend, `shared: true`, whose imageDir is one directory all nodes see),
 *   with Ceph also `rbd` and `cephfs`, and the etcd store (or whatever `opts.config` returns).
 * - stop() tears everything down by PID and name and throws when something was left.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, openSync, closeSync, readFileSync, readdirSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { unixRequest } from '../../src/host/unix-http.js';
import { BIN, NODE_FLAGS } from './ballast.js';
import { busyboxTar } from './docker-engine.js';
import { startCeph, type CephCluster } from '../servers/ceph.js';
import { findAndCleanLeftovers, loopsUnder, mountsUnder } from './leftovers.js';
import { pidAlive, run, sleep, waitFor, type RunResult } from './proc.js';

export const DOCKER = existsSync('/usr/bin/docker') ? '/usr/bin/docker' : 'docker';
const ETCD = '/usr/bin/etcd';
const ETCDCTL = '/usr/bin/etcdctl';
export const HUB_ADDR = '10.99.0.1';
export const nodeAddr = (i: number) => `10.99.0.1${i + 1}`;

/** Why the cluster cannot be started here, or undefined when it can. */
export function clusterSkipReason(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (network, mount and UTS namespaces, dockerd, loop devices)';
  if (!existsSync('/usr/sbin/dockerd') && !existsSync('/usr/bin/dockerd')) return 'dockerd is not installed (bash scripts/install-test-deps.sh installs docker.io)';
  if (!existsSync('/bin/busybox')) return 'busybox-static is not installed (bash scripts/install-test-deps.sh)';
  if (!existsSync(ETCD) || !existsSync(ETCDCTL)) return 'etcd is not installed (bash scripts/install-test-deps.sh installs etcd-server and etcd-client)';
  for (const t of ['ip', 'nsenter', 'unshare']) if (!['/usr/bin', '/usr/sbin', '/bin', '/sbin'].some((d) => existsSync(join(d, t)))) return `${t} is not installed (iproute2, util-linux)`;
  return undefined;
}

export interface ClusterNode {
  /** n1, n2, n3: the Ballast node name. */
  readonly name: string;
  /** sf-n1..: the hostname inside the node (what Swarm shows and constraints match). */
  readonly hostname: string;
  /** 10.99.0.11.. */
  readonly addr: string;
  /** The node's netns name (ip netns) and its veth inside the hub. */
  readonly netns: string;
  readonly veth: string;
  /** Everything of the node on the host: <dir>/nI. */
  readonly dir: string;
  /** Ballast's --root (its admin socket is <root>/admin.sock). */
  readonly root: string;
  /** dockerd's socket as a host path (the same inside the node). */
  readonly dockerSock: string;
  /** The node's plugin socket seen from the host (it is /run/docker/plugins/ballast.sock inside the node). */
  readonly pluginSock: string;
  readonly adminSock: string;
  readonly configFile: string;
  readonly ballastLog: string;
  readonly dockerdLog: string;
  /** docker CLI against this node's dockerd; never throws on a non-zero exit. */
  docker(args: string[], timeoutMs?: number): Promise<RunResult>;
  /** docker ... that must succeed; returns trimmed stdout. */
  dockerOk(args: string[], timeoutMs?: number): Promise<string>;
  /** `ballast ARGS --root <root>`, run inside the node's namespaces. */
  ballast(args: string[], timeoutMs?: number): Promise<RunResult>;
  /** POST to the node's plugin socket as dockerd does (no content type). */
  plugin(method: string, body?: unknown, timeoutMs?: number): Promise<{ status: number; body: Record<string, unknown> }>;
  /** PID of the node's Ballast daemon (0 when it is not running). */
  pid(): number;
  ballastRunning(): boolean;
  kill9Ballast(): Promise<void>;
  /** SIGTERM (bounded, then SIGKILL). */
  stopBallast(): Promise<void>;
  /** Starts the daemon again (stopping a running one first); env is merged over the cluster's for this launch. */
  restartBallast(env?: NodeJS.ProcessEnv): Promise<void>;
  /** PID of the node's dockerd (0 when it is not running). */
  dockerdPid(): number;
  /** SIGKILLs the node's dockerd and its containerd (shims and containers stay, as in a crash of the engine). */
  kill9Dockerd(): Promise<void>;
  /**
   * Starts dockerd again in the node's namespaces (after kill9Dockerd), waits until it answers and activates
   * the Ballast driver in it. Without live-restore it stops the containers the old one left running.
   */
  restartDockerd(): Promise<void>;
  /** Sets the node's veth in the hub down / up (a network partition of this node). */
  cutLink(): Promise<void>;
  healLink(): Promise<void>;
  /** Runs argv inside the node's net + mount + UTS namespaces. */
  nsExec(argv: string[], timeoutMs?: number): Promise<RunResult>;
  /** The node's mount table (mountinfo of its holder process). */
  mountinfo(): string;
  /** PID of the process that holds the node's namespaces. */
  readonly holderPid: number;
}

export interface Cluster {
  readonly prefix: string;
  readonly dir: string;
  readonly nodes: readonly ClusterNode[];
  /** Client URLs of the etcd members (http://10.99.0.1:12379, ...). */
  readonly etcdEndpoints: readonly string[];
  /** The directory every node's `shared-block` backend keeps its images in. */
  readonly sharedImageDir: string;
  /**
   * The cluster's Ceph (with `ceph: true`): conf and keyring paths (the same on every node), `exec(argv)`
   * and `tool('ceph' | 'rbd', args)` run in the hub netns, where the daemons listen on 10.99.0.1.
   */
  readonly ceph?: CephCluster;
  readonly hub: { readonly netns: string; readonly bridge: string; readonly addr: string; exec(argv: string[], timeoutMs?: number): Promise<RunResult> };
  /** Milliseconds each bring-up phase took (and `total`). */
  readonly timings: Readonly<Record<string, number>>;
  /** SIGKILLs etcd member i (0-based). */
  killEtcdMember(i: number): Promise<void>;
  /** Starts etcd member i (0-based) again on its data directory; waits until it listens. */
  startEtcdMember(i: number): Promise<void>;
  /** SIGTERM (10 s, then SIGKILL) every member, followers first. */
  stopAllEtcd(): Promise<void>;
  /** Starts every stopped member and waits until the cluster is healthy. */
  startAllEtcd(): Promise<void>;
  /** Waits until etcd answers a health check from inside node n1's netns. */
  etcdHealthy(timeoutMs?: number): Promise<void>;
  /** `etcdctl` (API 3) against the members, run from node n1's netns. */
  etcdctl(args: string[], timeoutMs?: number): Promise<RunResult>;
  /** Tears everything down; throws naming whatever was left (after cleaning it). */
  stop(): Promise<void>;
}

export interface ClusterOptions {
  /** Number of nodes, 1..9 (default 3). */
  nodes?: number;
  /** Swarm managers among the nodes (1 or all; default 1: n1 manages, the others are workers). */
  managers?: 1 | 'all';
  /** Set up the Swarm (default true). */
  swarm?: boolean;
  /** Extra arguments of `docker swarm init` on n1, e.g. ['--dispatcher-heartbeat', '1s'] so Swarm sees a dead node within seconds. */
  swarmInitArgs?: readonly string[];
  /** Start a one-node Ceph in the hub netns on 10.99.0.1 (default false); the nodes get backends rbd and cephfs. */
  ceph?: boolean;
  /** Size of the Ceph OSD's sparse file (default 4 GiB). */
  cephOsdSizeGiB?: number;
  /** The Ballast config file of node i; default: defaultNodeConfig. */
  config?: (node: NodeConfigInput & { index: number; name: string; root: string }) => Record<string, unknown>;
  /** Extra environment for the Ballast daemons. */
  env?: NodeJS.ProcessEnv;
  /** Ballast --log-level (default debug). */
  logLevel?: string;
  /** Progress lines (default: none). */
  log?: (line: string) => void;
}

export interface NodeConfigInput {
  sharedImageDir: string;
  etcdEndpoints: readonly string[];
  /** The cluster's Ceph client files, when it has a Ceph. */
  ceph?: { conf: string; keyring: string };
}

/**
 * The default Ballast config of a cluster node: backends `local` (the default) and `shared-block`; with
 * a Ceph also `rbd` (pool rbd) and `cephfs` (fs cephfs); the etcd store.
 */
export function defaultNodeConfig(n: NodeConfigInput): Record<string, unknown> {
  const backends: Record<string, unknown> = { local: { type: 'local' }, 'shared-block': { type: 'block', imageDir: n.sharedImageDir, shared: true } };
  if (n.ceph) {
    const client = { conf: n.ceph.conf, keyring: n.ceph.keyring, timeoutSec: 30 };
    backends.rbd = { type: 'rbd', ...client, pool: 'rbd' };
    backends.cephfs = { type: 'cephfs', ...client, fs: 'cephfs' };
  }
  return { defaultBackend: 'local', backends, store: { type: 'etcd', endpoints: [...n.etcdEndpoints] } };
}

interface EtcdDef { name: string; clientUrl: string; peerUrl: string; clientPort: number; peerPort: number; proc?: ChildProcess; started: boolean }

const ip = async (args: string[]) => {
  const r = await run(['ip', ...args], { timeoutMs: 15_000 });
  if (r.code !== 0) throw new Error(`ip ${args.join(' ')} failed (${r.code}): ${r.stderr.trim()}`);
};
const exitedProc = (c: ChildProcess | undefined) => !c || c.exitCode !== null || c.signalCode !== null;
/** Resolves once node has seen the child exit (so exitCode/signalCode are set), or after timeoutMs. */
const reaped = (c: ChildProcess | undefined, timeoutMs = 5000) => new Promise<void>((resolve) => {
  if (exitedProc(c)) { resolve(); return; }
  const t = setTimeout(resolve, timeoutMs);
  c!.once('exit', () => { clearTimeout(t); resolve(); });
});
function zombieOrGone(pid: number): boolean {
  if (!pidAlive(pid)) return true;
  try { return /\) [ZX] /.test(readFileSync(`/proc/${pid}/stat`, 'utf8')); } catch { return true; }
}
async function killAndWait(pid: number, sig: NodeJS.Signals, timeoutMs: number, what: string): Promise<boolean> {
  if (!pid || zombieOrGone(pid)) return true;
  try { process.kill(pid, sig); } catch { return true; }
  try { await waitFor(() => zombieOrGone(pid), `${what} (pid ${pid}) to exit after ${sig}`, timeoutMs, 50); return true; } catch { return false; }
}
/** SIGTERM, up to graceMs, then SIGKILL; resolves whether the graceful stop was enough. */
async function stopPid(pid: number, graceMs: number, what: string): Promise<boolean> {
  if (await killAndWait(pid, 'SIGTERM', graceMs, what)) return true;
  await killAndWait(pid, 'SIGKILL', 5000, what);
  return false;
}
function mntNs(pid: number): string | undefined { try { return readlinkSync(`/proc/${pid}/ns/mnt`); } catch { return undefined; } }
function procPids(): number[] { return readdirSync('/proc').filter((x) => /^\d+$/.test(x)).map(Number); }
function ppid(pid: number): number | undefined {
  try { const s = readFileSync(`/proc/${pid}/stat`, 'utf8'); return Number(s.slice(s.lastIndexOf(')') + 2).split(' ')[1]); } catch { return undefined; }
}
function cmdline(pid: number): string { try { return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').trim(); } catch { return ''; } }
/** Live processes in the mount namespace ns, and all their descendants (container processes have their own namespaces). */
function processesOf(ns: string): number[] {
  const all = procPids().filter((p) => p !== process.pid && !zombieOrGone(p));
  const inNs = new Set(all.filter((p) => mntNs(p) === ns));
  const kids = new Map<number, number[]>();
  for (const p of all) { const pp = ppid(p); if (pp !== undefined) kids.set(pp, [...(kids.get(pp) ?? []), p]); }
  const out = new Set(inNs);
  const todo = [...inNs];
  while (todo.length) for (const c of kids.get(todo.pop()!) ?? []) if (!out.has(c)) { out.add(c); todo.push(c); }
  return [...out];
}
/** Is something listening on addr:port in the netns of pid? (from /proc/<pid>/net/tcp; no connection). */
function listeningIn(pid: number, addr: string, port: number): boolean {
  let text = '';
  try { text = readFileSync(`/proc/${pid}/net/tcp`, 'utf8'); } catch { return false; }
  const hexAddr = addr.split('.').map(Number).reverse().map((b) => b.toString(16).toUpperCase().padStart(2, '0')).join('');
  const want = `${hexAddr}:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  return text.split('\n').slice(1).some((l) => { const c = l.trim().split(/\s+/); return c[1] === want && c[3] === '0A'; });
}

export async function startCluster(opts: ClusterOptions = {}): Promise<Cluster> {
  const n = opts.nodes ?? 3;
  if (!(n >= 1 && n <= 9)) throw new Error(`startCluster: nodes must be 1..9 (10.99.0.11-19), not ${n}`);
  const log = opts.log ?? (() => undefined);
  const T0 = Date.now();
  const timings: Record<string, number> = {};
  const phase = async <T>(name: string, fn: () => Promise<T>): Promise<T> => {
    const t = Date.now();
    try { return await fn(); } finally { timings[name] = Date.now() - t; log(`cluster: ${name} took ${Date.now() - t} ms`); }
  };
  // bc + 4 hex: "bc1a2b" + "hub"/"n1"/"v1"/"br" stays well within the 15 characters of a link name.
  const prefix = `bc${randomBytes(2).toString('hex')}`;
  const dir = mkdtempSync(join('/var/tmp', `ballast-cluster-${prefix}-`));
  const hubNs = `${prefix}hub`;
  const bridge = `${prefix}br`;
  const sharedImageDir = join(dir, 'shared-block');
  mkdirSync(sharedImageDir, { recursive: true });
  const etcdDir = join(dir, 'etcd');
  mkdirSync(etcdDir);

  // Everything made so far, for stop() (also used when the bring-up fails half way).
  const madeNetns: string[] = [];
  const etcd: EtcdDef[] = Array.from({ length: 3 }, (_, i) => {
    const clientPort = (i + 1) * 10_000 + 2379;
    return { name: `e${i + 1}`, clientPort, peerPort: clientPort + 1, clientUrl: `http://${HUB_ADDR}:${clientPort}`, peerUrl: `http://${HUB_ADDR}:${clientPort + 1}`, started: false };
  });
  const etcdEndpoints = etcd.map((e) => e.clientUrl);
  const token = `ballast-cluster-${prefix}`;
  const initialCluster = etcd.map((e) => `${e.name}=${e.peerUrl}`).join(',');

  interface NodeState {
    holder?: ChildProcess; holderNs?: string;
    dockerd?: ChildProcess; ballast?: ChildProcess;
  }
  const states: NodeState[] = Array.from({ length: n }, () => ({}));
  const nodes: ClusterNode[] = [];
  // Ceph: its start (settled or not) and, once up, the cluster; its client files as soon as they are written.
  let cephUp: Promise<void> | undefined;
  let ceph: CephCluster | undefined;
  let cephFiles: { conf: string; keyring: string } | undefined;

  const hubExec = (argv: string[], timeoutMs = 60_000) => run(['nsenter', `--net=/run/netns/${hubNs}`, ...argv], { timeoutMs });

  // ---- etcd, inside the hub netns on 10.99.0.1 -------------------------------------------------
  const etcdRunning = (i: number) => !exitedProc(etcd[i].proc) && !zombieOrGone(etcd[i].proc!.pid!);
  const launchEtcd = (i: number) => {
    const e = etcd[i];
    const fd = openSync(join(etcdDir, `${e.name}.log`), 'a');
    const p = spawn('nsenter', [`--net=/run/netns/${hubNs}`, ETCD,
      '--name', e.name, '--data-dir', join(etcdDir, e.name),
      '--listen-client-urls', e.clientUrl, '--advertise-client-urls', e.clientUrl,
      '--listen-peer-urls', e.peerUrl, '--initial-advertise-peer-urls', e.peerUrl,
      '--initial-cluster', initialCluster, '--initial-cluster-token', token,
      '--initial-cluster-state', e.started ? 'existing' : 'new',
      '--heartbeat-interval', '100', '--election-timeout', '1000'], { stdio: ['ignore', fd, fd] });
    closeSync(fd);
    p.on('error', () => { /* seen as not running */ });
    e.proc = p; e.started = true;
  };
  const waitEtcdListening = (i: number) => waitFor(() => {
    if (!etcdRunning(i)) throw new Error(`etcd ${etcd[i].name} exited: ${readFileSync(join(etcdDir, `${etcd[i].name}.log`), 'utf8').slice(-1500)}`);
    return listeningIn(etcd[i].proc!.pid!, HUB_ADDR, etcd[i].clientPort);
  }, `etcd ${etcd[i].name} to listen on ${etcd[i].clientUrl} in netns ${hubNs}`, 20_000, 50);
  const etcdctl = (args: string[], timeoutMs = 15_000) => run(['nsenter', `--net=/run/netns/${prefix}n1`, ETCDCTL, `--endpoints=${etcdEndpoints.join(',')}`, '--command-timeout=3s', ...args],
    { timeoutMs, env: { ...process.env, ETCDCTL_API: '3' } });
  const etcdHealthy = async (timeoutMs = 30_000) => {
    const up = etcd.filter((_, i) => etcdRunning(i)).map((e) => e.clientUrl);
    await waitFor(async () => {
      const r = await run(['nsenter', `--net=/run/netns/${prefix}n1`, ETCDCTL, `--endpoints=${up.join(',')}`, '--command-timeout=2s', 'endpoint', 'health'],
        { timeoutMs: 6000, env: { ...process.env, ETCDCTL_API: '3' } });
      return r.code === 0;
    }, `etcd members ${up.join(', ')} to be healthy as seen from node n1's netns (logs in ${etcdDir})`, timeoutMs, 200);
  };
  const stopEtcdMember = async (i: number) => {
    const p = etcd[i].proc;
    if (p && etcdRunning(i)) { await stopPid(p.pid!, 10_000, `etcd ${etcd[i].name}`); await reaped(p); }
  };

  // ---- nodes -------------------------------------------------------------------------------------
  const holderPid = (i: number) => states[i].holder?.pid ?? 0;
  const inNode = (i: number, argv: string[]) => ['nsenter', '-t', String(holderPid(i)), '-m', '-n', '-u', ...argv];
  const nsExec = (i: number, argv: string[], timeoutMs = 60_000) => run(inNode(i, argv), { timeoutMs });
  const nsMust = async (i: number, argv: string[], timeoutMs = 30_000) => {
    const r = await nsExec(i, argv, timeoutMs);
    if (r.code !== 0) throw new Error(`node n${i + 1}: ${argv.join(' ')} failed (${r.code}): ${(r.stderr || r.stdout).trim()}`);
    return r.stdout.trim();
  };
  const nd = (i: number) => join(dir, `n${i + 1}`);
  const dockerSock = (i: number) => join(nd(i), 'docker.sock');
  const docker = (i: number, args: string[], timeoutMs = 120_000) => run([DOCKER, '-H', `unix://${dockerSock(i)}`, ...args], { timeoutMs });
  const dockerOk = async (i: number, args: string[], timeoutMs?: number) => {
    const r = await docker(i, args, timeoutMs);
    if (r.code !== 0) throw new Error(`node n${i + 1}: docker ${args.join(' ')} failed (${r.code}): ${r.stderr.trim()}`);
    return r.stdout.trim();
  };

  const setupNamespaces = async (i: number) => {
    const d = nd(i);
    for (const s of ['data', 'rundocker/plugins', 'runcontainerd', 'etcdocker', 'cg', 'root']) mkdirSync(join(d, s), { recursive: true });
    const h = spawn('nsenter', [`--net=/run/netns/${prefix}n${i + 1}`, 'unshare', '-m', '-u', '--propagation', 'private', 'sleep', 'infinity'], { stdio: 'ignore' });
    h.on('error', () => { /* seen below */ });
    states[i].holder = h;
    await waitFor(() => {
      if (exitedProc(h)) throw new Error(`the namespace holder of node n${i + 1} exited (${h.exitCode ?? h.signalCode})`);
      const ns = mntNs(h.pid!);
      return ns && ns !== mntNs(process.pid) && readFileSync(`/proc/${h.pid}/cmdline`, 'utf8').startsWith('sleep') ? ns : undefined;
    }, `the namespace holder of node n${i + 1} to enter its namespaces`, 10_000, 20).then((ns) => { states[i].holderNs = ns; });
    await nsMust(i, ['hostname', `sf-n${i + 1}`]);
    // Not `ip netns exec` (it remounts /sys and so hides /sys/fs/cgroup: "Devices cgroup isn't mounted").
    await nsMust(i, ['mount', '--rbind', '/sys/fs/cgroup', join(d, 'cg')]);
    await nsMust(i, ['mount', '-t', 'sysfs', 'sysfs', '/sys']);
    await nsMust(i, ['mount', '--move', join(d, 'cg'), '/sys/fs/cgroup']);
    for (const [src, dst] of [['rundocker', '/run/docker'], ['runcontainerd', '/run/containerd'], ['etcdocker', '/etc/docker']]) {
      await nsMust(i, ['mkdir', '-p', dst]);
      await nsMust(i, ['mount', '--bind', join(d, src), dst]);
    }
  };

  const launchDockerd = async (i: number) => {
    const d = nd(i);
    const fd = openSync(join(d, 'dockerd.log'), 'a');
    const c = spawn('nsenter', inNode(i, ['dockerd', '-H', `unix://${dockerSock(i)}`, '--data-root', join(d, 'data'), '--exec-root', '/run/docker',
      '--pidfile', join(d, 'dockerd.pid'), '--iptables=false', '--bridge=none', '--log-level', 'info']).slice(1), { stdio: ['ignore', fd, fd] });
    closeSync(fd);
    c.on('error', () => { /* seen below */ });
    states[i].dockerd = c;
    await waitFor(async () => {
      if (exitedProc(c)) throw new Error(`dockerd of node n${i + 1} exited: ${readFileSync(join(d, 'dockerd.log'), 'utf8').slice(-1500)}`);
      const r = await unixRequest(dockerSock(i), 'GET', '/_ping', undefined, { timeoutMs: 1000 }).catch(() => undefined);
      return r?.status === 200;
    }, `dockerd of node n${i + 1} to answer on ${dockerSock(i)}`, 60_000, 100);
  };

  const launchBallast = async (i: number, envOverride?: NodeJS.ProcessEnv) => {
    const node = nodes[i];
    const fd = openSync(node.ballastLog, 'a');
    const env: NodeJS.ProcessEnv = { ...process.env, ...(opts.env ?? {}), ...(envOverride ?? {}) };
    for (const k of Object.keys(env)) if (env[k] === undefined) delete env[k];
    const argv = inNode(i, [process.execPath, ...NODE_FLAGS, BIN, 'daemon', '--root', node.root, '--socket', '/run/docker/plugins/ballast.sock',
      '--node', node.name, '--docker-host', `unix://${node.dockerSock}`, '--config', node.configFile, '--log-level', opts.logLevel ?? 'debug']);
    const c = spawn(argv[0], argv.slice(1), { stdio: ['ignore', fd, fd], env });
    closeSync(fd);
    c.on('error', () => { /* seen below */ });
    states[i].ballast = c;
    await waitFor(async () => {
      if (exitedProc(c)) throw new Error(`the Ballast daemon of node ${node.name} exited with ${c.exitCode ?? c.signalCode}: ${readFileSync(node.ballastLog, 'utf8').slice(-2000)}`);
      const h = await unixRequest(node.adminSock, 'GET', '/v1/health', undefined, { timeoutMs: 1000 }).catch(() => undefined);
      const p = await unixRequest(node.pluginSock, 'POST', '/Plugin.Activate', undefined, { timeoutMs: 1000 }).catch(() => undefined);
      return h?.status === 200 && p?.status === 200 && (h.body as { pid?: number }).pid === c.pid;
    }, `the Ballast daemon of node ${node.name} to serve its admin socket ${node.adminSock} and plugin socket ${node.pluginSock}`, 45_000, 50);
  };
  const ballastPid = (i: number) => (exitedProc(states[i].ballast) ? 0 : states[i].ballast!.pid!);
  const dockerdPid = (i: number) => (exitedProc(states[i].dockerd) ? 0 : states[i].dockerd!.pid!);

  for (let i = 0; i < n; i++) {
    const d = nd(i);
    const name = `n${i + 1}`;
    const root = join(d, 'root');
    const node: ClusterNode = {
      name, hostname: `sf-${name}`, addr: nodeAddr(i), netns: `${prefix}${name}`, veth: `${prefix}v${i + 1}`, dir: d, root,
      dockerSock: dockerSock(i), pluginSock: join(d, 'rundocker', 'plugins', 'ballast.sock'), adminSock: join(root, 'admin.sock'),
      configFile: join(d, 'ballast.json'), ballastLog: join(d, 'ballast.log'), dockerdLog: join(d, 'dockerd.log'),
      get holderPid() { return holderPid(i); },
      docker: (args, t) => docker(i, args, t),
      dockerOk: (args, t) => dockerOk(i, args, t),
      ballast: (args, t = 120_000) => nsExec(i, [process.execPath, BIN, ...args, '--root', root], t),
      async plugin(method, body, timeoutMs = 130_000) {
        const r = await unixRequest(node.pluginSock, 'POST', `/${method}`, body, { timeoutMs });
        return { status: r.status, body: (typeof r.body === 'object' && r.body ? r.body : JSON.parse(r.text || '{}')) as Record<string, unknown> };
      },
      pid: () => ballastPid(i),
      ballastRunning: () => ballastPid(i) !== 0,
      async kill9Ballast() { const p = ballastPid(i); if (p) { await killAndWait(p, 'SIGKILL', 10_000, `Ballast of ${name}`); await reaped(states[i].ballast); } },
      async stopBallast() { const p = ballastPid(i); if (p) { await stopPid(p, 40_000, `Ballast of ${name}`); await reaped(states[i].ballast); } },
      async restartBallast(env) { await node.stopBallast(); await launchBallast(i, env); },
      dockerdPid: () => dockerdPid(i),
      async kill9Dockerd() {
        const p = dockerdPid(i);
        if (!p) return;
        await killAndWait(p, 'SIGKILL', 10_000, `dockerd of ${name}`);
        await reaped(states[i].dockerd);
        // Its containerd too (as test/helpers/docker-engine.ts's kill9 does): a restarted dockerd cannot take
        // over the orphaned one and times out starting its own. The shims and containers stay.
        const ns = states[i].holderNs;
        for (const q of ns ? processesOf(ns) : []) if (/^containerd /.test(cmdline(q) + ' ')) await killAndWait(q, 'SIGKILL', 10_000, `containerd of ${name}`);
      },
      async restartDockerd() {
        if (dockerdPid(i)) throw new Error(`dockerd of ${name} is still running (pid ${dockerdPid(i)})`);
        // dockerd reuses the containerd named in its pidfile when kill(pid, 0) succeeds, which it does for a
        // zombie: the killed containerd was reparented to PID 1 (not this process), which may reap it late. The
        // new dockerd then says "containerd is still running", dials the dead socket and gives up after 60 s
        // ("timeout waiting for containerd to start"). So a pidfile naming a dead or zombie process goes first.
        for (const f of [join(d, 'rundocker', 'containerd', 'containerd.pid'), join(d, 'dockerd.pid')]) {
          let pid = 0;
          try { pid = Number(readFileSync(f, 'utf8').trim()); } catch { continue; }
          if (!pid || zombieOrGone(pid)) rmSync(f, { force: true });
        }
        await launchDockerd(i);
        // Activate the Ballast driver again (dockerd does on first use), so the node's Swarm description lists it.
        if (ballastPid(i)) await dockerOk(i, ['volume', 'ls'], 60_000);
      },
      cutLink: () => ip(['-n', hubNs, 'link', 'set', node.veth, 'down']),
      healLink: () => ip(['-n', hubNs, 'link', 'set', node.veth, 'up']),
      nsExec: (argv, t) => nsExec(i, argv, t),
      mountinfo: () => { try { return readFileSync(`/proc/${holderPid(i)}/mountinfo`, 'utf8'); } catch { return ''; } },
    };
    nodes.push(node);
  }

  // ---- teardown ----------------------------------------------------------------------------------
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    const problems: string[] = [];
    const step = async (what: string, fn: () => Promise<unknown>) => { try { await fn(); } catch (e) { problems.push(`${what}: ${(e as Error).message}`); } };
    const live = nodes.map((_, i) => i).filter((i) => dockerdPid(i));
    // 1. Services (from a manager), then every container of every node.
    if (live.includes(0)) {
      await step('docker service rm', async () => {
        const ids = (await docker(0, ['service', 'ls', '-q'], 30_000)).stdout.split('\n').map((s) => s.trim()).filter(Boolean);
        if (ids.length) await dockerOk(0, ['service', 'rm', ...ids], 60_000);
      });
    }
    await Promise.all(live.map((i) => step(`containers of n${i + 1}`, async () => {
      // Swarm takes its tasks' containers down by itself after service rm; then remove what is left.
      await waitFor(async () => (await docker(i, ['ps', '-q'], 20_000)).stdout.trim() === '', `the containers of n${i + 1} to stop`, 30_000, 300).catch(() => undefined);
      const ids = (await docker(i, ['ps', '-aq'], 20_000)).stdout.split('\n').map((s) => s.trim()).filter(Boolean);
      if (ids.length) await dockerOk(i, ['rm', '-f', ...ids], 60_000);
    })));
    // 2. Ballast volumes. In the cluster store they are shared, and a node-local one can only be removed on
    //    its home node (status.node): try that node first, then the others.
    const up = nodes.filter((_, i) => ballastPid(i));
    const seen = new Set<string>();
    for (const node of up) {
      await step(`ballast volume ls on ${node.name}`, async () => {
        const ls = await node.ballast(['volume', 'ls', '--json'], 60_000);
        if (ls.code !== 0) throw new Error(ls.stderr.trim());
        for (const v of JSON.parse(ls.stdout) as { name: string; status?: { node?: string } }[]) {
          if (seen.has(v.name)) continue;
          seen.add(v.name);
          const order = [...up.filter((x) => x.name === v.status?.node), ...up.filter((x) => x.name !== v.status?.node)];
          const errs: string[] = [];
          for (const x of order) {
            const r = await x.ballast(['volume', 'rm', v.name], 130_000);
            if (r.code === 0 || /does not exist|not found/i.test(r.stderr)) { errs.length = 0; break; }
            errs.push(`on ${x.name}: ${r.stderr.trim()}`);
          }
          if (errs.length) problems.push(`ballast volume rm ${v.name} failed ${errs.join('; ')}`);
        }
      });
    }
    // 3. What Ballast left mounted, attached or running: in each node's mount namespace (read through its
    //    holder while it lives), on the host, loop devices, FUSE clients (rbd-fuse, ceph-fuse).
    const ballastRoots = [...nodes.map((x) => x.root), sharedImageDir];
    await step('leftover check', async () => {
      problems.push(...await findAndCleanLeftovers(ballastRoots, nodes.map((_, i) => holderPid(i)).filter(Boolean)));
    });
    // Ceph (its volumes are gone and no client is left): by PID, while the daemons below stop. A start still
    // running (a bring-up that failed elsewhere) is waited for first; its own bounds end it.
    const cephStopped = step('ceph stop', async () => {
      if (cephUp) await cephUp.catch(() => undefined);
      if (ceph) await ceph.stop();
    });
    // 4. Daemons: Ballast, dockerd (which stops containerd), then whatever else lives in a node's mount namespace.
    await Promise.all(nodes.map(async (node, i) => {
      const p = ballastPid(i);
      if (p && !(await stopPid(p, 30_000, `Ballast of ${node.name}`))) problems.push(`the Ballast daemon of ${node.name} (pid ${p}) did not stop on SIGTERM within 30 s; killed`);
    }));
    await Promise.all(nodes.map(async (node, i) => {
      const p = dockerdPid(i);
      if (p && !(await stopPid(p, 30_000, `dockerd of ${node.name}`))) problems.push(`dockerd of ${node.name} (pid ${p}) did not stop on SIGTERM within 30 s; killed`);
    }));
    for (const [i, node] of nodes.entries()) {
      const ns = states[i].holderNs;
      const h = holderPid(i);
      if (!ns || !h) continue;
      // containerd exits shortly after dockerd; wait for it a little before killing what stays.
      await waitFor(() => processesOf(ns).every((p) => p === h), `the processes of ${node.name} to exit`, 10_000, 100).catch(() => undefined);
      const rest = processesOf(ns).filter((p) => p !== h);
      for (const p of rest) problems.push(`left running in ${node.name}: pid ${p}: ${cmdline(p).slice(0, 200)}`);
      for (const p of rest) { try { process.kill(p, 'SIGKILL'); } catch { /* gone */ } }
      await waitFor(() => rest.every(zombieOrGone), `the leftover processes of ${node.name} to die`, 10_000, 50).catch(() => undefined);
      await killAndWait(h, 'SIGKILL', 10_000, `the namespace holder of ${node.name}`);
    }
    // 5. etcd, followers first.
    for (let k = etcd.length - 1; k >= 0; k--) await step(`etcd ${etcd[k].name} stop`, () => stopEtcdMember(k));
    await cephStopped;
    // 6. Network namespaces (a node's veth goes with its netns, the bridge with the hub's).
    for (const ns of [...madeNetns].reverse()) await step(`ip netns del ${ns}`, () => ip(['netns', 'del', ns]));
    // 7. Check the host: netns, links, mounts, loop devices and processes that name the cluster's directory.
    await step('final check', async () => {
      const nsList = (await run(['ip', 'netns', 'list'], { timeoutMs: 10_000 })).stdout.split('\n').map((l) => l.split(' ')[0]).filter((x) => x.startsWith(prefix));
      for (const x of nsList) problems.push(`network namespace left: ${x}`);
      const links = (await run(['ip', '-o', 'link', 'show'], { timeoutMs: 10_000 })).stdout.split('\n').filter((l) => l.includes(prefix));
      for (const l of links) problems.push(`link left on the host: ${l.trim().slice(0, 120)}`);
      for (const m of mountsUnder([dir]).reverse()) { problems.push(`left mounted on the host: ${m.mountpoint}`); await run(['umount', '-l', m.mountpoint], { timeoutMs: 20_000 }); }
      for (const l of await loopsUnder([dir])) { problems.push(`loop device left: ${l.name} on ${l['back-file']}`); await run(['losetup', '-d', l.name], { timeoutMs: 20_000 }); }
      for (const p of procPids()) {
        if (p === process.pid || zombieOrGone(p)) continue;
        const c = cmdline(p);
        if (c.includes(dir) || c.includes(`/run/netns/${prefix}`)) { problems.push(`process left: pid ${p}: ${c.slice(0, 200)}`); try { process.kill(p, 'SIGKILL'); } catch { /* gone */ } }
      }
    });
    // Logs are kept when something was left, and always with BALLAST_KEEP_LOGS set (to read after a failed test).
    if (problems.length || process.env.BALLAST_KEEP_LOGS) {
      const keep = `${dir}-logs`;
      try {
        mkdirSync(keep, { recursive: true });
        for (const x of nodes) for (const f of [x.ballastLog, x.dockerdLog]) if (existsSync(f)) copyFileSync(f, join(keep, `${x.name}-${f.split('/').pop()}`));
        for (const e of etcd) if (existsSync(join(etcdDir, `${e.name}.log`))) copyFileSync(join(etcdDir, `${e.name}.log`), join(keep, `${e.name}.log`));
        if (problems.length) problems.push(`logs kept in ${keep}`); else log(`cluster: logs kept in ${keep}`);
      } catch { /* no logs */ }
    }
    rmSync(dir, { recursive: true, force: true });
    if (problems.length) throw new Error(`cluster ${prefix}: teardown found things left behind or that would not stop (cleaned up now):\n  ${problems.join('\n  ')}`);
  };

  const cluster: Cluster = {
    prefix, dir, nodes, etcdEndpoints, sharedImageDir, timings,
    get ceph() { return ceph; },
    hub: { netns: hubNs, bridge, addr: HUB_ADDR, exec: hubExec },
    async killEtcdMember(i) { const p = etcd[i].proc; if (p && etcdRunning(i)) { await killAndWait(p.pid!, 'SIGKILL', 5000, `etcd ${etcd[i].name}`); await reaped(p); } },
    async startEtcdMember(i) { if (etcdRunning(i)) return; launchEtcd(i); await waitEtcdListening(i); },
    async stopAllEtcd() { for (let k = etcd.length - 1; k >= 0; k--) await stopEtcdMember(k); },
    async startAllEtcd() {
      for (let k = 0; k < etcd.length; k++) if (!etcdRunning(k)) launchEtcd(k);
      await Promise.all(etcd.map((_, k) => waitEtcdListening(k)));
      await etcdHealthy();
    },
    etcdHealthy, etcdctl, stop,
  };

  // ---- bring-up ----------------------------------------------------------------------------------
  try {
    await phase('network', async () => {
      await ip(['netns', 'add', hubNs]); madeNetns.push(hubNs);
      await ip(['-n', hubNs, 'link', 'add', bridge, 'type', 'bridge']);
      await ip(['-n', hubNs, 'addr', 'add', `${HUB_ADDR}/24`, 'dev', bridge]);
      await ip(['-n', hubNs, 'link', 'set', bridge, 'up']);
      await ip(['-n', hubNs, 'link', 'set', 'lo', 'up']);
      for (let i = 0; i < n; i++) {
        const ns = nodes[i].netns;
        await ip(['netns', 'add', ns]); madeNetns.push(ns);
        await ip(['link', 'add', nodes[i].veth, 'netns', hubNs, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
        await ip(['-n', hubNs, 'link', 'set', nodes[i].veth, 'master', bridge, 'up']);
        await ip(['-n', ns, 'addr', 'add', `${nodes[i].addr}/24`, 'dev', 'eth0']);
        await ip(['-n', ns, 'link', 'set', 'eth0', 'up']);
        await ip(['-n', ns, 'link', 'set', 'lo', 'up']);
      }
    });
    const tarP = busyboxTar();
    tarP.catch(() => undefined);
    // Ceph in the hub netns, in parallel with everything after the network (it takes the longest).
    let cephFilesReady: () => void = () => undefined;
    const cephFilesP = new Promise<void>((resolve) => { cephFilesReady = resolve; });
    if (opts.ceph) {
      cephUp = phase('ceph', async () => {
        ceph = await startCeph(join(dir, 'ceph'), {
          addr: HUB_ADDR, publicNetwork: '10.99.0.0/24', netns: hubNs, rgw: false, osdSizeGiB: opts.cephOsdSizeGiB ?? 4,
          onFiles: (f) => { cephFiles = f; cephFilesReady(); },
        });
        log(`cluster: ceph in ${hubNs} on ${HUB_ADDR}: ${ceph.laps.join(', ')}`);
      });
      cephUp.catch(() => undefined);
    }
    const etcdUp = phase('etcd', async () => {
      for (let k = 0; k < etcd.length; k++) launchEtcd(k);
      await Promise.all(etcd.map((_, k) => waitEtcdListening(k)));
      await etcdHealthy();
    });
    const enginesUp = Promise.all(nodes.map((node, i) => phase(`dockerd ${node.name}`, async () => {
      await setupNamespaces(i);
      await launchDockerd(i);
      const imp = await run([DOCKER, '-H', `unix://${node.dockerSock}`, 'import', '-', 'busybox:local'], { input: await tarP, timeoutMs: 120_000 });
      if (imp.code !== 0) throw new Error(`node ${node.name}: docker import of busybox:local failed: ${imp.stderr.trim()}`);
    })));
    await Promise.all([etcdUp, enginesUp]);
    // Ballast first, and its driver activated in every dockerd before the Swarm forms: a node tells the
    // managers its plugins when it joins, and a plugin activated later shows in its description only with a
    // later update (~20 s here), during which the scheduler holds tasks with volume-driver=ballast pending.
    // The nodes' rbd and cephfs backends need only Ceph's client files to start; their first command waits
    // for (or fails on) a cluster still coming up, and the bring-up waits for Ceph at its end.
    if (cephUp) await Promise.race([cephFilesP, cephUp]);
    await phase('ballast', () => Promise.all(nodes.map(async (node, i) => {
      const cfg = (opts.config ?? defaultNodeConfig)({ index: i, name: node.name, root: node.root, sharedImageDir, etcdEndpoints, ceph: cephFiles });
      writeFileSync(node.configFile, JSON.stringify(cfg, null, 2));
      await launchBallast(i);
      // dockerd activates a legacy plugin on its first use; Swarm sees its driver only after that.
      await dockerOk(i, ['volume', 'ls'], 60_000);
    })));
    if (opts.swarm !== false) await phase('swarm', async () => {
      await dockerOk(0, ['swarm', 'init', '--advertise-addr', nodes[0].addr, '--listen-addr', `${nodes[0].addr}:2377`, ...(opts.swarmInitArgs ?? [])], 60_000);
      const role = opts.managers === 'all' ? 'manager' : 'worker';
      const tok = await dockerOk(0, ['swarm', 'join-token', '-q', role], 30_000);
      // Managers join one at a time (each join changes the raft membership); workers in parallel.
      const join = (i: number) => dockerOk(i, ['swarm', 'join', '--token', tok, '--advertise-addr', nodes[i].addr, '--listen-addr', `${nodes[i].addr}:2377`, `${nodes[0].addr}:2377`], 90_000);
      if (role === 'manager') { for (let i = 1; i < n; i++) await join(i); } else await Promise.all(nodes.slice(1).map((_, k) => join(k + 1)));
      await waitFor(async () => {
        const out = await dockerOk(0, ['node', 'ls', '--format', '{{.Hostname}} {{.Status}}'], 20_000);
        const ready = out.split('\n').filter((l) => / Ready$/.test(l.trim())).length;
        return ready === n;
      }, `docker node ls on n1 to show ${n} nodes Ready`, 60_000, 250);
    });
    // The Swarm scheduler places a task with volume-driver=ballast only on nodes whose description lists the driver.
    if (opts.swarm !== false) await phase('swarm sees the plugin', () => waitFor(async () => {
      const ids = (await dockerOk(0, ['node', 'ls', '-q'], 20_000)).split('\n').filter(Boolean);
      const out = await dockerOk(0, ['node', 'inspect', '--format', '{{.Description.Hostname}} {{json .Description.Engine.Plugins}}', ...ids], 20_000);
      const lines = out.split('\n').filter(Boolean);
      return lines.length === n && lines.every((l) => l.includes('{"Type":"Volume","Name":"ballast"}'));
    }, `every Swarm node's description to list the ballast volume driver (docker node inspect on n1)`, 60_000, 250));
    if (cephUp) await cephUp;
  } catch (e) {
    await stop().catch((te: Error) => log(`cluster: teardown after a failed start: ${te.message}`));
    throw e;
  }
  timings.total = Date.now() - T0;
  log(`cluster ${prefix}: up in ${timings.total} ms (${dir})`);
  return cluster;
}

export { sleep };
