import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import pino from 'pino';
import { RemoteDirBackend } from './remote-dir.js';
import { s3Fs } from './s3/index.js';
import type { BackendContext } from './types.js';
import type { Exec } from '../host/exec.js';
import type { MountEntry, MountTable } from '../host/mountinfo.js';
import type { VolumeRecord } from '../core/types.js';

/**
 * s3fs mounts first and checks its server afterwards; when the server does not answer it exits and
 * the mount goes away. Modelled here: a fake host where the mount command "mounts" and a chosen step
 * makes the client vanish, with the share's directory a real (local) temporary directory.
 */
function fakeHost(vanishAt: 'probe' | 'after-probe' | 'never', probeAnswer: { code: number; stderr: string } = { code: 1, stderr: "stat: cannot statx 'x': No such file or directory" }) {
  const root = mkdtempSync(join(tmpdir(), 'remote-dir-probe-'));
  const mounted = new Set<string>();
  const calls: string[] = [];
  let statsOfShare = 0;
  const entry = (p: string): MountEntry => ({ id: 1, parent: 0, majorMinor: '0:1', root: '/', mountpoint: p, options: 'rw', fstype: 'fuse.s3fs', source: 's3fs', superOptions: '' });
  const mounts: MountTable = {
    list: async () => [...mounted].map(entry),
    at: async (p) => {
      // The client exits right after it answered the probe: the next look finds nothing mounted.
      if (vanishAt === 'after-probe' && statsOfShare > 0) mounted.clear();
      return mounted.has(p) ? entry(p) : undefined;
    },
  };
  const hooks: { onStat?: () => Promise<void> } = {};
  const exec: Exec = async (argv) => {
    calls.push(argv[0]);
    if (argv[0] === 'stat' && hooks.onStat) await hooks.onStat();
    if (argv[0] === 's3fs') { mounted.add(argv[2]); return { code: 0, stdout: '', stderr: '' }; }
    if (argv[0] === 'stat') {
      statsOfShare++;
      if (vanishAt === 'probe') mounted.clear();
      if (probeAnswer.code !== 0 && probeAnswer.code !== 1) throw new Error(`stat failed: exit code ${probeAnswer.code}: ${probeAnswer.stderr}`);
      return { code: probeAnswer.code, stdout: '', stderr: probeAnswer.stderr };
    }
    if (argv[0] === 'umount') { mounted.delete(argv[argv.length - 1]); return { code: 0, stdout: '', stderr: '' }; }
    if (argv[0] === 'mkdir') { mkdirSync(argv[argv.length - 1]); return { code: 0, stdout: '', stderr: '' }; }
    throw new Error(`unexpected command ${argv.join(' ')}`);
  };
  const ctx: BackendContext = { root, exec, mounts, log: pino({ level: 'silent' }) };
  const b = new RemoteDirBackend('s3', s3Fs('s3', { url: 'http://127.0.0.1:7480', bucket: 'b1', passwdFile: '/etc/ballast/s3.passwd', mountTimeoutSec: 5 }), ctx);
  const vol: VolumeRecord = { name: 'v1', backend: 's3', spec: { existing: false }, mountpoint: b.place('v1').mountpoint, createdAt: '', state: 'creating', details: {}, revision: 0 };
  const tmpDir = join(root, 'backends', 's3', 'tmp');
  return { root, b, vol, calls, mounted, mounts, hooks, tmpDir, done: () => rmSync(root, { recursive: true, force: true }) };
}

test('remote dir: a client that mounts and then exits (server down) fails create, and nothing lands in the local directory', async () => {
  for (const vanishAt of ['probe', 'after-probe'] as const) {
    const h = fakeHost(vanishAt);
    try {
      await assert.rejects(h.b.provision(h.vol), (e: Error & { code?: string }) => {
        assert.equal(e.code, 'Unavailable', vanishAt);
        assert.match(e.message, /^s3 backend s3 \(bucket b1 at http:\/\/127\.0\.0\.1:7480\): /, vanishAt);
        assert.match(e.message, /is the server up and reachable\?$/, vanishAt);
        return true;
      });
      assert.deepEqual(readdirSync(h.tmpDir), [], `${vanishAt}: no directory was made on the local disk`);
    } finally { h.done(); }
  }
});

test('remote dir: a mount whose probe gets an error from the client is unmounted and the error names the server', async () => {
  const h = fakeHost('never', { code: 1, stderr: "stat: cannot statx '/m/.ballast-probe': Software caused connection abort" });
  try {
    await assert.rejects(h.b.stage({ ...h.vol, state: 'ready' }, h.vol.mountpoint), /s3 backend s3 \(bucket b1 at http:\/\/127\.0\.0\.1:7480\): mounted v1 but the server did not answer through it \(cannot statx '.*\.ballast-probe': Software caused connection abort\); is the server up and reachable\?/);
    assert.deepEqual(h.calls, ['s3fs', 'stat', 'umount']);
    assert.equal(h.mounted.size, 0);
  } finally { h.done(); }
});

test('remote dir: a client that answers is handed out; create makes the directory through it', async () => {
  const h = fakeHost('never');
  try {
    await h.b.stage({ ...h.vol, state: 'ready' }, h.vol.mountpoint);
    assert.deepEqual(h.calls, ['s3fs', 'stat']);
    assert.ok(h.mounted.has(h.vol.mountpoint));
    h.calls.length = 0;
    assert.deepEqual(await h.b.provision(h.vol), { dir: 'v1', createdByBallast: true });
    // The probe, then the look-up and the mkdir of the volume's directory, each in a child process.
    assert.deepEqual(h.calls, ['s3fs', 'stat', 'stat', 'mkdir', 'umount']);
    assert.deepEqual(readdirSync(h.tmpDir), [], 'the temporary share mountpoint is gone');
  } finally { h.done(); }
});

test('remote dir: leftovers under tmp/ are orphans cleaned on every pass (autoClean); the share mount of a create in progress is not one', async () => {
  const h = fakeHost('never');
  try {
    mkdirSync(h.tmpDir, { recursive: true });
    const empty = join(h.tmpDir, 'share-000000000001');
    const dead = join(h.tmpDir, 'share-000000000002');
    mkdirSync(empty);
    mkdirSync(dead);
    h.mounted.add(dead);
    const snap = async () => ({ mounts: await h.mounts.list(), loops: [] });
    const found = await h.b.findOrphans(new Set(), await snap());
    assert.deepEqual(found.map((o) => [o.path, o.kind, o.cleanable, o.autoClean]), [[empty, 'directory', true, true], [dead, 'mount', true, true]]);
    // While a create has its share mounted, that mount is not a leftover.
    let during: string[] = [];
    h.hooks.onStat = async () => { during = (await h.b.findOrphans(new Set(), await snap())).map((o) => o.path); };
    await h.b.provision(h.vol);
    h.hooks.onStat = undefined;
    assert.deepEqual(during, [empty, dead], 'only the old leftovers while the create runs');
    for (const o of found) await h.b.cleanOrphan(o);
    assert.equal(h.mounted.size, 0, 'the leftover mount is detached');
    assert.deepEqual(readdirSync(h.tmpDir), [], 'and the directories are gone');
    await assert.rejects(h.b.cleanOrphan({ ...found[0], path: '/etc' }), /not a temporary share mountpoint/);
  } finally { h.done(); }
});
