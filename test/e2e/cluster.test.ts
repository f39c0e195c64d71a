/**
 * The 3-node cluster harness (test/helpers/cluster.ts) with real components, started ONCE for the whole
 * file: a 3-member etcd and a one-node Ceph on 10.99.0.1 inside the hub netns, three nodes (net + mount
 * + UTS namespaces) each with its own dockerd and Ballast daemon on the etcd store (backends local,
 * shared-block, rbd, cephfs), and a real 3-node Swarm (dispatcher heartbeat 1 s, so Swarm sees a dead
 * node within seconds). Scenario modules under test/e2e/cluster/ register their tests on that cluster,
 * in order; the last test tears it down and proves that nothing is left. Prints (does not assert) the
 * bring-up time and its phases, and the teardown time.
 *
 * A module exports `xxxTests(get: () => Cluster): void` and calls node:test's test() for each scenario;
 * it must leave the cluster as it found it (its containers, services and volumes removed, links healed,
 * daemons running), since the modules after it share the cluster.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { clusterSkipReason, startCluster, type Cluster } from '../helpers/cluster.js';
import { cephSkipReason } from '../servers/ceph.js';
import { run } from '../helpers/proc.js';
import { basicsTests, dockerdRestartTests } from './cluster/basics.js';
import { sharedAccessTests } from './cluster/shared-access.js';
import { failoverTests } from './cluster/failover.js';
import { etcdOutageTests } from './cluster/etcd-outage.js';

const skip = clusterSkipReason() ?? cephSkipReason();

describe('cluster: 3 nodes, etcd, Ceph, Swarm', { skip }, () => {
  let c: Cluster | undefined;
  let stopped = false;
  const get = (): Cluster => { assert.ok(c, 'the cluster is not running (its before hook failed)'); return c; };
  before(async () => {
    const t0 = Date.now();
    c = await startCluster({ ceph: true, swarmInitArgs: ['--dispatcher-heartbeat', '1s'], log: (l) => console.log(l) });
    console.log(`cluster: bring-up ${Date.now() - t0} ms; phases ${JSON.stringify(c.timings)}`);
  });
  after(async () => { if (!stopped) await c?.stop(); });

  basicsTests(get);
  sharedAccessTests(get);
  // Scenario modules that stop or cut off nodes, before the dockerd restart.
  failoverTests(get);
  etcdOutageTests(get);
  dockerdRestartTests(get);

  test('teardown leaves no netns, link, mount or process (Ceph\'s daemons included) behind', async () => {
    const cl = get();
    const cephPids = (['mon', 'mgr', 'osd', 'mds'] as const).map((d) => cl.ceph?.pid(d) ?? 0);
    assert.ok(cephPids.every(Boolean), `every Ceph daemon has a pid: ${cephPids.join(', ')}`);
    const pids = [...cl.nodes.flatMap((x) => [x.pid(), x.dockerdPid(), x.holderPid]), ...cephPids].filter(Boolean);
    stopped = true;
    const t0 = Date.now();
    await cl.stop();
    console.log(`cluster: teardown ${Date.now() - t0} ms`);
    const ns = (await run(['ip', 'netns', 'list'], { timeoutMs: 10_000 })).stdout;
    assert.ok(!ns.includes(cl.prefix), `no netns named ${cl.prefix}*: ${ns}`);
    for (const p of pids) assert.throws(() => process.kill(p, 0), `pid ${p} is gone`);
    const mi = (await run(['cat', '/proc/self/mountinfo'], { timeoutMs: 10_000 })).stdout;
    assert.ok(!mi.includes(cl.dir), 'nothing mounted under the cluster directory');
  });
});
