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
