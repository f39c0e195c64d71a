/**
 * Ballast benchmark, in one run: plugin API latency with 10,000 volumes and the hot path (Get storm
 * against a bare node:http server, Mount/Unmount without a kernel mount), block create + first mount
 * (thick and thin, 1 GiB and 10 GiB, ext4 and xfs) against the same result made by hand, `docker run
 * -v` against Docker's local driver, daemon RSS, and restart with 1,000 volumes against a real dockerd.
 *
 *   npm run bench [-- --out FILE] [-- --sections api,block,docker,restart]
 *
 * One JSON object goes to stdout and to --out (default ./bench-results.json); progress and the
 * table go to stderr. Sections that need root or dockerd are skipped with the reason.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { resolve } from 'node:path';
import { Cleanups } from './lib/cleanup.js';
import type { Figure } from './lib/report.js';
import { writeResult } from './lib/result.js';
import { loadAvg } from './lib/proc-status.js';
import type { BenchContext, SectionResult } from './lib/context.js';
import { apiSection } from './sections/api.js';
import { restartSection } from './sections/restart.js';
import { blockSection } from './sections/block.js';
import { dockerSection } from './sections/docker.js';

const ALL = ['api', 'block', 'docker', 'restart'] as const;
type SectionName = (typeof ALL)[number];

function parseArgs(argv: string[]): { out: string; sections: SectionName[] } {
  let out = 'bench-results.json';
  let sections: SectionName[] = [...ALL];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => { const v = argv[++i]; if (v === undefined) throw new Error(`${a} needs a value`); return v; };
    if (a === '--out') out = val();
    else if (a.startsWith('--out=')) out = a.slice(6);
    else if (a === '--sections' || a.startsWith('--sections=')) {
      const v = a.includes('=') ? a.slice(a.indexOf('=') + 1) : val();
      sections = v.split(',').map((s) => s.trim()).filter(Boolean) as SectionName[];
      for (const s of sections) if (!ALL.includes(s)) throw new Error(`unknown section ${s}; choose from ${ALL.join(', ')}`);
    } else if (a === '-h' || a === '--help') {
      process.stderr.write('usage: node dist/bench/run.js [--out FILE] [--sections api,block,docker,restart]\n');
      process.exit(0);
    } else throw new Error(`unknown argument ${a}`);
  }
  return { out: resolve(out), sections };
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const t0 = performance.now();
  const log = (s: string) => process.stderr.write(`[${((performance.now() - t0) / 1000).toFixed(1).padStart(6)}s] ${s}\n`);
  const tmpBase = mkdtempSync('/var/tmp/ballast-bench-');
  const loadStart = loadAvg();

  let current = new Cleanups();
  // After a signal the handler cleans up and exits; the main flow must not go on meanwhile.
  const halt = () => new Promise<never>(() => {});
  let interrupted = false;
  const onSignal = (sig: NodeJS.Signals) => {
    if (interrupted) return;
    interrupted = true;
    log(`${sig}: cleaning up`);
    void current.runAll(log).finally(() => { rmSync(tmpBase, { recursive: true, force: true }); process.exit(130); });
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const figures: Figure[] = [];
  const sections: Record<string, unknown> = {};
  const skipped: { section: string; reason: string }[] = [];
  const errors: { section: string; error: string }[] = [];

  const runSection = async (label: string, fn: (ctx: BenchContext) => Promise<Record<string, SectionResult>>) => {
    current = new Cleanups();
    const ctx: BenchContext = { cleanups: current, log, tmpBase };
    const s0 = performance.now();
    log(`section ${label}`);
    try {
      const results = await fn(ctx);
      for (const [name, r] of Object.entries(results)) {
        if (r.skipped) { skipped.push({ section: name, reason: r.skipped }); log(`  ${name} skipped: ${r.skipped}`); continue; }
        figures.push(...r.figures);
        sections[name] = r.details;
      }
    } catch (e) {
      if (interrupted) return halt();
      const msg = (e as Error).stack ?? String(e);
      errors.push({ section: label, error: (e as Error).message });
      log(`  section ${label} FAILED: ${msg}`);
    } finally {
      await current.runAll(log);
      if (interrupted) await halt();
      log(`  section ${label} took ${((performance.now() - s0) / 1000).toFixed(1)} s`);
    }
  };

  try {
    // Block first: the direct-tools side spawns its commands from this process, and a fork is
    // cheapest before the API section has grown this process's heap.
    if (args.sections.includes('block')) await runSection('block', async (ctx) => ({ block: await blockSection(ctx) }));
    if (args.sections.includes('api')) await runSection('api + rss', async (ctx) => ({ ...(await apiSection(ctx)) }));
    if (args.sections.includes('restart')) await runSection('restart', async (ctx) => ({ restart: await restartSection(ctx) }));
    if (args.sections.includes('docker')) await runSection('docker', async (ctx) => ({ docker: await dockerSection(ctx) }));
  } finally {
    rmSync(tmpBase, { recursive: true, force: true });
  }

  // Order the figures as in the brief: api, block, docker, rss.
  const order = ['api', 'block', 'docker', 'rss', 'restart'];
  figures.sort((a, b) => order.indexOf(a.section) - order.indexOf(b.section));
  writeResult({ benchmark: 'ballast', title: 'Ballast benchmark', out: args.out, t0, loadStart, figures, skipped, errors, extra: { sections } });
}

main().catch((e) => { process.stderr.write(`bench: ${(e as Error).stack ?? String(e)}\n`); process.exit(1); });
