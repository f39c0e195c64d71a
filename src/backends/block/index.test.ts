import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync, existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import pino from 'pino';
import { BlockBackend } from './index.js';
import type { Exec, ExecResult } from '../../host/exec.js';
import { ExecError } from '../../host/exec.js';
import type { MountTable, MountEntry } from '../../host/mountinfo.js';
import type { VolumeRecord } from '../../core/types.js';

const dir = mkdtempSync(join(tmpdir(), 'ballast-block-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** Fake host: blkid answers from a map of path -> TYPE; every argv is recorded. */
function fakeHost(types: Record<string, string | undefined> = {}) {
  const calls: string[][] = [];
  const mounted: MountEntry[] = [];
  const exec: Exec = async (argv) => {
    calls.push([...argv]);
    const ok = (stdout = ''): ExecResult => ({ code: 0, stdout, stderr: '' });
    switch (argv[0]) {
      case 'blkid': {
        const t = types[argv[argv.length - 1]];
        return t ? ok(`TYPE=${t}\nUSAGE=filesystem\n`) : { code: 2, stdout: '', stderr: '' };
      }
      case 'mkfs.ext4': case 'mkfs.xfs': case 'mkfs.btrfs':
        types[argv[argv.length - 1]] = argv[0].slice(5);
        return ok();
      case 'mount':
        if (types[argv[argv.length - 2]] !== argv[2]) return Promise.reject(new ExecError(argv, { code: 32, stdout: '', stderr: 'wrong fs type' }, 'exit code 32'));
        mounted.push({ id: 1, parent: 0, majorMinor: '7:0', root: '/', mountpoint: argv[argv.length - 1], options: 'rw', fstype: argv[2], source: '/dev/loop0', superOptions: '' });
        return ok();
      case 'umount': mounted.splice(mounted.findIndex((m) => m.mountpoint === argv[argv.length - 1]), 1); return ok();
      case 'losetup': return ok('');
      default: throw new ExecError(argv, undefined, 'unexpected command');
    }
  };
  const mounts: MountTable = { list: async () => [...mounted], at: async (p) => mounted.find((m) => m.mountpoint === p) };
  return { exec, mounts, calls, types, mounted };
}

function backend(h: ReturnType<typeof fakeHost>, sub: string) {
  return new BlockBackend('block', {}, { root: join(dir, sub), exec: h.exec, mounts: h.mounts, log: pino({ level: 'silent' }) });
}
function vol(b: BlockBackend, name: string, opts: Record<string, string>): VolumeRecord {
  return { name, backend: 'block', spec: b.parseOptions(opts), mountpoint: b.place(name).mountpoint, createdAt: '', state: 'creating', details: { ...b.place(name).details } };
}

test('options: size is required, fstype and mount options are checked', () => {
  const b = backend(fakeHost(), 'opts');
  assert.deepEqual(b.parseOptions({ size: '1G' }), { size: 1024 ** 3, fstype: 'ext4', mountopts: [] });
  assert.deepEqual(b.parseOptions({ size: '1G', fstype: 'xfs', mountopts: 'nosuid,noatime,nosuid' }), { size: 1024 ** 3, fstype: 'xfs', mountopts: ['noatime', 'nosuid'] });
  assert.throws(() => b.parseOptions({}), /needs a size/);
  assert.throws(() => b.parseOptions({ size: '1G', fstype: 'ntfs' }), /not supported; choose one of ext4, xfs, btrfs/);
  assert.throws(() => b.parseOptions({ size: '100M', fstype: 'xfs' }), /too small for xfs; the minimum is 300MiB/);
  for (const bad of ['suid', 'dev', 'loop=/dev/loop1', 'context=x', 'rw,exec', 'x-mount.mkdir']) {
    assert.throws(() => b.parseOptions({ size: '1G', mountopts: bad }), /is not allowed/, bad);
  }
  assert.throws(() => b.parseOptions({ size: '1G', uid: '0' }), /unknown option "uid" for backend block; accepted options: backend, size, fstype, mountopts/);
});

test('provision makes a sparse image and formats it once, without a force flag', async () => {
  const h = fakeHost();
  const b = backend(h, 'p1');
  const v = vol(b, 'db', { size: '1G' });
  const details = await b.provision(v);
  const img = details.image as string;
  assert.equal(statSync(img).size, 1024 ** 3);
  assert.ok(statSync(img).blocks * 512 < 1024 * 1024, 'sparse');
  const mkfs = h.calls.filter((c) => c[0].startsWith('mkfs'));
  assert.equal(mkfs.length, 1);
  assert.ok(!mkfs[0].includes('-F') && !mkfs[0].includes('-f'), 'no force flag');
  await b.provision(v); // retry after a crash: blkid finds ext4 now, no second mkfs
  assert.equal(h.calls.filter((c) => c[0].startsWith('mkfs')).length, 1);
});

test('an existing image with another filesystem is never formatted or deleted', async () => {
  const h = fakeHost();
  const b = backend(h, 'p2');
  const v = vol(b, 'db', { size: '1G', fstype: 'xfs' });
  const img = join(dir, 'p2', 'backends', 'block', 'images', 'db.img');
  await b.provision(vol(b, 'tmp', { size: '8M' })); // creates the image dir
  writeFileSync(img, 'precious');
  h.types[img] = 'ext4';
  await assert.rejects(b.provision(v), /already holds ext4, not xfs; Ballast will not format over it/);
  assert.equal(readFileSync(img, 'utf8'), 'precious');
  assert.ok(!h.calls.some((c) => c[0] === 'mkfs.xfs'));
});

test('publish refuses a blank or foreign image instead of formatting it', async () => {
  const h = fakeHost();
  const b = backend(h, 'p3');
  const v = vol(b, 'db', { size: '1G' });
  const { image } = await b.provision(v) as { image: string };
  h.types[image] = undefined; // wiped behind our back
  await assert.rejects(b.publish(v), /no filesystem signature although Ballast formatted it; refusing to format it again/);
  h.types[image] = 'btrfs';
  await assert.rejects(b.publish(v), /holds btrfs, not ext4; refusing to mount it/);
  assert.equal(h.calls.filter((c) => c[0].startsWith('mkfs')).length, 1);
});

test('publish mounts once with loop and the allowed options; unpublish unmounts', async () => {
  const h = fakeHost();
  const b = backend(h, 'p4');
  const v = vol(b, 'db', { size: '1G', mountopts: 'noatime' });
  await b.provision(v);
  await b.publish(v);
  await b.publish(v);
  const mounts = h.calls.filter((c) => c[0] === 'mount');
  assert.equal(mounts.length, 1, 'second publish sees the real mount table and does nothing');
  assert.deepEqual(mounts[0].slice(0, 5), ['mount', '-t', 'ext4', '-o', 'loop,noatime']);
  await b.unpublish(v);
  assert.equal(h.mounted.length, 0);
  await b.unpublish(v); // absent: success
  assert.equal(h.calls.filter((c) => c[0] === 'umount').length, 1);
});

test('a missing image is reported, not recreated', async () => {
  const h = fakeHost();
  const b = backend(h, 'p5');
  const v = vol(b, 'gone', { size: '1G' });
  await assert.rejects(b.publish(v), /image .* is missing; Ballast will not create an empty one/);
  assert.ok(!existsSync(join(dir, 'p5', 'backends', 'block', 'images', 'gone.img')));
});
