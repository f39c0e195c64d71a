import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, symlinkSync, copyFileSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { unixRequest } from '../../src/host/unix-http.js';
import { pidAlive, run, waitFor, type RunResult } from './proc.js';

export interface DockerEngine {
  readonly dir: string;
  readonly sock: string;
  readonly host: string;
  readonly pid: number;
  docker(args: string[], timeoutMs?: number): Promise<RunResult>;
  /** docker ... that must succeed; returns trimmed stdout. */
  ok(args: string[], timeoutMs?: number): Promise<string>;
  api(method: string, path: string, body?: unknown): Promise<{ status: number; body: unknown }>;
  kill9(): Promise<void>;
  restart(extraArgs?: string[]): Promise<void>;
  stop(): Promise<void>;
}

/** Why e2e tests cannot run here, or undefined when they can. */
export function dockerSkipReason(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (loop devices, mounts, dockerd)';
  if (!existsSync('/usr/sbin/dockerd') && !existsSync('/usr/bin/dockerd')) return 'dockerd is not installed (apt-get install docker.io)';
  if (!existsSync('/bin/busybox')) return 'busybox-static is not installed (apt-get install busybox-static)';
  return undefined;
}

const DOCKER = existsSync('/usr/bin/docker') ? '/usr/bin/docker' : 'docker';

/**
 * A private dockerd for tests: its own socket, data-root, exec-root and pidfile; no bridge or
 * iptables (containers get loopback only). Adapted from shared/recipes/docker-engine-up.sh.
 * A busybox:local image is made with `docker import` from Debian's busybox-static (nothing is pulled).
 */
export async function startDockerEngine(opts: { dir?: string; extraArgs?: string[] } = {}): Promise<DockerEngine> {
  await sweepDeadTestSockets();
  const dir = opts.dir ?? mkdtempSync(join('/var/tmp', 'ballast-dockerd-'));
  mkdirSync(join(dir, 'data'), { recursive: true });
  mkdirSync(join(dir, 'exec'), { recursive: true });
  const sock = join(dir, 'docker.sock');
  const host = `unix://${sock}`;
  let pid = 0;

  const launch = async (extra: string[]) => {
    const fd = openSync(join(dir, 'dockerd.log'), 'a');
    const c = spawn('dockerd', ['-H', host, '--data-root', join(dir, 'data'), '--exec-root', join(dir, 'exec'),
      '--pidfile', join(dir, 'dockerd.pid'), '--iptables=false', '--bridge=none', ...extra],
    { stdio: ['ignore', fd, fd], detached: true });
    c.unref();
    pid = c.pid!;
    await waitFor(async () => {
      if (!pidAlive(pid)) throw new Error(`dockerd exited: ${readFileSync(join(dir, 'dockerd.log'), 'utf8').slice(-1500)}`);
      const r = await unixRequest(sock, 'GET', '/_ping', undefined, { timeoutMs: 1000 }).catch(() => undefined);
      return r?.status === 200;
    }, 'dockerd to answer', 60_000, 100);
  };
  await launch(opts.extraArgs ?? []);

  const docker = (args: string[], timeoutMs = 120_000) => run([DOCKER, '-H', host, ...args], { timeoutMs });
  const ok = async (args: string[], timeoutMs?: number) => {
    const r = await docker(args, timeoutMs);
    if (r.code !== 0) throw new Error(`docker ${args.join(' ')} failed (${r.code}): ${r.stderr.trim()}`);
    return r.stdout.trim();
  };
  await importBusybox(host);

  const waitGone = async () => waitFor(() => !pidAlive(pid), 'dockerd to exit', 30_000, 100);
  const eng: DockerEngine = {
    dir, sock, host, get pid() { return pid; },
    docker, ok,
    async api(method, path, body) {
      const r = await unixRequest(sock, method, path, body, { timeoutMs: 60_000, headers: body ? { 'content-type': 'application/json' } : {} });
      return { status: r.status, body: r.body };
    },
    async kill9() { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } await waitGone(); await killContainerdOf(dir); },
    async restart(extra = []) { await launch(extra); },
    async stop() {
      try { process.kill(pid, 'SIGTERM'); } catch { /* gone */ }
      await waitGone().catch(() => { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } });
      await killContainerdOf(dir);
      // Unmount anything dockerd left under its dirs, then remove them.
      const mi = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' ')[4]).filter((m) => m && m.startsWith(dir)).reverse();
      for (const m of mi) await run(['umount', '-l', m], { timeoutMs: 10_000 });
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return eng;
}

/**
 * dockerd asks every socket in /run/docker/plugins when it looks up a volume it does not know, and
 * retries a dead one for ~15 s. A test daemon killed with SIGKILL leaves its socket there; remove the
 * dead ones of test daemons (named ballast-t*.sock by startBallast) so they cannot slow later tests.
 */
export async function sweepDeadTestSockets(dir = '/run/docker/plugins'): Promise<void> {
  let names: string[] = [];
  try { names = readdirSync(dir); } catch { return; }
  for (const n of names.filter((x) => /^ballast-t[0-9a-f]+\.sock$/.test(x))) {
    const p = join(dir, n);
    const alive = await unixRequest(p, 'POST', '/Plugin.Activate', undefined, { timeoutMs: 1000 }).then(() => true, () => false);
    if (!alive) rmSync(p, { force: true });
  }
}

/** containerd and its shims started by this dockerd (found by their exec-root under dir), killed by PID. */
async function killContainerdOf(dir: string): Promise<void> {
  for (const p of readdirSync('/proc').filter((x) => /^\d+$/.test(x))) {
    let cmd = '';
    try { cmd = readFileSync(`/proc/${p}/cmdline`, 'utf8'); } catch { continue; }
    if (cmd.includes(dir) && /containerd/.test(cmd)) { try { process.kill(Number(p), 'SIGKILL'); } catch { /* gone */ } }
  }
}

async function importBusybox(host: string): Promise<void> {
  const has = await run([DOCKER, '-H', host, 'image', 'inspect', 'busybox:local'], { timeoutMs: 30_000 });
  if (has.code === 0) return;
  const imp = await run([DOCKER, '-H', host, 'import', '-', 'busybox:local'], { input: await busyboxTar(), timeoutMs: 120_000 });
  if (imp.code !== 0) throw new Error(`docker import failed: ${imp.stderr}`);
}

/**
 * The root of the `busybox:local` image as a tar stream: Debian's busybox-static with a link per applet,
 * and empty /tmp and /data. What `docker import - busybox:local` takes (nothing is pulled).
 */
export async function busyboxTar(): Promise<Buffer> {
  const r = mkdtempSync(join(tmpdir(), 'busybox-root-'));
  try {
    mkdirSync(join(r, 'bin'));
    copyFileSync('/bin/busybox', join(r, 'bin', 'busybox'));
    chmodSync(join(r, 'bin', 'busybox'), 0o755);
    chmodSync(r, 0o755);
    const list = await run(['/bin/busybox', '--list'], { timeoutMs: 10_000 });
    for (const a of list.stdout.split('\n').map((s) => s.trim()).filter((s) => s && s !== 'busybox')) symlinkSync('busybox', join(r, 'bin', a));
    mkdirSync(join(r, 'tmp')); mkdirSync(join(r, 'data'));
    return await tarBytes(r);
  } finally { rmSync(r, { recursive: true, force: true }); }
}

function tarBytes(dir: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const c = spawn('tar', ['-C', dir, '-c', '.'], { stdio: ['ignore', 'pipe', 'inherit'] });
    const chunks: Buffer[] = [];
    c.stdout.on('data', (b: Buffer) => chunks.push(b));
    const t = setTimeout(() => c.kill('SIGKILL'), 60_000);
    c.on('error', reject);
    c.on('close', (code) => { clearTimeout(t); if (code === 0) resolve(Buffer.concat(chunks)); else reject(new Error(`tar exited ${code}`)); });
  });
}
