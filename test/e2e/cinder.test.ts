/**
 * The Cinder backend against a real Keystone (v3, fernet tokens with a short lifetime), a real Cinder
 * (cinder-api, -scheduler, -volume with the RBD driver, RabbitMQ) and the one-node Ceph behind it, a
 * real dockerd and a real 3-member etcd: two Ballast nodes in cluster mode, node-a serving dockerd,
 * node-b in its own mount namespace reached through the plugin protocol. Servers start once.
 *
 * Create with size and type (in-use in Cinder while a container runs, available after); a second
 * container reads; daemon restarted while attached; SIGKILL between attachment create and complete;
 * adopt an existing Cinder volume and remove it without deleting it; a volume from a snapshot and a
 * clone; node-b refused while node-a holds the volume; takeover after node-a is killed, with the old
 * writer fenced at Ceph and a clean fsck; quota exceeded; a token expiring while Keystone is
 * SIGSTOPped; Cinder API stopped (SIGSTOP): a clear error within the bound; the store wiped: volumes
 * adopted back from Cinder's metadata; docker volume rm deletes the Cinder volume; the password in no
 * log line.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { startBallast, uniqueName, type BallastProc } from '../helpers/ballast.js';
import { dockerSkipReason, startDockerEngine, type DockerEngine } from '../helpers/docker-engine.js';
import { pidAlive, run, sleep, waitFor } from '../helpers/proc.js';
import { teardownSuite } from '../helpers/leftovers.js';
import { cephSkipReason, startCeph, type CephCluster } from '../servers/ceph.js';
import { etcdSkipReason, startEtcd, type EtcdCluster } from '../servers/etcd.js';
import { openstackSkipReason, startOpenStack, type OpenStack } from '../servers/openstack.js';

const SKIP = dockerSkipReason() ?? cephSkipReason() ?? openstackSkipReason() ?? etcdSkipReason();
const IMAGE = 'busybox:local';
const IDLE = ['sh', '-c', 'trap "exit 0" TERM; while :; do sleep 0.1; done'];
const TTL = 4;
const TOKEN_SEC = 20;
const NS_WRAP = ['unshare', '-m', '--propagation', 'private'];

let ceph: CephCluster | undefined;
let os: OpenStack | undefined;
let etcd: EtcdCluster | undefined;
let eng: DockerEngine | undefined;
let na: BallastProc | undefined;
let nb: BallastProc | undefined;
let scratch = '';
const containers = new Set<string>();
const volumes = new Set<string>();
const bMounts = new Map<string, string>();
const timings: string[] = [];

const e = () => { assert.ok(eng, 'dockerd is not running'); return eng; };
const A = () => { assert.ok(na, 'node-a is not running'); return na; };
const B = () => { assert.ok(nb, 'node-b is not running'); return nb; };
const O = () => { assert.ok(os, 'OpenStack is not running'); return os; };
const t = (name: string, fn: () => Promise<void>, timeoutMs = 180_000) => test(name, { skip: SKIP ?? false, timeout: timeoutMs }, async () => {
  const t0 = Date.now();
  try { await fn(); } finally { timings.push(`${((Date.now() - t0) / 1000).toFixed(1)} s  ${name}`); }
});

function volName(p: string): string { const n = uniqueName(`cin-${p}-`); volumes.add(n); return n; }
function ctrName(p: string): string { const n = uniqueName(`cin-${p}-`); containers.add(n); return n; }
async function createVolume(name: string, opts: Record<string, string>): Promise<void> {
  const args = ['volume', 'create', '-d', A().driver];
  for (const [k, v] of Object.entries(opts)) args.push('-o', `${k}=${v}`);
  assert.equal(await e().ok([...args, name], 150_000), name);
}
async function createFails(name: string, opts: Record<string, string>): Promise<{ stderr: string; ms: number }> {
  const args = ['volume', 'create', '-d', A().driver];
  for (const [k, v] of Object.entries(opts)) args.push('-o', `${k}=${v}`);
  const t0 = Date.now();
  const r = await e().docker([...args, name], 150_000);
  assert.notEqual(r.code, 0, `docker volume create ${name} should fail; it printed ${r.stdout}`);
  return { stderr: r.stderr.trim(), ms: Date.now() - t0 };
}
const inContainer = (vol: string, script: string) => e().ok(['run', '--rm', '-v', `${vol}:/data`, IMAGE, 'sh', '-c', script], 150_000);
async function runDetached(name: string, vol: string): Promise<void> {
  assert.match(await e().ok(['run', '-d', '--name', name, '-v', `${vol}:/data`, IMAGE, ...IDLE], 150_000), /^[0-9a-f]{64}$/);
}
async function removeContainer(name: string): Promise<void> { await e().ok(['rm', '-f', name], 120_000); containers.delete(name); }
async function removeVolume(name: string): Promise<void> { assert.equal(await e().ok(['volume', 'rm', name], 150_000), name); volumes.delete(name); }
async function inspect(name: string): Promise<{ Mountpoint: string; Status: Record<string, unknown> }> {
  return (JSON.parse(await e().ok(['volume', 'inspect', name])) as { Mountpoint: string; Status: Record<string, unknown> }[])[0];
}
async function cinderVolume(id: string): Promise<{ status: string; size: number; volume_type: string; metadata: Record<string, string>; attachments: unknown[] } | undefined> {
  const r = await O().api('GET', `/volumes/${id}`);
  return r.status === 404 ? undefined : r.json.volume;
}
async function attachmentsOf(id: string): Promise<{ id: string; status: string }[]> {
  return (await O().api('GET', `/attachments?volume_id=${id}`, undefined, { 'OpenStack-API-Version': 'volume 3.44' })).json.attachments;
}
const mountId = () => randomBytes(32).toString('hex');
async function bMount(v: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const id = mountId();
  const r = await B().plugin('VolumeDriver.Mount', { Name: v, ID: id });
  if (!r.body.Err) bMounts.set(v, id);
  return r;
}
async function bUnmount(v: string): Promise<void> {
  const r = await B().plugin('VolumeDriver.Unmount', { Name: v, ID: bMounts.get(v) });
  assert.equal(r.body.Err ?? '', '');
  bMounts.delete(v);
}
const nsSh = (p: BallastProc, script: string) => run(['nsenter', '-t', String(p.pid()), '-m', 'sh', '-c', script], { timeoutMs: 60_000 });

/** e2fsck -fn of a Cinder volume's image, through its own read-only rbd-fuse and loop device. */
async function fsckImage(image: string): Promise<{ code: number; out: string }> {
  const dir = mkdtempSync(join(scratch, 'fsck-'));
  const r = await run(['rbd-fuse', '-c', ceph!.conf, '--keyring', ceph!.keyring, '-p', 'rbd', '-r', image, dir], { timeoutMs: 30_000 });
  assert.equal(r.code, 0, `rbd-fuse for fsck: ${r.stderr}`);
  let loop = '';
  try {
    await waitFor(() => existsSync(join(dir, image)), `rbd-fuse to show ${image}`, 10_000);
    loop = (await run(['losetup', '-f', '--show', '-r', join(dir, image)], { timeoutMs: 10_000 })).stdout.trim();
    const f = await run(['e2fsck', '-fn', loop], { timeoutMs: 60_000 });
    const cat = await run(['debugfs', '-R', 'cat /counter', loop], { timeoutMs: 30_000 });
    return { code: f.code, out: `${f.stdout}${f.stderr}\n--counter--\n${cat.stdout}` };
  } finally {
    if (loop) await run(['losetup', '-d', loop], { timeoutMs: 10_000 });
    await run(['umount', dir], { timeoutMs: 10_000 });
  }
}

/** A host process appending a counter with fsync every 50 ms to DIR/counter, logging ok/err per write. */
const WRITER = `const fs = require('fs'); const dir = process.argv[1]; const L = fs.openSync(process.argv[2], 'a'); const nap = new Int32Array(new SharedArrayBuffer(4));
for (let n = 1; ; n++) {
  try { const fd = fs.openSync(dir + '/counter', 'a'); try { fs.writeSync(fd, n + '\\n'); fs.fsyncSync(fd); fs.writeSync(L, 'ok ' + n + ' ' + Date.now() + '\\n'); } finally { fs.closeSync(fd); } }
  catch (e) { fs.writeSync(L, 'err ' + n + ' ' + Date.now() + ' ' + e.code + '\\n'); }
  Atomics.wait(nap, 0, 0, 50);
}`;
function writerLog(file: string): { kind: string; n: number; ms: number }[] {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => { const [kind, n, ms] = l.split(' '); return { kind, n: Number(n), ms: Number(ms) }; });
}

describe('Cinder backend on a real Keystone, Cinder and Ceph (e2e)', { skip: SKIP ?? false }, () => {
  let configFile = '';
  before(async () => {
    scratch = mkdtempSync('/var/tmp/ballast-cinder-e2e-');
    const t0 = Date.now();
    const [cl, en, et] = await Promise.allSettled([startCeph(join(scratch, 'ceph'), { osdSizeGiB: 6, rgw: false }), startDockerEngine(), startEtcd({ members: 3, basePort: 43379 })]);
    if (cl.status === 'fulfilled') ceph = cl.value;
    if (en.status === 'fulfilled') eng = en.value;
    if (et.status === 'fulfilled') etcd = et.value;
    for (const r of [cl, en, et]) if (r.status === 'rejected') throw r.reason;
    timings.push(`${((Date.now() - t0) / 1000).toFixed(1)} s  before: Ceph, dockerd and etcd in parallel`);
    os = await startOpenStack(join(scratch, 'openstack'), { cephConf: ceph!.conf, cephKeyring: ceph!.keyring, tokenExpirationSec: TOKEN_SEC });
    timings.push(`${((Date.now() - t0) / 1000).toFixed(1)} s  before: + Keystone and Cinder (${(os.startMs / 1000).toFixed(1)} s: ${os.laps.join(', ')})`);
    await os.createVolumeType('fast');
    configFile = join(scratch, 'ballast.json');
    const cfg = (node: string) => ({
      node,
      store: { type: 'etcd', endpoints: etcd!.endpoints, prefix: `/ballast-cinder-${process.pid}/`, timeoutSec: 3, leaseTtlSec: TTL, peerListen: '127.0.0.1:0' },
      defaultBackend: 'cinder',
      backends: {
        cinder: {
          type: 'cinder', authUrl: os!.authUrl, username: os!.userName, passwordFile: os!.adminPasswordFile, project: os!.projectName, region: os!.region,
          cephConf: ceph!.conf, cephKeyring: ceph!.keyring, requestTimeoutSec: 10, createTimeoutSec: 60,
        },
      },
    });
    for (const n of ['a', 'b']) writeFileSync(join(scratch, `${n}.json`), JSON.stringify(cfg(`node-${n}`), null, 2));
    configFile = join(scratch, 'a.json');
    const env = { BALLAST_RECONCILE_INTERVAL_SEC: '2', BALLAST_LEAK_GRACE_SEC: '3600' };
    mkdirSync(join(scratch, 'b'), { recursive: true });
    nb = await startBallast({ root: join(scratch, 'b'), configFile: join(scratch, 'b.json'), env, wrap: NS_WRAP, extraArgs: ['--docker-host', `unix://${join(scratch, 'b', 'no-dockerd.sock')}`] });
    na = await startBallast({ root: join(scratch, 'a'), configFile, env, extraArgs: ['--docker-host', eng!.host] });
  });

  after(async () => {
    const problems: string[] = [];
    if (nb && pidAlive(nb.pid())) {
      for (const [v, id] of bMounts) await nb.plugin('VolumeDriver.Unmount', { Name: v, ID: id }).catch((err) => problems.push(`node-b unmount ${v}: ${err}`));
    }
    try {
      await teardownSuite({
        suite: 'cinder e2e', roots: [scratch], engine: eng, containers, volumes, daemons: [na, nb], problems,
        stopAfter: [
          ...(eng ? [{ what: 'dockerd', stop: () => eng!.stop() }] : []),
          ...(os ? [{ what: 'openstack', stop: () => os!.stop() }] : []),
          ...(etcd ? [{ what: 'etcd', stop: () => etcd!.stop() }] : []),
          ...(ceph ? [{ what: 'ceph', stop: () => ceph!.stop() }] : []),
        ],
      });
    } finally {
      console.error(`cinder e2e timings:\n  ${timings.join('\n  ')}`);
    }
  });

  t('create with size and type: in-use in Cinder while a container writes, available after; a second container reads; the daemon restarted while attached keeps it', async () => {
    const v = volName('rw');
    await createVolume(v, { size: '1G', type: 'fast' });
    const st = (await inspect(v)).Status;
    const id = String(st.cinderId);
    const cv = await cinderVolume(id);
    assert.equal(cv?.status, 'available');
    assert.equal(cv?.size, 1);
    assert.equal(cv?.volume_type, 'fast');
    assert.equal(cv?.metadata['ballast.volume'], v);
    assert.equal(cv?.metadata['ballast.created-by'], 'ballast');
    const w = ctrName('w');
    await runDetached(w, v);
    assert.equal((await cinderVolume(id))?.status, 'in-use', 'in-use while a container runs');
    assert.equal((await cinderVolume(id))?.metadata['ballast.formatted'], 'ext4', 'formatted at its first mount, and marked');
    await e().ok(['exec', w, 'sh', '-c', 'echo "from the first container" > /data/f && sync']);
    // The daemon restarted while the volume is attached: the container keeps its mount, the attachment stays.
    await A().stop();
    await A().restart();
    assert.equal(await e().ok(['exec', w, 'cat', '/data/f']), 'from the first container');
    await e().ok(['exec', w, 'sh', '-c', 'echo "after the restart" >> /data/f && sync']);
    assert.equal((await attachmentsOf(id)).length, 1);
    await removeContainer(w);
    await waitFor(async () => (await cinderVolume(id))?.status === 'available' || undefined, 'the volume to be available after the container stopped', 30_000);
    assert.deepEqual(await attachmentsOf(id), [], 'no attachment left');
    assert.equal(await inContainer(v, 'cat /data/f'), 'from the first container\nafter the restart');
    assert.equal((await cinderVolume(id))?.metadata['ballast.formatted'], 'ext4');
    await removeVolume(v);
    assert.equal(await cinderVolume(id), undefined, 'docker volume rm deleted the Cinder volume');
  });

  t('SIGKILL between attachment create and complete: after the restart the mount works and no attachment is left', async () => {
    const v = volName('crash');
    await createVolume(v, { size: '1G' });
    const id = String((await inspect(v)).Status.cinderId);
    for (const point of ['cinder.attachment-created', 'cinder.staged']) {
      await A().stop();
      await A().restart({ BALLAST_FAULT: point });
      const r = await e().docker(['run', '--rm', '-v', `${v}:/data`, IMAGE, 'sh', '-c', 'echo x > /data/x'], 150_000);
      assert.notEqual(r.code, 0, `the run fails when the daemon dies at ${point}`);
      await A().exited();
      const left = await attachmentsOf(id);
      assert.ok(left.length >= 1, `the crash at ${point} left an attachment (${JSON.stringify(left)})`);
      await A().restart();
      assert.equal(await inContainer(v, `echo ${point} > /data/x && cat /data/x`), point);
      // What the crash left: completed (staged) or deleted (nothing staged) by the reconciler; none after the unmount.
      await waitFor(async () => (await attachmentsOf(id)).length === 0 || undefined, `no attachment left after ${point}`, 30_000);
      assert.equal((await cinderVolume(id))?.status, 'available');
    }
    await removeVolume(v);
  }, 300_000);

  t('adopt an existing Cinder volume: used, then removed without being deleted', async () => {
    const r = await O().api('POST', '/volumes', { volume: { size: 1, name: 'made-by-hand' } });
    assert.equal(r.status, 202, r.text);
    const id = r.json.volume.id as string;
    await O().waitVolume(id, ['available']);
    const v = volName('adopt');
    await createVolume(v, { existing: id });
    assert.equal(await inContainer(v, 'echo adopted > /data/a && cat /data/a'), 'adopted');
    await removeVolume(v);
    const cv = await cinderVolume(id);
    assert.equal(cv?.status, 'available', 'the adopted Cinder volume is still there');
    assert.equal(Object.keys(cv!.metadata).filter((k) => k.startsWith('ballast.')).length, 0, 'and carries no Ballast marks');
    await O().api('DELETE', `/volumes/${id}`);
  });

  t('a volume from a Cinder snapshot and a clone of a volume hold the source\'s data (not formatted again)', async () => {
    const v = volName('src');
    await createVolume(v, { size: '1G' });
    await inContainer(v, 'echo "the source" > /data/s && sync');
    const id = String((await inspect(v)).Status.cinderId);
    const snap = await O().api('POST', '/snapshots', { snapshot: { volume_id: id, name: `${v}-snap` } });
    assert.equal(snap.status, 202, snap.text);
    const sid = snap.json.snapshot.id as string;
    await waitFor(async () => (await O().api('GET', `/snapshots/${sid}`)).json.snapshot?.status === 'available' || undefined, 'the snapshot', 60_000, 200);
    const fromSnap = volName('fromsnap');
    await createVolume(fromSnap, { snapshot: sid });
    const clone = volName('clone');
    await createVolume(clone, { source: id });
    for (const x of [fromSnap, clone]) {
      assert.equal(await inContainer(x, 'cat /data/s'), 'the source', `${x} holds the source's file`);
      const cv = await cinderVolume(String((await inspect(x)).Status.cinderId));
      assert.equal(cv?.metadata['ballast.volume'], x);
    }
    await removeVolume(fromSnap);
    await removeVolume(clone);
    const del = await O().api('DELETE', `/snapshots/${sid}`);
    assert.equal(del.status, 202, del.text);
    await waitFor(async () => (await O().api('GET', `/snapshots/${sid}`)).status === 404 || undefined, 'the snapshot to go', 60_000, 200);
    await removeVolume(v);
  });

  t('node-b is refused while node-a holds the volume; after node-a is SIGKILLed and its lease expired, node-b takes over and the old writer is fenced at Ceph', async () => {
    const v = volName('move');
    await createVolume(v, { size: '1G' });
    const id = String((await inspect(v)).Status.cinderId);
    const holder = ctrName('hold');
    await runDetached(holder, v);
    const mp = (await inspect(v)).Mountpoint;
    const refused = await bMount(v);
    assert.match(String(refused.body.Err), /attached .*node node-a/, `node-b refused, naming node-a: ${String(refused.body.Err)}`);

    // The old writer: a host process on node-a appending with fsync, through node-a's mount.
    const log = join(scratch, 'writer.log');
    const writer: ChildProcess = spawn(process.execPath, ['-e', WRITER, mp, log], { stdio: 'ignore' });
    try {
      await waitFor(() => writerLog(log).filter((l) => l.kind === 'ok').length >= 10 || undefined, 'the writer to write', 20_000);
      await A().kill9();
      const t0 = Date.now();
      // node-b takes it over once node-a's lease expired (the Mount waits for it), fencing node-a at Ceph first.
      const took = await waitFor(async () => { const r = await bMount(v); return r.body.Err ? undefined : r; }, 'node-b to take the volume over', 60_000, 1_000);
      const tookMs = Date.now() - t0;
      timings.push(`takeover after SIGKILL of node-a: ${tookMs} ms`);
      assert.ok(String(took.body.Mountpoint).length > 0);
      const fencedAt = Date.now();
      await waitFor(() => writerLog(log).some((l) => l.kind === 'err' && l.ms >= fencedAt - 1_000) || undefined, 'the old writer\'s writes to fail', 30_000);
      await sleep(1_000);
      const atts = await attachmentsOf(id);
      assert.equal(atts.length, 1, `one attachment, node-b's: ${JSON.stringify(atts)}`);
      const bl = await ceph!.ok('ceph', ['osd', 'blocklist', 'ls']);
      assert.match(bl, /127\.0\.0\.1:0\/\d+/, 'node-a\'s client is on the OSD blocklist');
      const seenOnB = (await nsSh(B(), `cat ${String(took.body.Mountpoint)}/counter`)).stdout.trim().split('\n').map(Number);
      await bUnmount(v);
      writer.kill('SIGKILL');
      const oks = writerLog(log).filter((l) => l.kind === 'ok');
      const fsck = await fsckImage(`volume-${id}`);
      assert.equal(fsck.code, 0, `fsck -n is clean after the takeover:\n${fsck.out}`);
      const onImage = new Set(fsck.out.split('--counter--\n')[1].trim().split('\n').map(Number));
      const lost = oks.filter((l) => !onImage.has(l.n));
      assert.deepEqual(lost, [], 'every write the old writer saw acknowledged is on the image');
      assert.ok(Math.max(...onImage) <= Math.max(...seenOnB) + 0, 'nothing the old writer wrote after the fence reached the image');
    } finally {
      writer.kill('SIGKILL');
    }
    // node-a comes back: its stale staging is torn down without writing; the volume is usable again.
    await A().restart();
    await removeContainer(holder);
    await waitFor(async () => (await A().cli(['volume', 'inspect', v])).code === 0 || undefined, 'node-a to answer', 20_000);
    assert.equal((await inContainer(v, 'tail -n 1 /data/counter')).length > 0, true);
    await removeVolume(v);
  }, 240_000);

  t('quota exceeded: create fails with Cinder\'s quota message; a token expiring while Keystone is stopped: a clear error within the bound, renewed once Keystone is back', async () => {
    await O().setQuota({ gigabytes: 2 });
    try {
      const { stderr } = await createFails(volName('quota'), { size: '5G' });
      assert.match(stderr, /quota/i);
      assert.match(stderr, /gigabytes/);
    } finally { await O().setQuota({ gigabytes: 1000 }); }
    // Token lifetime is TOKEN_SEC. Keystone SIGSTOPped past it: the renewal fails within the request
    // bound, naming Keystone; once Keystone is back, a create works with a new token.
    O().pauseKeystone();
    let res: { stderr: string; ms: number };
    try {
      await sleep((TOKEN_SEC + 2) * 1000);
      res = await createFails(volName('nokeystone'), { size: '1G' });
    } finally { O().resumeKeystone(); }
    assert.match(res.stderr, /Keystone at http:\/\/127\.0\.0\.1:5000 did not answer within 10 s.*is it up and reachable/);
    assert.ok(res.ms < 60_000, `failed within the bound: ${res.ms} ms`);
    const v = volName('late');
    await createVolume(v, { size: '1G' });
    await removeVolume(v);
  }, 150_000);

  t('Cinder API stopped (SIGSTOP): create fails with a clear sentence within the bound, and works once it is back', async () => {
    O().pauseCinderApi();
    let res: { stderr: string; ms: number };
    try {
      res = await createFails(volName('hung'), { size: '1G' });
    } finally { O().resumeCinderApi(); }
    assert.match(res.stderr, /Cinder at http:\/\/127\.0\.0\.1:8776 did not answer within 10 s.*is it up and reachable/);
    assert.ok(res.ms < 60_000, `failed within the bound: ${res.ms} ms`);
    timings.push(`create against a stopped cinder-api failed after ${res.ms} ms`);
    const v = volName('after');
    await createVolume(v, { size: '1G' });
    await removeVolume(v);
  });

  t('the store wiped: ballast doctor lists the Cinder volumes marked as Ballast\'s, ballast repair adopts them back with their data', async () => {
    const v = volName('lost');
    await createVolume(v, { size: '1G' });
    await inContainer(v, 'echo kept > /data/k && sync');
    const id = String((await inspect(v)).Status.cinderId);
    await A().stop();
    await B().stop();
    const prefix = `/ballast-cinder-${process.pid}/`;
    const del = await run(['etcdctl', '--endpoints', etcd!.endpoints.join(','), 'del', '--prefix', `${prefix}volumes/`], { timeoutMs: 20_000, env: { ...process.env, ETCDCTL_API: '3' } });
    assert.equal(del.code, 0, del.stderr);
    await A().restart();
    await B().restart();
    assert.notEqual((await A().cli(['volume', 'inspect', v])).code, 0, 'the store lost the volume');
    const doc = await A().cli(['doctor']);
    assert.match(doc.stdout + doc.stderr, new RegExp(`Cinder volume ${id}.*marked as Ballast volume ${v}`));
    const rep = await A().cli(['repair']);
    assert.equal(rep.code, 0, rep.stderr);
    assert.equal((await inspect(v)).Status.cinderId, id, 'adopted back');
    assert.equal(await inContainer(v, 'cat /data/k'), 'kept');
    await removeVolume(v);
    assert.equal(await cinderVolume(id), undefined);
  }, 180_000);

  t('the Keystone password appears in no log line of either daemon', async () => {
    for (const d of [A(), B()]) {
      const hits = d.logs().split('\n').filter((l) => new RegExp(`\\b${O().adminPassword}\\b`).test(l));
      assert.deepEqual(hits, [], `${d.root}: lines with the password`);
    }
  });
});
