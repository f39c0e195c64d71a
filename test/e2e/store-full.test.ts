/**
 * Ballast's own state on a full disk, for real (root): the daemon's root is a 64 MiB ext4 on a loop
 * device; a local volume (data under that root) and a block volume (image elsewhere, mountpoint under
 * the root) are mounted, then a filler file takes every free block. Then a Mount of a new reference is
 * refused with a sentence naming the full directory (before it writes anything), while Unmounts of the
 * mounted volumes succeed: the store gives back its reserve and retries the write. After the filler is
 * deleted, everything agrees without a repair: mount counts, the ledger, the mount table, the reserve
 * (re-created), and a restart recovers nothing.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { BIN, NODE_FLAGS } from '../helpers/ballast.js';
import { isRoot, run, waitFor } from '../helpers/proc.js';
import { unixRequest } from '../../src/host/unix-http.js';

const skip = !isRoot() ? 'needs root: it makes and mounts a loop-device ext4 filesystem' : undefined;
const base = skip ? '' : mkdtempSync('/var/tmp/ballast-full-');
const img = join(base, 'state.img');
const root = join(base, 'root'); // the mount point of the small filesystem: the daemon's root
const socket = join(base, 'plugin.sock');
const logFile = join(base, 'daemon.log');
let child: ChildProcess | undefined;
const cleanups: (() => Promise<unknown> | unknown)[] = [];

after(async () => {
  for (const c of cleanups.reverse()) await Promise.resolve().then(c).catch(() => undefined);
  if (base) rmSync(base, { recursive: true, force: true });
});

const must = async (argv: string[]) => {
  const r = await run(argv, { timeoutMs: 60_000 });
  assert.equal(r.code, 0, `${argv.join(' ')}: ${r.stderr}`);
  return r.stdout;
};

async function startDaemon(): Promise<void> {
  const fd = openSync(logFile, 'a');
  const c = spawn(process.execPath, [...NODE_FLAGS, BIN, 'daemon', '--root', root, '--socket', socket, '--config', join(base, 'config.json'),
    '--log-level', 'debug', '--docker-host', `unix://${join(base, 'nodocker.sock')}`], { stdio: ['ignore', fd, fd] });
  closeSync(fd);
  child = c;
  await waitFor(async () => {
    if (c.exitCode !== null || c.signalCode !== null) throw new Error(`ballast exited: ${readFileSync(logFile, 'utf8').slice(-2000)}`);
    const r = await unixRequest(socket, 'POST', '/Plugin.Activate', undefined, { timeoutMs: 1000 }).catch(() => undefined);
    const h = await unixRequest(join(root, 'admin.sock'), 'GET', '/v1/health', undefined, { timeoutMs: 1000 }).catch(() => undefined);
    return r?.status === 200 && (h?.body as { pid?: number } | undefined)?.pid === c.pid;
  }, 'ballast to serve', 30_000, 100);
}
async function stopDaemon(): Promise<number | null> {
  const c = child;
  if (!c || c.exitCode !== null || c.signalCode !== null) return c?.exitCode ?? null;
  const done = new Promise<number | null>((r) => c.once('exit', (code) => r(code)));
  c.kill('SIGTERM');
  return done;
}
const plugin = async (method: string, body: unknown) => {
  const r = await unixRequest(socket, 'POST', `/${method}`, body, { timeoutMs: 60_000 });
  return { status: r.status, body: (typeof r.body === 'object' ? r.body : JSON.parse(r.text || '{}')) as Record<string, unknown> };
};
const admin = async (method: string, path: string) => (await unixRequest(join(root, 'admin.sock'), method, path, undefined, { timeoutMs: 60_000 })).body as Record<string, unknown>;
const mountedAt = (path: string) => readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((l) => l.split(' ')[4] === path);
const reserveFile = () => join(root, 'ballast.reserve');

/** Writes a file until the filesystem refuses (1 MiB, then 4 KiB writes). Returns the bytes written. */
function fill(file: string): number {
  const fd = openSync(file, 'w');
  let n = 0;
  try {
    for (const size of [1024 * 1024, 4096, 512]) {
      const chunk = Buffer.alloc(size, 0xa5);
      for (;;) {
        try { n += writeSync(fd, chunk); } catch (e) { if ((e as NodeJS.ErrnoException).code === 'ENOSPC') break; throw e; }
      }
    }
  } finally { closeSync(fd); }
  return n;
}

test('a full state directory: Mount is refused with a clear sentence, Unmount succeeds, all agrees after space is back', { skip, timeout: 240_000 }, async () => {
  await must(['truncate', '-s', '64M', img]);
  await must(['mkfs.ext4', '-q', '-F', img]);
  mkdirSync(root);
  await must(['mount', '-o', 'loop', img, root]);
  cleanups.push(() => run(['umount', '-l', root], { timeoutMs: 30_000 }));
  cleanups.push(() => stopDaemon());
  mkdirSync(join(base, 'images'));
  writeFileSync(join(base, 'config.json'), JSON.stringify({
    backends: { local: { type: 'local' }, block: { type: 'block', imageDir: join(base, 'images') } },
  }));
  await startDaemon();
  assert.equal(statSync(reserveFile()).size, 8 * 1024 * 1024, 'the reserve is made at start');

  assert.deepEqual((await plugin('VolumeDriver.Create', { Name: 'loc' })).body, {});
  assert.deepEqual((await plugin('VolumeDriver.Create', { Name: 'blk', Opts: { backend: 'block', size: '32M' } })).body, {});
  assert.deepEqual((await plugin('VolumeDriver.Create', { Name: 'later' })).body, {});
  const ids = Array.from({ length: 12 }, (_, i) => `c${String(i).padStart(2, '0')}${'0'.repeat(60)}`);
  for (const id of ids) {
    assert.ok((await plugin('VolumeDriver.Mount', { Name: 'loc', ID: id })).body.Mountpoint);
  }
  const blkMp = (await plugin('VolumeDriver.Mount', { Name: 'blk', ID: ids[0] })).body.Mountpoint as string;
  assert.ok(mountedAt(blkMp), 'the block volume is mounted');

  // Take every free block of the state filesystem.
  const filler = join(root, 'filler');
  const filled = fill(filler);
  cleanups.push(() => rmSync(filler, { force: true }));
  assert.ok(filled > 10 * 1024 * 1024, `filled ${filled} bytes`);

  // A new reference is refused before anything is written, with a sentence naming the directory.
  const refused = await plugin('VolumeDriver.Mount', { Name: 'later', ID: 'f'.repeat(64) });
  assert.notEqual(refused.status, 200);
  assert.match(String(refused.body.Err), new RegExp(`mounting volume later is refused: the filesystem of Ballast's state directory ${root} is full .*free space there`));
  assert.match(String(refused.body.Err), /Ballast refuses new mounts while the disk is full/);
  assert.equal(((await plugin('VolumeDriver.Get', { Name: 'later' })).body.Volume as { Status: { mounts: number } }).Status.mounts, 0);

  // Unmounts (journal entry, ledger change, kernel unmount) still go through.
  for (const id of ids) assert.deepEqual((await plugin('VolumeDriver.Unmount', { Name: 'loc', ID: id })).body, {}, `unmount ${id}`);
  assert.deepEqual((await plugin('VolumeDriver.Unmount', { Name: 'blk', ID: ids[0] })).body, {});
  assert.ok(!mountedAt(blkMp), 'the block volume was unmounted on its last reference');
  assert.ok(!existsSync(reserveFile()), 'the reserve was given back to let the store write on the full disk');
  const used = (await admin('GET', '/v1/doctor')).checks as { name: string; ok: boolean; detail: string }[];
  const check = used.find((c) => c.name === 'state reserve');
  assert.ok(check && !check.ok, JSON.stringify(check));
  assert.match(check.detail, /was used at .* because the filesystem of Ballast's state directory filled up; .*To get it back, free at least/);
  assert.match(readFileSync(logFile, 'utf8'), /"outcome":"ok".*"op":"unmount"|"op":"unmount".*"outcome":"ok"/);

  // Space back: everything agrees without a repair, and the reserve is made again.
  rmSync(filler);
  const m = await plugin('VolumeDriver.Mount', { Name: 'later', ID: 'f'.repeat(64) });
  assert.equal(m.status, 200, JSON.stringify(m.body));
  assert.equal(statSync(reserveFile()).size, 8 * 1024 * 1024, 'the reserve is re-created once there is room');
  assert.deepEqual((await plugin('VolumeDriver.Unmount', { Name: 'later', ID: 'f'.repeat(64) })).body, {});
  for (const name of ['loc', 'blk', 'later']) {
    const info = await admin('GET', `/v1/volumes/${name}`);
    assert.equal(info.mounts, 0, `${name} has no references`);
    assert.deepEqual(info.mountIds, [], `${name}'s ledger is empty`);
  }
  assert.ok(!mountedAt(blkMp), 'mount table and ledger agree');
  const ok = ((await admin('GET', '/v1/doctor')).checks as { name: string; ok: boolean }[]).find((c) => c.name === 'state reserve');
  assert.equal(ok?.ok, true);

  // A restart finds nothing to recover or repair.
  assert.equal(await stopDaemon(), 0);
  await startDaemon();
  const serving = readFileSync(logFile, 'utf8').split('\n').filter((l) => l.includes('"ballast serving"')).pop() ?? '';
  assert.match(serving, /"recovered":0/);
  assert.match(serving, /"repairs":0/);
  assert.equal(((await plugin('VolumeDriver.Get', { Name: 'blk' })).body.Volume as { Status: { mounts: number } }).Status.mounts, 0);
  assert.ok(!mountedAt(blkMp));
  // Remove the block volume (its image lives outside the small filesystem) and stop.
  assert.deepEqual((await plugin('VolumeDriver.Remove', { Name: 'blk' })).body, {});
  assert.equal(await stopDaemon(), 0);
});
