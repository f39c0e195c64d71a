import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import pino from 'pino';
import { rbdFactory } from './index.js';
import { canAttach, type BackendContext } from '../types.js';
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
