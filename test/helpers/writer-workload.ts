/**
 * The fsync'ing writer the failover tests and benchmarks run in a container: it appends `<id> <n>` to
 * /data/counter (`id`: random, one per start), fsyncs it (busybox `sync FILE`), and logs `ok <n> <unix
 * time>` or `err <n> ...` to /log/<hostname>-<id>.log, a bind mount, so that the caller reads what each writer saw
 * acknowledged. It exits at once on SIGTERM (else Swarm's stop grace would dominate a drain).
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ClusterNode } from './cluster.js';

export const WRITER_SCRIPT = [
  "trap 'exit 0' TERM INT",
  // One id per start of the writer (a task moved to a node it ran on before starts a new one).
  "H=$(hostname); ID=$(od -An -N4 -tx4 /dev/urandom | tr -d ' '); L=/log/$H-$ID.log; n=0",
  'while :; do n=$((n+1)); if echo "$ID $n" >> /data/counter && sync /data/counter; then echo "ok $n $(date +%s)" >> $L; else echo "err $n $(date +%s)" >> $L; fi; sleep 0.1; done',
].join('\n');

/** What one writer (one start of it) saw: the counters whose fsync succeeded, and those that failed. */
export interface WriterLog { readonly id: string; readonly oks: number[]; readonly errs: number[] }

/** Reads the log of the latest writer that ran with hostname `host` under `logDir` (empty when none did). */
export function readWriterLog(logDir: string, host: string): WriterLog {
  let best: { id: string; text: string; started: number } | undefined;
  for (const f of existsSync(logDir) ? readdirSync(logDir) : []) {
    const m = new RegExp(`^${host.replace(/[^a-zA-Z0-9-]/g, '')}-([0-9a-f]+)\\.log$`).exec(f);
    if (!m) continue;
    const text = readFileSync(join(logDir, f), 'utf8');
    const started = Number(text.split('\n')[0]?.split(' ')[2] ?? 0);
    if (!best || started >= best.started) best = { id: m[1], text, started };
  }
  const out = { id: best?.id ?? '', oks: [] as number[], errs: [] as number[] };
  for (const line of (best?.text ?? '').split('\n')) {
    const [k, n] = line.split(' ');
    if (k === 'ok') out.oks.push(Number(n)); else if (k === 'err') out.errs.push(Number(n));
  }
  return out;
}

/** The hostname of the node where Swarm service `svc`'s task is running, as the manager `mgr` sees it. */
export async function runningTaskNode(mgr: ClusterNode, svc: string): Promise<string | undefined> {
  const r = await mgr.docker(['service', 'ps', svc, '--filter', 'desired-state=running', '--format', '{{.Node}} {{.CurrentState}}'], 20_000);
  return r.stdout.split('\n').find((l) => l.includes('Running'))?.split(' ')[0];
}
