/**
 * Ballast cluster store benchmark (issue 8), in one run: a real 3-member etcd on loopback, and two
 * daemons side by side, one on the embedded SQLite store and one on the etcd store, each filled with
 * 10,000 volumes. Measured with requests alternating between the two daemons:
 * - Get and List p50/p99 on each daemon's plugin socket (new connection per request and keep-alive);
 *   targets: the etcd p99 within 1.2x of the SQLite p99.
 * - Mount (first reference: attach in etcd, loop, mount) and Unmount (last reference: unmount, detach,
 *   release) of a 64M shared block volume, medians; Mount/Unmount of a local volume (no kernel mount).
 *   Ratios printed, no target.
 *
 *   npm run bench:cluster [-- --out FILE] [-- --volumes N] [-- --etcd-base-port P]
 *
 * One JSON object goes to stdout and to --out (default ./bench-cluster.json); progress and the table go
 * to stderr. Exits non-zero only on an error, never on a missed target. Everything it starts (etcd
 * members, daemons, mounts, loop devices, temp dirs) is undone on exit and on Ctrl-C.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { resolve } from 'node:path';
import { Cleanups, loopsUnder, mountsUnder } from './lib/cleanup.js';
import type { Figure } from './lib/report.js';
import { writeResult } from './lib/result.js';
import { loadAvg } from './lib/proc-status.js';
import type { BenchContext } from './lib/context.js';
import { CLUSTER_DEFAULTS, clusterSection, type ClusterOptions } from './sections/cluster.js';
import { listening } from '../test/servers/common.js';

function parseArgs(argv: string[]): { out: string; opts: ClusterOptions } {
  let out = 'bench-cluster.json';
  const opts: ClusterOptions = { ...CLUSTER_DEFAULTS };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const [flag, inline] = arg.includes('=') ? [arg.slice(0, arg.indexOf('=')), arg.slice(arg.indexOf('=') + 1)] : [arg, undefined];
    const val = () => { const v = inline ?? argv[++i]; if (v === undefined) throw new Error(`${flag} needs a value`); return v; };
    const num = (min: number, max = Number.MAX_SAFE_INTEGER) => { const n = Number(val()); if (!Number.isInteger(n) || n < min || n > max) throw new Error(`${flag} needs an integer between ${min} and ${max}`); return n; };
    if (flag === '--out') out = val();
    else if (flag === '--volumes') opts.volumes = num(100);
    else if (flag === '--gets') opts.gets = num(100);
    else if (flag === '--lists') opts.lists = num(10);
    else if (flag === '--attach-rounds') opts.attachRounds = num(3);
    else if (flag === '--etcd-base-port') opts.etcdBasePort = num(1024, 62534);
    else if (flag === '-h' || flag === '--help') {
      process.stderr.write('usage: node dist/bench/cluster.js [--out FILE] [--volumes N] [--gets N] [--lists N] [--attach-rounds N] [--etcd-base-port P]\n');
      process.exit(0);
    } else throw new Error(`unknown argument ${arg}`);
  }
  return { out: resolve(out), opts };
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const t0 = performance.now();
  const log = (s: string) => process.stderr.write(`[${((performance.now() - t0) / 1000).toFixed(1).padStart(6)}s] ${s}\n`);
  const tmpBase = mkdtempSync('/var/tmp/ballast-bench-cluster-');
  const loadStart = loadAvg();
  const cleanups = new Cleanups();
  const ctx: BenchContext = { cleanups, log, tmpBase };

  let interrupted = false;
  const onSignal = (sig: NodeJS.Signals) => {
    if (interrupted) return;
    interrupted = true;
    log(`${sig}: cleaning up`);
    void cleanups.runAll(log).finally(() => { rmSync(tmpBase, { recursive: true, force: true }); process.exit(130); });
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const figures: Figure[] = [];
  const sections: Record<string, unknown> = {};
  const skipped: { section: string; reason: string }[] = [];
  const errors: { section: string; error: string }[] = [];
  log('section cluster (etcd vs sqlite)');
  try {
    const results = await clusterSection(ctx, args.opts);
    for (const [name, r] of Object.entries(results)) {
      if (r.skipped) { skipped.push({ section: name, reason: r.skipped }); log(`  ${name} skipped: ${r.skipped}`); continue; }
      figures.push(...r.figures);
      sections[name] = r.details;
    }
  } catch (e) {
    if (interrupted) await new Promise<never>(() => {});
    errors.push({ section: 'cluster', error: (e as Error).message });
    log(`  section cluster FAILED: ${(e as Error).stack ?? String(e)}`);
  } finally {
    await cleanups.runAll(log);
    if (interrupted) await new Promise<never>(() => {});
  }

  // Leftovers: nothing this run made may outlive it.
  const leftovers: string[] = [
    ...mountsUnder(tmpBase).map((m) => `mount ${m}`),
    ...(await loopsUnder(tmpBase)).map((d) => `loop device ${d}`),
    ...[0, 1, 2].map((n) => args.opts.etcdBasePort + 1000 * (n + 1)).filter((p) => listening(p)).map((p) => `etcd still listening on 127.0.0.1:${p}`),
  ];
  if (!leftovers.length) rmSync(tmpBase, { recursive: true, force: true });
  for (const l of leftovers) errors.push({ section: 'cleanup', error: `left behind: ${l}` });
  log(leftovers.length ? `cleanup: LEFT BEHIND ${leftovers.join('; ')}` : 'cleanup: no mounts, loop devices, etcd members or temp dirs left');

  writeResult({ benchmark: 'ballast-cluster', title: 'Ballast cluster benchmark', out: args.out, t0, loadStart, figures, skipped, errors, extra: { sections } });
}

main().catch((e) => { process.stderr.write(`bench:cluster: ${(e as Error).stack ?? String(e)}\n`); process.exit(1); });
