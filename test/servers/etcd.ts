/**
 * A private etcd cluster on 127.0.0.1 for the etcd store's tests: one or three members, each our
 * child process, stopped by its PID (never by name). Adapted from shared/recipes/etcd-up.sh.
 * Ports: `basePort + 1000*n` for member n's client URL and `+1` for its peer URL (basePort 12379 by
 * default gives 13379/13380, 14379/14380, 15379/15380), checked free before start.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, openSync, closeSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { run, sleep, waitFor } from '../helpers/proc.js';
import { gone, killPids, listening } from './common.js';

const ETCD = '/usr/bin/etcd';
const ETCDCTL = '/usr/bin/etcdctl';

export interface EtcdMember {
  readonly name: string;
  readonly clientUrl: string;
  readonly peerUrl: string;
  pid(): number | undefined;
  running(): boolean;
}

export interface EtcdCluster {
  readonly dir: string;
  readonly members: readonly EtcdMember[];
  /** Client URLs of every member. */
  readonly endpoints: readonly string[];
  /** SIGKILLs member i (0-based), as a crash would. */
  kill(i: number): Promise<void>;
  /** Stops member i: SIGTERM, up to 10 s (a leader whose peers are gone is slow), then SIGKILL. */
  stopMember(i: number): Promise<void>;
  /** Starts member i again on its data directory (it rejoins the cluster). */
  startMember(i: number): Promise<void>;
  /** Waits until the cluster has a leader and answers a quorum read. */
  healthy(timeoutMs?: number): Promise<void>;
  /** Index of the member that is the leader now (from `etcdctl endpoint status`). */
  leader(): Promise<number>;
  stop(): Promise<void>;
}

/** Why etcd cannot be started here, or undefined. */
export function etcdSkipReason(): string | undefined {
  if (!existsSync(ETCD)) return process.getuid?.() === 0
    ? 'etcd is not installed (bash scripts/install-test-deps.sh installs etcd-server and etcd-client)'
    : 'etcd is not installed and this is not root (as root, scripts/install-test-deps.sh installs etcd-server)';
  return undefined;
}

export async function startEtcd(opts: { members?: 1 | 3; basePort?: number; dir?: string } = {}): Promise<EtcdCluster> {
  const n = opts.members ?? 3;
  const base = opts.basePort ?? 12379;
  const dir = opts.dir ?? mkdtempSync('/var/tmp/ballast-etcd-');
  const token = `ballast-test-${process.pid}-${Date.now()}`;
  const defs = Array.from({ length: n }, (_, i) => {
    const port = base + 1000 * (i + 1);
    return { name: `e${i + 1}`, clientPort: port, clientUrl: `http://127.0.0.1:${port}`, peerPort: port + 1, peerUrl: `http://127.0.0.1:${port + 1}` };
  });
  for (const d of defs) for (const p of [d.clientPort, d.peerPort]) {
    if (listening(p)) throw new Error(`port ${p} on 127.0.0.1 is taken; pass another basePort to startEtcd`);
  }
  const initialCluster = defs.map((d) => `${d.name}=${d.peerUrl}`).join(',');
  const procs: (ChildProcess | undefined)[] = defs.map(() => undefined);
  const started: boolean[] = defs.map(() => false);

  const launch = (i: number) => {
    const d = defs[i];
    const log = openSync(join(dir, `${d.name}.log`), 'a');
    const p = spawn(ETCD, [
      '--name', d.name, '--data-dir', join(dir, d.name),
      '--listen-client-urls', d.clientUrl, '--advertise-client-urls', d.clientUrl,
      '--listen-peer-urls', d.peerUrl, '--initial-advertise-peer-urls', d.peerUrl,
      '--initial-cluster', initialCluster, '--initial-cluster-token', token,
      '--initial-cluster-state', started[i] ? 'existing' : 'new',
      '--heartbeat-interval', '100', '--election-timeout', '1000',
    ], { stdio: ['ignore', log, log], detached: false });
    closeSync(log);
    p.on('error', () => { /* seen as not running */ });
    started[i] = true;
    procs[i] = p;
  };
  const pidOf = (i: number) => procs[i]?.pid;
  const isRunning = (i: number) => { const p = pidOf(i); return p !== undefined && procs[i]!.exitCode === null && !gone(p); };

  const members: EtcdMember[] = defs.map((d, i) => ({ name: d.name, clientUrl: d.clientUrl, peerUrl: d.peerUrl, pid: () => pidOf(i), running: () => isRunning(i) }));
  const endpoints = defs.map((d) => d.clientUrl);

  const healthy = async (timeoutMs = 30_000) => {
    const up = defs.filter((_, i) => isRunning(i)).map((d) => d.clientUrl);
    await waitFor(async () => {
      const r = await run([ETCDCTL, `--endpoints=${up.join(',')}`, '--command-timeout=2s', 'endpoint', 'health'], { timeoutMs: 5000, env: { ...process.env, ETCDCTL_API: '3' } });
      return r.code === 0;
    }, `etcd at ${up.join(', ')} to be healthy (logs in ${dir})`, timeoutMs, 200);
  };
  const stopMember = async (i: number) => {
    const p = pidOf(i);
    if (p !== undefined && !gone(p)) await killPids([p], 'SIGTERM', 10_000);
    await waitFor(() => !listening(defs[i].clientPort), `etcd ${defs[i].name} to release its port`, 10_000, 50).catch(() => undefined);
  };
  const cluster: EtcdCluster = {
    dir, members, endpoints,
    async kill(i) {
      const p = pidOf(i);
      if (p !== undefined && !gone(p)) { process.kill(p, 'SIGKILL'); await waitFor(() => gone(p), `etcd ${defs[i].name} to die`, 5000, 20); }
    },
    stopMember,
    async startMember(i) {
      if (isRunning(i)) return;
      launch(i);
      await waitFor(() => listening(defs[i].clientPort), `etcd ${defs[i].name} to listen on ${defs[i].clientPort} (log ${join(dir, defs[i].name + '.log')})`, 20_000, 50);
    },
    healthy,
    async leader() {
      const up = defs.filter((_, i) => isRunning(i)).map((d) => d.clientUrl);
      const r = await run([ETCDCTL, `--endpoints=${up.join(',')}`, '--command-timeout=2s', 'endpoint', 'status', '--write-out=simple'], { timeoutMs: 5000, env: { ...process.env, ETCDCTL_API: '3' } });
      // One line per endpoint: "URL, member ID, version, db size, is leader, is learner, ...".
      for (const line of r.stdout.split('\n')) {
        const f = line.split(',').map((x) => x.trim());
        if (f[4] === 'true') { const i = defs.findIndex((d) => d.clientUrl === f[0]); if (i >= 0) return i; }
      }
      throw new Error(`no leader in etcdctl endpoint status: ${r.stdout.trim()} ${r.stderr.trim()}`);
    },
    async stop() {
      // Followers first, so that the leader is not left waiting on peers for long; each by its PID.
      for (let i = n - 1; i >= 0; i--) await stopMember(i);
      rmSync(dir, { recursive: true, force: true });
    },
  };
  try {
    for (let i = 0; i < n; i++) launch(i);
    await healthy();
  } catch (e) {
    await cluster.stop().catch(() => undefined);
    throw e;
  }
  await sleep(50);
  return cluster;
}
