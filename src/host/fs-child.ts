import { ExecError, type Exec, type ExecOptions, type ExecResult } from './exec.js';

/**
 * File system calls through a network mount, each in a child process with a timeout.
 *
 * An NFS hard mount, a FUSE client that is stopped or a server that no longer answers blocks a
 * stat(2), mkdir(2) or unlink(2) in the kernel with no timeout. Made from the daemon itself (node's
 * fs module) such a call takes one thread of libuv's pool (four by default) until the kernel lets it
 * go, and four of them stop every file operation of the daemon. In a child process the call costs a
 * process, which Exec kills when its time is up (FUSE and NFS waits are killable); the daemon answers.
 */

/**
 * Exec with a hard deadline of its own: Exec's timeout kills the child, but its answer waits until the
 * child's output pipes close, and a helper the child forked (mount.glusterfs' glusterfs and its stat,
 * a daemonizing FUSE client) may hold them much longer. The caller gets the timeout either way.
 */
export function execBounded(exec: Exec, argv: readonly string[], opts: ExecOptions, graceMs = 1_000): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new ExecError(argv, undefined, `timed out after ${opts.timeoutMs} ms`)), opts.timeoutMs + graceMs);
    exec(argv, opts).then(
      (r) => { clearTimeout(timer); resolve(r); },
      (e: unknown) => { clearTimeout(timer); reject(e); },
    );
  });
}

/** What `stat` says about a path: its kind, or undefined when it does not exist. */
export interface ChildStat { readonly kind: 'directory' | 'file' | 'other' }

/** A failed call through a mount: `message` is what the tool said (stderr) or that it timed out. */
export class FsChildError extends Error {
  constructor(readonly op: string, readonly path: string, message: string, readonly timedOut: boolean, options?: ErrorOptions) { super(message, options); }
}

const tidy = (s: string, tool: string) => s.trim().replace(new RegExp(`^${tool}: `), '').slice(0, 500);

async function run(exec: Exec, op: string, path: string, argv: string[], timeoutMs: number, okCodes: number[]): Promise<ExecResult> {
  try {
    return await execBounded(exec, argv, { timeoutMs, okCodes });
  } catch (e) {
    const r = (e as ExecError).result;
    const timedOut = /timed out/.test((e as Error).message);
    const msg = timedOut ? `no answer within ${Math.round(timeoutMs / 1000)} s (the server or its client is not responding)` : (r?.stderr ? tidy(r.stderr, argv[0]) : (e as Error).message);
    throw new FsChildError(op, path, msg, timedOut, { cause: e });
  }
}

/** stat(1) in a child: the kind of `path`, or undefined for "No such file or directory"; anything else throws FsChildError. */
export async function statChild(exec: Exec, path: string, timeoutMs: number): Promise<ChildStat | undefined> {
  const r = await run(exec, 'stat', path, ['stat', '-c', '%F', '--', path], timeoutMs, [0, 1]);
  if (r.code === 0) {
    const t = r.stdout.trim();
    return { kind: t === 'directory' ? 'directory' : /regular/.test(t) ? 'file' : 'other' };
  }
  if (/No such file or directory/.test(r.stderr)) return undefined;
  throw new FsChildError('stat', path, tidy(r.stderr, 'stat') || `stat exited ${r.code}`, false);
}

/** mkdir(1) in a child (not recursive: the parent must exist; an existing path is an error). */
export async function mkdirChild(exec: Exec, path: string, mode: number, timeoutMs: number): Promise<void> {
  await run(exec, 'mkdir', path, ['mkdir', '-m', mode.toString(8), '--', path], timeoutMs, [0]);
}

/**
 * `rm -rf --one-file-system` in a child: removes the tree at path, absent is success, and never
 * descends into another mount found inside it.
 */
export async function rmTreeChild(exec: Exec, path: string, timeoutMs: number): Promise<void> {
  await run(exec, 'rm', path, ['rm', '-rf', '--one-file-system', '--', path], timeoutMs, [0]);
}
