import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { ExecError, type Exec, type ExecResult } from './exec.js';
import type { MountEntry, MountTable } from './mountinfo.js';
import { blockMountOptions, formatIfBlank, stageBlockFilesystem, type StageBlock } from './filesystem.js';
import { publish, unpublish } from './bind.js';

const dir = mkdtempSync(join(tmpdir(), 'ballast-fs-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** Fake host: blkid answers from `types` (path -> TYPE; absent: blank), mkfs writes it, mount checks it. */
function fakeHost(types: Record<string, string | undefined> = {}) {
  const calls: string[][] = [];
  const mounted: MountEntry[] = [];
  const lastAt = (p: string) => { for (let i = mounted.length - 1; i >= 0; i--) if (mounted[i].mountpoint === p) return i; return -1; };
  let nextId = 10;
  const ok = (stdout = ''): ExecResult => ({ code: 0, stdout, stderr: '' });
  const fail = (argv: readonly string[], stderr: string) => Promise.reject(new ExecError(argv, { code: 32, stdout: '', stderr }, `exit code 32: ${stderr}`));
  const exec: Exec = async (argv) => {
    calls.push([...argv]);
    const last = argv[argv.length - 1];
    switch (argv[0]) {
      case 'blkid': return types[last] ? ok(`TYPE=${types[last]}\n`) : { code: 2, stdout: '', stderr: '' };
      case 'mkfs.ext4': case 'mkfs.xfs': case 'mkfs.btrfs': types[last] = argv[0].slice(5); return ok();
      case 'mount': {
        if (argv[1] === '--bind') {
          const src = mounted.find((m) => m.mountpoint === argv[3]);
          mounted.push({ id: nextId++, parent: 0, majorMinor: src?.majorMinor ?? '8:1', root: src?.root ?? argv[3], mountpoint: last, options: src?.options ?? 'rw', fstype: src?.fstype ?? 'ext4', source: src?.source ?? '/dev/sda1', superOptions: '' });
          return ok();
        }
        if (argv[2] === 'remount,bind,ro') {
          const i = lastAt(last);
          mounted[i] = { ...mounted[i], options: 'ro' };
          return ok();
        }
        const src = argv[argv.length - 2];
        if (types[src] !== argv[2]) return fail(argv, 'wrong fs type');
        const opts = argv.includes('-o') ? argv[argv.indexOf('-o') + 1] : '';
        mounted.push({ id: nextId++, parent: 0, majorMinor: '7:0', root: '/', mountpoint: last, options: opts.split(',').includes('ro') ? 'ro' : 'rw', fstype: argv[2], source: '/dev/loop0', superOptions: '' });
        return ok();
      }
      case 'umount': {
        const i = lastAt(last);
        if (i < 0) return fail(argv, 'not mounted');
        mounted.splice(i, 1);
        return ok();
      }
      default: throw new ExecError(argv, undefined, 'unexpected command');
    }
  };
  const mounts: MountTable = { list: async () => [...mounted], at: async (p) => (lastAt(p) < 0 ? undefined : mounted[lastAt(p)]) };
  return { exec, mounts, calls, types, mounted };
}

const stageOf = (p: Partial<StageBlock> & { stagingPath: string }): StageBlock => ({
  source: '/dev/vdb', loop: false, fstype: 'ext4', what: 'device /dev/vdb', volume: 'v1', mountopts: [], mayFormat: false, localSource: false, ...p,
});

test('formatIfBlank: blank by construction formats without a probe; a probed blank formats; same type is adopted; foreign is refused', async () => {
  const h = fakeHost({ '/img/foreign': 'xfs', '/img/same': 'ext4' });
  const fs = (source: string) => ({ source, loop: true, fstype: 'ext4' as const, what: `the image ${source}`, volume: 'v1' });
  const hint = (t: string | undefined) => `Use -o fstype=${t}`;
  assert.equal(await formatIfBlank(h.exec, fs('/img/new'), { knownBlank: true, label: 'v1', hint }), 'formatted');
  assert.deepEqual(h.calls.map((c) => c[0]), ['mkfs.ext4'], 'no blkid for an image made with O_EXCL');
  h.calls.length = 0;
  assert.equal(await formatIfBlank(h.exec, fs('/img/blank'), { knownBlank: false, hint }), 'formatted');
  assert.deepEqual(h.calls.map((c) => c[0]), ['blkid', 'mkfs.ext4']);
  assert.ok(h.calls[0].includes('-p'), 'low-level probe');
  assert.equal(await formatIfBlank(h.exec, fs('/img/same'), { knownBlank: false, hint }), 'adopted');
  await assert.rejects(formatIfBlank(h.exec, fs('/img/foreign'), { knownBlank: false, hint }), /the image \/img\/foreign for volume v1 already holds xfs, not ext4; Ballast will not format over it\. Use -o fstype=xfs$/);
  assert.equal(h.calls.filter((c) => c[0].startsWith('mkfs')).length, 1, 'the blank one only (the log was cleared after the first)');
});

test('stageBlockFilesystem: mounts with -t and the options, once; something else mounted there is refused', async () => {
  const h = fakeHost({ '/dev/vdb': 'ext4' });
  const mp = join(dir, 's1');
  assert.equal(await stageBlockFilesystem(h.exec, h.mounts, stageOf({ stagingPath: mp, mountopts: ['noatime'] })), 'mounted');
  assert.deepEqual(h.calls[0], ['mount', '-t', 'ext4', '-o', 'noatime', '--', '/dev/vdb', mp]);
  assert.equal(await stageBlockFilesystem(h.exec, h.mounts, stageOf({ stagingPath: mp })), 'already');
  assert.equal(h.calls.length, 1, 'the mount table says it is staged');
  await assert.rejects(stageBlockFilesystem(h.exec, h.mounts, stageOf({ stagingPath: mp, fstype: 'xfs' })), /is already mounted with ext4 from \/dev\/loop0, not volume v1's xfs; unmount it first/);
});

test('stageBlockFilesystem: never formats unless allowed; a blank source with mayFormat is formatted once, read-only never', async () => {
  const h = fakeHost();
  await assert.rejects(stageBlockFilesystem(h.exec, h.mounts, stageOf({ stagingPath: join(dir, 's2') })), /device \/dev\/vdb of volume v1 has no filesystem signature although Ballast formatted it; refusing to format it again/);
  h.types['/dev/vdb'] = 'btrfs';
  await assert.rejects(stageBlockFilesystem(h.exec, h.mounts, stageOf({ stagingPath: join(dir, 's2') })), /holds btrfs, not ext4; refusing to mount it/);
  assert.ok(!h.calls.some((c) => c[0].startsWith('mkfs')));
  // A blank device Ballast made (Cinder's first stage).
  const c = fakeHost();
  await assert.rejects(stageBlockFilesystem(c.exec, c.mounts, stageOf({ stagingPath: join(dir, 's3'), mayFormat: true, readOnly: true })), /has no filesystem yet and is staged read-only here/);
  assert.equal(await stageBlockFilesystem(c.exec, c.mounts, stageOf({ stagingPath: join(dir, 's3'), mayFormat: true, label: 'v1' })), 'mounted');
  assert.deepEqual(c.calls.filter((x) => x[0] !== 'mount').map((x) => x[0]), ['blkid', 'blkid', 'mkfs.ext4']);
  // A probe that fails is not "blank": nothing is formatted.
  const p = fakeHost();
  const failing: Exec = (argv, o) => (argv[0] === 'blkid' ? Promise.reject(new ExecError(argv, undefined, 'timed out')) : p.exec(argv, o));
  await assert.rejects(stageBlockFilesystem(failing, p.mounts, stageOf({ stagingPath: join(dir, 's4'), mayFormat: true })));
  assert.ok(!p.calls.some((x) => x[0].startsWith('mkfs')));
});

test('stageBlockFilesystem: read-only mounts skip the journal replay; the check before mounting runs only when nothing is staged', async () => {
  assert.deepEqual(blockMountOptions({ source: '/i', loop: true, fstype: 'ext4', what: '', volume: '' }, ['noatime'], true), ['ro', 'noload', 'noatime']);
  assert.deepEqual(blockMountOptions({ source: '/i', loop: false, fstype: 'xfs', what: '', volume: '' }, [], true), ['ro', 'norecovery']);
  const h = fakeHost({ '/dev/vdb': 'ext4' });
  let checks = 0;
  const s = stageOf({ stagingPath: join(dir, 's5'), readOnly: true, beforeMount: async () => { checks++; } });
  await stageBlockFilesystem(h.exec, h.mounts, s);
  await stageBlockFilesystem(h.exec, h.mounts, s);
  assert.equal(checks, 1);
  assert.equal(h.mounted[0].options, 'ro');
});

test('bind publish: checks paths, binds, remounts read-only, is idempotent, refuses the other mode; unpublish is idempotent', async () => {
  const h = fakeHost({ '/dev/vdb': 'ext4' });
  const staging = join(dir, 'b-staging');
  const target = join(dir, 'b-target');
  await stageBlockFilesystem(h.exec, h.mounts, stageOf({ stagingPath: staging }));
  h.calls.length = 0;
  await assert.rejects(publish(h.exec, h.mounts, staging, 'relative/t'), /target path "relative\/t" must be an absolute, normalized path/);
  await assert.rejects(publish(h.exec, h.mounts, staging, `${dir}/x/../t`), /must be an absolute, normalized path/);
  await assert.rejects(publish(h.exec, h.mounts, `${staging}/`, target), /staging path .* must be an absolute, normalized path/);
  await assert.rejects(publish(h.exec, h.mounts, staging, staging), /is the staging path itself/);
  assert.equal(h.calls.length, 0, 'nothing ran for a bad path');
  await publish(h.exec, h.mounts, staging, target, { readOnly: true });
  assert.deepEqual(h.calls, [['mount', '--bind', '--', staging, target], ['mount', '-o', 'remount,bind,ro', '--', target]]);
  await publish(h.exec, h.mounts, staging, target, { readOnly: true });
  assert.equal(h.calls.length, 2, 'already published read-only');
  await assert.rejects(publish(h.exec, h.mounts, staging, target), /already published read-only, not read-write; unpublish it first/);
  await unpublish(h.exec, h.mounts, target);
  await unpublish(h.exec, h.mounts, target);
  assert.equal(h.calls.filter((c) => c[0] === 'umount').length, 1);
  assert.ok(!h.mounted.some((m) => m.mountpoint === target));
  assert.ok(h.mounted.some((m) => m.mountpoint === staging), 'the staging stays');
});
