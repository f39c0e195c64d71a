/**
 * A private single-node GlusterFS (glusterd + one single-brick volume) on 127.0.0.1 for the glusterfs
 * backend's tests. Adapted from shared/recipes/gluster-up.sh and gluster-down.sh.
 *
 * Everything glusterd writes goes under one directory (working, run and log directories, its CLI
 * socket), except the brick's unix socket, which glusterd always puts in /run/gluster: that file is
 * noted from the brick's command line and removed on stop. glusterd runs in the foreground (-N) as
 * our child; the brick process (glusterfsd) it starts is found through the pid files under the run
 * directory. Both are stopped by PID, never by name.
 *
 * The gluster CLI refuses "localhost" and "127.0.0.1" as a brick host, so bricks use the name
 * `gluster-local`, which /etc/hosts maps to 127.0.0.1: the line is added only if missing and only
 * a line this module added is removed again. Port 24007 is fixed (mount.glusterfs has no
 * per-server port in the backend's config), so it must be free.
 */
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { run, sleep, waitFor, type RunResult } from '../helpers/proc.js';
import { gone, killPids, listening } from './common.js';

export const GLUSTERD_PORT = 24007;
export const HOSTS_NAME = 'gluster-local';
const HOSTS_LINE = `127.0.0.1 ${HOSTS_NAME}`;
const HOSTS_RE = new RegExp(`^127\\.0\\.0\\.1\\s.*\\b${HOSTS_NAME}\\b`, 'm');

export interface GlusterServer {
  readonly dir: string;
  /** What the backend's `servers` names. */
  readonly host: string;
  readonly volume: string;
  readonly brickDir: string;
  readonly logDir: string;
  glusterdPid(): number;
  /** PIDs of the brick processes, from glusterd's pid files. */
  brickPids(): number[];
  /** `gluster --mode=script ...` against this glusterd. */
  cli(args: string[], timeoutMs?: number): Promise<RunResult>;
  /**
   * Stops the brick(s) and glusterd by PID (as a server crash or reboot would), waits `downMs`, starts
   * glusterd again (it restarts the bricks of started volumes) and waits until the brick serves.
   */
  restart(opts?: { downMs?: number; signal?: NodeJS.Signals }): Promise<void>;
  stop(): Promise<void>;
}

/** Why a glusterd cannot be started here, or undefined. */
export function glusterSkipReason(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (glusterd, FUSE mounts)';
  for (const [bin, pkg] of [['/usr/sbin/glusterd', 'glusterfs-server'], ['/usr/sbin/gluster', 'glusterfs-server'], ['/usr/sbin/glusterfs', 'glusterfs-client'], ['/sbin/mount.glusterfs', 'glusterfs-client']]) {
    if (!existsSync(bin) && !existsSync(bin.replace(/^\/sbin\//, '/usr/sbin/'))) return `${bin} is missing (apt-get install ${pkg})`;
  }
  if (listening(GLUSTERD_PORT)) return `something already listens on 127.0.0.1:${GLUSTERD_PORT} (another glusterd?)`;
  return undefined;
}

/** Adds the gluster-local line to /etc/hosts if missing; returns whether it was added (so removable). */
function addHostsLine(): boolean {
  const text = readFileSync('/etc/hosts', 'utf8');
  if (HOSTS_RE.test(text)) return false;
  // Written in place (not renamed over): /etc/hosts may be a bind mount.
  writeFileSync('/etc/hosts', `${text}${text === '' || text.endsWith('\n') ? '' : '\n'}${HOSTS_LINE}\n`);
  return true;
}

/** Removes the one line addHostsLine wrote (the last exact match), and nothing else. */
function removeHostsLine(): void {
  const lines = readFileSync('/etc/hosts', 'utf8').split('\n');
  const i = lines.lastIndexOf(HOSTS_LINE);
  if (i < 0) return;
  lines.splice(i, 1);
  writeFileSync('/etc/hosts', lines.join('\n'));
}

function pidFilesUnder(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...pidFilesUnder(p));
    else if (e.name.endsWith('.pid')) out.push(p);
  }
  return out;
}

function cmdline(pid: number): string[] {
  try { return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0'); } catch { return []; }
}

export async function startGluster(opts: { dir?: string; volume?: string } = {}): Promise<GlusterServer> {
  const why = glusterSkipReason();
  if (why) throw new Error(`cannot start glusterd: ${why}`);
  const dir = opts.dir ?? mkdtempSync('/var/tmp/ballast-gluster-');
  const volume = opts.volume ?? 'gv0';
  const [state, runDir, logDir] = ['state', 'run', 'log'].map((d) => join(dir, d));
  const brickDir = join(dir, 'bricks', volume);
  for (const d of [state, runDir, logDir, brickDir]) mkdirSync(d, { recursive: true });
  const sock = join(runDir, 'glusterd.socket');
  const volfile = join(dir, 'glusterd.vol');
  writeFileSync(volfile, [
    'volume management', '    type mgmt/glusterd',
    `    option working-directory ${state}`, `    option run-directory ${runDir}`, `    option logging-directory ${logDir}`,
    `    option glusterd-sockfile ${sock}`,
    '    option transport-type socket', '    option transport.socket.bind-address 127.0.0.1',
    `    option transport.socket.listen-port ${GLUSTERD_PORT}`, '    option ping-timeout 0', '    option event-threads 1',
    '    option max-port 60999', 'end-volume', '',
  ].join('\n'));
  const addedHosts = addHostsLine();
  const brickSockets = new Set<string>();
  let gpid = 0;

  const cli = (args: string[], timeoutMs = 60_000) =>
    run(['gluster', '--mode=script', `--glusterd-sock=${sock}`, `--log-file=${join(logDir, 'cli.log')}`, ...args], { timeoutMs });
  const must = async (args: string[], timeoutMs?: number) => {
    const r = await cli(args, timeoutMs);
    if (r.code !== 0) throw new Error(`gluster ${args.join(' ')} failed (${r.code}): ${(r.stderr || r.stdout).trim()}`);
    return r.stdout;
  };
  const brickPids = () => pidFilesUnder(join(runDir, 'vols'))
    .map((f) => Number(readFileSync(f, 'utf8').trim())).filter((p) => p > 0 && !gone(p));
  const noteBrickSockets = () => {
    for (const p of brickPids()) {
      const c = cmdline(p);
      const i = c.indexOf('-S');
      if (i >= 0 && c[i + 1] && /^\/(var\/)?run\/gluster\/[0-9a-f]+\.socket$/.test(c[i + 1])) brickSockets.add(c[i + 1]);
    }
  };
  /** The brick process is up and listens on the port glusterd gave it. */
  const brickServing = () => brickPids().some((p) => {
    const c = cmdline(p);
    const i = c.indexOf('--brick-port');
    return i >= 0 && listening(Number(c[i + 1]));
  });

  const launch = async () => {
    const logFile = join(logDir, 'glusterd.out');
    const fd = openSync(logFile, 'a');
    const c = spawn('glusterd', ['-N', '-f', volfile, '-p', join(runDir, 'glusterd.pid'), '-l', join(logDir, 'glusterd.log')],
      { stdio: ['ignore', fd, fd], detached: true });
    closeSync(fd);
    c.unref();
    gpid = c.pid!;
    await waitFor(async () => {
      if (gone(gpid)) throw new Error(`glusterd exited: ${readFileSync(join(logDir, 'glusterd.log'), 'utf8').slice(-1500)}`);
      return listening(GLUSTERD_PORT) && (await cli(['peer', 'status'], 10_000)).code === 0;
    }, 'glusterd to answer', 30_000, 100);
  };
  const halt = async (signal: NodeJS.Signals) => {
    const pids = [...brickPids(), ...(gpid && !gone(gpid) ? [gpid] : [])];
    await killPids(pids, signal, 10_000);
    await waitFor(() => !listening(GLUSTERD_PORT), `port ${GLUSTERD_PORT} to be free`, 10_000, 50);
    // A killed brick leaves its pid file; glusterd would take the (possibly unreaped) PID for a running
    // brick and not start it again. A real reboot clears /run; do what it would.
    for (const f of pidFilesUnder(join(runDir, 'vols'))) {
      const p = Number(readFileSync(f, 'utf8').trim());
      if (!(p > 0) || gone(p)) rmSync(f, { force: true });
    }
  };

  try {
    await launch();
    await must(['volume', 'create', volume, `${HOSTS_NAME}:${brickDir}`, 'force']);
    await must(['volume', 'start', volume]);
    await waitFor(brickServing, `the brick of ${volume} to serve`, 30_000, 100);
    noteBrickSockets();
  } catch (e) {
    await halt('SIGKILL').catch(() => undefined);
    if (addedHosts) removeHostsLine();
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }

  return {
    dir, host: '127.0.0.1', volume, brickDir, logDir,
    glusterdPid: () => gpid,
    brickPids,
    cli,
    async restart(o = {}) {
      await halt(o.signal ?? 'SIGKILL');
      if (o.downMs) await sleep(o.downMs);
      await launch();
      await waitFor(brickServing, `the brick of ${volume} to serve again`, 30_000, 100);
      noteBrickSockets();
    },
    async stop() {
      if (gpid && !gone(gpid)) {
        noteBrickSockets();
        await cli(['volume', 'stop', volume, 'force'], 60_000).catch(() => undefined); // stops the brick
        await cli(['volume', 'delete', volume], 60_000).catch(() => undefined);
      }
      await halt('SIGTERM');
      for (const s of brickSockets) rmSync(s, { force: true });
      if (addedHosts) removeHostsLine();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
