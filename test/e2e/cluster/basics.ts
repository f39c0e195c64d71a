/**
 * The cluster harness's own checks (first in test/e2e/cluster.test.ts): every dockerd sees the `ballast`
 * driver, a volume created on n1 is listed and inspected on n2 and n3, Swarm services pinned to n2 and n3
 * write through Ballast volumes mounted there (and only there), and the fault controls work (kill and
 * restart Ballast, cut and heal a link, kill and restart an etcd member). `dockerdRestartTests` (kill -9
 * and restart a node's dockerd) is registered separately, late in the file, since the restart takes the
 * node's containers down (no live-restore).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Cluster, ClusterNode } from '../../helpers/cluster.js';
import { waitFor } from '../../helpers/proc.js';

const vname = (p: string) => `${p}-${randomBytes(3).toString('hex')}`;

export function basicsTests(get: () => Cluster): void {
  const shared = vname('cl-shared');
  const svcVol = vname('cl-svc');
  const blkVol = vname('cl-blk');

  test('every node\'s dockerd lists the ballast volume driver', async () => {
    for (const node of get().nodes) {
      await node.dockerOk(['volume', 'ls']);
      const plugins = JSON.parse(await node.dockerOk(['info', '--format', '{{json .Plugins.Volume}}'])) as string[];
      assert.ok(plugins.includes('ballast'), `${node.name}: docker info Plugins.Volume = ${JSON.stringify(plugins)}`);
      const h = await node.ballast(['volume', 'ls', '--json']);
      assert.equal(h.code, 0, `${node.name}: ballast volume ls: ${h.stderr}`);
    }
  });

  test('a volume created on n1 is listed on n2 and n3 and inspected on n2', async () => {
    const [n1, n2, n3] = get().nodes;
    assert.equal(await n1.dockerOk(['volume', 'create', '-d', 'ballast', shared]), shared);
    for (const node of [n2, n3]) {
      await waitFor(async () => (await node.dockerOk(['volume', 'ls', '--format', '{{.Driver}} {{.Name}}'])).split('\n').includes(`ballast ${shared}`),
        `docker volume ls on ${node.name} to list ${shared} (created on n1)`, 10_000, 200);
    }
    const [v] = JSON.parse(await n2.dockerOk(['volume', 'inspect', shared])) as { Name: string; Driver: string; Mountpoint: string }[];
    assert.equal(v.Name, shared);
    assert.equal(v.Driver, 'ballast');
    const g = await n3.plugin('VolumeDriver.Get', { Name: shared });
    assert.equal(g.status, 200);
    assert.equal((g.body.Volume as { Name?: string } | undefined)?.Name, shared, JSON.stringify(g.body));
  });

  test('a Swarm service pinned to n2 writes through a Ballast volume mounted on n2', async () => {
    const [n1, n2] = get().nodes;
    // The volume does not exist yet: n2's dockerd creates it through n2's Ballast when the task starts
    // (default backend local, so its home is n2), and the other nodes list it from the cluster store.
    const t0 = Date.now();
    await n1.dockerOk(['service', 'create', '--detach', '--name', 's1',
      '--mount', `type=volume,source=${svcVol},target=/data,volume-driver=ballast`,
      '--constraint', 'node.hostname==sf-n2', 'busybox:local', 'sh', '-c', 'echo hi > /data/f; sleep 3600'], 60_000);
    const state = await waitFor(async () => {
      const out = await n1.dockerOk(['service', 'ps', 's1', '--format', '{{.Node}} {{.CurrentState}} {{.Error}}', '--no-trunc']);
      const first = out.split('\n')[0] ?? '';
      return /Rejected|Failed/.test(first) || /^sf-n2 Running/.test(first) ? first : undefined;
    }, 'the task of service s1 to run on sf-n2 (or be rejected)', 90_000, 200);
    assert.match(state, /^sf-n2 Running/, `the task of s1: ${state}`);
    console.log(`cluster: service task running after ${Date.now() - t0} ms (${state})`);
    console.log(`cluster: tasks of s1:\n${await n1.dockerOk(['service', 'ps', 's1', '--no-trunc', '--format', '{{.Name}} {{.Node}} {{.DesiredState}} {{.CurrentState}} {{.Error}}'])}`);
    // The container runs on n2 and its write went through the volume.
    const ctr = await waitFor(async () => (await n2.dockerOk(['ps', '-q', '--filter', 'label=com.docker.swarm.service.name=s1'])).split('\n')[0], 'the task container on n2', 10_000, 200);
    assert.equal(await waitFor(async () => (await n2.dockerOk(['exec', ctr, 'cat', '/data/f'])) || undefined, 'the task to write /data/f', 10_000, 200), 'hi');
    // Ballast on n2 holds the mount (its ledger, through the CLI there), the file is in the volume's
    // directory in n2's namespaces, and the volume lives on n2.
    const insp = await n2.ballast(['volume', 'inspect', svcVol]);
    assert.equal(insp.code, 0, insp.stderr);
    const info = (JSON.parse(insp.stdout) as { name: string; mounts: number; status?: Record<string, unknown> }[])[0];
    assert.ok(info.mounts >= 1, `ballast volume inspect on n2 counts the mount: ${insp.stdout}`);
    assert.equal(info.status?.node, 'n2', `the volume lives on n2: ${insp.stdout}`);
    const g = await n2.plugin('VolumeDriver.Get', { Name: svcVol });
    const mp = (g.body.Volume as { Mountpoint?: string } | undefined)?.Mountpoint;
    assert.ok(mp, `Get on n2 names a mountpoint: ${JSON.stringify(g.body)}`);
    assert.equal((await n2.nsExec(['cat', `${mp}/f`])).stdout, 'hi\n');
    // Created by n2's dockerd, listed by n1 from the cluster store.
    await waitFor(async () => (await n1.dockerOk(['volume', 'ls', '--format', '{{.Driver}} {{.Name}}'])).split('\n').includes(`ballast ${svcVol}`),
      `docker volume ls on n1 to list ${svcVol} (created by n2's dockerd)`, 10_000, 200);
    await n1.dockerOk(['service', 'rm', 's1']);
    await waitFor(async () => (await n2.dockerOk(['ps', '-aq', '--filter', 'label=com.docker.swarm.service.name=s1'])) === '', 'the task container of s1 to go from n2', 60_000, 300);
    await waitFor(async () => JSON.parse((await n2.ballast(['volume', 'inspect', svcVol])).stdout)[0].mounts === 0, `n2's Ballast to drop the mount of ${svcVol} after the service went`, 30_000, 200);
  });

  test('a shared-block volume made on n1 and used by a Swarm task on n3 is a real mount in n3\'s mount namespace only', async () => {
    const [n1, , n3] = get().nodes;
    // shared-block keeps its images in a directory every node sees (shared: true), so n1 creates what n3 mounts.
    assert.equal(await n1.dockerOk(['volume', 'create', '-d', 'ballast', '-o', 'backend=shared-block', '-o', 'size=64M', blkVol]), blkVol);
    const t0 = Date.now();
    await n1.dockerOk(['service', 'create', '--detach', '--name', 's2',
      '--mount', `type=volume,source=${blkVol},target=/data,volume-driver=ballast`,
      '--constraint', 'node.hostname==sf-n3', 'busybox:local', 'sh', '-c', 'echo block > /data/f; sync; sleep 3600'], 60_000);
    const state = await waitFor(async () => {
      const first = (await n1.dockerOk(['service', 'ps', 's2', '--format', '{{.Node}} {{.CurrentState}} {{.Error}}', '--no-trunc'])).split('\n')[0] ?? '';
      return /Rejected|Failed/.test(first) || /^sf-n3 Running/.test(first) ? first : undefined;
    }, 'the task of service s2 to run on sf-n3 (or be rejected)', 90_000, 200);
    assert.match(state, /^sf-n3 Running/, `the task of s2: ${state}`);
    console.log(`cluster: block-volume task running after ${Date.now() - t0} ms; tasks of s2:\n${await n1.dockerOk(['service', 'ps', 's2', '--no-trunc', '--format', '{{.Name}} {{.Node}} {{.DesiredState}} {{.CurrentState}} {{.Error}}'])}`);
    const g = await n3.plugin('VolumeDriver.Get', { Name: blkVol });
    const mp = (g.body.Volume as { Mountpoint?: string } | undefined)?.Mountpoint;
    assert.ok(mp, `Get on n3 names a mountpoint: ${JSON.stringify(g.body)}`);
    const mounted = (node: ClusterNode) => node.mountinfo().split('\n').some((l) => l.split(' ')[4] === mp);
    await waitFor(async () => (await n3.nsExec(['cat', `${mp}/f`])).stdout === 'block\n', `the task to write ${mp}/f on n3`, 10_000, 200);
    assert.ok(mounted(n3), `${mp} is mounted in n3's mount namespace`);
    for (const other of get().nodes.filter((x) => x !== n3)) assert.ok(!mounted(other), `${mp} is not mounted on ${other.name}`);
    assert.ok(!readFileSync('/proc/self/mountinfo', 'utf8').includes(mp), `${mp} is not mounted in the host's namespace`);
    await n1.dockerOk(['service', 'rm', 's2']);
    await waitFor(() => !mounted(n3), `${mp} to be unmounted on n3 after the service went`, 60_000, 200);
  });

  test('the fault controls: kill and restart Ballast, cut and heal a link, kill and restart an etcd member', async () => {
    const cl = get();
    const n3 = cl.nodes[2];
    const old = n3.pid();
    await n3.kill9Ballast();
    assert.equal(n3.pid(), 0);
    await n3.restartBallast();
    assert.ok(n3.pid() && n3.pid() !== old, 'a new Ballast pid on n3');
    assert.equal((await n3.plugin('VolumeDriver.List', {})).status, 200);

    const ping = () => n3.nsExec(['/bin/busybox', 'ping', '-c', '1', '-W', '1', cl.hub.addr], 10_000);
    assert.equal((await ping()).code, 0, 'n3 reaches the hub');
    await n3.cutLink();
    assert.notEqual((await ping()).code, 0, 'n3 does not reach the hub with its link cut');
    await n3.healLink();
    await waitFor(async () => (await ping()).code === 0, 'n3 to reach the hub again after healLink', 10_000, 200);

    await cl.killEtcdMember(0);
    await cl.etcdHealthy(20_000);
    await cl.startEtcdMember(0);
    await cl.etcdHealthy(20_000);
    const members = await cl.etcdctl(['endpoint', 'status', '-w', 'json']);
    assert.equal(members.code, 0, members.stderr);
    assert.equal((JSON.parse(members.stdout) as unknown[]).length, 3);
  });
}

export function dockerdRestartTests(get: () => Cluster): void {
  // Was a todo ("timeout waiting for containerd to start"): the killed containerd stayed a zombie under PID 1,
  // and dockerd took its pidfile for a live containerd. restartDockerd now drops a pidfile naming a dead PID.
  test('kill9Dockerd and restartDockerd: the node comes back Ready and runs containers with Ballast volumes', async () => {
    const cl = get();
    const [n1, , n3] = cl.nodes;
    const dpid = n3.dockerdPid();
    const ctr = await n3.dockerOk(['run', '-d', 'busybox:local', 'sleep', '3600']);
    await n3.kill9Dockerd();
    assert.equal(n3.dockerdPid(), 0);
    await waitFor(async () => !(await n1.dockerOk(['node', 'ls', '--format', '{{.Hostname}} {{.Status}}'])).split('\n').includes('sf-n3 Ready'),
      'Swarm to see sf-n3 down after its dockerd was killed', 60_000, 250);
    const t0 = Date.now();
    await n3.restartDockerd();
    console.log(`cluster: restartDockerd of n3 took ${Date.now() - t0} ms`);
    assert.ok(n3.dockerdPid() && n3.dockerdPid() !== dpid, 'a new dockerd pid on n3');
    await waitFor(async () => (await n1.dockerOk(['node', 'ls', '--format', '{{.Hostname}} {{.Status}}'])).split('\n').includes('sf-n3 Ready'),
      'sf-n3 to be Ready again after its dockerd restarted', 60_000, 250);
    // Without live-restore the restarted dockerd stopped the old container; remove it.
    await n3.dockerOk(['rm', '-f', ctr]);
    const v = vname('cl-restart');
    const out = await n3.dockerOk(['run', '--rm', '--mount', `type=volume,source=${v},target=/data,volume-driver=ballast`, 'busybox:local', 'sh', '-c', 'echo again > /data/f && cat /data/f'], 60_000);
    assert.equal(out, 'again');
    const plugins = JSON.parse(await n3.dockerOk(['info', '--format', '{{json .Plugins.Volume}}'])) as string[];
    assert.ok(plugins.includes('ballast'), `n3: docker info Plugins.Volume = ${JSON.stringify(plugins)}`);
    assert.equal((await n3.ballast(['volume', 'rm', v])).code, 0);
  });
}
