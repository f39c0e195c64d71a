/**
 * The fsync'ing writer the failover tests and benchmarks run in a container: it appends `<hostname> <n>`
 * to /data/counter, fsyncs it (busybox `sync FILE`), and logs `ok <n> <unix time>` or `err <n> ...` to
 * /log/<hostname>.log, a node-local bind mount, so that the caller reads what each writer saw
 * acknowledged. It exits at once on SIGTERM (else Swarm's stop grace would dominate a drain).
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export const WRITER_SCRIPT = [
  "trap 'exit 0' TERM INT",
  'H=$(hostname); L=/log/$H.log; n=0',
  'while :; do n=$((n+1)); if echo "$H $n" >> /data/counter && sync /data/counter; then echo "ok $n $(date +%s)" >> $L; else echo "err $n $(date +%s)" >> $L; fi; sleep 0.1; done',
].join('\n');

/** What one writer saw: the counters whose fsync succeeded, and those that failed. */
export interface WriterLog { readonly oks: number[]; readonly errs: number[] }

/** Reads the log of the writer that ran with hostname `host` under `logDir`. */
export function readWriterLog(logDir: string, host: string): WriterLog {
  const f = join(logDir, `${host}.log`);
  const out = { oks: [] as number[], errs: [] as number[] };
  if (!existsSync(f)) return out;
  for (const line of readFileSync(f, 'utf8').split('\n')) {
    const [k, n] = line.split(' ');
    if (k === 'ok') out.oks.push(Number(n)); else if (k === 'err') out.errs.push(Number(n));
  }
  return out;
}
