import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import pino from 'pino';
import { learnedAddrs, rbdFactory } from './index.js';
import { canAttach, canFence, type BackendContext } from '../types.js';
import { stageAtMountpoint } from '../node-ops.js';
import type { MountTable } from '../../host/mountinfo.js';
import type { Exec, ExecResult } from '../../host/exec.js';
import type { VolumeRecord } from '../../core/types.js';

function host(answer: (argv: readonly string[]) => ExecResult) {
  const root = mkdtempSync(join(tmpdir(), 'rbd-unit-'));
  const calls: string[][] = [];
  const exec: Exec = async (argv, o) => {
    calls.push([...argv]);
    const r = answer(argv);
    if (!(o.okCodes ?? [0]).includes(r.code)) throw new Error(`${argv[0]} failed: exit code ${r.code}: ${r.stderr}`);
    return r;
  };
  const ctx: BackendContext = { root, exec, mounts: { list: async () => [], at: async () => undefined }, log: pino({ level: 'silent' }), node: 'node-a' };
  const b = rbdFactory.create('rbd', { conf: '/etc/ceph/ceph.conf' }, ctx);
  return { b, calls, done: () => rmSync(root, { recursive: true, force: true }) };
}
const noMounts: MountTable = { list: async () => [], at: async () => undefined };
const vol = (spec: Record<string, unknown>): VolumeRecord => ({ name: 'v1', backend: 'rbd', spec, mountpoint: '/m', createdAt: '', state: 'ready', details: {}, revision: 0 });

test('rbd: removing a volume whose image is already gone succeeds (adopted: nothing deleted; made by Ballast: nothing left to delete)', async () => {
  const gone = { code: 2, stdout: '', stderr: 'rbd: error opening image v1: (2) No such file or directory' };
  for (const existing of [true, false]) {
    const h = host(() => gone);
    try {
      await h.b.deprovision(vol({ ...(existing ? { image: 'img' } : { size: 1 << 30 }), fstype: 'ext4', mountopts: [], existing }));
      const cmds = h.calls.map((c) => c.join(' '));
      assert.ok(cmds.some((c) => c.includes('lock ls')), 'asked for its locks');
      assert.equal(cmds.some((c) => c.startsWith('rbd ') && c.includes(' rm --no-progress ')), !existing, existing ? 'never deletes an adopted image' : 'tries to delete its own image');
    } finally { h.done(); }
  }
});

test('rbd: a second node is refused at attach, and the message names the node holding the image', async () => {
  const h = host((argv) => {
    if (argv.includes('add')) return { code: 16, stdout: '', stderr: 'rbd: lock is already held by someone else' };
    if (argv.includes('ls')) return { code: 0, stdout: JSON.stringify([{ id: 'ballast-node-b', locker: 'client.4242', address: '127.0.0.1:0/99' }]), stderr: '' };
    return { code: 0, stdout: '', stderr: '' };
  });
  try {
    assert.ok(canAttach(h.b), 'rbd attaches per node');
    await assert.rejects(stageAtMountpoint(h.b, vol({ image: 'img', fstype: 'ext4', mountopts: [], existing: true }), 'node-a', noMounts), (e: Error & { code?: string }) => {
      assert.equal(e.code, 'Busy');
      assert.match(e.message, /^volume v1 \(rbd image rbd\/img\) is attached read-write by node node-b \(client\.4242 at 127\.0\.0\.1:0\/99\); an RBD volume is not shareable/);
      return true;
    });
    assert.ok(!h.calls.some((c) => c[0] === 'rbd-fuse'), 'nothing attached');
  } finally { h.done(); }
});

test('rbd: learnedAddrs reads the client addresses of an rbd-fuse log, in order, once each', () => {
  const log = [
    '  -224> 2026-12-02T00:38:50.700+0000 7f0da5db06c0  1 -- 10.98.0.11:0/2537023686 learned_addr learned my addr 10.98.0.11:0/2537023686 (peer_addr_for_me v2:10.98.0.11:0/0)',
    '   -48> 2026-12-02T00:38:50.720+0000 7f0d97fff6c0  1 -- 10.98.0.11:0/1802301862 learned_addr learned my addr 10.98.0.11:0/1802301862 (peer_addr_for_me v2:10.98.0.11:0/0)',
    '2026-12-02T00:38:51.720+0000 7f0d97fff6c0  1 -- 10.98.0.11:0/1802301862 learned_addr learned my addr 10.98.0.11:0/1802301862 (peer_addr_for_me v2:10.98.0.11:0/0)',
    'learned my addr v2:[::1]:0/77 (peer_addr_for_me v2:[::1]:0/0)',
    'learned my addr 10.0.0.1:0/12;rm (not an address)',
  ].join('\n');
  assert.deepEqual(learnedAddrs(log), ['10.98.0.11:0/2537023686', '10.98.0.11:0/1802301862', '[::1]:0/77']);
  assert.deepEqual(learnedAddrs(''), []);
});

test('rbd: every rbd-fuse starts with the cache off and bounded op timeouts on its command line (they beat ceph.conf)', async () => {
  const root = mkdtempSync(join(tmpdir(), 'rbd-unit-'));
  const mounted = new Map<string, string>();
  const calls: string[][] = [];
  const exec: Exec = async (argv) => {
    calls.push([...argv]);
    if (argv[0] === 'rbd-fuse') mounted.set(argv[argv.length - 1], 'fuse.rbd-fuse');
    if (argv[0] === 'mount') mounted.set(argv[argv.length - 1], 'ext4');
    if (argv[0] === 'losetup' && argv.includes('--find')) return { code: 0, stdout: '/dev/loop7\n', stderr: '' };
    return { code: 0, stdout: '', stderr: '' };
  };
  const mounts: MountTable = {
    list: async () => [...mounted].map(([mountpoint, fstype], i) => ({ id: i, parent: 0, majorMinor: '0:0', root: '/', mountpoint, options: 'rw', fstype, source: 'x', superOptions: '' })),
    at: async (p) => (await mounts.list()).find((m) => m.mountpoint === p),
  };
  const ctx: BackendContext = { root, exec, mounts, log: pino({ level: 'silent' }), node: 'node-a', cluster: true };
  try {
    const b = rbdFactory.create('rbd', { conf: '/etc/ceph/ceph.conf', opTimeoutSec: 7 }, ctx);
    const v = { ...vol({ image: 'img', fstype: 'ext4', mountopts: [], existing: true }), mountpoint: join(root, 'mp'), details: { fuseDir: join(root, 'fuse', 'v1') } };
    await b.stage(v, v.mountpoint, { attachment: { attachmentId: 'ballast-node-a', connection: {} } });
    const fuse = calls.find((c) => c[0] === 'rbd-fuse');
    assert.ok(fuse, 'rbd-fuse was started');
    for (const a of ['--rbd_cache=false', '--rados_osd_op_timeout=7', '--rados_mon_op_timeout=7', '--client_mount_timeout=7', '--debug_ms=0/1']) assert.ok(fuse.includes(a), `${a} in ${fuse.join(' ')}`);
    assert.ok(fuse.some((a) => /^--admin_socket=\/.*\.asok$/.test(a)) && fuse.some((a) => /^--log_file=\/.*\.log$/.test(a)), 'its own admin socket and log');
    assert.ok(fuse.indexOf('--rbd_cache=false') < fuse.indexOf('-p'), 'options before the image arguments');
    const set = calls.findIndex((c) => c.includes('config') && c.includes('debug_ms'));
    assert.ok(set > calls.indexOf(fuse) && calls[set].join(' ').endsWith('config set debug_ms 0/0'), 'the messenger log is turned off after the start');
    assert.throws(() => rbdFactory.create('rbd', { conf: '/etc/ceph/ceph.conf', opTimeoutSec: 40, timeoutSec: 30 }, ctx), /opTimeoutSec \(40\) may not exceed timeoutSec \(30\)/);
    // On one host nobody fences, so the client's address is not recorded: no messenger log, no admin-socket calls.
    mounted.clear();
    calls.length = 0;
    const single = rbdFactory.create('rbd', { conf: '/etc/ceph/ceph.conf', opTimeoutSec: 7 }, { ...ctx, cluster: false });
    await single.stage(v, v.mountpoint, { attachment: { attachmentId: 'ballast-node-a', connection: {} } });
    const fuse1 = calls.find((c) => c[0] === 'rbd-fuse')!;
    assert.ok(fuse1.includes('--rbd_cache=false') && !fuse1.includes('--debug_ms=0/1'), fuse1.join(' '));
    assert.ok(!calls.some((c) => c.includes('--admin-daemon')), 'no admin-socket call on one host');
  } finally { rmSync(root, { recursive: true, force: true }); }
});

test('rbd: fence blocklists the holder\'s claimed clients and every unclaimed watcher, keeps the clients other nodes claimed, then removes the holder\'s lock', async () => {
  const watchers = [{ address: '10.0.0.1:0/111', client: 1 }, { address: '10.0.0.2:0/222', client: 2 }, { address: '10.0.0.3:0/333', client: 3 }];
  const h = host((argv) => {
    if (argv.includes('status')) return { code: 0, stdout: JSON.stringify({ watchers }), stderr: '' };
    if (argv.includes('lock') && argv.includes('ls')) return { code: 0, stdout: JSON.stringify([{ id: 'ballast-node-x', locker: 'client.9', address: '10.0.0.1:0/5' }]), stderr: '' };
    return { code: 0, stdout: '', stderr: '' };
  });
  try {
    assert.ok(canFence(h.b), 'rbd can fence');
    const v = vol({ image: 'img', fstype: 'ext4', mountopts: [], existing: true });
    const said = await h.b.fence(v, { node: 'node-x', claim: { clients: '10.0.0.1:0/111,10.0.0.9:0/999,bad;addr' } }, [{ node: 'node-y', claim: { clients: '10.0.0.2:0/222' } }]);
    const cmds = h.calls.map((c) => c.join(' '));
    const bl = cmds.filter((c) => c.includes('osd blocklist add'));
    assert.deepEqual(bl.map((c) => c.replace(/.* osd blocklist add /, '')), ['10.0.0.1:0/111 3600', '10.0.0.9:0/999 3600', '10.0.0.3:0/333 3600']);
    const rm = cmds.findIndex((c) => c.includes('lock rm rbd/img ballast-node-x client.9'));
    assert.ok(rm > cmds.lastIndexOf(bl[bl.length - 1]), 'the lock goes only after the blocklist entries are made');
    assert.match(said, /^volume v1 \(rbd image rbd\/img\): node node-x is cut off at the OSDs \(blocklisted 10\.0\.0\.1:0\/111, 10\.0\.0\.9:0\/999, 10\.0\.0\.3:0\/333 for 3600 s\); its lock ballast-node-x is removed$/);
  } finally { h.done(); }
});

test('rbd: a fence the cluster refuses is Unavailable, naming the volume and the node, and leaves the lock', async () => {
  const h = host((argv) => {
    if (argv.includes('status')) return { code: 0, stdout: JSON.stringify({ watchers: [] }), stderr: '' };
    if (argv.includes('blocklist')) return { code: 13, stdout: '', stderr: 'Error EACCES: access denied' };
    return { code: 0, stdout: '[]', stderr: '' };
  });
  try {
    const v = vol({ image: 'img', fstype: 'ext4', mountopts: [], existing: true });
    await assert.rejects(canFence(h.b) ? h.b.fence(v, { node: 'node-x', claim: { clients: '10.0.0.1:0/111' } }, []) : Promise.resolve(), (e: Error & { code?: string }) => {
      assert.equal(e.code, 'Unavailable');
      assert.match(e.message, /^could not fence node node-x off volume v1 \(rbd image rbd\/img\): the OSD blocklist entry for client 10\.0\.0\.1:0\/111 was not made: .*access denied/);
      return true;
    });
    assert.ok(!h.calls.some((c) => c.includes('lock')), 'the lock stays while the node is not cut off');
  } finally { h.done(); }
});
