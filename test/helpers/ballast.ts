import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, openSync, readFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { unixRequest } from '../../src/host/unix-http.js';
import { pidAlive, run, sleep, waitFor, type RunResult } from './proc.js';

/** The checkout root (dist/test/helpers -> ../../..). */
export const REPO = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const BIN = join(REPO, 'bin', 'ballast.js');

/** The V8 flags of bin/ballast.js's shebang: the daemon runs under tests as it runs for users. */
export const NODE_FLAGS: string[] = readFileSync(BIN, 'utf8').split('\n')[0].split(/\s+/).filter((a) => a.startsWith('--'));

export function uniqueName(prefix = 'bt'): string { return `${prefix}${randomBytes(4).toString('hex')}`; }

export interface BallastProc {
  readonly root: string;
  readonly socket: string;
  readonly adminSocket: string;
  readonly driver: string;
  readonly logFile: string;
  pid(): number;
  /** POST to the plugin socket as dockerd would (no content type). */
  plugin(method: string, body?: unknown): Promise<{ status: number; body: Record<string, unknown> }>;
  cli(args: string[], timeoutMs?: number): Promise<RunResult>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  kill9(): Promise<void>;
  /**
   * Launches the daemon again with the same arguments. `env`, if given, is merged over the environment
   * of startBallast for this launch only (an undefined value removes a variable); a later restart()
   * without it goes back to the original environment.
   */
  restart(env?: NodeJS.ProcessEnv): Promise<void>;
  /** Resolves when the current daemon process exits, with its exit code or the signal that killed it. */
  exited(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  logs(): string;
}

/**
 * Starts `ballast daemon` as a child process with its own root and a plugin socket name unique to
 * the run (so tests never collide with another plugin), and waits until both sockets answer.
 */
/**
 * `wrap` runs the daemon under a command, e.g. ['unshare', '-m', '--propagation', 'private'] for a
 * second "host": a daemon with its own root, socket and mount namespace on the same machine
 * (read its mounts with `nsenter -t <pid> -m`).
 */
export async function startBallast(opts: { root: string; socket?: string; driver?: string; extraArgs?: string[]; env?: NodeJS.ProcessEnv; configFile?: string; wrap?: string[] }): Promise<BallastProc> {
  const driver = opts.driver ?? uniqueName('ballast-t');
  const socket = opts.socket ?? `/run/docker/plugins/${driver}.sock`;
  const adminSocket = join(opts.root, 'admin.sock');
  mkdirSync(opts.root, { recursive: true });
  const logFile = join(opts.root, 'daemon.log');
  let child: ChildProcess | undefined;
  let exited: Promise<number | null> = Promise.resolve(null);
  let exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }> = Promise.resolve({ code: null, signal: null });

  const launch = async (envOverride?: NodeJS.ProcessEnv) => {
    const fd = openSync(logFile, 'a');
    const args = [BIN, 'daemon', '--root', opts.root, '--socket', socket, '--log-level', 'debug', ...(opts.configFile ? ['--config', opts.configFile] : []), ...(opts.extraArgs ?? [])];
    const env: NodeJS.ProcessEnv = { ...process.env, ...(opts.env ?? {}), ...(envOverride ?? {}) };
    for (const k of Object.keys(env)) if (env[k] === undefined) delete env[k];
    const w = opts.wrap ?? [];
    const node = [process.execPath, ...NODE_FLAGS];
    const c = w.length ? spawn(w[0], [...w.slice(1), ...node, ...args], { stdio: ['ignore', fd, fd], env }) : spawn(node[0], [...node.slice(1), ...args], { stdio: ['ignore', fd, fd], env });
    child = c;
    exited = new Promise((r) => c.once('exit', (code) => r(code)));
    exit = new Promise((r) => c.once('exit', (code, signal) => r({ code, signal })));
    await waitFor(async () => {
      if (c.exitCode !== null || c.signalCode !== null) throw new Error(`ballast exited with ${c.exitCode ?? c.signalCode}: ${readFileSync(logFile, 'utf8').slice(-2000)}`);
      const h = await unixRequest(adminSocket, 'GET', '/v1/health', undefined, { timeoutMs: 1000 }).catch(() => undefined);
      const p = await unixRequest(socket, 'POST', '/Plugin.Activate', undefined, { timeoutMs: 1000 }).catch(() => undefined);
      return h?.status === 200 && p?.status === 200 && (h.body as { pid?: number }).pid === c.pid;
    }, 'ballast daemon to serve', 30_000, 50);
  };
  await launch();

  const proc: BallastProc = {
    root: opts.root, socket, adminSocket, driver, logFile,
    pid: () => child!.pid!,
    async plugin(method, body) {
      const r = await unixRequest(socket, 'POST', `/${method}`, body, { timeoutMs: 130_000 });
      return { status: r.status, body: (typeof r.body === 'object' ? r.body : JSON.parse(r.text || '{}')) as Record<string, unknown> };
    },
    cli: (args, timeoutMs = 120_000) => run([process.execPath, BIN, ...args, '--root', opts.root], { timeoutMs }),
    async stop(signal = 'SIGTERM') {
      if (!child || child.exitCode !== null) return child?.exitCode ?? null;
      child.kill(signal);
      return exited;
    },
    async kill9() {
      if (!child || child.exitCode !== null) return;
      const pid = child.pid!;
      child.kill('SIGKILL');
      await exited;
      await waitFor(() => !pidAlive(pid), 'killed daemon to vanish', 5000);
    },
    async restart(env) { await launch(env); },
    exited: () => exit,
    logs: () => readFileSync(logFile, 'utf8'),
  };
  return proc;
}

export { run, sleep };
