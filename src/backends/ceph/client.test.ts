import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { CephClient, monHostOf } from './client.js';
import { ExecError, type Exec } from '../../host/exec.js';
import { UnavailableError } from '../../core/errors.js';

test('ceph client: messages name the backend, the monitors and the conf; a timeout says the cluster did not answer', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ceph-client-'));
  try {
    const conf = join(dir, 'ceph.conf');
    writeFileSync(conf, '[global]\nfsid = 1\n  mon_host = v2:10.0.0.1:3300, v2:10.0.0.2:3300  \n[client]\nkeyring = /k\n');
    assert.equal(monHostOf(conf), 'v2:10.0.0.1:3300, v2:10.0.0.2:3300');
    assert.equal(monHostOf(join(dir, 'missing.conf')), undefined);
    const calls: { argv: readonly string[]; timeoutMs: number }[] = [];
    const timingOut: Exec = async (argv, o) => { calls.push({ argv, timeoutMs: o.timeoutMs }); throw new ExecError(argv, { code: -1, stdout: '', stderr: '' }, `timed out after ${o.timeoutMs} ms`); };
    const c = new CephClient('cfs', 'cephfs', { conf, keyring: '/etc/ceph/k.keyring', timeoutSec: 7 }, timingOut);
    assert.equal(c.label, `cephfs backend cfs (ceph cluster with monitors v2:10.0.0.1:3300, v2:10.0.0.2:3300 of ${conf}, client.admin)`);
    await assert.rejects(c.run('rbd', ['info', 'rbd/x', '--format', 'json']), (e: Error) => {
      assert.ok(e instanceof UnavailableError);
      assert.equal(e.message, `${c.label}: the cluster did not answer within 7 s (rbd info rbd/x); is it up and reachable?`);
      return true;
    });
    // Every call is bounded by timeoutSec; ceph also gets a connect timeout. The keyring goes as a path.
    await assert.rejects(c.run('ceph', ['fs', 'subvolume', 'ls', 'cephfs']));
    assert.deepEqual(calls.map((x) => x.timeoutMs), [7000, 7000]);
    assert.deepEqual(calls[1].argv, ['ceph', '-c', conf, '--id', 'admin', '--keyring', '/etc/ceph/k.keyring', '--connect-timeout', '7', 'fs', 'subvolume', 'ls', 'cephfs']);
    const failing: Exec = async (argv) => { throw new ExecError(argv, { code: 2, stdout: '', stderr: 'error' }, 'exit code 2: rbd: error opening image x: (2) No such file or directory'); };
    await assert.rejects(new CephClient('r', 'rbd', { conf }, failing).run('rbd', ['rm', '--no-progress', 'rbd/x']),
      /^UnavailableError: rbd backend r \(ceph cluster with monitors .* of .*ceph\.conf, client\.admin\): rbd rm failed: rbd failed: exit code 2: rbd: error opening image x/);
    // A conf that cannot be read: the label still names the backend and the conf.
    assert.equal(new CephClient('r', 'rbd', { conf: '/nonexistent/ceph.conf', user: 'vols' }, failing).label, 'rbd backend r (ceph cluster of /nonexistent/ceph.conf, client.vols)');
    assert.throws(() => new CephClient('r', 'rbd', { timeoutSec: 1 }, failing), /timeoutSec must be a whole number from 5 to 110/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
