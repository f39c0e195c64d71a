import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync, existsSync, readFileSync, statSync, statfsSync, truncateSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import pino from 'pino';
import { BlockBackend, provisioningOf } from './index.js';
import type { SpaceGate } from '../types.js';
import type { Exec, ExecResult } from '../../host/exec.js';
import { ExecError } from '../../host/exec.js';
import type { MountTable, MountEntry } from '../../host/mountinfo.js';
import type { VolumeRecord } from '../../core/types.js';

const dir = mkdtempSync(join(tmpdir(), 'ballast-block-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** Fake host: blkid answers from a map of path -> TYPE; every argv is recorded. */
function fakeHost(types: Record<string, string | undefined> = {}, opts: { enospc?: boolean } = {}) {
  const calls: string[][] = [];
  const mounted: MountEntry[] = [];
  const loops: Record<string, string> = {};
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
        if (types[loops[argv[argv.length - 2]] ?? argv[argv.length - 2]] !== argv[2]) return Promise.reject(new ExecError(argv, { code: 32, stdout: '', stderr: 'wrong fs type' }, 'exit code 32'));
        mounted.push({ id: 1, parent: 0, majorMinor: '7:0', root: '/', mountpoint: argv[argv.length - 1], options: 'rw', fstype: argv[2], source: '/dev/loop0', superOptions: '' });
        return ok();
      case 'umount': mounted.splice(mounted.findIndex((m) => m.mountpoint === argv[argv.length - 1]), 1); return ok();
      case 'losetup': {
        if (!argv.includes('--find')) return ok('');
        const dev = `/dev/loop${Object.keys(loops).length}`;
        loops[dev] = argv[argv.length - 1];
        return ok(`${dev}\n`);
      }
      case 'fsfreeze': return ok();
      case 'fallocate': {
        if (opts.enospc) return Promise.reject(new ExecError(argv, { code: 1, stdout: '', stderr: 'fallocate: fallocate failed: No space left on device' }, 'exit code 1'));
        if (!argv.includes('-n')) truncateSync(argv[argv.length - 1], Number(argv[argv.indexOf('-l') + 1]));
        return ok();
      }
      default: throw new ExecError(argv, undefined, 'unexpected command');
    }
  };
  const mounts: MountTable = { list: async () => [...mounted], at: async (p) => mounted.find((m) => m.mountpoint === p) };
  return { exec, mounts, calls, types, mounted };
}

function backend(h: ReturnType<typeof fakeHost>, sub: string, config: Record<string, unknown> = {}) {
  return new BlockBackend('block', config, { root: join(dir, sub), exec: h.exec, mounts: h.mounts, log: pino({ level: 'silent' }) });
}
function vol(b: BlockBackend, name: string, opts: Record<string, string>): VolumeRecord {
  return { name, backend: 'block', spec: b.parseOptions(opts), mountpoint: b.place(name).mountpoint, createdAt: '', state: 'creating', details: { ...b.place(name).details }, revision: 0 };
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
  assert.throws(() => b.parseOptions({ size: '1G', uid: '0' }), /unknown option "uid" for backend block; accepted options: backend, size, fstype, mountopts, provisioning/);
});

test('provisioning: thick by default (absent from the spec), thin on request; discard only with thin', () => {
  const b = backend(fakeHost(), 'prov');
  assert.deepEqual(b.parseOptions({ size: '1G', provisioning: 'thin' }), { size: 1024 ** 3, fstype: 'ext4', mountopts: [], provisioning: 'thin' });
  assert.deepEqual(b.parseOptions({ size: '1G', provisioning: 'thick' }), { size: 1024 ** 3, fstype: 'ext4', mountopts: [], provisioning: 'thick' });
  assert.throws(() => b.parseOptions({ size: '1G', provisioning: 'lazy' }), /provisioning "lazy" is not supported; choose thick or thin/);
  assert.throws(() => b.parseOptions({ size: '1G', mountopts: 'discard' }), /discard punches holes .* use -o provisioning=thin/);
  assert.deepEqual(b.parseOptions({ size: '1G', mountopts: 'discard', provisioning: 'thin' }).mountopts, ['discard']);
  // A record from before provisioning existed: the same options still parse to the same spec (an
  // idempotent re-create compares equal), and it reads as thin (its image is sparse).
  const legacy: VolumeRecord = { name: 'old', backend: 'block', spec: { size: 1024 ** 3, fstype: 'ext4', mountopts: [] }, mountpoint: '/x/old', createdAt: '', state: 'ready', details: { image: '/x/old.img', formatted: true }, revision: 0 };
  assert.deepEqual(b.parseOptions({ size: '1G' }), legacy.spec);
  assert.equal(provisioningOf(legacy), 'thin');
  assert.equal(provisioningOf({ ...legacy, details: { ...legacy.details, provisioning: 'thick' } }), 'thick');
  assert.equal(provisioningOf({ ...legacy, state: 'creating', details: {} }), 'thick', 'being created by this version');
  assert.throws(() => backend(fakeHost(), 'prov2', { thinOvercommitRatio: 0 }), /thinOvercommitRatio must be a number above 0/);
});

test('thick provision allocates the whole image with fallocate; thin stays sparse', async () => {
  const h = fakeHost();
  const b = backend(h, 'thick');
  const v = vol(b, 'db', { size: '64M' });
  const d = await b.provision(v);
  assert.equal(d.provisioning, 'thick');
  const fa = h.calls.filter((c) => c[0] === 'fallocate');
  // The fake fallocate only sets the length (a sparse file), so the image looks punched after mkfs: allocated again.
  assert.deepEqual(fa, [['fallocate', '-l', String(64 * 1024 ** 2), '--', d.image], ['fallocate', '-n', '-l', String(64 * 1024 ** 2), '--', d.image]], 'before mkfs, and after it for holes mkfs punched');
  const t = vol(b, 'tv', { size: '64M', provisioning: 'thin' });
  const dt = await b.provision(t);
  assert.equal(dt.provisioning, 'thin');
  assert.equal(h.calls.filter((c) => c[0] === 'fallocate').length, 2, 'no fallocate for thin');
  assert.ok(statSync(dt.image as string).blocks * 512 < 1024 * 1024, 'sparse');
  const st = b.status({ ...t, details: { ...t.details, ...dt }, state: 'ready' });
  assert.equal(st.provisioning, 'thin');
  assert.equal(typeof st.allocatedBytes, 'number');
  assert.equal(st.usedBytes, undefined, 'not mounted: no used bytes');
});

test('a thick create that finds no space removes only its own image and gives the figures', async () => {
  const h = fakeHost({}, { enospc: true });
  const b = backend(h, 'nospc');
  const v = vol(b, 'big', { size: '80M' });
  await assert.rejects(b.provision(v), (e: Error & { code?: string }) => e.code === 'ResourceExhausted' && /volume big needs 80\.0MiB on the filesystem of .* but only .* is free now .*nothing was left behind/.test(e.message));
  assert.ok(!existsSync(v.details.image as string), 'the image it made is gone');
  assert.ok(!h.calls.some((c) => c[0].startsWith('mkfs')));
});

test('thin creates are accounted against free space times the overcommit ratio', async () => {
  const h = fakeHost();
  const probe = backend(h, 'acct');
  await probe.provision(vol(probe, 'seed', { size: '8M', provisioning: 'thin' })); // makes the image dir
  const s = statfsSync(join(dir, 'acct'));
  const free = s.bavail * s.bsize;
  const b = backend(h, 'acct', { thinOvercommitRatio: (150 * 1024 ** 2) / free }); // about 150 MiB may be promised
  const one = vol(b, 'one', { size: '100M', provisioning: 'thin' });
  await b.checkCreate(one.spec, []);
  const d = await b.provision(one);
  const others = [{ ...one, state: 'ready' as const, details: { ...one.details, ...d } }];
  await assert.rejects(b.checkCreate(b.parseOptions({ size: '100M', provisioning: 'thin' }), others),
    (e: Error & { code?: string }) => e.code === 'ResourceExhausted' && /a thin block volume of 100\.0MiB would overcommit .*1 thin volume there is promised 100\.0MiB more than it uses; with this one that is 200\.0MiB, more than the .* free there times the overcommit ratio/.test(e.message), 'refused with the figures');
  await b.checkCreate(b.parseOptions({ size: '40M', provisioning: 'thin' }), others);
  // A thick create may not eat the space promised to thin volumes either.
  const half = Math.floor(free / 2 / 1024 ** 2) * 1024 ** 2; // fits, but leaves less than the thin promise allows
  await assert.rejects(b.checkCreate({ size: half, fstype: 'ext4', mountopts: [] }, others), /thick block volume .* would leave .* free .*1 thin volume there is promised 100\.0MiB/);
});

test('thin volumes: mounts refused while the gate says critical; unmount thaws first', async () => {
  const h = fakeHost();
  const b = backend(h, 'gate');
  let refuse: string | undefined = 'host filesystem is below the critical level';
  const seen: string[] = [];
  const gate: SpaceGate = { refuseMount: () => refuse, isFrozen: () => false, note: () => undefined, published: (v) => seen.push(`+${v.name}`), unpublished: (v) => seen.push(`-${v.name}`) };
  b.setSpaceGate(gate);
  const t = vol(b, 'tv', { size: '64M', provisioning: 'thin' });
  const tv = { ...t, details: { ...t.details, ...(await b.provision(t)) }, state: 'ready' as const };
  await assert.rejects(b.stage(tv, tv.mountpoint), (e: Error & { code?: string }) => e.code === 'ResourceExhausted' && /critical/.test(e.message));
  assert.ok(!h.calls.some((c) => c[0] === 'mount'));
  refuse = undefined;
  await b.stage(tv, tv.mountpoint);
  await b.unstage(tv, tv.mountpoint);
  const i = h.calls.findIndex((c) => c[0] === 'fsfreeze');
  assert.deepEqual(h.calls[i].slice(0, 2), ['fsfreeze', '-u']);
  assert.ok(i < h.calls.findIndex((c) => c[0] === 'umount'), 'thawed before the unmount');
  assert.deepEqual(seen, ['+tv', '-tv']);
  // Thick volumes never ask the gate.
  const k = vol(b, 'kv', { size: '8M' });
  refuse = 'no';
  await b.stage({ ...k, details: { ...k.details, ...(await b.provision(k)) }, state: 'ready' }, k.mountpoint);
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

test('stage refuses a blank or foreign image instead of formatting it', async () => {
  const h = fakeHost();
  const b = backend(h, 'p3');
  const v = vol(b, 'db', { size: '1G' });
  const { image } = await b.provision(v) as { image: string };
  h.types[image] = undefined; // wiped behind our back
  await assert.rejects(b.stage(v, v.mountpoint), /no filesystem signature although Ballast formatted it; refusing to format it again/);
  h.types[image] = 'btrfs';
  await assert.rejects(b.stage(v, v.mountpoint), /holds btrfs, not ext4; refusing to mount it/);
  assert.equal(h.calls.filter((c) => c[0].startsWith('mkfs')).length, 1);
});

test('stage mounts once through a loop device with the allowed options; unstage unmounts', async () => {
  const h = fakeHost();
  const b = backend(h, 'p4');
  const v = vol(b, 'db', { size: '1G', mountopts: 'noatime' });
  await b.provision(v);
  await b.stage(v, v.mountpoint);
  await b.stage(v, v.mountpoint);
  const mounts = h.calls.filter((c) => c[0] === 'mount');
  assert.equal(mounts.length, 1, 'second stage sees the real mount table and does nothing');
  assert.deepEqual(mounts[0].slice(0, 5), ['mount', '-t', 'ext4', '-o', 'noatime']);
  const att = h.calls.findIndex((c) => c[0] === 'losetup' && c.includes('--find'));
  const mnt = h.calls.findIndex((c) => c[0] === 'mount');
  assert.ok(att >= 0 && att < mnt && mounts[0][mounts[0].length - 2] === '/dev/loop0', 'attached with losetup --find --show (no scan of the other loop devices), then the device mounted');
  assert.deepEqual(h.calls[mnt + 1], ['losetup', '-d', '/dev/loop0'], 'then marked autoclear');
  await b.unstage(v, v.mountpoint);
  assert.equal(h.mounted.length, 0);
  await b.unstage(v, v.mountpoint); // absent: success
  assert.equal(h.calls.filter((c) => c[0] === 'umount').length, 1);
});

test('a missing image is reported, not recreated', async () => {
  const h = fakeHost();
  const b = backend(h, 'p5');
  const v = vol(b, 'gone', { size: '1G' });
  await assert.rejects(b.stage(v, v.mountpoint), /image .* is missing; Ballast will not create an empty one/);
  assert.ok(!existsSync(join(dir, 'p5', 'backends', 'block', 'images', 'gone.img')));
});
