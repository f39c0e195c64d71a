/**
 * A one-replica Swarm service with an rbd volume follows its task across nodes, with its data, and never
 * has two writers (needs `startCluster({ ceph: true, swarmInitArgs: ['--dispatcher-heartbeat', '1s'] })`):
 * - drain: `docker node update --availability drain` on the node running the task: the task moves and
 *   reads what was written before (time from drain to the first fsync'd write of the new task, printed);
 * - crash: the node's Ballast and dockerd SIGKILLed while its container keeps running and writing: once
 *   the lease expired the task runs elsewhere (time from the kill to the new task's first fsync'd write,
 *   against TTL + 5 s), the old writer gets I/O errors (it is fenced at the storage: an OSD blocklist entry
 *   for its rbd-fuse client), every counter whose fsync it saw succeed is on the image, and none of its
 *   writes comes after the new writer's first;
 * - partition: the node's veth cut while its writer runs: it fences itself (freezes the volume) before its
 *   lease expires, the task moves, and after the link returns the stale node tears its staging down
 *   without a write; the same checks of the counter;
 * - at the end `e2fsck -fn` of the image is clean.
 * The workload (test/helpers/writer-workload.ts) appends `<id> <n>` to /data/counter with fsync and logs
 * what it saw acknowledged, so the test checks the acknowledged writes, not just the last line.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { WRITER_SCRIPT as SCRIPT, readWriterLog, runningTaskNode, type WriterLog } from '../../helpers/writer-workload.js';
import { join } from 'node:path';
import type { Cluster, ClusterNode } from '../../helpers/cluster.js';
import { run, sleep, waitFor } from '../../helpers/proc.js';

export function failoverTests(get: () => Cluster): void {
  const vol = `fo-${randomBytes(3).toString('hex')}`;
  const svc = `fo-svc-${randomBytes(2).toString('hex')}`;
  let logDir = '';
  const TTL = 10;
  const figures: Record<string, number> = {};

  const manager = () => get().nodes[0];
  const byHost = (h: string) => get().nodes.find((n) => n.hostname === h)!;
  const readLog = (host: string): WriterLog => readWriterLog(logDir, host);
  /** Where the service's running task is (the node's hostname), per the manager. */
  const runningOn = () => runningTaskNode(manager(), svc);
  /** Waits until a task runs on a node other than `not` and its writer logged an fsync'd write; returns the node. */
  const movedAway = async (not: string, timeoutMs: number): Promise<ClusterNode> => {
    const host = await waitFor(async () => {
      const h = await runningOn();
      return h && h !== not && readLog(h).oks.length > 0 ? h : undefined;
    }, `the task of ${svc} to run elsewhere than ${not} and write`, timeoutMs, 100);
    return byHost(host);
  };
  /** The counter file as it is on the image now (read on the node that has it staged). */
  const counterOn = async (node: ClusterNode): Promise<string[]> => {
    const mp = await node.ballast(['volume', 'inspect', vol]);
    const info = (JSON.parse(mp.stdout) as { mountpoint: string }[])[0];
    const r = await node.nsExec(['cat', join(info.mountpoint, 'counter')], 20_000);
    assert.equal(r.code, 0, `cat counter on ${node.name}: ${r.stderr}`);
    return r.stdout.split('\n').filter(Boolean);
  };
  /**
   * The safety checks of a move from the writer `old` to the writer `newId`: every counter the old writer
   * saw fsync'd is on the image; the old writer's lines end before the new writer's first (nothing of it
   * after the takeover), and it never wrote a counter beyond one past its last acknowledged one.
   */
  const checkHandover = (lines: string[], old: WriterLog, newId: string) => {
    const oldLines = lines.map((l, i) => ({ i, l })).filter((x) => x.l.startsWith(`${old.id} `));
    const present = new Set(oldLines.map((x) => Number(x.l.split(' ')[1])));
    const missing = old.oks.filter((n) => !present.has(n));
    assert.deepEqual(missing, [], `every counter writer ${old.id} saw fsync'd is on the image (missing: ${missing.slice(0, 10).join(', ')})`);
    const firstNew = lines.findIndex((l) => l.startsWith(`${newId} `));
    assert.ok(firstNew >= 0, `the new writer ${newId}'s writes are on the image`);
    const lastOld = oldLines.length ? oldLines[oldLines.length - 1].i : -1;
    assert.ok(lastOld < firstNew, `no line of the old writer ${old.id} after the new writer's first (last old at ${lastOld}, first new at ${firstNew})`);
    const maxOk = Math.max(0, ...old.oks);
    const beyond = [...present].filter((n) => n > maxOk + 1);
    assert.deepEqual(beyond, [], `writer ${old.id} wrote nothing past its last acknowledged counter ${maxOk} (+1 in flight)`);
  };

  test('failover setup: an rbd volume and a one-replica service on a worker', async () => {
    const c = get();
    logDir = join(c.dir, 'failover-logs');
    mkdirSync(logDir, { recursive: true });
    await manager().dockerOk(['volume', 'create', '-d', 'ballast', '-o', 'backend=rbd', '-o', 'size=256M', vol]);
    await manager().dockerOk(['service', 'create', '--detach', '--name', svc, '--replicas', '1', '--constraint', 'node.role==worker',
      '--hostname', '{{.Node.Hostname}}', '--stop-grace-period', '5s', '--restart-delay', '1s',
      // volume-nocopy: dockerd would otherwise mount, copy the image's /data into it, unmount and mount again.
      '--mount', `type=volume,source=${vol},target=/data,volume-driver=ballast,volume-nocopy=true`,
      '--mount', `type=bind,source=${logDir},target=/log`,
      'busybox:local', 'sh', '-c', SCRIPT], 60_000);
    const host = await waitFor(async () => { const h = await runningOn(); return h && readLog(h).oks.length >= 5 ? h : undefined; }, `${svc} to run and write`, 90_000, 200);
    assert.notEqual(byHost(host).name, 'n1', 'the task runs on a worker');
  });

  test('drain: the task moves to the other worker and finds what was written before', async () => {
    const from = (await runningOn())!;
    const t0 = Date.now();
    await manager().dockerOk(['node', 'update', '--availability', 'drain', from], 30_000);
    const to = await movedAway(from, 90_000);
    figures.drainMs = Date.now() - t0;
    const old = readLog(from);
    checkHandover(await counterOn(to), old, readLog(to.hostname).id);
    console.log(`# failover: drain ${from} -> ${to.hostname}: ${figures.drainMs} ms from drain to the new task's first fsync'd write (${old.oks.length} counters before)`);
    await manager().dockerOk(['node', 'update', '--availability', 'active', from], 30_000);
  });

  test('crash: Ballast and dockerd SIGKILLed under a running writer; after the lease the task runs elsewhere, the old writer is fenced', async () => {
    const from = (await runningOn())!;
    const node = byHost(from);
    const before = readLog(from).oks.length;
    await waitFor(() => readLog(from).oks.length > before + 3 || undefined, `the writer on ${from} to go on`, 20_000, 100);
    const t0 = Date.now();
    await node.kill9Ballast();
    await node.kill9Dockerd();
    try {
      // The container lives on (its shim): it keeps writing until the fence.
      const to = await movedAway(from, (TTL + 60) * 1000);
      figures.crashTakeoverMs = Date.now() - t0;
      console.log(`# failover: crash of ${from}: ${figures.crashTakeoverMs} ms from the kill to the new task's first fsync'd write on ${to.hostname} (lease TTL ${TTL} s; target TTL + 5 s)`);
      // The old writer is cut off at the storage: its next fsyncs fail.
      await waitFor(() => readLog(from).errs.length > 0 || undefined, `the old writer on ${from} to get I/O errors`, 20_000, 100);
      await sleep(1500);
      const old = readLog(from);
      checkHandover(await counterOn(to), old, readLog(to.hostname).id);
      assert.equal(readLog(from).oks.length, old.oks.length, 'the fenced writer acknowledged nothing more');
    } finally {
      // The node comes back: its Ballast tears the stale staging down, its dockerd stops the old task.
      await node.restartBallast();
      await node.restartDockerd();
    }
    await waitFor(async () => !node.mountinfo().includes(`/${vol} `) || undefined, `node ${node.name} to detach its stale staging of ${vol}`, 60_000, 500);
  });

  test('partition: the node\'s link cut under a running writer; it fences itself, the task moves, and after healing it lets go without writing', async () => {
    const from = (await runningOn())!;
    const node = byHost(from);
    await waitFor(() => readLog(from).oks.length > 3 || undefined, `the writer on ${from} to write`, 30_000, 100);
    const t0 = Date.now();
    await node.cutLink();
    let healed = false;
    try {
      // Self-fence: frozen before the lease can expire for the others (TTL - margin after the last keepalive).
      const frozeAt = await waitFor(async () => {
        const r = readFileSync(node.ballastLog, 'utf8');
        return r.includes('"outcome":"frozen"') && r.includes(vol) ? Date.now() : undefined;
      }, `node ${node.name} to freeze ${vol}`, TTL * 1000, 100);
      figures.selfFenceMs = frozeAt - t0;
      const okAtFreeze = readLog(from).oks.length;
      const to = await movedAway(from, (TTL + 60) * 1000);
      figures.partitionTakeoverMs = Date.now() - t0;
      console.log(`# failover: partition of ${from}: frozen after ${figures.selfFenceMs} ms (lease TTL ${TTL} s), new task writing on ${to.hostname} after ${figures.partitionTakeoverMs} ms`);
      assert.ok(figures.selfFenceMs < TTL * 1000, 'frozen before the lease can have expired');
      assert.ok(readLog(from).oks.length <= okAtFreeze + 1, 'the old writer acknowledged at most one write once frozen');
      const old = readLog(from);
      const newId = readLog(to.hostname).id;
      checkHandover(await counterOn(to), old, newId);
      await node.healLink();
      healed = true;
      // Healed: the stale node sees the newer epoch; its writer's writes fail (fenced), its staging goes.
      await waitFor(async () => !node.mountinfo().includes(`/${vol} `) || undefined, `node ${node.name} to let go of its stale staging of ${vol}`, 90_000, 500);
      const lines = await counterOn(to);
      checkHandover(lines, readLog(from), newId);
      assert.ok(lines[lines.length - 1].startsWith(`${newId} `), 'the data is the new writer\'s');
    } finally {
      if (!healed) await node.healLink();
    }
  });

  test('failover end: the service removed, the image passes e2fsck -fn', async () => {
    const c = get();
    await manager().dockerOk(['service', 'rm', svc], 60_000);
    await waitFor(async () => {
      for (const n of c.nodes) if (n.mountinfo().includes(`/${vol} `)) return undefined;
      return true;
    }, `every node to unmount ${vol}`, 60_000, 500);
    // The image as Ceph holds it: exposed by an rbd-fuse in the hub netns, checked read-only.
    const fuse = join(c.dir, 'failover-fsck');
    mkdirSync(fuse, { recursive: true });
    const ceph = c.ceph!;
    const rf = await ceph.exec(['rbd-fuse', '-c', ceph.conf, '-p', 'rbd', '-r', vol, fuse], 30_000);
    assert.equal(rf.code, 0, `rbd-fuse: ${rf.stderr}`);
    try {
      await waitFor(() => existsSync(join(fuse, vol)) || undefined, 'rbd-fuse to expose the image', 20_000, 100);
      const fsck = await run(['e2fsck', '-fn', join(fuse, vol)], { timeoutMs: 120_000 });
      assert.equal(fsck.code, 0, `e2fsck -fn: ${fsck.stdout}${fsck.stderr}`);
    } finally {
      await run(['umount', fuse], { timeoutMs: 30_000 });
    }
    // The last node releases the volume just after its unmount (and other nodes' copies follow the watch).
    await waitFor(async () => (await manager().docker(['volume', 'rm', vol], 120_000)).code === 0 || undefined, `docker volume rm ${vol}`, 30_000, 500);
    console.log(`# failover figures: ${JSON.stringify(figures)}`);
  });
}
