import { request } from 'node:http';
import { unixRequest } from '../host/unix-http.js';

export class CliError extends Error {
  constructor(message: string, readonly exitCode: number) { super(message); }
}

/**
 * Exit codes: 1 other failure, 2 bad input, 3 not found, 4 conflict, busy or not in the needed state,
 * 5 daemon, host or server unavailable or too slow, 6 out of space.
 */
const EXIT: Record<string, number> = {
  InvalidArgument: 2, NotFound: 3, Conflict: 4, Busy: 4, AlreadyExists: 4, FailedPrecondition: 4, Aborted: 4,
  Unavailable: 5, DeadlineExceeded: 5, ResourceExhausted: 6, Internal: 1,
};

/** Talks to the daemon's admin socket. */
export class AdminClient {
  constructor(private readonly socket: string) {}

  async call<T>(method: string, path: string, body?: unknown, timeoutMs = 180_000): Promise<T> {
    let r;
    try {
      r = await unixRequest(this.socket, method, path, body, { timeoutMs, headers: body ? { 'content-type': 'application/json' } : {} });
    } catch (e) {
      throw new CliError(`cannot reach the ballast daemon at ${this.socket}: ${(e as Error).message}. Is it running (ballast daemon)? Use --root or --admin-socket if it runs elsewhere`, 5);
    }
    if (r.status >= 400) {
      const b = r.body as { error?: string; code?: string };
      throw new CliError(b?.error ?? r.text, EXIT[b?.code ?? ''] ?? 1);
    }
    return r.body as T;
  }
}

/**
 * A long operation (backup, restore) as an NDJSON stream: `onProgress` gets each `{"progress"}` line,
 * the promise the `{"result"}` line; an `{"error"}` line or an error status is a CliError. `idleMs`
 * bounds the silence between two lines, not the whole operation.
 */
export function streamCall<T>(socket: string, method: string, path: string, body: unknown, onProgress: (p: Record<string, unknown>) => void, idleMs = 15 * 60_000): Promise<T> {
  return new Promise((resolve, reject) => {
    const payload = JSON.stringify(body ?? {});
    const req = request({ socketPath: socket, method, path, timeout: idleMs, headers: { 'content-type': 'application/json', accept: 'application/x-ndjson', 'content-length': Buffer.byteLength(payload) } }, (res) => {
      let buf = '';
      let done = false;
      const handle = (line: string) => {
        if (!line.trim() || done) return;
        let m: { progress?: Record<string, unknown>; result?: T; error?: string; code?: string };
        try { m = JSON.parse(line); } catch { return; }
        if (m.progress) onProgress(m.progress);
        else if (m.error !== undefined) { done = true; reject(new CliError(m.error, EXIT[m.code ?? ''] ?? 1)); }
        else if ('result' in m) { done = true; resolve(m.result as T); }
      };
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        buf += c;
        let i;
        while ((i = buf.indexOf('\n')) >= 0) { handle(buf.slice(0, i)); buf = buf.slice(i + 1); }
      });
      res.on('end', () => {
        handle(buf);
        if (!done) reject(new CliError(`the daemon ended the answer to ${method} ${path} without a result (it may have stopped); see its log`, 1));
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no word from the daemon for ${idleMs / 1000} s`)));
    req.on('error', (e) => reject(new CliError(`cannot reach the ballast daemon at ${socket}: ${e.message}. Is it running (ballast daemon)?`, 5)));
    req.end(payload);
  });
}

/** "1.2 GiB / 4.0 GiB (30%), 120/400 files, 85 MiB/s, 0:42 left" from a progress line. */
export function describeProgress(p: Readonly<Record<string, unknown>>): string {
  const n = (k: string) => (typeof p[k] === 'number' ? (p[k] as number) : undefined);
  const bytes = (v: number) => { const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB']; let x = v; let i = 0; while (x >= 1024 && i < 4) { x /= 1024; i++; } return `${i ? x.toFixed(1) : x} ${u[i]}`; };
  const parts: string[] = [String(p.phase ?? '')];
  if (n('bytesDone') !== undefined) parts.push(`${bytes(n('bytesDone')!)}${n('totalBytes') ? ` / ${bytes(n('totalBytes')!)}` : ''}${n('percent') !== undefined ? ` (${n('percent')}%)` : ''}`);
  if (n('totalFiles')) parts.push(`${n('filesDone') !== undefined ? `${n('filesDone')}/` : ''}${n('totalFiles')} files`);
  if (n('rateBps')) parts.push(`${bytes(n('rateBps')!)}/s`);
  const left = n('secondsRemaining');
  if (left !== undefined) parts.push(`${Math.floor(left / 60)}:${String(Math.round(left % 60)).padStart(2, '0')} left`);
  return parts.join(', ');
}

/** Shows elapsed time on a terminal while a long operation runs; silent when stderr is not a TTY. */
export async function withProgress<T>(label: string, p: Promise<T>): Promise<T> {
  if (!process.stderr.isTTY) return p;
  const t0 = Date.now();
  const frames = ['|', '/', '-', '\\'];
  let i = 0;
  const timer = setInterval(() => {
    process.stderr.write(`\r${frames[i++ % 4]} ${label} ${((Date.now() - t0) / 1000).toFixed(1)}s`);
  }, 100);
  try { return await p; } finally {
    clearInterval(timer);
    process.stderr.write('\r\x1b[K');
  }
}
