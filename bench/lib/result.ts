import { writeFileSync } from 'node:fs';
import { cpus, release, totalmem } from 'node:os';
import { table, type Figure } from './report.js';
import { loadAvg } from './proc-status.js';

/** An error of a benchmark run: a sentence, or one section's failure. */
export type BenchError = string | { readonly section: string; readonly error: string };

/**
 * The end of every benchmark: one JSON object (host, summary of targets, figures, whatever else the
 * run keeps) to stdout and to `out`, the table and the errors to stderr; exit code 1 on an error,
 * never on a missed target.
 */
export function writeResult(r: {
  readonly benchmark: string;
  readonly title: string;
  readonly out: string;
  readonly t0: number;
  readonly loadStart: number;
  readonly figures: readonly Figure[];
  readonly skipped?: readonly { section: string; reason: string }[];
  readonly errors: readonly BenchError[];
  readonly extra?: Readonly<Record<string, unknown>>;
}): void {
  const withTarget = r.figures.filter((f) => f.target);
  const loadEnd = loadAvg();
  const result = {
    benchmark: r.benchmark,
    startedAt: new Date(Date.now() - (performance.now() - r.t0)).toISOString(),
    durationSec: Math.round((performance.now() - r.t0) / 100) / 10,
    host: { loadAvg1m: { start: r.loadStart, end: loadEnd }, node: process.version, kernel: release(), cpus: cpus().length, cpuModel: cpus()[0]?.model, memGB: Math.round(totalmem() / 1e8) / 10, root: process.getuid?.() === 0 },
    summary: { targets: withTarget.length, passed: withTarget.filter((f) => f.pass).length, missed: withTarget.filter((f) => f.pass === false).map((f) => `${f.section}: ${f.name}`) },
    figures: r.figures, ...(r.skipped ? { skipped: r.skipped } : {}), ...(r.extra ?? {}), errors: r.errors,
  };
  const json = JSON.stringify(result, null, 2);
  writeFileSync(r.out, `${json}\n`);
  process.stdout.write(`${json}\n`);
  process.stderr.write(`\n${r.title} (${result.durationSec} s, ${result.host.cpus} CPUs, node ${process.version}, 1-min load average ${r.loadStart} at start, ${loadEnd} at end)\n\n${table(r.figures, r.skipped ?? [])}\n`);
  for (const e of r.errors) process.stderr.write(typeof e === 'string' ? `\nerror: ${e}\n` : `\nsection ${e.section} failed: ${e.error}\n`);
  process.stderr.write(`\n${result.summary.passed}/${result.summary.targets} targets met; results written to ${r.out}\n`);
  if (r.errors.length) process.exitCode = 1;
}
