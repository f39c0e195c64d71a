/**
 * The one end-of-suite cleanup and leftover check of the end-to-end suites. It removes what the suite
 * made (containers, volumes, daemons), then looks, scoped to the suite's own root directories only
 * (other suites run on the same machine at the same time), for:
 * - mounts under a root, in /proc/self/mountinfo and in the mount namespace of each daemon that has
 *   its own (/proc/<pid>/mountinfo, read while that daemon is still alive);
 * - loop devices backed by a file under a root (`losetup -J -l`);
 * - FUSE client processes (sshfs and its ssh, glusterfs, ceph-fuse, rbd-fuse, s3fs) whose command
 *   line names a path under a root.
 * Whatever it finds it cleans (so the machine stays usable), and then it throws, so node:test
 * reports the after hook as failed: a leftover is a leak, not a note.
 */
import { copyFileSync, readFileSync, readdirSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseMountinfo, type MountEntry } from '../../src/host/mountinfo.js';
import type { BallastProc } from './ballast.js';
import type { DockerEngine } from './docker-engine.js';
import { pidAlive, run, sleep, waitFor } from './proc.js';

/** FUSE clients, and ssh (the transport sshfs starts). */
export const FUSE_CLIENTS = ['sshfs', 'ssh', 'glusterfs', 'ceph-fuse', 'rbd-fuse', 's3fs'];

const under = (p: string, roots: readonly string[]) => roots.some((r) => p === r || p.startsWith(r + '/'));

function mountNs(pid: number | 'self'): string | undefined {
  try { return readlinkSync(`/proc/${pid}/ns/mnt`); } catch { return undefined; }
}

/** Mounts under the roots in the mount namespace of pid (self: the test's own). */
export function mountsUnder(roots: readonly string[], pid: number | 'self' = 'self'): MountEntry[] {
  let text = '';
  try { text = readFileSync(`/proc/${pid}/mountinfo`, 'utf8'); } catch { return []; }
  return parseMountinfo(text).filter((m) => under(m.mountpoint, roots) || under(m.source, roots));
}

export interface LoopDev { name: string; 'back-file': string | null }
/** Loop devices whose backing file is under the roots. */
export async function loopsUnder(roots: readonly string[]): Promise<LoopDev[]> {
  const r = await run(['losetup', '-J', '-l', '-O', 'NAME,BACK-FILE'], { timeoutMs: 20_000 });
  if (r.code !== 0) throw new Error(`losetup -J -l exited ${r.code}: ${r.stderr.trim()}`);
  const all = r.stdout.trim() ? (JSON.parse(r.stdout) as { loopdevices: LoopDev[] }).loopdevices : [];
  // A deleted backing file shows as "<path> (deleted)".
  return all.filter((l) => under((l['back-file'] ?? '').replace(/ \(deleted\)$/, ''), roots));
}

export interface ProcInfo { pid: number; argv: string[] }
function isZombie(pid: number): boolean {
  try { return /\) [ZX] /.test(readFileSync(`/proc/${pid}/stat`, 'utf8')); } catch { return true; }
}
/** Live FUSE client processes whose command line names a path under the roots. */
export function fuseClientsUnder(roots: readonly string[], tools: readonly string[] = FUSE_CLIENTS): ProcInfo[] {
  const out: ProcInfo[] = [];
  for (const p of readdirSync('/proc').filter((x) => /^\d+$/.test(x)).map(Number)) {
    if (p === process.pid) continue;
    let raw = '';
    try { raw = readFileSync(`/proc/${p}/cmdline`, 'utf8'); } catch { continue; }
    const argv = raw.split('\0').filter(Boolean);
    if (!argv.length || !tools.includes(argv[0].split('/').pop()!)) continue;
    // A path as an argument of its own, or inside one (-o log-file=/root/...).
    if (!argv.slice(1).some((a) => roots.some((r) => a === r || a.includes(r + '/')))) continue;
    if (isZombie(p)) continue;
    out.push({ pid: p, argv });
  }
  return out;
}

/** What is left of the suite on the host, each as a sentence; also cleans it (unmount, detach, kill). */
export async function findAndCleanLeftovers(roots: readonly string[], nsPids: readonly number[] = []): Promise<string[]> {
  const problems: string[] = [];
  const self = mountNs('self');
  // Mounts in the daemons' own namespaces, while they are alive (their namespace goes with them).
  for (const pid of nsPids) {
    const ns = mountNs(pid);
    if (!ns || ns === self) continue;
    for (const m of mountsUnder(roots, pid).reverse()) {
      problems.push(`left mounted in the mount namespace of pid ${pid}: ${m.mountpoint} (${m.fstype} from ${m.source})`);
      await run(['nsenter', '-t', String(pid), '-m', 'umount', '-l', m.mountpoint], { timeoutMs: 20_000 });
    }
  }
  for (const m of mountsUnder(roots).reverse()) {
    problems.push(`left mounted: ${m.mountpoint} (${m.fstype} from ${m.source})`);
    await run(['umount', '-l', m.mountpoint], { timeoutMs: 20_000 });
  }
  // A FUSE client exits by itself shortly after its mount goes (the unmounts above included).
  await waitFor(() => fuseClientsUnder(roots).length === 0, 'FUSE clients to exit', 5_000).catch(() => undefined);
  for (const p of fuseClientsUnder(roots)) {
    problems.push(`left running: ${p.argv[0].split('/').pop()} (pid ${p.pid}): ${p.argv.join(' ').slice(0, 200)}`);
    try { process.kill(p.pid, 'SIGKILL'); } catch { /* gone */ }
  }
  let loops: LoopDev[] = [];
  try { loops = await loopsUnder(roots); } catch (err) { problems.push((err as Error).message); }
  for (const l of loops) {
    problems.push(`left attached: ${l.name} on ${l['back-file']}`);
    await run(['losetup', '-d', l.name], { timeoutMs: 20_000 });
  }
  return problems;
}

export interface Teardown {
  /** Names the suite in the error. */
  suite: string;
  /** Everything the suite made on the host lives under these; they are removed at the end. */
  roots: string[];
  /** The dockerd through which containers and volumes are removed first (skipped when it is not running). */
  engine?: DockerEngine;
  containers?: Iterable<string>;
  volumes?: Iterable<string>;
  /** Every ballast daemon of the suite; `volumes` go through the first one's driver. */
  daemons?: (BallastProc | undefined)[];
  /** Mounts the test itself made (not Ballast's), unmounted before the check. */
  ownMounts?: string[];
  /** Stopped after the check, in order: dockerds, servers. */
  stopAfter?: { what: string; stop: () => Promise<unknown> }[];
  /** Extra directories to remove at the end (beyond the roots). */
  removeDirs?: string[];
  /** Problems found by the suite's own steps before (e.g. a second daemon's removes). */
  problems?: string[];
}

/**
 * The after hook of an e2e suite: removes containers, volumes (through docker, then whatever each
 * daemon still lists through `ballast volume rm`), checks for leftovers under the roots while the
 * daemons are alive (so their namespaces can be read), stops the daemons, checks again, stops the
 * servers, removes the roots, and throws if anything was left or failed to go.
 */
export async function teardownSuite(t: Teardown): Promise<void> {
  const problems = [...(t.problems ?? [])];
  const roots = t.roots.filter(Boolean);
  const daemons = (t.daemons ?? []).filter((d): d is BallastProc => d !== undefined);
  const alive = (d: BallastProc) => { try { return pidAlive(d.pid()); } catch { return false; } };
  const note = (what: string, r: { code: number; stderr: string }) => { if (r.code !== 0) problems.push(`${what}: ${r.stderr.trim()}`); };
  const step = async (what: string, fn: () => Promise<unknown>) => { try { await fn(); } catch (err) { problems.push(`${what}: ${(err as Error).message}`); } };

  if (t.engine && pidAlive(t.engine.pid)) {
    for (const c of t.containers ?? []) note(`docker rm -f ${c}`, await t.engine.docker(['rm', '-f', c], 60_000));
    if (daemons[0] && alive(daemons[0])) for (const v of t.volumes ?? []) note(`docker volume rm ${v}`, await t.engine.docker(['volume', 'rm', '-f', v], 130_000));
  }
  for (const d of daemons.filter(alive)) {
    await step(`ballast volume ls (${d.root})`, async () => {
      const ls = await d.cli(['volume', 'ls', '--json']);
      if (ls.code !== 0) throw new Error(ls.stderr.trim());
      for (const v of (JSON.parse(ls.stdout) as { name: string }[]).map((x) => x.name)) note(`ballast volume rm ${v} (${d.root})`, await d.cli(['volume', 'rm', v]));
    });
  }
  for (const m of [...(t.ownMounts ?? [])].reverse()) note(`umount ${m}`, await run(['umount', m], { timeoutMs: 30_000 }));
  await sleep(200);
  problems.push(...await findAndCleanLeftovers(roots, daemons.filter(alive).map((d) => d.pid())));

  for (const d of daemons) {
    await d.stop().catch(() => undefined);
    if (alive(d)) await d.kill9().catch(() => undefined);
    rmSync(d.socket, { force: true });
  }
  // A graceful stop keeps mounts but must not make any.
  problems.push(...(await findAndCleanLeftovers(roots)).map((p) => `after the daemons stopped: ${p}`));
  for (const s of t.stopAfter ?? []) await step(`${s.what} stop`, s.stop);
  // The daemons' logs outlive the roots when something was left, to tell which operation left it.
  if (problems.length) {
    for (const [i, d] of daemons.entries()) {
      const keep = join(tmpdir(), `ballast-leftovers-${t.suite.replace(/\W+/g, '-')}-${process.pid}-${i}.log`);
      try { copyFileSync(d.logFile, keep); problems.push(`daemon log kept: ${keep}`); } catch { /* no log */ }
    }
  }
  for (const d of [...roots, ...(t.removeDirs ?? [])]) rmSync(d, { recursive: true, force: true });
  if (problems.length) throw new Error(`${t.suite}: the suite left things behind or could not remove them (cleaned up now):\n  ${problems.join('\n  ')}`);
}
