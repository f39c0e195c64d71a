/**
 * Cluster mode with two Ballast "nodes" on this machine, each a real daemon in its own mount namespace
 * (so each has its own mounts, as two hosts would), sharing a real 3-member etcd on loopback:
 * volumes made on one node are seen on the other; an exclusive volume (block images on a directory both
 * nodes reach, `shared: true`) is attached to one node at a time, also when both mount it at the same
 * instant; a node-local volume stays on its node; Capabilities answers Scope global; the node registry
 * shows a node down once its daemon is SIGKILLed and its lease expired.
 *
 * Real etcd, real loop devices and ext4, the plugin protocol over each daemon's socket as dockerd sends
 * it. Root only; etcd from scripts/install-test-deps.sh.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { startBallast, uniqueName, type BallastProc } from '../helpers/ballast.js';
import { run, sleep, waitFor } from '../helpers/proc.js';
import { etcdSkipReason, startEtcd, type EtcdCluster } from '../servers/etcd.js';

const SKIP = process.getuid?.() !== 0 ? 'needs root (loop devices, mounts, mount namespaces)' : etcdSkipReason();
const TTL = 3;

describe('cluster mode: two nodes on one etcd (e2e)', { skip: SKIP ?? false }, () => {
  let etcd: EtcdCluster | undefined;
  let scratch = '';
  const nodes: Record<'a' | 'b', BallastProc | undefined> = { a: undefined, b: undefined };
  const A = () => nodes.a!;
  const B = () => nodes.b!;

  const nsMounts = async (p: BallastProc) => (await run(['nsenter', '-t', String(p.pid()), '-m', 'cat', '/proc/self/mountinfo'])).stdout;
  const mountedIn = async (p: BallastProc, mp: string) => (await nsMounts(p)).split('\n').some((l) => l.split(' ')[4] === mp);
  const nsCat = async (p: BallastProc, file: string) => run(['nsenter', '-t', String(p.pid()), '-m', 'cat', '--', file]);
  const nsWrite = async (p: BallastProc, file: string, text: string) => run(['nsenter', '-t', String(p.pid()), '-m', 'sh', '-c', 'cat > "$1" && sync -f "$1"', 'sh', file], { input: text });

  before(async () => {
    scratch = mkdtempSync(join('/var/tmp', 'ballast-cluster2-'));
    etcd = await startEtcd({ members: 3, basePort: 42379 });
    const config = (node: string) => {
      const file = join(scratch, `${node}.json`);
      writeFileSync(file, JSON.stringify({
        node,
        store: { type: 'etcd', endpoints: etcd!.endpoints, prefix: `/ballast-test-${process.pid}/`, timeoutSec: 3, leaseTtlSec: TTL, peerListen: '127.0.0.1:0' },
        defaultBackend: 'local',
        backends: {
          local: { type: 'local' },
          // Both "nodes" are on this machine, so this directory is storage every node reaches.
          shared: { type: 'block', shared: true, imageDir: join(scratch, 'shared-images'), mountDir: join(scratch, 'shared-mounts') },
        },
      }));
      return file;
    };
    mkdirSync(join(scratch, 'shared-images'));
    const start = (node: 'a' | 'b') => startBallast({
      root: join(scratch, node), configFile: config(node), wrap: ['unshare', '-m', '--propagation', 'private'],
      env: { BALLAST_RECONCILE_INTERVAL_SEC: '3600', BALLAST_LEAK_GRACE_SEC: '3600' },
    });
    [nodes.a, nodes.b] = await Promise.all([start('a'), start('b')]);
  });

  after(async () => {
    for (const p of [nodes.a, nodes.b]) {
      if (!p) continue;
      for (const line of (await nsMounts(p).catch(() => '')).split('\n')) {
        const mp = line.split(' ')[4];
        if (mp?.startsWith(scratch + '/')) await run(['nsenter', '-t', String(p.pid()), '-m', 'umount', '--', mp]);
      }
      await p.stop();
    }
    await etcd?.stop();
    if (scratch && process.env.BALLAST_KEEP_LOGS) for (const n of ['a', 'b']) try { copyFileSync(join(scratch, n, 'daemon.log'), `${process.env.BALLAST_KEEP_LOGS}/${n}.log`); } catch { /* none */ }
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  const ok = async (p: BallastProc, method: string, body: unknown) => {
    const r = await p.plugin(`VolumeDriver.${method}`, body);
    assert.equal(r.body.Err, undefined, `${method} ${JSON.stringify(body)} on ${p.root}: ${String(r.body.Err)}`);
    return r.body;
  };

  test('Capabilities answers Scope global; a volume made on one node is listed and inspected on the other', async () => {
    for (const p of [A(), B()]) assert.deepEqual((await p.plugin('VolumeDriver.Capabilities', {})).body, { Capabilities: { Scope: 'global' } });
    const vol = uniqueName('cl-seen-');
    await ok(A(), 'Create', { Name: vol, Opts: { backend: 'shared', size: '32M' } });
    const seen = await waitFor(async () => ((await B().plugin('VolumeDriver.List', {})).body.Volumes as { Name: string }[]).some((v) => v.Name === vol), `${vol} in node b's List`, 5_000, 20);
    assert.ok(seen);
    const got = (await ok(B(), 'Get', { Name: vol })).Volume as { Mountpoint: string; Status: Record<string, unknown> };
    assert.equal(got.Status.backend, 'shared');
    assert.deepEqual(got.Status.attachments, []);
    await ok(B(), 'Remove', { Name: vol });
    await waitFor(async () => !((await A().plugin('VolumeDriver.List', {})).body.Volumes as { Name: string }[]).some((v) => v.Name === vol), `${vol} gone from node a`, 5_000, 20);
  });

  test('an exclusive volume is attached to one node at a time: refused elsewhere with the holder named; after the last unmount the other node mounts it and reads the data', async () => {
    const vol = uniqueName('cl-excl-');
    await ok(A(), 'Create', { Name: vol, Opts: { backend: 'shared', size: '32M' } });
    const mp = String((await ok(A(), 'Mount', { Name: vol, ID: 'a'.repeat(64) })).Mountpoint);
    assert.ok(await mountedIn(A(), mp));
    assert.equal((await nsWrite(A(), join(mp, 'f'), 'written on a\n')).code, 0);
    const refused = await B().plugin('VolumeDriver.Mount', { Name: vol, ID: 'b'.repeat(64) });
    assert.match(String(refused.body.Err), new RegExp(`^volume ${vol} is attached read-write to node a since \\S+; backend shared .*one`));
    assert.ok(!(await mountedIn(B(), mp)), 'the refused node mounted nothing');
    const inspect = JSON.parse((await B().cli(['volume', 'inspect', vol])).stdout) as { status: { attachments: { node: string; mode: string }[] } }[];
    assert.deepEqual(inspect[0].status.attachments.map((h) => [h.node, h.mode]), [['a', 'rw']], 'inspect on b shows who holds it');
    await ok(A(), 'Unmount', { Name: vol, ID: 'a'.repeat(64) });
    assert.ok(!(await mountedIn(A(), mp)));
    assert.equal(String((await ok(B(), 'Mount', { Name: vol, ID: 'b'.repeat(64) })).Mountpoint), mp);
    assert.equal((await nsCat(B(), join(mp, 'f'))).stdout, 'written on a\n', 'the data followed the volume to node b');
    await ok(B(), 'Unmount', { Name: vol, ID: 'b'.repeat(64) });
    await ok(B(), 'Remove', { Name: vol });
  });

  test('race: both nodes mount the same exclusive volume at the same instant, 100 times; exactly one wins each time, the other is told who holds it', async () => {
    const vol = uniqueName('cl-race-');
    await ok(A(), 'Create', { Name: vol, Opts: { backend: 'shared', size: '32M' } });
    await waitFor(async () => (await B().plugin('VolumeDriver.Get', { Name: vol })).body.Err === undefined, `${vol} seen on b`, 5_000, 20);
    const wins = { a: 0, b: 0 };
    for (let i = 0; i < 100; i++) {
      const id = (c: string) => `${c}${String(i).padStart(63, '0')}`;
      const [ra, rb] = await Promise.all([A().plugin('VolumeDriver.Mount', { Name: vol, ID: id('a') }), B().plugin('VolumeDriver.Mount', { Name: vol, ID: id('b') })]);
      const okA = ra.body.Err === undefined;
      const okB = rb.body.Err === undefined;
      assert.ok(okA !== okB, `round ${i}: exactly one wins (a: ${String(ra.body.Err ?? 'ok')}; b: ${String(rb.body.Err ?? 'ok')})`);
      const [winner, loser, loserAnswer, w] = okA ? [A(), B(), rb, 'a'] as const : [B(), A(), ra, 'b'] as const;
      wins[w]++;
      assert.match(String(loserAnswer.body.Err), new RegExp(`is attached read-write to node ${w} since`), `round ${i}: the loser is told who holds it`);
      const mp = String((okA ? ra : rb).body.Mountpoint);
      assert.ok(await mountedIn(winner, mp), `round ${i}: the winner mounted it`);
      assert.ok(!(await mountedIn(loser, mp)), `round ${i}: the loser did not`);
      await ok(winner, 'Unmount', { Name: vol, ID: id(w) });
    }
    process.stdout.write(`# race: a won ${wins.a}, b won ${wins.b} of 100\n`);
    const fsck = await run(['e2fsck', '-fn', join(scratch, 'shared-images', `${vol}.img`)]);
    assert.equal(fsck.code, 0, `the filesystem is clean after 100 handovers: ${fsck.stdout}${fsck.stderr}`);
    await ok(A(), 'Remove', { Name: vol });
  });

  test('a node-local volume is listed on every node with its node named, and refused elsewhere with where its data lives', async () => {
    const vol = uniqueName('cl-local-');
    await ok(A(), 'Create', { Name: vol, Opts: {} });
    await waitFor(async () => (await B().plugin('VolumeDriver.Get', { Name: vol })).body.Err === undefined, `${vol} seen on b`, 5_000, 20);
    const got = (await ok(B(), 'Get', { Name: vol })).Volume as { Status: Record<string, unknown> };
    assert.equal(got.Status.node, 'a');
    const r = await B().plugin('VolumeDriver.Mount', { Name: vol, ID: 'c'.repeat(64) });
    assert.match(String(r.body.Err), new RegExp(`^volume ${vol} lives on node a .*cannot be mounted on node b; run its containers on a, e\\.g\\. docker service create --constraint node\\.hostname==`));
    await ok(A(), 'Mount', { Name: vol, ID: 'c'.repeat(64) });
    await ok(A(), 'Unmount', { Name: vol, ID: 'c'.repeat(64) });
    await ok(A(), 'Remove', { Name: vol });
  });

  test('a dead node\'s exclusive volume: refused elsewhere (with the fence hint) until `ballast node fence`, which is refused while the node holds its lease; then the data follows', async () => {
    const vol = uniqueName('cl-fence-');
    await ok(A(), 'Create', { Name: vol, Opts: { backend: 'shared', size: '32M' } });
    const mp = String((await ok(A(), 'Mount', { Name: vol, ID: 'a'.repeat(64) })).Mountpoint);
    assert.equal((await nsWrite(A(), join(mp, 'f'), 'fsynced on a\n')).code, 0);
    const early = await B().cli(['node', 'fence', 'a']);
    assert.equal(early.code, 4, early.stdout + early.stderr);
    assert.match(early.stderr, /node a still holds its lease/);
    // Node a dies: its daemon is SIGKILLed, and with it its mount namespace (its mounts go, as on a power-off).
    await A().kill9();
    const r1 = await B().plugin('VolumeDriver.Mount', { Name: vol, ID: 'b'.repeat(64) });
    assert.match(String(r1.body.Err), /attached read-write to node a .*If node a is down for good \(powered off\), release its volumes with: ballast node fence a/);
    const fenced = await waitFor(async () => { const r = await B().cli(['node', 'fence', 'a']); return r.code === 0 ? r : undefined; }, 'the fence of node a to be accepted once its lease expired', (TTL + 5) * 1000, 250);
    assert.match(fenced.stdout, new RegExp(`released ${vol} from node a \\(epoch 1, 1 reference dropped\\)`));
    assert.equal(String((await ok(B(), 'Mount', { Name: vol, ID: 'b'.repeat(64) })).Mountpoint), mp);
    assert.equal((await nsCat(B(), join(mp, 'f'))).stdout, 'fsynced on a\n', 'what node a fsynced is there');
    const got = (await ok(B(), 'Get', { Name: vol })).Volume as { Status: { attachments: { node: string }[]; epoch: number } };
    assert.deepEqual([got.Status.epoch, got.Status.attachments.map((h) => h.node)], [1, ['b']]);
    await A().restart();
    await ok(B(), 'Unmount', { Name: vol, ID: 'b'.repeat(64) });
    await ok(B(), 'Remove', { Name: vol });
  });

  test('a node that comes back while still mounting a volume another node took over leaves that stale mount alone and reports it', async () => {
    const vol = uniqueName('cl-stale-');
    await ok(A(), 'Create', { Name: vol, Opts: { backend: 'shared', size: '32M' } });
    const mp = String((await ok(A(), 'Mount', { Name: vol, ID: 'a'.repeat(64) })).Mountpoint);
    // Node a hangs (SIGSTOP): its mount stays, its lease expires, the operator fences it.
    process.kill(A().pid(), 'SIGSTOP');
    try {
      await waitFor(async () => (await B().cli(['node', 'fence', 'a'])).code === 0 || undefined, 'the fence of the hung node a', (TTL + 5) * 1000, 250);
      await ok(B(), 'Mount', { Name: vol, ID: 'b'.repeat(64) });
    } finally { process.kill(A().pid(), 'SIGCONT'); }
    // Woken up, node a's self-fence may freeze the volume (its lease ran out while it was stopped; it
    // does not when node a reaches etcd again first). Both "nodes" are one kernel here (two loop devices
    // of one image), and a freeze commits node a's own superblock: node b writes once node a's self-fence
    // has acted (its timer is overdue at once after SIGCONT) or had nothing to do, so what fsck reads is
    // node b's.
    await waitFor(() => A().logs().split('\n').some((l) => l.includes('"op":"self-fence"') && l.includes(`"volume":"${vol}"`)) || undefined, 'node a\'s self-fence to freeze the volume', 5_000, 100).catch(() => undefined);
    assert.equal((await nsWrite(B(), join(mp, 'g'), 'written on b\n')).code, 0);
    const rep = await A().cli(['repair', '--json']);
    assert.equal(rep.code, 0, rep.stderr);
    assert.ok(await mountedIn(A(), mp), 'node a did not unmount (that would write to storage node b owns)');
    const doc = JSON.parse((await A().cli(['doctor', '--json'])).stdout) as { checks: { name: string; ok: boolean; detail: string }[] };
    const st = doc.checks.find((c) => c.name === 'stale mounts');
    assert.ok(st && !st.ok, 'doctor on node a reports the stale mount');
    assert.match(st!.detail, new RegExp(`${vol}: mounted on this node, but held by node b \\(rw since \\S+\\) at epoch 1`));
    await ok(B(), 'Unmount', { Name: vol, ID: 'b'.repeat(64) });
    const fsck = await run(['e2fsck', '-fn', join(scratch, 'shared-images', `${vol}.img`)]);
    assert.equal(fsck.code, 0, `clean with node b's writes: ${fsck.stdout}${fsck.stderr}`);
    // Woken up with its lease long gone, node a may have fenced itself (frozen the volume) before it learnt
    // that b holds it; it then keeps it frozen (a thaw would flush onto storage b owns). The operator detaches
    // the stale mount on node a by hand; this test thaws it first (node a wrote nothing after the fence).
    await run(['nsenter', '-t', String(A().pid()), '-m', 'fsfreeze', '-u', '--', mp]);
    assert.equal((await run(['nsenter', '-t', String(A().pid()), '-m', 'umount', '-l', '--', mp])).code, 0);
    await ok(B(), 'Remove', { Name: vol });
  });

  test('the node registry: both nodes up; a SIGKILLed node shows down once its lease expired, and up again after a restart', async () => {
    const ls = async (p: BallastProc) => JSON.parse((await p.cli(['node', 'ls', '--json'])).stdout) as { nodes: { name: string; alive: boolean }[]; lease: { held: boolean; ttlSec: number } };
    const state = async () => Object.fromEntries((await ls(A())).nodes.map((n) => [n.name, n.alive]));
    assert.deepEqual(await state(), { a: true, b: true });
    assert.equal((await ls(A())).lease.held, true);
    assert.equal((await ls(A())).lease.ttlSec, TTL);
    const killedAt = Date.now();
    await B().kill9();
    await waitFor(async () => (await state()).b === false || undefined, 'node b to show down', (TTL + 5) * 1000, 200).catch(async (e: Error) => {
      const keys = await run(['etcdctl', `--endpoints=${etcd!.endpoints.join(',')}`, 'get', '--prefix', `/ballast-test-${process.pid}/nodes/`, '-w', 'json'], { env: { ...process.env, ETCDCTL_API: '3' } });
      throw new Error(`${e.message}; registry keys: ${keys.stdout}${keys.stderr}; node ls: ${JSON.stringify(await ls(A()))}`);
    });
    const downAfter = Date.now() - killedAt;
    process.stdout.write(`# node b shown down ${downAfter} ms after SIGKILL (lease TTL ${TTL} s)\n`);
    assert.ok(downAfter >= (TTL - 1) * 1000, `not before its lease could expire (${downAfter} ms)`);
    await B().restart();
    await waitFor(async () => (await state()).b === true || undefined, 'node b to show up again', 10_000, 200);
    const table = (await A().cli(['node', 'ls'])).stdout;
    assert.match(table, /^a \(this node\)\s+up/m);
    assert.match(table, /^b\s+up/m);
    await sleep(10);
  });
});
