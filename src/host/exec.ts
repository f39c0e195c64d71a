import { execFile } from 'node:child_process';
import { InternalError, UnavailableError } from '../core/errors.js';

export interface ExecResult { readonly code: number; readonly stdout: string; readonly stderr: string }
export interface ExecOptions {
  /** Milliseconds before the command is killed (SIGKILL). Required: no host command runs unbounded. */
  readonly timeoutMs: number;
  /** Exit codes that are answers, not failures (blkid -p exits 2 for "nothing found"). Default [0]. */
  readonly okCodes?: readonly number[];
  readonly input?: string;
}
/** Runs argv[0] with argv[1..] and no shell. Throws ExecError on a failed start, timeout or unexpected exit code. */
export type Exec = (argv: readonly string[], opts: ExecOptions) => Promise<ExecResult>;

export class ExecError extends InternalError {
  constructor(readonly argv: readonly string[], readonly result: ExecResult | undefined, reason: string) {
    super(`${argv[0]} failed: ${reason}`);
  }
}

/** The production Exec: child_process.execFile with a timeout, no shell, stderr kept for the error. */
export const hostExec: Exec = (argv, opts) => new Promise((resolve, reject) => {
  if (argv.length === 0) { reject(new InternalError('exec called with an empty argv')); return; }
  const child = execFile(argv[0], argv.slice(1), {
    timeout: opts.timeoutMs, killSignal: 'SIGKILL', maxBuffer: 16 * 1024 * 1024, encoding: 'utf8',
    env: { ...process.env, LC_ALL: 'C' },
  }, (err, stdout, stderr) => {
    const e = err as (NodeJS.ErrnoException & { killed?: boolean; code?: number | string }) | null;
    if (e && typeof e.code === 'string') {
      const msg = e.code === 'ENOENT' ? `command not found (install the package that provides ${argv[0]})` : e.message;
      reject(new UnavailableError(`${argv[0]} could not be started: ${msg}`, { cause: e }));
      return;
    }
    if (e && e.killed) {
      reject(new ExecError(argv, { code: -1, stdout, stderr }, `timed out after ${opts.timeoutMs} ms`));
      return;
    }
    const code = e ? (typeof e.code === 'number' ? e.code : 1) : 0;
    const result = { code, stdout, stderr };
    if ((opts.okCodes ?? [0]).includes(code)) resolve(result);
    else reject(new ExecError(argv, result, `exit code ${code}${stderr.trim() ? `: ${stderr.trim().slice(0, 2000)}` : ''}`));
  });
  if (opts.input !== undefined) child.stdin?.end(opts.input); else child.stdin?.end();
});
