import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { ExecError, type Exec } from './exec.js';
import type { MountEntry, MountTable } from './mountinfo.js';
import { mountAndVerify, unmountAndWait } from './fuse.js';
import { execBounded, statChild } from './fs-child.js';

/**
 * A fake mount table and umount, and a real process standing for the FUSE client: its command line
 * names the mountpoint, as sshfs's and glusterfs's do. `umount` (not lazy) behaves as told.
 */
function host(umount: 'ok' | 'hang' | 'busy' | 'not connected') {
  const dir = mkdtempSync(join(tmpdir(), 'fuse-unit-'));
  const mp = join(dir, 'mp');
  const mounted = new Set<string>([mp]);
  const calls: string[][] = [];
  const entry = (p: string): MountEntry => ({ id: 1, parent: 0, majorMinor: '0:99', root: '/', mountpoint: p, options: 'rw', fstype: 'fuse.sshfs', source: 'x', superOptions: '' });
  const mounts: MountTable = { list: async () => [...mounted].map(entry), at: async (p) => (mounted.has(p) ? entry(p) : undefined) };
  const exec: Exec = (argv, opts) => {
    calls.push([...argv]);
    if (argv[0] === 'umount' && argv.includes('-l')) { mounted.delete(argv[argv.length - 1]); return Promise.resolve({ code: 0, stdout: '', stderr: '' }); }
    if (argv[0] === 'umount') {
      if (umount === 'ok') { mounted.delete(argv[argv.length - 1]); return Promise.resolve({ code: 0, stdout: '', stderr: '' }); }
      if (umount === 'hang') return new Promise((_, rej) => setTimeout(() => rej(new ExecError(argv, undefined, `timed out after ${opts.timeoutMs} ms`)), opts.timeoutMs));
      const stderr = umount === 'busy' ? `umount: ${mp}: target is busy.` : `umount: ${mp}: Transport endpoint is not connected`;
      return Promise.reject(new ExecError(argv, { code: 32, stdout: '', stderr }, `exit code 32: ${stderr}`));
    }
    if (argv[0] === 'sshfs') { mounted.add(argv[2]); return new Promise(() => undefined); } // mounts, then never returns
    return Promise.reject(new Error(`unexpected ${argv.join(' ')}`));
  };
  const clients: ChildProcess[] = [];
  const client = (stop: boolean) => {
    const c = spawn('sh', ['-c', 'while :; do sleep 0.2; done', mp], { stdio: 'ignore' });
    clients.push(c);
    if (stop) c.kill('SIGSTOP');
    return c;
  };
  const exited = (c: ChildProcess) => c.exitCode !== null || c.signalCode !== null;
  const done = () => { for (const c of clients) if (!exited(c)) { c.kill('SIGKILL'); } rmSync(dir, { recursive: true, force: true }); };
  return { mp, mounted, calls, mounts, exec, client, exited, done };
}

const FAST = { umountMs: 300, lazyMs: 300, exitMs: 2_000 };
const settle = () => new Promise((r) => setTimeout(r, 100));

test('unmount: a umount that does not return in time is detached lazily and its stopped client ended, within the bound', async () => {
  const h = host('hang');
  try {
    const c = h.client(true);
    const t0 = Date.now();
    await unmountAndWait(h.exec, h.mounts, h.mp, FAST);
    const ms = Date.now() - t0;
    await settle();
    assert.ok(ms < 3_000, `took ${ms} ms`);
    assert.equal(h.mounted.size, 0);
    assert.ok(h.exited(c), 'the stopped client was ended');
    assert.deepEqual(h.calls.map((a) => a.slice(0, -1)), [['umount', '-c', '--'], ['umount', '-l', '-i', '-c', '--']], 'no canonicalization (it stats), lazy with no helper');
  } finally { h.done(); }
});

test('unmount: a clean umount whose client is stopped ends the client at once instead of waiting for it', async () => {
  const h = host('ok');
  try {
    const c = h.client(true);
    const t0 = Date.now();
    await unmountAndWait(h.exec, h.mounts, h.mp, { ...FAST, exitMs: 10_000 });
    await settle();
    assert.ok(Date.now() - t0 < 3_000);
    assert.ok(h.exited(c));
  } finally { h.done(); }
});

test('unmount: a dead mount (not connected) is detached lazily; one busy with a user throws and its client lives; one busy with no user is hung', async () => {
  const dead = host('not connected');
  try {
    await unmountAndWait(dead.exec, dead.mounts, dead.mp, FAST);
    assert.equal(dead.mounted.size, 0);
  } finally { dead.done(); }
  const busy = host('busy');
  mkdirSync(busy.mp);
  const user = spawn('sleep', ['30'], { cwd: busy.mp, stdio: 'ignore' }); // a shell of this host working in the volume
  try {
    const c = busy.client(false);
    await assert.rejects(unmountAndWait(busy.exec, busy.mounts, busy.mp, FAST), new RegExp(`target is busy.*\\(used by pid ${user.pid}\\)`));
    await settle();
    assert.ok(!busy.exited(c), 'a busy mount is in use: its client is not touched');
    assert.equal(busy.mounted.size, 1);
  } finally { user.kill('SIGKILL'); busy.done(); }
  // Busy with no process using it, but the client answers: the kernel holds it (a loop device on one of
  // its files, released a moment after its own unmount). Still an error: the caller tries again.
  const kernel = host('busy');
  try {
    const c = kernel.client(false);
    const exec: Exec = (argv, opts) => (argv[0] === 'stat' ? Promise.resolve({ code: 1, stdout: '', stderr: `stat: cannot statx '${argv[argv.length - 1]}': No such file or directory` }) : kernel.exec(argv, opts));
    await assert.rejects(unmountAndWait(exec, kernel.mounts, kernel.mp, FAST), /target is busy/);
    await settle();
    assert.equal(kernel.mounted.size, 1, 'not detached');
    assert.ok(!kernel.exited(c), 'its client lives');
  } finally { kernel.done(); }
  // Busy, but nothing of this host works in it: stuck system calls (a stat through a client whose
  // server is away) hold it. It is detached lazily and its client ended, like a hung mount.
  const stuck = host('busy');
  try {
    const c = stuck.client(false);
    await unmountAndWait(stuck.exec, stuck.mounts, stuck.mp, FAST);
    await settle();
    assert.equal(stuck.mounted.size, 0, 'detached');
    assert.ok(stuck.calls.some((x) => x[0] === 'umount' && x.includes('-l')), 'lazily');
    assert.ok(stuck.exited(c), 'its client was ended');
  } finally { stuck.done(); }
});

test('mount: a mount command that times out leaves no half-made mount and no client behind', async () => {
  const h = host('hang');
  try {
    h.mounted.clear();
    const c = h.client(false);
    await assert.rejects(mountAndVerify(h.exec, h.mounts, ['sshfs', 'u@h:/x', h.mp], h.mp, 300), /timed out/);
    await settle();
    assert.equal(h.mounted.size, 0, 'the half-made mount was detached');
    assert.ok(h.exited(c), 'the client it started was ended');
  } finally { h.done(); }
});

test('fs-child: a call whose child never answers still returns, as a timeout; stat answers kind or absent', async () => {
  const never: Exec = () => new Promise(() => undefined);
  const t0 = Date.now();
  await assert.rejects(execBounded(never, ['stat', '/x'], { timeoutMs: 100 }, 100), /timed out after 100 ms/);
  assert.ok(Date.now() - t0 < 1_000);
  await assert.rejects(statChild(never, '/x', 100), (e: Error & { timedOut?: boolean }) => e.timedOut === true && /no answer within/.test(e.message));
  const fake: Exec = async (argv) => (argv.at(-1) === '/d' ? { code: 0, stdout: 'directory\n', stderr: '' } : { code: 1, stdout: '', stderr: "stat: cannot statx '/n': No such file or directory" });
  assert.deepEqual(await statChild(fake, '/d', 1000), { kind: 'directory' });
  assert.equal(await statChild(fake, '/n', 1000), undefined);
});
