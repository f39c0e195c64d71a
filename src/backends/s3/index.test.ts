import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import pino from 'pino';
import { S3Backend } from './index.js';
import type { BackendContext } from '../types.js';
import type { Exec } from '../../host/exec.js';
import type { MountEntry } from '../../host/mountinfo.js';
import type { VolumeRecord } from '../../core/types.js';

/** A fake host: s3fs "mounts" (its mountpoint becomes a local directory standing for the bucket), mount --bind records the bind. */
function host(bucketDirs: string[]) {
  const root = mkdtempSync(join(tmpdir(), 's3-unit-'));
  const mounted = new Map<string, string>();
  const calls: string[][] = [];
  const exec: Exec = async (argv) => {
    calls.push([...argv]);
    if (argv[0] === 's3fs') {
      mounted.set(argv[2], 'fuse.s3fs');
      for (const d of bucketDirs) mkdirSync(join(argv[2], d), { recursive: true });
      return { code: 0, stdout: '', stderr: '' };
    }
    if (argv[0] === 'stat' && argv[2] === '%F') {
      // The look-up of the volume's directory through the (fake) mount: the local directory answers.
      try { return { code: 0, stdout: statSync(argv[argv.length - 1]).isDirectory() ? 'directory\n' : 'regular file\n', stderr: '' }; } catch { return { code: 1, stdout: '', stderr: 'No such file or directory' }; }
    }
    if (argv[0] === 'stat') return { code: 1, stdout: '', stderr: 'No such file or directory' };
    if (argv[0] === 'mount') { mounted.set(argv[3], 'bind'); return { code: 0, stdout: '', stderr: '' }; }
    if (argv[0] === 'umount') { mounted.delete(argv[argv.length - 1]); return { code: 0, stdout: '', stderr: '' }; }
    throw new Error(`unexpected ${argv.join(' ')}`);
  };
  const entry = (p: string): MountEntry => ({ id: 1, parent: 0, majorMinor: '0:1', root: '/', mountpoint: p, options: 'rw', fstype: mounted.get(p)!, source: 's3fs', superOptions: '' });
  const ctx: BackendContext = { root, exec, log: pino({ level: 'silent' }), mounts: { list: async () => [...mounted.keys()].map(entry), at: async (p) => (mounted.has(p) ? entry(p) : undefined) } };
  const b = new S3Backend('s3', { url: 'http://127.0.0.1:7480', bucket: 'b1', prefix: 'docker', passwdFile: '/etc/ballast/s3.passwd' }, ctx);
  const fuse = (n: string) => join(root, 'backends', 's3', 'fuse', n);
  return { b, calls, mounted, fuse, done: () => rmSync(root, { recursive: true, force: true }) };
}
/** The Docker path: staged at the record's mountpoint. */
const stage = (b: S3Backend, v: VolumeRecord) => b.stage(v, v.mountpoint);
const unstage = (b: S3Backend, v: VolumeRecord) => b.unstage(v, v.mountpoint);

/** A record as the service writes it at create: with the backend's placement. */
const vol = (b: S3Backend, name: string, spec: Record<string, unknown>): VolumeRecord => {
  const p = b.place(name);
  return { name, backend: 's3', spec, mountpoint: p.mountpoint, createdAt: '', state: 'ready', details: { ...p.details }, revision: 0 };
};

test('s3: s3fs mounts the parent of the volume\'s directory and the volume is a bind mount of it (so dockerd can chmod its root)', async () => {
  const h = host(['v1', 'db']);
  try {
    await stage(h.b, vol(h.b, 'v1', { existing: false }));
    assert.deepEqual(h.calls.map((c) => c.slice(0, 3)), [['s3fs', 'b1:/docker', h.fuse('v1')], ['stat', '-c', '%i'], ['stat', '-c', '%F'], ['mount', '--bind', join(h.fuse('v1'), 'v1')]]);
    assert.equal(h.calls[3][3], h.b.place('v1').mountpoint);
    h.calls.length = 0;
    await stage(h.b, vol(h.b, 'v1', { existing: false }));
    assert.equal(h.calls.length, 0, 'already staged');
    // A nested existing= directory: s3fs on its parent, the bind on the leaf.
    await stage(h.b, vol(h.b, 'v2', { dir: 'team/db', existing: true }));
    assert.deepEqual(h.calls.map((c) => c.slice(0, 2)), [['s3fs', 'b1:/docker/team'], ['stat', '-c'], ['stat', '-c'], ['mount', '--bind']]);
    assert.equal(h.calls[3][2], join(h.fuse('v2'), 'db'));
    h.calls.length = 0;
    await unstage(h.b, vol(h.b, 'v2', { dir: 'team/db', existing: true }));
    assert.deepEqual(h.calls.map((c) => c.at(-1)), [h.b.place('v2').mountpoint, h.fuse('v2')], 'the bind first, then s3fs');
    assert.ok(!h.mounted.has(h.fuse('v2')) && !h.mounted.has(h.b.place('v2').mountpoint));
  } finally { h.done(); }
});

test('s3: a volume whose directory is missing from the bucket is not mounted, and s3fs is unmounted again', async () => {
  const h = host([]);
  try {
    await assert.rejects(stage(h.b, vol(h.b, 'v1', { existing: false })), /s3 backend s3 \(bucket b1 at http:\/\/127\.0\.0\.1:7480\): the directory v1 of volume v1 is missing from the bucket/);
    assert.equal(h.mounted.size, 0);
  } finally { h.done(); }
});
