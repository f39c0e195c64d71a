import { readdir, readFile, readlink } from 'node:fs/promises';
import type { Exec } from './exec.js';
import type { MountTable } from './mountinfo.js';
import { execBounded } from './fs-child.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Runs a mount command (FUSE helpers daemonize and outlive the Ballast process that started them, so a
 * daemon restart does not unmount volumes in use), then waits until the kernel shows the mount: some
 * helpers (s3fs) exit 0 without mounting anything. The caller makes sure nothing was mounted at
 * mountpoint before. A mount that gives up (timed out, failed, nothing mounted) cleans what it started:
 * a half-made mount is detached lazily and the client it started (whose command line names the
 * mountpoint: a FUSE daemon, mount.glusterfs and its stat) is ended, so no dead mount or hung client
 * is left behind.
 */
export async function mountAndVerify(exec: Exec, mounts: MountTable, argv: readonly string[], mountpoint: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  try {
    await execBounded(exec, argv, { timeoutMs });
    while (!(await mounts.at(mountpoint))) {
      if (Date.now() > deadline) throw new Error(`${argv[0]} exited but nothing is mounted at ${mountpoint}`);
      await sleep(50);
    }
  } catch (e) {
    await forceDetach(exec, mounts, mountpoint).catch(() => undefined);
    throw e;
  }
}

/** Processes whose command line names the path (the FUSE daemon of a mountpoint). */
export async function processesMentioning(path: string): Promise<number[]> {
  const out: number[] = [];
  // A path names another file in another mount namespace (another node's Ballast on the same kernel, a
  // container): only processes of this daemon's own mount namespace count.
  const ns = await readlink('/proc/self/ns/mnt').catch(() => undefined);
  for (const p of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(p) || Number(p) === process.pid) continue;
    if (ns && (await readlink(`/proc/${p}/ns/mnt`).catch(() => undefined)) !== ns) continue;
    const cmd = await readFile(`/proc/${p}/cmdline`, 'utf8').catch(() => '');
    if (!cmd) continue;
    const stat = await readFile(`/proc/${p}/stat`, 'utf8').catch(() => '');
    if (/\) Z /.test(stat)) continue; // a zombie holds nothing
    if (cmd.split('\0').includes(path)) out.push(Number(p));
  }
  return out;
}

/** How long each step of a bounded unmount may take (all of them together stay well within dockerd's 60 s). */
export interface UnmountBounds {
  /** A clean `umount` that takes longer than this counts as hung (a stopped client, a server away). */
  readonly umountMs: number;
  /** The lazy detach (`umount -l`), which does not wait for the client. */
  readonly lazyMs: number;
  /** How long the FUSE client may take to exit by itself after its mount is gone. */
  readonly exitMs: number;
}

/** About 3 + 2 + 4 (+ 1.5 to kill) s at worst: an Unmount answers within ~11 s even with a hung client. */
export const UNMOUNT_BOUNDS: UnmountBounds = { umountMs: 3_000, lazyMs: 2_000, exitMs: 4_000 };

/**
 * umount(8) without path canonicalization (`-c`): canonicalizing stats the mountpoint, and a stat
 * through a stopped FUSE client or a hard NFS mount whose server is away never returns (a plain
 * `umount` of a stopped sshfs hangs; `umount -c` returns at once). Mountpoints here are canonical
 * already (within()). The lazy form also skips the umount.<type> helpers (`-i`), which stat too.
 */
async function umountArgv(exec: Exec, mountpoint: string, lazy: boolean, timeoutMs: number): Promise<void> {
  await execBounded(exec, ['umount', ...(lazy ? ['-l', '-i'] : []), '-c', '--', mountpoint], { timeoutMs });
}

const alive = (pid: number) => { try { process.kill(pid, 0); return true; } catch { return false; } };

/** Stopped (SIGSTOP, a debugger) or traced: it handles no signal but SIGKILL and no FUSE request. */
async function stopped(pid: number): Promise<boolean> {
  const st = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  return /\) [Tt] /.test(st);
}

/**
 * Ends the processes whose command line names the mountpoint (the FUSE client Ballast started for it,
 * and a mount helper still waiting on it): SIGTERM, then SIGKILL after graceMs (which also ends a
 * stopped process). Returns the PIDs it signalled.
 */
export async function endClients(mountpoint: string, graceMs = 1_000, signal: NodeJS.Signals = 'SIGTERM'): Promise<number[]> {
  const pids = await processesMentioning(mountpoint);
  if (pids.length === 0) return [];
  const send = (sig: NodeJS.Signals) => { for (const p of pids) { try { process.kill(p, sig); } catch { /* gone */ } } };
  if (signal !== 'SIGKILL' && (await Promise.all(pids.map(stopped))).every(Boolean)) signal = 'SIGKILL';
  send(signal);
  const deadline = Date.now() + (signal === 'SIGKILL' ? 0 : graceMs);
  while (Date.now() < deadline && (await processesMentioning(mountpoint)).length > 0) await sleep(50);
  if ((await processesMentioning(mountpoint)).length > 0) {
    send('SIGKILL');
    const end = Date.now() + 2_000;
    while (Date.now() < end && pids.some(alive) && (await processesMentioning(mountpoint)).length > 0) await sleep(50);
  }
  return pids;
}

/**
 * For a mount that is hung, dead or half made (a mount command that timed out): detach it lazily
 * (the kernel drops it from the tree at once and frees it when its last user lets go), end its client,
 * and detach again if the first detach did not get through. Never stats the mountpoint: only the
 * mount table is read. Throws only when the mountpoint is still in the mount table at the end.
 */
export async function forceDetach(exec: Exec, mounts: MountTable, mountpoint: string, b: UnmountBounds = UNMOUNT_BOUNDS): Promise<void> {
  let first: Error | undefined;
  if (await mounts.at(mountpoint)) {
    try { await umountArgv(exec, mountpoint, true, b.lazyMs); } catch (e) { first = e as Error; }
  }
  // A client whose mount is detached serves nothing; a hung one would never exit by itself.
  await endClients(mountpoint, 200, 'SIGKILL');
  if (await mounts.at(mountpoint)) {
    try { await umountArgv(exec, mountpoint, true, b.lazyMs); } catch (e) {
      if (!/not mounted/i.test((e as Error).message)) throw new Error(`could not detach ${mountpoint}: ${(e as Error).message}${first ? ` (first try: ${first.message})` : ''}`, { cause: e });
    }
  }
}

/**
 * Does the client behind the mount answer? A lookup of a name that exists nowhere (random, so no cache
 * answers it) must reach the client; "no such file" within the bound is an answer.
 */
async function answers(exec: Exec, mountpoint: string, timeoutMs = 1_500): Promise<boolean> {
  const probe = `${mountpoint}/.ballast-probe-${Math.random().toString(36).slice(2, 10)}`;
  try {
    const r = await execBounded(exec, ['stat', '-c', '%i', '--', probe], { timeoutMs, okCodes: [0, 1] });
    return r.code === 0 || /No such file or directory/.test(r.stderr);
  } catch {
    return false;
  }
}

/**
 * Processes of this mount namespace whose working directory, root or an open file lies under the
 * mountpoint. Read from /proc links (readlink never enters the mount, so a hung one cannot block it).
 * Processes of other mount namespaces (containers) hold their own copies of the mount, not this one.
 */
export async function openersOf(mountpoint: string): Promise<number[]> {
  const own = await readlink('/proc/self/ns/mnt').catch(() => '');
  const under = (p: string) => p === mountpoint || p.startsWith(mountpoint + '/');
  const out: number[] = [];
  for (const pid of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(pid) || Number(pid) === process.pid) continue;
    if ((await readlink(`/proc/${pid}/ns/mnt`).catch(() => '')) !== own) continue;
    const links = [`/proc/${pid}/cwd`, `/proc/${pid}/root`, ...(await readdir(`/proc/${pid}/fd`).catch(() => [] as string[])).map((f) => `/proc/${pid}/fd/${f}`)];
    for (const l of links) {
      if (under(await readlink(l).catch(() => ''))) { out.push(Number(pid)); break; }
    }
  }
  return out;
}

/**
 * Unmounts and waits (bounded) for the FUSE client to exit, so the remote side sees the client gone
 * (a lock released, an image closed) before the caller goes on. Bounded as a whole (UNMOUNT_BOUNDS):
 * a `umount` that does not return in time (a stopped client, a server away), or a dead mount
 * ("Transport endpoint is not connected"), is detached lazily and its client ended; a client that
 * does not exit within `exitMs` after its mount is gone is ended too. "Target is busy" throws when a
 * process of this host has its working directory or an open file there (see openersOf); busy with no
 * such process means stuck system calls hold it, and it is detached like a hung mount.
 */
export async function unmountAndWait(exec: Exec, mounts: MountTable, mountpoint: string, b: UnmountBounds = UNMOUNT_BOUNDS): Promise<void> {
  if (await mounts.at(mountpoint)) {
    let hung = false;
    try {
      await umountArgv(exec, mountpoint, false, b.umountMs);
    } catch (e) {
      const m = (e as Error).message;
      if (/timed out/.test(m) || /not connected/i.test(m)) hung = true;
      else if (/target is busy/i.test(m)) {
        // Busy because a process here uses it (a shell with its cwd there, an open file), or the kernel
        // does (a loop device on a file of it, released a moment after its own unmount): that stays an
        // error, the caller or the reconciler tries again. Busy with no such process and a client that
        // does not answer: what holds it are system calls stuck in the mount (a stat through a client
        // whose server is away waits, even when killed, until the client answers): the mount is hung.
        const users = await openersOf(mountpoint);
        if (users.length > 0) throw new Error(`${m.trim()} (used by pid ${users.join(', ')})`, { cause: e });
        if (await answers(exec, mountpoint)) throw e;
        hung = true;
      } else if (!/not mounted/i.test(m)) throw e;
    }
    if (hung) { await forceDetach(exec, mounts, mountpoint, b); return; }
  }
  const deadline = Date.now() + b.exitMs;
  for (;;) {
    const left = await processesMentioning(mountpoint);
    if (left.length === 0 || Date.now() >= deadline) break;
    if ((await Promise.all(left.map(stopped))).every(Boolean)) break; // a stopped client never exits by itself
    await sleep(25);
  }
  // Still there with nothing mounted: stopped or hung; it serves nothing and would never exit.
  if (!(await mounts.at(mountpoint))) await endClients(mountpoint);
}

/**
 * Does the client behind a fresh mount answer from its server? Some FUSE clients (s3fs) mount first and
 * check the server afterwards, then exit and unmount when it does not answer: a mount handed out in
 * that window would leave containers writing to the empty local directory underneath. A stat of a
 * name that does not exist must reach the server (the kernel holds requests until the client's init,
 * where s3fs makes its check, is done); "No such file or directory" is an answer. The caller must
 * also check that the mount is still there afterwards: once the client is gone the stat reaches the
 * local directory and also says "No such file".
 */
export async function serverAnswers(exec: Exec, mountpoint: string, timeoutMs: number): Promise<{ ok: boolean; reason?: string }> {
  try {
    const r = await execBounded(exec, ['stat', '-c', '%i', '--', `${mountpoint}/.ballast-probe`], { timeoutMs, okCodes: [0, 1] });
    if (r.code === 0 || /No such file or directory/.test(r.stderr)) return { ok: true };
    return { ok: false, reason: r.stderr.trim().replace(/^stat: /, '') };
  } catch (e) {
    return { ok: false, reason: (e as Error).message };
  }
}

/** "Transport endpoint is not connected" and hung mounts: a stat in a child process with a timeout. */
export async function mountAlive(exec: Exec, mountpoint: string, timeoutMs = 5_000): Promise<{ alive: boolean; reason?: string }> {
  try {
    await execBounded(exec, ['stat', '-c', '%i', '--', mountpoint], { timeoutMs });
    return { alive: true };
  } catch (e) {
    return { alive: false, reason: (e as Error).message };
  }
}
