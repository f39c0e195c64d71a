import { readdir, readFile } from 'node:fs/promises';
import type { Exec } from './exec.js';
import type { MountTable } from './mountinfo.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Runs a mount command (FUSE helpers daemonize and outlive the Ballast process that started them, so a
 * daemon restart does not unmount volumes in use), then waits until the kernel shows the mount: some
 * helpers (s3fs) exit 0 without mounting anything.
 */
export async function mountAndVerify(exec: Exec, mounts: MountTable, argv: readonly string[], mountpoint: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  await exec(argv, { timeoutMs });
  while (!(await mounts.at(mountpoint))) {
    if (Date.now() > deadline) throw new Error(`${argv[0]} exited but nothing is mounted at ${mountpoint}`);
    await sleep(50);
  }
}

/** Processes whose command line names the path (the FUSE daemon of a mountpoint). */
export async function processesMentioning(path: string): Promise<number[]> {
  const out: number[] = [];
  for (const p of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(p) || Number(p) === process.pid) continue;
    const cmd = await readFile(`/proc/${p}/cmdline`, 'utf8').catch(() => '');
    if (!cmd) continue;
    const stat = await readFile(`/proc/${p}/stat`, 'utf8').catch(() => '');
    if (/\) Z /.test(stat)) continue; // a zombie holds nothing
    if (cmd.split('\0').includes(path)) out.push(Number(p));
  }
  return out;
}

/**
 * Unmounts and waits (bounded) for the FUSE daemon to exit, so the remote side sees the client gone
 * (a lock released, an image closed) before the caller goes on. A dead FUSE mount ("Transport endpoint
 * is not connected") is detached lazily.
 */
export async function unmountAndWait(exec: Exec, mounts: MountTable, mountpoint: string, timeoutMs = 10_000): Promise<void> {
  if (await mounts.at(mountpoint)) {
    try {
      await exec(['umount', '--', mountpoint], { timeoutMs: 60_000 });
    } catch (e) {
      if (!/not connected|not mounted/i.test((e as Error).message)) throw e;
      await exec(['umount', '-l', '--', mountpoint], { timeoutMs: 60_000 });
    }
  }
  const deadline = Date.now() + timeoutMs;
  while ((await processesMentioning(mountpoint)).length > 0 && Date.now() < deadline) await sleep(100);
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
    const r = await exec(['stat', '-c', '%i', '--', `${mountpoint}/.ballast-probe`], { timeoutMs, okCodes: [0, 1] });
    if (r.code === 0 || /No such file or directory/.test(r.stderr)) return { ok: true };
    return { ok: false, reason: r.stderr.trim().replace(/^stat: /, '') };
  } catch (e) {
    return { ok: false, reason: (e as Error).message };
  }
}

/** "Transport endpoint is not connected" and hung mounts: a stat in a child process with a timeout. */
export async function mountAlive(exec: Exec, mountpoint: string, timeoutMs = 5_000): Promise<{ alive: boolean; reason?: string }> {
  try {
    await exec(['stat', '-c', '%i', '--', mountpoint], { timeoutMs });
    return { alive: true };
  } catch (e) {
    return { alive: false, reason: (e as Error).message };
  }
}
