import { existsSync } from 'node:fs';
import { spawn, type ChildProcess } from 'node:child_process';
import { InternalError, UnavailableError } from '../core/errors.js';

/**
 * How restic runs: a child process from an argv array (no shell), with a clean environment, a working
 * directory, a timeout, an AbortSignal and line-by-line stdout (restic's --json status lines).
 *
 * The project's Exec (src/host/exec.ts) takes neither an environment, a cwd, a signal nor streamed
 * output, and restic needs all four (the S3 keys reach it only through its environment; a backup runs
 * in the volume's directory; a backup is cancellable and reports progress while it runs). Hence this
 * runner, injectable like Exec: tests wrap it to see every argv and environment.
 */
export interface RunOptions {
  /** The child's whole environment (nothing of the daemon's own environment is passed on). */
  readonly env: Readonly<Record<string, string>>;
  readonly cwd?: string;
  /** Milliseconds before restic is stopped (SIGINT, then SIGKILL after killGraceMs). Required. */
  readonly timeoutMs: number;
  /** Aborting stops restic the same way. */
  readonly signal?: AbortSignal;
  /** Milliseconds between SIGINT and SIGKILL (default 5000). */
  readonly killGraceMs?: number;
  /** Called for each stdout line; stdout is then not kept in the result (a long backup prints many). */
  readonly onStdoutLine?: (line: string) => void;
  /** Called with the child's PID once it runs (restore progress reads /proc/<pid>/io). */
  readonly onSpawn?: (pid: number) => void;
}

export interface RunResult {
  /** Exit code, or null when the child was ended by a signal. */
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  /** All of stdout (empty when onStdoutLine was given). */
  readonly stdout: string;
  /** The last 256 KiB of stderr. */
  readonly stderr: string;
  /** Stopped by us because timeoutMs passed. */
  readonly timedOut: boolean;
  /** Stopped by us because the signal was aborted (or was before the start: then nothing ran). */
  readonly aborted: boolean;
}

export type ResticRunner = (argv: readonly string[], opts: RunOptions) => Promise<RunResult>;

const STDOUT_MAX = 64 * 1024 * 1024;
const STDERR_KEEP = 256 * 1024;

/**
 * The production runner: node:child_process.spawn, stdin closed. Stopping sends SIGINT first: restic
 * 0.14 handles SIGINT by removing its repository lock before it exits ("signal interrupt received,
 * cleaning up"), while SIGTERM ends it at once (Go's default) and leaves the lock behind (measured).
 * SIGKILL follows after killGraceMs. If the pipes are still not closed 5 s after SIGKILL, the result
 * is given anyway: no call waits longer than timeoutMs + killGraceMs + 5 s.
 */
const SETPRIV = '/usr/bin/setpriv';

/** Is `bin` an existing path, or found on PATH? (Else it is spawned as is, so ENOENT says it is not installed.) */
function resolvable(bin: string): boolean {
  if (bin.includes('/')) return existsSync(bin);
  return (process.env.PATH ?? '/usr/bin:/bin').split(':').some((d) => d && existsSync(`${d}/${bin}`));
}

export const spawnRunner: ResticRunner = (argv, opts) => new Promise<RunResult>((resolve, reject) => {
  if (argv.length === 0) { reject(new InternalError('restic runner called with an empty argv')); return; }
  if (opts.signal?.aborted) { resolve({ code: null, signal: null, stdout: '', stderr: '', timedOut: false, aborted: true }); return; }
  let child: ChildProcess;
  try {
    // restic dies with the daemon (util-linux setpriv --pdeathsig): a daemon killed mid-backup leaves no
    // restic reading a snapshot that the restarted daemon's recovery unmounts and removes.
    const cmd = existsSync(SETPRIV) && (!argv[0].startsWith('/') || existsSync(argv[0])) && resolvable(argv[0]) ? [SETPRIV, '--pdeathsig', 'SIGKILL', '--', ...argv] : [...argv];
    child = spawn(cmd[0], cmd.slice(1), { cwd: opts.cwd, env: { ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    reject(new UnavailableError(`${argv[0]} could not be started: ${(e as Error).message}`, { cause: e }));
    return;
  }
  let stdout = '';
  let partial = '';
  let stderr = '';
  let timedOut = false;
  let aborted = false;
  let settled = false;
  let overflow = false;
  const timers: NodeJS.Timeout[] = [];
  const grace = opts.killGraceMs ?? 5_000;

  const finish = (code: number | null, sig: NodeJS.Signals | null) => {
    if (settled) return;
    settled = true;
    for (const t of timers) clearTimeout(t);
    opts.signal?.removeEventListener('abort', onAbort);
    if (partial && opts.onStdoutLine) { const p = partial; partial = ''; deliver(p); }
    if (overflow) stderr += `\n(ballast: restic printed more than ${STDOUT_MAX} bytes on stdout; it was stopped)`;
    resolve({ code, signal: sig, stdout, stderr, timedOut, aborted });
  };
  const running = () => child.exitCode === null && child.signalCode === null;
  let stopping = false;
  const stop = () => {
    if (stopping || !running()) return;
    stopping = true;
    child.kill('SIGINT');
    timers.push(setTimeout(() => {
      if (running()) child.kill('SIGKILL');
      timers.push(setTimeout(() => finish(child.exitCode, child.signalCode ?? 'SIGKILL'), 5_000));
    }, grace));
  };
  const onAbort = () => { aborted = true; stop(); };
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  timers.push(setTimeout(() => { timedOut = true; stop(); }, opts.timeoutMs));

  const deliver = (line: string) => {
    try { opts.onStdoutLine!(line); } catch { /* a caller's callback may not break the run */ }
  };
  child.stdout!.setEncoding('utf8');
  child.stdout!.on('data', (d: string) => {
    if (opts.onStdoutLine) {
      partial += d;
      let i: number;
      while ((i = partial.indexOf('\n')) >= 0) {
        const line = partial.slice(0, i);
        partial = partial.slice(i + 1);
        if (line.trim()) deliver(line);
      }
      if (partial.length > 1024 * 1024) partial = ''; // not a line restic prints
    } else if (!overflow) {
      stdout += d;
      if (stdout.length > STDOUT_MAX) { overflow = true; stdout = ''; stop(); }
    }
  });
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (d: string) => {
    stderr += d;
    if (stderr.length > 2 * STDERR_KEEP) stderr = stderr.slice(-STDERR_KEEP);
  });
  child.once('spawn', () => { if (child.pid !== undefined) opts.onSpawn?.(child.pid); });
  child.once('error', (e: NodeJS.ErrnoException) => {
    if (settled) return;
    if (e.code === 'ENOENT' || e.code === 'EACCES') {
      settled = true;
      for (const t of timers) clearTimeout(t);
      opts.signal?.removeEventListener('abort', onAbort);
      reject(new UnavailableError(`${argv[0]} could not be started (${e.code}): install restic (apt-get install restic) on this node`, { cause: e }));
    }
  });
  child.once('close', (code, sig) => finish(code, sig));
});
