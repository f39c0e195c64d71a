/**
 * Ballast failover benchmark (issue 8), in one run on a real 3-node cluster (test/helpers/cluster.ts:
 * network namespaces, a 3-member etcd, a one-node Ceph, a dockerd and a Ballast daemon per node, a real
 * Swarm with a 1 s dispatcher heartbeat):
 * - drain: a one-replica service on a worker, `docker node update --availability drain` to the new
 *   task's first fsync'd write on the other worker, with Docker's `local` driver (its data does not
 *   follow: the new node gets an empty volume) and with a Ballast rbd volume (the data follows),
 *   alternating, `--rounds` each; target: Ballast's median at most 1 s more than the local driver's.
 * - crash: the worker's Ballast and dockerd SIGKILLed under the running writer, to the new task's first
 *   fsync'd write elsewhere (lease expiry, Swarm's detection, the OSD blocklist fence, the mount); target:
 *   at most the lease TTL + 5 s.
 * The workload (test/helpers/writer-workload.ts) exits on SIGTERM, so Swarm's stop grace does not count.
 *
 *   npm run bench:failover [-- --out FILE] [-- --rounds N]
 *
 * One JSON object goes to stdout and to --out (default ./bench-failover.json); the table to stderr.
 * Exits non-zero only on an error, never on a missed target. The cluster is torn down at the end.
 */
import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { startCluster, type Cluster, type ClusterNode } from '../test/helpers/cluster.js';
import { sleep, waitFor } from '../test/helpers/proc.js';
import { WRITER_SCRIPT, readWriterLog, runningTaskNode } from '../test/helpers/writer-workload.js';
import { figure, type Figure } from './lib/report.js';
import { writeResult } from './lib/result.js';
import { median } from './lib/stats.js';
import { loadAvg } from './lib/proc-status.js';

const TTL = 10;

function parseArgs(argv: string[]): { out: string; rounds: number } {
  let out = 'bench-failover.json';
  let rounds = 3;
  for (let i = 0; i < argv.length; i++) {
    const [flag, inline] = argv[i].includes('=') ? argv[i].split('=', 2) : [argv[i], undefined];
    const val = () => inline ?? argv[++i];
    if (flag === '--out') out = val();
    else if (flag === '--rounds') { rounds = Number(val()); if (!Number.isInteger(rounds) || rounds < 1 || rounds > 20) throw new Error('--rounds needs an integer between 1 and 20'); }
    else if (flag === '-h' || flag === '--help') { process.stderr.write('usage: node dist/bench/failover.js [--out FILE] [--rounds N]\n'); process.exit(0); }
    else throw new Error(`unknown argument ${argv[i]}`);
  }
  return { out: resolve(out), rounds };
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const t0 = performance.now();
  const log = (s: string) => process.stderr.write(`[${((performance.now() - t0) / 1000).toFixed(1).padStart(6)}s] ${s}\n`);
  const loadStart = loadAvg();
  const c: Cluster = await startCluster({ ceph: true, swarmInitArgs: ['--dispatcher-heartbeat', '1s'], log });
  const figures: Figure[] = [];
  const errors: string[] = [];
  const raw: Record<string, number[]> = { drainLocal: [], drainBallast: [], crash: [] };
  try {
    const mgr = c.nodes[0];
    const byHost = (h: string): ClusterNode => c.nodes.find((n) => n.hostname === h)!;
    const runningOn = (svc: string) => runningTaskNode(mgr, svc);
    /** Starts a one-replica writer service on a worker; resolves with its log dir and node once it writes. */
    const service = async (name: string, mount: string): Promise<{ logDir: string; host: string }> => {
      const logDir = join(c.dir, `bench-${name}`);
      mkdirSync(logDir, { recursive: true });
      await mgr.dockerOk(['service', 'create', '--detach', '--name', name, '--replicas', '1', '--constraint', 'node.role==worker',
        '--hostname', '{{.Node.Hostname}}', '--stop-grace-period', '5s', '--restart-delay', '1s', '--mount', mount,
        '--mount', `type=bind,source=${logDir},target=/log`, 'busybox:local', 'sh', '-c', WRITER_SCRIPT], 60_000);
      const host = await waitFor(async () => { const h = await runningOn(name); return h && readWriterLog(logDir, h).oks.length >= 3 ? h : undefined; }, `${name} to write`, 120_000, 100);
      return { logDir, host };
    };
    /** Milliseconds from now (after `act`) until the service's task writes on another node. */
    const moveTime = async (name: string, logDir: string, from: string, act: () => Promise<unknown>, timeoutMs: number): Promise<{ ms: number; to: string }> => {
      const start = performance.now();
      await act();
      const to = await waitFor(async () => { const h = await runningOn(name); return h && h !== from && readWriterLog(logDir, h).oks.length > 0 ? h : undefined; }, `${name} to write elsewhere than ${from}`, timeoutMs, 50);
      return { ms: Math.round(performance.now() - start), to };
    };

    for (let r = 0; r < args.rounds; r++) {
      for (const kind of (r % 2 ? ['ballast', 'local'] : ['local', 'ballast']) as ('local' | 'ballast')[]) {
        const name = `bd-${kind}-${r}`;
        let mount = `type=volume,source=${name},target=/data,volume-nocopy=true`;
        if (kind === 'ballast') {
          await mgr.dockerOk(['volume', 'create', '-d', 'ballast', '-o', 'backend=rbd', '-o', 'size=128M', name]);
          mount += ',volume-driver=ballast';
        }
        const { logDir, host } = await service(name, mount);
        const m = await moveTime(name, logDir, host, () => mgr.dockerOk(['node', 'update', '--availability', 'drain', host], 30_000), 120_000);
        raw[kind === 'local' ? 'drainLocal' : 'drainBallast'].push(m.ms);
        log(`drain round ${r + 1} ${kind}: ${host} -> ${m.to} in ${m.ms} ms`);
        await mgr.dockerOk(['node', 'update', '--availability', 'active', host], 30_000);
        await mgr.dockerOk(['service', 'rm', name], 60_000);
        await sleep(3000); // the old task's containers and mounts go
        for (const n of c.nodes) await n.docker(['volume', 'rm', name], 60_000);
      }
    }

    // Crash: one round (each costs a lease TTL and a dockerd restart).
    const name = 'bc-crash';
    await mgr.dockerOk(['volume', 'create', '-d', 'ballast', '-o', 'backend=rbd', '-o', 'size=128M', name]);
    const { logDir, host } = await service(name, `type=volume,source=${name},target=/data,volume-driver=ballast,volume-nocopy=true`);
    const node = byHost(host);
    const m = await moveTime(name, logDir, host, async () => { await node.kill9Ballast(); await node.kill9Dockerd(); }, (TTL + 90) * 1000);
    raw.crash.push(m.ms);
    log(`crash of ${host}: task writing on ${m.to} after ${m.ms} ms`);
    await node.restartBallast();
    await node.restartDockerd();
    await mgr.dockerOk(['service', 'rm', name], 60_000);
    await waitFor(async () => c.nodes.every((n) => !n.mountinfo().includes(`/${name} `)) || undefined, `every node to let go of ${name}`, 90_000, 500);
    await mgr.dockerOk(['volume', 'rm', name], 120_000);

    const dl = median(raw.drainLocal);
    const db = median(raw.drainBallast);
    figures.push(figure('drain', 'docker local driver (data does not follow), median', dl, 'ms'));
    figures.push(figure('drain', 'ballast rbd (data follows), median', db, 'ms'));
    figures.push(figure('drain', 'ballast minus local driver', db - dl, 'ms', { op: '<=', value: 1000 }));
    figures.push(figure('crash', `kill to the new task's first fsync'd write (lease TTL ${TTL} s)`, raw.crash[0], 'ms', { op: '<=', value: (TTL + 5) * 1000 }));
  } catch (e) {
    errors.push((e as Error).stack ?? String(e));
    log(`FAILED: ${(e as Error).message}`);
  } finally {
    await c.stop().catch((e: Error) => { errors.push(`teardown: ${e.message}`); });
  }
  writeResult({ benchmark: 'ballast-failover', title: 'Ballast failover benchmark', out: args.out, t0, loadStart, figures, errors, extra: { raw } });
}

main().catch((e) => { process.stderr.write(`bench:failover: ${(e as Error).stack ?? String(e)}\n`); process.exit(1); });
