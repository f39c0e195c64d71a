import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkAccess, MULTI_NODE_MULTI_WRITER, MULTI_NODE_READER_ONLY, MULTI_NODE_SINGLE_WRITER, SINGLE_NODE_WRITER, type AccessHolder, type AccessModes } from './types.js';
import { mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import pino from 'pino';
import { BackendRegistry } from './registry.js';
import { localFactory } from './local/index.js';
import { blockFactory } from './block/index.js';
import { rbdFactory } from './rbd/index.js';
import { cinderFactory } from './cinder/index.js';
import { cephfsFactory } from './cephfs/index.js';
import { glusterfsFactory } from './glusterfs/index.js';
import { sshfsFactory } from './sshfs/index.js';
import { s3Factory } from './s3/index.js';
import { nfsFactory } from './nfs/index.js';

/** One instance of every backend type, made from a minimal config (no I/O beyond a log directory). */
function registry(): BackendRegistry {
  const r = new BackendRegistry();
  for (const f of [localFactory, blockFactory, rbdFactory, cinderFactory, cephfsFactory, glusterfsFactory, sshfsFactory, s3Factory, nfsFactory]) r.registerType(f);
  const root = mkdtempSync(join(tmpdir(), 'ballast-access-'));
  return r.instantiate({
    local: { type: 'local' }, block: { type: 'block' }, rbd: { type: 'rbd' }, cephfs: { type: 'cephfs' },
    gluster: { type: 'glusterfs', servers: ['g1'], volume: 'gv0' }, ssh: { type: 'sshfs', host: 'h', path: '/p', identityFile: '/k' },
    s3: { type: 's3', url: 'http://127.0.0.1:7480', bucket: 'b1', passwdFile: '/etc/ballast/s3.passwd' }, nfs: { type: 'nfs', server: 'filer1', export: '/e' },
  }, { root, exec: async () => ({ code: 0, stdout: '', stderr: '' }), mounts: { list: async () => [], at: async () => undefined }, log: pino({ level: 'silent' }) });
}

const b = (access: AccessModes) => ({ name: 'be', access });
const rw = (node: string, since?: string): AccessHolder => ({ node, mode: 'rw', since });
const ro = (node: string): AccessHolder => ({ node, mode: 'ro' });

test('access: nobody else holding it, or only the asking node, is always allowed', () => {
  for (const a of [SINGLE_NODE_WRITER, MULTI_NODE_SINGLE_WRITER, MULTI_NODE_MULTI_WRITER, MULTI_NODE_READER_ONLY]) {
    for (const mode of ['rw', 'ro'] as const) {
      assert.deepEqual(checkAccess('v', b(a), { node: 'n1', mode }, []), { allowed: true });
      assert.deepEqual(checkAccess('v', b(a), { node: 'n1', mode }, [rw('n1'), ro('n1')]), { allowed: true }, 'containers on one node share its staging');
    }
  }
});

test('access: a single-node backend refuses a second node in any mode, naming the holder and since when', () => {
  for (const mode of ['rw', 'ro'] as const) {
    const d = checkAccess('db1', b(SINGLE_NODE_WRITER), { node: 'n1', mode }, [rw('n2', '12:03'), rw('n2', '12:04')]);
    assert.equal(d.allowed, false);
    assert.equal(!d.allowed && d.reason, "volume db1 is attached read-write to node n2 since 12:03; backend be serves a volume on one node at a time. Stop its containers there first, or wait for that node's lease to expire");
  }
});

test('access: single writer with read-only extra nodes (rbd)', () => {
  const a = b(MULTI_NODE_SINGLE_WRITER);
  assert.deepEqual(checkAccess('v', a, { node: 'n1', mode: 'ro' }, [rw('n2')]), { allowed: true }, 'a reader beside the writer');
  assert.deepEqual(checkAccess('v', a, { node: 'n1', mode: 'ro' }, [ro('n2'), ro('n3')]), { allowed: true });
  assert.deepEqual(checkAccess('v', a, { node: 'n1', mode: 'rw' }, [ro('n2')]), { allowed: true }, 'one writer among readers');
  const d = checkAccess('v', a, { node: 'n1', mode: 'rw' }, [ro('n3'), rw('n2')]);
  assert.equal(d.allowed, false);
  assert.match(!d.allowed ? d.reason : '', /^volume v is attached read-write to node n2; backend be allows one read-write node at a time \(other nodes may mount it read-only\)/);
  // A node going from read-only to read-write is a writer like any other.
  assert.equal(checkAccess('v', a, { node: 'n1', mode: 'rw' }, [ro('n1'), rw('n2')]).allowed, false);
});

test('access: multi-node multi-writer allows everything; reader-only allows readers only', () => {
  assert.deepEqual(checkAccess('v', b(MULTI_NODE_MULTI_WRITER), { node: 'n1', mode: 'rw' }, [rw('n2'), rw('n3'), ro('n4')]), { allowed: true });
  const a = b(MULTI_NODE_READER_ONLY);
  assert.deepEqual(checkAccess('v', a, { node: 'n1', mode: 'ro' }, [ro('n2')]), { allowed: true });
  const w = checkAccess('v', a, { node: 'n1', mode: 'rw' }, [ro('n2')]);
  assert.match(!w.allowed ? w.reason : '', /^volume v is attached read-only to node n2; backend be allows several nodes only when all of them mount it read-only/);
  assert.equal(checkAccess('v', a, { node: 'n1', mode: 'ro' }, [rw('n2')]).allowed, false);
});

test('access: every backend type declares its modes (node-local single node; rbd one writer; shared filesystems many writers)', () => {
  const want: Record<string, AccessModes> = {
    local: SINGLE_NODE_WRITER, block: SINGLE_NODE_WRITER, rbd: MULTI_NODE_SINGLE_WRITER,
    glusterfs: MULTI_NODE_MULTI_WRITER, cephfs: MULTI_NODE_MULTI_WRITER, sshfs: MULTI_NODE_MULTI_WRITER, s3: MULTI_NODE_MULTI_WRITER, nfs: MULTI_NODE_MULTI_WRITER,
  };
  const r = registry();
  for (const name of r.names()) {
    const be = r.get(name);
    assert.deepEqual(be.access, want[be.type], be.type);
    assert.ok(!('shareable' in be), `${be.type}: the old flag is gone`);
  }
  assert.deepEqual([...new Set(r.all().map((x) => x.type))].sort(), Object.keys(want).sort());
});
