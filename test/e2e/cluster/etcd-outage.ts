/**
 * etcd failures under a running cluster (needs `startCluster({ ceph: true })`):
 * - one of the three members SIGKILLed: creates, mounts (a container writing through a new volume) and
 *   removes keep working; the member comes back;
 * - all three members SIGKILLed while a container on n2 writes to an rbd volume with fsync: the writer
 *   keeps getting its fsyncs acknowledged for longer than the lease TTL plus the self-fence margin (every
 *   node asked its peers, and all of them answered that etcd is down for them too, so nobody froze
 *   anything); doctor on n2 says so; a new create fails within the store's bound with a sentence naming
 *   etcd; once the members are back, creates work again and the writer never stopped.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Cluster } from '../../helpers/cluster.js';
import { sleep, waitFor } from '../../helpers/proc.js';

const rand = () => randomBytes(3).toString('hex');
const SCRIPT = 'n=0; while :; do n=$((n+1)); if echo "$n" >> /data/counter && sync /data/counter; then echo "ok $n" >> /log/w.log; else echo "err $n" >> /log/w.log; fi; sleep 0.1; done';

export function etcdOutageTests(get: () => Cluster): void {
  const TTL = 10;

  test('etcd: one of three members SIGKILLed: create, mount, write and remove keep working', async () => {
    const c = get();
    const [, n2] = c.nodes;
    await c.killEtcdMember(1);
    try {
      const v = `eo1-${rand()}`;
      const t0 = Date.now();
      assert.equal(await n2.dockerOk(['volume', 'create', '-d', 'ballast', v]), v);
      const out = await n2.dockerOk(['run', '--rm', '-v', `${v}:/data`, 'busybox:local', 'sh', '-c', 'echo one-member-down > /data/f && sync /data/f && cat /data/f'], 60_000);
      assert.equal(out, 'one-member-down');
      await n2.dockerOk(['volume', 'rm', v], 60_000);
      console.log(`# etcd: with one member down, create + run + remove took ${Date.now() - t0} ms`);
    } finally {
      await c.startEtcdMember(1);
      await c.etcdHealthy();
    }
  });

  test('etcd: all three members SIGKILLed: a mounted rbd volume stays writable, new creates fail within the bound, work resumes when etcd is back', async () => {
    const c = get();
    const [, n2, n3] = c.nodes;
    const v = `eo-rbd-${rand()}`;
    const logDir = join(c.dir, `etcd-outage-${rand()}`);
    mkdirSync(logDir, { recursive: true });
    const oks = () => (existsSync(join(logDir, 'w.log')) ? readFileSync(join(logDir, 'w.log'), 'utf8').split('\n').filter((l) => l.startsWith('ok ')).length : 0);
    const errs = () => (existsSync(join(logDir, 'w.log')) ? readFileSync(join(logDir, 'w.log'), 'utf8').split('\n').filter((l) => l.startsWith('err ')).length : 0);
    await n2.dockerOk(['volume', 'create', '-d', 'ballast', '-o', 'backend=rbd', '-o', 'size=128M', v]);
    const cid = await n2.dockerOk(['run', '-d', '-v', `${v}:/data`, '-v', `${logDir}:/log`, 'busybox:local', 'sh', '-c', SCRIPT], 60_000);
    let etcdDown = false;
    try {
      await waitFor(() => oks() >= 5 || undefined, 'the writer on n2 to write', 30_000, 100);
      const tDown = Date.now();
      for (let i = 0; i < 3; i++) await c.killEtcdMember(i);
      etcdDown = true;
      const atDown = oks();
      // Past the point where a node that believed itself cut off alone would have frozen (TTL - margin),
      // and past the lease TTL plus the grace.
      await sleep((TTL + 5) * 1000);
      const during = oks() - atDown;
      assert.ok(during >= 50, `the writer kept getting fsyncs acknowledged with etcd down (${during} in ${TTL + 5} s)`);
      assert.equal(errs(), 0, 'no write failed');
      const doc = JSON.parse((await n2.ballast(['doctor', '--json'])).stdout) as { checks: { name: string; ok: boolean; detail: string }[] };
      const sf = doc.checks.find((x) => x.name === 'self-fence');
      assert.ok(sf, 'doctor has a self-fence check');
      assert.match(sf!.detail, /etcd is down for every node/);
      // A new create fails within the store's bound (5 s) plus dockerd's own overhead, with a sentence.
      const t0 = Date.now();
      const r = await n3.docker(['volume', 'create', '-d', 'ballast', `eo-new-${rand()}`], 60_000);
      const took = Date.now() - t0;
      assert.notEqual(r.code, 0, 'create refused while etcd is down');
      assert.match(r.stderr, /cluster store \(etcd at .*\) did not answer within/);
      assert.ok(took < 15_000, `refused within the bound (${took} ms)`);
      console.log(`# etcd: all members down for ${Math.round((Date.now() - tDown) / 1000)} s: ${during} fsyncs acknowledged meanwhile; a create refused after ${took} ms`);
      await c.startAllEtcd();
      etcdDown = false;
      const back = await waitFor(async () => {
        const x = await n3.docker(['volume', 'create', '-d', 'ballast', `eo-back-${rand()}`], 30_000);
        return x.code === 0 ? x.stdout.trim() : undefined;
      }, 'a create to work again once etcd is back', 60_000, 500);
      await n3.dockerOk(['volume', 'rm', back], 60_000);
      const afterBack = oks();
      await waitFor(() => oks() > afterBack + 5 || undefined, 'the writer to go on after etcd returned', 20_000, 100);
      // Nobody froze anything.
      for (const node of c.nodes) assert.ok(!readFileSync(node.ballastLog, 'utf8').split('\n').some((l) => l.includes('"outcome":"frozen"') && l.includes(v)), `${node.name} froze nothing`);
    } finally {
      if (etcdDown) await c.startAllEtcd();
      await n2.docker(['rm', '-f', cid], 60_000);
      await waitFor(async () => (await n2.docker(['volume', 'rm', v], 60_000)).code === 0 || undefined, `docker volume rm ${v}`, 60_000, 1000);
    }
  });
}
