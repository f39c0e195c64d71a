/**
 * Shared and exclusive access across nodes, against the cluster's real Ceph (10.99.0.1 in the hub netns,
 * reached from the nodes' netns by their Ballast daemons' ceph-fuse and rbd-fuse):
 * - cephfs: containers on n1 and n2 append to one volume at the same time; each node reads the other
 *   node's file growing, and every node's Ballast lists both nodes as holders (attachments);
 * - rbd: while a container on n1 has the volume mounted read-write, a mount on n2 is refused with a
 *   sentence naming n1 (docker run on n2 fails; VolumeDriver.Mount on n2's plugin answers an Err), and
 *   once n1's container has gone (and n1 released the volume) n2 mounts it and reads what n1 wrote.
 * Needs `startCluster({ ceph: true })`.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { Cluster, ClusterNode } from '../../helpers/cluster.js';
import { sleep, waitFor } from '../../helpers/proc.js';

interface Attachment { node: string; mode: string; since: string }
interface Inspected { name: string; backend?: string; mounts: number; mountIds?: string[]; status?: { attachments?: Attachment[]; image?: string; subvolume?: string } & Record<string, unknown> }

const rand = () => randomBytes(3).toString('hex');
const mountArg = (v: string) => `type=volume,source=${v},target=/data,volume-driver=ballast`;

async function inspect(node: ClusterNode, v: string): Promise<Inspected> {
  const r = await node.ballast(['volume', 'inspect', v]);
  assert.equal(r.code, 0, `ballast volume inspect ${v} on ${node.name}: ${r.stderr}`);
  return (JSON.parse(r.stdout) as Inspected[])[0];
}
/** The holders as `node:mode`, sorted. */
const holders = (info: Inspected) => (info.status?.attachments ?? []).map((a) => `${a.node}:${a.mode}`).sort();

/** Lines of file in the container ctr on node (0 while it does not exist). */
async function lines(node: ClusterNode, ctr: string, file: string): Promise<number> {
  const r = await node.docker(['exec', ctr, 'sh', '-c', `if [ -e ${file} ]; then wc -l < ${file}; else echo 0; fi`], 20_000);
  assert.equal(r.code, 0, `docker exec on ${node.name}: ${r.stderr}`);
  return Number(r.stdout.trim());
}

export function sharedAccessTests(get: () => Cluster): void {
  test('cephfs: containers on n1 and n2 write one volume at once; each node sees the other\'s file grow; both are holders', async () => {
    const cl = get();
    assert.ok(cl.ceph, 'the cluster was started with ceph: true');
    const [n1, n2, n3] = cl.nodes;
    const v = `cl-cephfs-${rand()}`;
    assert.equal(await n1.dockerOk(['volume', 'create', '-d', 'ballast', '-o', 'backend=cephfs', '-o', 'size=256M', v], 60_000), v);
    const writer = 'i=0; while true; do i=$((i+1)); echo "$NODE $i" >> /data/f-$NODE; sleep 0.2; done';
    const names = { n1: `cl-cfs-n1-${rand()}`, n2: `cl-cfs-n2-${rand()}` };
    const [c1, c2] = await Promise.all([n1, n2].map((node) => node.dockerOk(['run', '-d', '--name', names[node.name as 'n1' | 'n2'], '-e', `NODE=${node.name}`,
      '--mount', mountArg(v), 'busybox:local', 'sh', '-c', writer], 90_000)));
    try {
      // Each node reads the other node's file, twice: it must exist, hold the other node's lines, and grow.
      for (const [node, ctr, other] of [[n1, c1, 'n2'], [n2, c2, 'n1']] as const) {
        const file = `/data/f-${other}`;
        const a = await waitFor(async () => (await lines(node, ctr, file)) || undefined, `${node.name} to see ${file} written by ${other}`, 20_000, 200);
        await sleep(1500);
        const b = await lines(node, ctr, file);
        assert.ok(b > a, `${node.name} sees ${file} grow: ${a} lines, then ${b} 1.5 s later`);
        const last = (await node.dockerOk(['exec', ctr, 'tail', '-n', '1', file])).trim();
        assert.match(last, new RegExp(`^${other} \\d+$`), `the last line of ${file} on ${node.name}`);
      }
      // Both containers ran the whole time (so the writes were concurrent).
      for (const [node, ctr] of [[n1, c1], [n2, c2]] as const) {
        assert.equal(await node.dockerOk(['inspect', '-f', '{{.State.Running}}', ctr]), 'true', `the writer on ${node.name} still runs`);
      }
      // Both nodes hold the volume, as every node's Ballast sees it (the attachments in the etcd store).
      for (const node of [n1, n2, n3]) assert.deepEqual(holders(await inspect(node, v)), ['n1:rw', 'n2:rw'], `holders of ${v} as ${node.name} sees them`);
      const g = await n3.plugin('VolumeDriver.Get', { Name: v });
      const st = (g.body.Volume as { Status?: { attachments?: Attachment[] } } | undefined)?.Status;
      assert.deepEqual((st?.attachments ?? []).map((x) => x.node).sort(), ['n1', 'n2'], `VolumeDriver.Get on n3: ${JSON.stringify(g.body)}`);
      // One ceph-fuse per writing node, reaching the MDS from the node's address (the mgr's volumes module,
      // on the hub's 10.99.0.1, is a client too).
      const clients = JSON.parse(await cl.ceph.ok('ceph', ['tell', 'mds.a', 'client', 'ls', '--format', 'json'], 30_000)) as { entity?: { addr?: { addr?: string } } }[];
      const ips = clients.map((x) => (x.entity?.addr?.addr ?? '').split(':')[0]).filter((a) => a !== cl.hub.addr).sort();
      assert.deepEqual(ips, [n1.addr, n2.addr], `the MDS's clients: ${JSON.stringify(clients.map((x) => x.entity))}`);
    } finally {
      await Promise.all([[n1, c1], [n2, c2]].map(([node, ctr]) => (node as ClusterNode).docker(['rm', '-f', ctr as string], 60_000)));
    }
    await waitFor(async () => holders(await inspect(n1, v)).length === 0, `the holders of ${v} to go after both containers were removed`, 30_000, 300);
    assert.equal((await n1.dockerOk(['volume', 'rm', v], 120_000)), v);
    const subs = JSON.parse(await cl.ceph.ok('ceph', ['fs', 'subvolume', 'ls', 'cephfs', '--format', 'json'])) as { name: string }[];
    assert.ok(!subs.some((s) => s.name === v), `the subvolume of ${v} is gone: ${JSON.stringify(subs)}`);
  });

  test('rbd: mounted read-write on n1, a mount on n2 is refused naming n1; after n1 releases it, n2 mounts it and reads what n1 wrote', async () => {
    const cl = get();
    assert.ok(cl.ceph, 'the cluster was started with ceph: true');
    const [n1, n2] = cl.nodes;
    const v = `cl-rbd-${rand()}`;
    assert.equal(await n1.dockerOk(['volume', 'create', '-d', 'ballast', '-o', 'backend=rbd', '-o', 'size=256M', v], 120_000), v);
    const image = (await inspect(n1, v)).status?.image;
    assert.ok(image, `the rbd volume names its image: ${JSON.stringify(await inspect(n1, v))}`);
    const token = `from-n1-${rand()}`;
    const c1 = await n1.dockerOk(['run', '-d', '--name', `cl-rbd-n1-${rand()}`, '--mount', mountArg(v), 'busybox:local', 'sh', '-c', `echo ${token} > /data/hello && sync && sleep 3600`], 120_000);
    let c1Gone = false;
    try {
      await waitFor(async () => (await n1.docker(['exec', c1, 'cat', '/data/hello'])).stdout.trim() === token, 'the container on n1 to write /data/hello', 30_000, 200);
      const before = await inspect(n2, v);
      assert.deepEqual(holders(before), ['n1:rw'], 'n1 holds the volume read-write');
      assert.equal(before.mounts, 1, `one mount reference (n1's container): ${JSON.stringify(before)}`);

      // docker run on n2 fails, naming n1.
      const name2 = `cl-rbd-n2-${rand()}`;
      const t0 = Date.now();
      const r = await n2.docker(['run', '--name', name2, '--mount', mountArg(v), 'busybox:local', 'cat', '/data/hello'], 150_000);
      await n2.docker(['rm', '-f', name2], 30_000);
      console.log(`cluster: docker run on n2 refused after ${Date.now() - t0} ms: ${r.stderr.trim()}`);
      assert.notEqual(r.code, 0, `docker run on n2 must fail while n1 holds ${v}: ${r.stdout}`);
      assert.ok(!r.stdout.includes(token), 'n2 read nothing of the volume');
      assert.match(r.stderr, /\bnode n1\b/, `docker run on n2 names n1: ${r.stderr}`);

      // The plugin's own answer on n2: an Err naming n1 (and the refused mount leaves nothing behind).
      const id = `probe-${rand()}`;
      const m = await n2.plugin('VolumeDriver.Mount', { Name: v, ID: id });
      if (!m.body.Err) await n2.plugin('VolumeDriver.Unmount', { Name: v, ID: id });
      assert.equal(typeof m.body.Err, 'string', `VolumeDriver.Mount on n2 must answer an Err: ${m.status} ${JSON.stringify(m.body)}`);
      assert.match(m.body.Err as string, /\bnode n1\b/, `the Err names n1: ${m.body.Err}`);
      const afterRefusals = await inspect(n2, v);
      assert.deepEqual(holders(afterRefusals), ['n1:rw'], 'the refused mounts did not change the holders');
      assert.deepEqual(afterRefusals.mountIds, before.mountIds, 'the refused mounts left no mount reference');
      assert.ok(n1.mountinfo().includes(v), `n1's mount namespace has ${v} mounted (its mount paths name the volume)`);
      assert.ok(!n2.mountinfo().includes(v), `nothing of ${v} is mounted in n2's mount namespace`);
      assert.equal(await n1.dockerOk(['exec', c1, 'cat', '/data/hello']), token, 'n1 still reads its file');

      // n1's container goes; n1 releases the volume.
      await n1.dockerOk(['rm', '-f', c1], 60_000);
      c1Gone = true;
      await waitFor(async () => { const i = await inspect(n1, v); return i.mounts === 0 && holders(i).length === 0; },
        `n1 to release ${v} after its container went`, 60_000, 300);
    } finally {
      if (!c1Gone) await n1.docker(['rm', '-f', c1], 60_000);
    }
    // Now n2 mounts it and reads what n1 wrote, and writes in turn.
    const out = await n2.dockerOk(['run', '--rm', '--mount', mountArg(v), 'busybox:local', 'sh', '-c', 'cat /data/hello && echo from-n2 >> /data/hello && sync'], 150_000);
    assert.equal(out, token, 'n2 reads what n1 wrote');
    await waitFor(async () => holders(await inspect(n2, v)).length === 0, `n2 to release ${v} after its container went`, 60_000, 300);
    // And back on n1, n2's line is there.
    assert.equal(await n1.dockerOk(['run', '--rm', '--mount', mountArg(v), 'busybox:local', 'cat', '/data/hello'], 150_000), `${token}\nfrom-n2`);
    await waitFor(async () => holders(await inspect(n1, v)).length === 0, `n1 to release ${v} again`, 60_000, 300);
    assert.equal(await n1.dockerOk(['volume', 'rm', v], 120_000), v);
    const images = JSON.parse(await cl.ceph.ok('rbd', ['ls', 'rbd', '--format', 'json'])) as string[];
    assert.ok(!images.includes(image), `the image ${image} is gone: ${JSON.stringify(images)}`);
  });
}
