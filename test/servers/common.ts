import { createServer } from 'node:net';
import { readdirSync, readFileSync } from 'node:fs';
import { pidAlive, sleep, waitFor } from '../helpers/proc.js';

/** A TCP port on 127.0.0.1 that nothing listens on right now (the kernel picks it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

/** Is something listening on 127.0.0.1:port? (read from /proc/net/tcp: no connection is made). */
export function listening(port: number): boolean {
  const hex = port.toString(16).toUpperCase().padStart(4, '0');
  for (const f of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = '';
    try { text = readFileSync(f, 'utf8'); } catch { continue; }
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length > 3 && cols[3] === '0A' && cols[1].endsWith(`:${hex}`)) return true;
    }
  }
  return false;
}

/** Parent PID of pid, from /proc/<pid>/stat (undefined when it is gone). */
function ppidOf(pid: number): number | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(s.slice(s.lastIndexOf(')') + 2).split(' ')[1]);
  } catch { return undefined; }
}

/** Every descendant of pid (children, their children...), found through /proc. */
export function descendants(pid: number): number[] {
  const kids = new Map<number, number[]>();
  for (const p of readdirSync('/proc').filter((x) => /^\d+$/.test(x)).map(Number)) {
    const pp = ppidOf(p);
    if (pp === undefined) continue;
    const l = kids.get(pp);
    if (l) l.push(p); else kids.set(pp, [p]);
  }
  const out: number[] = [];
  const todo = [pid];
  while (todo.length) for (const c of kids.get(todo.pop()!) ?? []) { out.push(c); todo.push(c); }
  return out;
}

/** Is pid a zombie (dead, waiting for its parent to reap it)? */
export function isZombie(pid: number): boolean {
  try { return /\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8')); } catch { return false; }
}

export function gone(pid: number): boolean { return !pidAlive(pid) || isZombie(pid); }

/** Sends sig to each PID, then waits (bounded) until all are gone; SIGKILL for the ones that are not. */
export async function killPids(pids: readonly number[], sig: NodeJS.Signals = 'SIGTERM', timeoutMs = 10_000): Promise<void> {
  for (const p of pids) { try { process.kill(p, sig); } catch { /* gone */ } }
  try {
    await waitFor(() => pids.every(gone), `PIDs ${pids.join(', ')} to exit`, timeoutMs, 50);
  } catch {
    for (const p of pids) { try { process.kill(p, 'SIGKILL'); } catch { /* gone */ } }
    await sleep(200);
  }
}
