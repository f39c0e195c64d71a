/**
 * End-to-end: a private dockerd and one `ballast daemon` child process, driven with the docker CLI
 * (and, where dockerd hides behaviour, the plugin socket and the ballast CLI). Every check reads the
 * real state of the host: /proc/self/mountinfo, `losetup -j`, `blkid -p`, files under the root.
 *
 * Needs root, dockerd, busybox-static, xfsprogs and btrfs-progs; skipped otherwise.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { dockerSkipReason, startDockerEngine, type DockerEngine } from '../helpers/docker-engine.js';
import { BIN, startBallast, uniqueName, type BallastProc } from '../helpers/ballast.js';
import { Scenario } from '../helpers/scenario.js';
import { pidAlive, run, waitFor } from '../helpers/proc.js';
import { parseMountinfo } from '../../src/host/mountinfo.js';
import { teardownSuite } from '../helpers/leftovers.js';

const SKIP = dockerSkipReason();
const GiB = 1024 ** 3;
/** statfs(2) f_type of each filesystem, as `stat -f -c %t` prints it. */
const FS_MAGIC = { ext4: 'ef53', xfs: '58465342', btrfs: '9123683e' } as const;

let eng: DockerEngine | undefined;
let b: BallastProc | undefined;
let root = '';
let scratch = '';

function e(): DockerEngine { assert.ok(eng, 'dockerd is not running (before hook failed)'); return eng; }
function bl(): BallastProc { assert.ok(b, 'ballast is not running (before hook failed)'); return b; }
const t = (name: string, fn: () => Promise<void>) => test(name, { skip: SKIP ?? false, timeout: 120_000 }, fn);

// ---- helpers -------------------------------------------------------------------------------------

const sc = new Scenario('e2e', e, bl);
const volName = (p: string) => sc.volName(p);
const ctrName = (p: string) => sc.ctrName(p);
const createVolume = (name: string, opts: Record<string, string> = {}) => sc.createVolume(name, opts);
const inContainer = (vol: string, script: string) => sc.inContainer(vol, script);
const runDetached = (name: string, vol: string, cmd?: string[]) => sc.runDetached(name, vol, cmd);
const removeContainer = (name: string) => sc.removeContainer(name);
const removeVolume = (name: string) => sc.removeVolume(name);
const { containers, volumes } = sc;

const inspectVolume = (name: string) => sc.inspectVolume(name);
async function ledgerMounts(name: string): Promise<number> { return (await inspectVolume(name)).Status.mounts as number; }

async function dockerVolumeNames(): Promise<Map<string, string>> {
  const out = await e().ok(['volume', 'ls', '--format', '{{.Name}}\t{{.Driver}}']);
  return new Map(out.split('\n').filter(Boolean).map((l) => l.split('\t') as [string, string]));
}

function mountinfo() { return parseMountinfo(readFileSync('/proc/self/mountinfo', 'utf8')); }
function mountsAt(path: string) { return mountinfo().filter((m) => m.mountpoint === path); }

interface Loop { name: string; 'back-file': string }
async function loopsOf(image: string): Promise<Loop[]> {
  // -O implies --list; without it `-J -j` prints the plain "/dev/loopN: ..." format.
  const r = await run(['losetup', '-J', '-O', 'NAME,BACK-FILE', '-j', image], { timeoutMs: 10_000 });
  assert.equal(r.code, 0, `losetup -j ${image}: ${r.stderr}`);
  return r.stdout.trim() ? (JSON.parse(r.stdout) as { loopdevices: Loop[] }).loopdevices : [];
}

async function blkidType(image: string): Promise<string> {
  const r = await run(['blkid', '-p', '-o', 'value', '-s', 'TYPE', image], { timeoutMs: 10_000 });
  assert.equal(r.code, 0, `blkid -p ${image} exited ${r.code}: ${r.stderr}`);
  return r.stdout.trim();
}

/** The block volume is released on the host: nothing mounted at its mountpoint, no loop device on its image. */
async function assertReleased(mountpoint: string, image: string): Promise<void> {
  // dockerd calls Unmount from its container-exit handler, which may finish just after the CLI returns.
  await waitFor(async () => mountsAt(mountpoint).length === 0 && (await loopsOf(image)).length === 0,
    `${mountpoint} unmounted and ${image} detached`, 10_000);
  assert.deepEqual(mountsAt(mountpoint), []);
  assert.deepEqual(await loopsOf(image), []);
  assert.ok(!mountinfo().some((m) => m.source === image), 'image is not a mount source');
}

/** Mounted exactly once on the host, through exactly one loop device. */
async function assertMountedOnce(mountpoint: string, image: string, fstype: string): Promise<void> {
  const at = mountsAt(mountpoint);
  assert.equal(at.length, 1, `expected one mount at ${mountpoint}, got ${JSON.stringify(at)}`);
  assert.equal(at[0].fstype, fstype);
  const loops = await loopsOf(image);
  assert.equal(loops.length, 1, `expected one loop device on ${image}, got ${JSON.stringify(loops)}`);
  assert.equal(at[0].source, loops[0].name);
  assert.equal(mountinfo().filter((m) => m.source === loops[0].name).length, 1, 'the loop device is mounted once');
}

async function containerState(name: string): Promise<{ Running: boolean; Pid: number; ExitCode: number }> {
  return JSON.parse(await e().ok(['inspect', '-f', '{{json .State}}', name]));
}

async function restartBallast(): Promise<void> {
  const before = bl().pid();
  assert.equal(await bl().stop(), 0, 'graceful stop exits 0');
  assert.ok(!pidAlive(before));
  assert.ok(!existsSync(bl().socket), 'plugin socket removed on stop');
  await bl().restart();
  assert.notEqual(bl().pid(), before);
}

/** The daemon's one-line-per-operation log entries for a volume. */
function opsFor(vol: string): { op: string; outcome: string }[] {
  return bl().logs().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { op?: string; volume?: string; outcome?: string })
    .filter((o) => o.volume === vol && o.op && o.outcome).map((o) => ({ op: o.op!, outcome: o.outcome! }));
}

function imagesDir(): string { return join(root, 'backends', 'block', 'images'); }
function listDir(dir: string): string[] { return existsSync(dir) ? readdirSync(dir).sort() : []; }

// ---- suite ---------------------------------------------------------------------------------------

describe('ballast through docker (e2e)', () => {
  before(async () => {
    if (SKIP) return;
    root = mkdtempSync('/var/tmp/ballast-e2e-');
    scratch = mkdtempSync('/var/tmp/ballast-e2e-scratch-');
    eng = await startDockerEngine();
    b = await startBallast({ root, extraArgs: ['--docker-host', eng.host] });
  });

  after(async () => {
    if (SKIP) return;
    await teardownSuite({
      suite: 'docker e2e', roots: [root, scratch], engine: eng, containers, volumes, daemons: [b],
      stopAfter: eng ? [{ what: 'dockerd', stop: () => eng!.stop() }] : [],
    });
  });

  // 1 ------------------------------------------------------------------------------------------
  t('local volume: create (default and explicit backend), share data, ls/inspect, survives a daemon restart, rm deletes the data', async () => {
    const lv = volName('lv');
    const dflt = volName('lvd');
    await createVolume(lv, { backend: 'local' });
    await createVolume(dflt); // no options: the default backend, local

    await inContainer(lv, 'echo "hello from one" > /data/greeting && sync');
    assert.equal(await inContainer(lv, 'cat /data/greeting'), 'hello from one');

    const ls = await dockerVolumeNames();
    assert.equal(ls.get(lv), bl().driver);
    assert.equal(ls.get(dflt), bl().driver);

    const v = await inspectVolume(lv);
    assert.equal(v.Driver, bl().driver);
    assert.equal(v.Status.backend, 'local');
    assert.equal(v.Status.type, 'local');
    assert.equal(v.Status.state, 'ready');
    assert.equal(v.Status.mounts, 0);
    const created = Date.parse(v.CreatedAt);
    assert.ok(Number.isFinite(created) && Math.abs(Date.now() - created) < 10 * 60_000, `CreatedAt ${v.CreatedAt} is recent`);
    const dataDir = v.Status.path as string;
    assert.ok(dataDir.startsWith(root + '/'), `data dir ${dataDir} is under the root`);
    assert.equal(v.Mountpoint, dataDir);
    assert.equal(readFileSync(join(dataDir, 'greeting'), 'utf8'), 'hello from one\n');
    const d = await inspectVolume(dflt);
    assert.equal(d.Status.backend, 'local');
    assert.equal(d.Status.type, 'local');

    await restartBallast();
    assert.equal(await inContainer(lv, 'cat /data/greeting'), 'hello from one');
    assert.equal((await inspectVolume(lv)).CreatedAt, v.CreatedAt, 'CreatedAt is kept across a restart');

    await removeVolume(lv);
    await removeVolume(dflt);
    assert.ok(!existsSync(dataDir), `${dataDir} is gone after rm`);
    const after = await dockerVolumeNames();
    assert.ok(!after.has(lv) && !after.has(dflt));
  });

  // 2 ------------------------------------------------------------------------------------------
  for (const fstype of ['ext4', 'xfs', 'btrfs'] as const) {
    t(`block ${fstype} volume: create, share data, released after containers exit, survives a daemon restart, rm deletes the image`, async () => {
      const vol = volName(`b${fstype}`);
      await createVolume(vol, { backend: 'block', size: '1G', fstype });
      const v = await inspectVolume(vol);
      assert.equal(v.Status.backend, 'block');
      assert.equal(v.Status.type, 'block');
      assert.equal(v.Status.fstype, fstype);
      assert.equal(v.Status.sizeBytes, GiB);
      const image = v.Status.image as string;
      const mp = v.Mountpoint;
      assert.ok(image.startsWith(root + '/') && mp.startsWith(root + '/'));
      assert.equal(statSync(image).size, GiB, 'image file has the requested size');
      assert.equal(await blkidType(image), fstype);
      await assertReleased(mp, image); // create does not leave it mounted

      // The container sees the requested filesystem (statfs f_type, hex: busybox has no name for btrfs).
      const seen = await inContainer(vol, `stat -f -c %t /data && echo "${fstype} payload" > /data/f && sync`);
      assert.equal(seen, FS_MAGIC[fstype]);
      await assertReleased(mp, image);
      assert.equal(await inContainer(vol, 'cat /data/f'), `${fstype} payload`);
      await assertReleased(mp, image);
      assert.equal(await ledgerMounts(vol), 0);
      assert.equal(await blkidType(image), fstype, 'still the same filesystem after use');

      await restartBallast();
      assert.equal(await inContainer(vol, 'cat /data/f'), `${fstype} payload`);
      await assertReleased(mp, image);

      await removeVolume(vol);
      assert.ok(!existsSync(image), `${image} is deleted by rm`);
      assert.ok(!existsSync(mp), `${mp} is deleted by rm`);
      assert.ok(!(await dockerVolumeNames()).has(vol));
    });
  }

  // 3 ------------------------------------------------------------------------------------------
  t('create is idempotent: same options succeed, different options are refused by the plugin (docker itself never asks)', async () => {
    const vol = volName('idem');
    const opts = { backend: 'block', size: '1G' };
    await createVolume(vol, opts);
    const first = await inspectVolume(vol);
    await createVolume(vol, opts);
    assert.equal((await inspectVolume(vol)).CreatedAt, first.CreatedAt);

    // Real behaviour of dockerd (20.10+): its volume store finds the name through VolumeDriver.Get and
    // returns the existing volume without calling VolumeDriver.Create, so a different size "succeeds"
    // through docker and the volume keeps its original options.
    const logBefore = bl().logs().length;
    const r = await e().docker(['volume', 'create', '-d', bl().driver, '-o', 'backend=block', '-o', 'size=2G', vol]);
    assert.equal(r.code, 0, `docker volume create with a different size: ${r.stderr}`);
    const again = await inspectVolume(vol);
    assert.equal(again.Status.sizeBytes, GiB, 'the volume keeps its original size');
    assert.equal(statSync(again.Status.image as string).size, GiB, 'the image was not resized');
    assert.deepEqual(again.Options, { backend: 'block', size: '1G' }, 'dockerd keeps the options of the first create');
    const newLog = bl().logs().slice(logBefore);
    assert.ok(!/"op":"create"/.test(newLog), `dockerd did not call VolumeDriver.Create for the second create:\n${newLog}`);

    // Through the plugin socket (what dockerd would send if it called Create): same spec is a no-op
    // success, including an equal size spelled differently; a different spec names the existing options.
    const same = await bl().plugin('VolumeDriver.Create', { Name: vol, Opts: { backend: 'block', size: '1024M' } });
    assert.equal(same.status, 200);
    assert.deepEqual(same.body, {});
    const diff = await bl().plugin('VolumeDriver.Create', { Name: vol, Opts: { backend: 'block', size: '2G' } });
    assert.equal(diff.status, 409);
    const err = String(diff.body.Err);
    assert.match(err, /already exists/);
    assert.match(err, new RegExp(`volume ${vol} `));
    assert.match(err, /backend block/);
    assert.match(err, /size=1GiB /, `names the existing size: ${err}`);
    assert.match(err, /fstype=ext4/);
    const otherBackend = await bl().plugin('VolumeDriver.Create', { Name: vol, Opts: { backend: 'local' } });
    assert.equal(otherBackend.status, 409);
    assert.match(String(otherBackend.body.Err), /already exists with backend block/);
    assert.equal(statSync(again.Status.image as string).size, GiB);

    await removeVolume(vol);
  });

  // 4 ------------------------------------------------------------------------------------------
  for (const how of ['docker kill --signal KILL', 'kill -9 of the container pid'] as const) {
    t(`container killed with SIGKILL (${how}) releases the block mount; rm works`, async () => {
      const vol = volName('kill');
      await createVolume(vol, { backend: 'block', size: '512M' });
      const v = await inspectVolume(vol);
      const image = v.Status.image as string;
      const c = ctrName('kill');
      await runDetached(c, vol, ['sleep', '1000']);
      const st = await containerState(c);
      assert.ok(st.Running && st.Pid > 0);
      assert.equal(await ledgerMounts(vol), 1);
      await assertMountedOnce(v.Mountpoint, image, 'ext4');

      if (how === 'docker kill --signal KILL') await e().ok(['kill', '--signal', 'KILL', c]);
      else process.kill(st.Pid, 'SIGKILL');
      await waitFor(async () => !(await containerState(c)).Running, `${c} to stop`, 20_000);
      assert.equal((await containerState(c)).ExitCode, 137);

      await waitFor(async () => (await ledgerMounts(vol)) === 0, 'ledger to drop the mount', 10_000);
      await assertReleased(v.Mountpoint, image);
      await removeContainer(c);
      await removeVolume(vol);
      assert.ok(!existsSync(image));
    });
  }

  // 5 ------------------------------------------------------------------------------------------
  t('two containers share one block volume: one host mount, both see each other, rm refused until both stop', async () => {
    const vol = volName('shared');
    await createVolume(vol, { backend: 'block', size: '512M', fstype: 'xfs' });
    const v = await inspectVolume(vol);
    const image = v.Status.image as string;
    const writer = (tag: string) => ['sh', '-c', `trap "exit 0" TERM; i=0; while :; do echo "${tag} $i" >> /data/log; i=$((i+1)); sleep 0.1; done`];
    const ca = ctrName('wa');
    const cb = ctrName('wb');
    const ida = await runDetached(ca, vol, writer('A'));
    await runDetached(cb, vol, writer('B'));

    // Each sees the other's lines (and its own) in the one shared file.
    for (const [c, other] of [[ca, 'B'], [cb, 'A']] as const) {
      await waitFor(async () => {
        const r = await e().docker(['exec', c, 'sh', '-c', `grep -c "^${other} " /data/log`]);
        return r.code === 0 && Number(r.stdout.trim()) >= 3;
      }, `${c} to see lines from ${other}`, 15_000, 200);
    }
    const log = await e().ok(['exec', ca, 'cat', '/data/log']);
    assert.match(log, /^A \d+$/m);
    assert.match(log, /^B \d+$/m);

    assert.equal(await ledgerMounts(vol), 2);
    await assertMountedOnce(v.Mountpoint, image, 'xfs');

    // The ledger names both references; a Remove straight to the plugin is Busy and names them.
    const adm = JSON.parse((await bl().cli(['volume', 'inspect', vol])).stdout) as { mountIds: string[]; mounts: number }[];
    assert.equal(adm[0].mounts, 2);
    assert.equal(adm[0].mountIds.length, 2);
    const busy = await bl().plugin('VolumeDriver.Remove', { Name: vol });
    assert.equal(busy.status, 409);
    assert.match(String(busy.body.Err), /in use by 2 mounts/);
    for (const id of adm[0].mountIds) assert.ok(String(busy.body.Err).includes(id.slice(0, 12)), `Err names mount ${id}`);

    await e().ok(['stop', cb], 30_000);
    await waitFor(async () => (await ledgerMounts(vol)) === 1, 'ledger to drop B', 10_000);
    await assertMountedOnce(v.Mountpoint, image, 'xfs');
    // A still writes after B left.
    const n0 = Number(await e().ok(['exec', ca, 'sh', '-c', 'grep -c "^A " /data/log']));
    await waitFor(async () => Number(await e().ok(['exec', ca, 'sh', '-c', 'grep -c "^A " /data/log'])) > n0, 'A to keep writing', 10_000);

    // docker refuses rm while a container uses the volume, naming it.
    const rm1 = await e().docker(['volume', 'rm', vol]);
    assert.notEqual(rm1.code, 0);
    assert.match(rm1.stderr, /in use/);
    assert.ok(rm1.stderr.includes(ida), `docker's refusal names container ${ida}: ${rm1.stderr}`);
    // ...and so does the plugin, with the remaining mount.
    const busy1 = await bl().plugin('VolumeDriver.Remove', { Name: vol });
    assert.equal(busy1.status, 409);
    assert.match(String(busy1.body.Err), /in use by 1 mount:/);
    assert.ok(existsSync(image));

    await e().ok(['stop', ca], 30_000);
    await waitFor(async () => (await ledgerMounts(vol)) === 0, 'ledger to drop A', 10_000);
    await assertReleased(v.Mountpoint, image);
    // Stopped containers still reference the volume in dockerd; remove them, then the volume.
    const rm2 = await e().docker(['volume', 'rm', vol]);
    assert.notEqual(rm2.code, 0, 'dockerd still refuses while stopped containers reference the volume');
    await removeContainer(ca);
    await removeContainer(cb);
    await removeVolume(vol);
    assert.ok(!existsSync(image));
  });

  // 6 ------------------------------------------------------------------------------------------
  t('docker cp into and out of a running container using a block volume; unmounted exactly once after exit', async () => {
    const vol = volName('cp');
    await createVolume(vol, { backend: 'block', size: '512M', fstype: 'btrfs' });
    const v = await inspectVolume(vol);
    const image = v.Status.image as string;
    const c = ctrName('cp');
    await runDetached(c, vol);
    assert.equal(await ledgerMounts(vol), 1);
    await assertMountedOnce(v.Mountpoint, image, 'btrfs');

    const src = join(scratch, `in-${c}.txt`);
    const payload = `copied in ${Date.now()}\n${'x'.repeat(5000)}\n`;
    writeFileSync(src, payload);
    await e().ok(['cp', src, `${c}:/data/in.txt`]);
    assert.equal(await e().ok(['exec', c, 'md5sum', '/data/in.txt']), `${await md5(src)}  /data/in.txt`);
    // docker cp mounts the container's volumes for the copy and unmounts them after: the ledger is
    // back to the container's one reference and the volume is still mounted for it.
    assert.equal(await ledgerMounts(vol), 1);
    await assertMountedOnce(v.Mountpoint, image, 'btrfs');

    await e().ok(['exec', c, 'sh', '-c', 'echo "made inside" > /data/out.txt && cp /data/in.txt /data/in-copy.txt']);
    const outDir = join(scratch, `out-${c}`);
    await e().ok(['cp', `${c}:/data`, outDir]);
    assert.equal(readFileSync(join(outDir, 'out.txt'), 'utf8'), 'made inside\n');
    assert.equal(readFileSync(join(outDir, 'in-copy.txt'), 'utf8'), payload);
    assert.equal(await ledgerMounts(vol), 1);
    await assertMountedOnce(v.Mountpoint, image, 'btrfs');

    await e().ok(['stop', c], 30_000);
    await waitFor(async () => (await ledgerMounts(vol)) === 0, 'ledger to drop the container', 10_000);
    await assertReleased(v.Mountpoint, image);
    // Every Mount dockerd sent (container start, each docker cp) was matched by one Unmount, all succeeded.
    const ops = opsFor(vol);
    const mounts = ops.filter((o) => o.op === 'mount');
    const unmounts = ops.filter((o) => o.op === 'unmount');
    assert.ok(mounts.length >= 2, `docker cp mounted the volume too: ${JSON.stringify(ops)}`);
    assert.equal(unmounts.length, mounts.length, `balanced mount/unmount: ${JSON.stringify(ops)}`);
    assert.ok(ops.every((o) => o.outcome === 'ok'), JSON.stringify(ops));

    // The data is on the image: readable by a new container after the volume was released.
    assert.equal(await inContainer(vol, 'cat /data/out.txt'), 'made inside');
    await assertReleased(v.Mountpoint, image);
    await removeContainer(c);
    await removeVolume(vol);
  });

  // 7 ------------------------------------------------------------------------------------------
  t('ballast CLI: volume create/ls/inspect/rm against the daemon, seen by docker; doctor sees socket and dockerd', async () => {
    const vol = uniqueName('e2e-cli-');
    const cr = await bl().cli(['volume', 'create', vol, '-o', 'backend=block', '-o', 'size=512M']);
    assert.equal(cr.code, 0, cr.stderr);
    assert.equal(cr.stdout.trim(), vol);
    const image = join(imagesDir(), `${vol}.img`);
    assert.equal(statSync(image).size, 512 * 1024 ** 2);
    assert.equal(await blkidType(image), 'ext4');

    const ls = await bl().cli(['volume', 'ls']);
    assert.equal(ls.code, 0, ls.stderr);
    const row = ls.stdout.split('\n').find((l) => l.startsWith(vol + ' '));
    assert.ok(row, `volume ls lists ${vol}:\n${ls.stdout}`);
    assert.match(row, /\bblock\s+block\s+512MiB\s+0\s+ready\b/);
    const lsj = JSON.parse((await bl().cli(['volume', 'ls', '--json'])).stdout) as { name: string }[];
    assert.ok(lsj.some((x) => x.name === vol));

    const ins = await bl().cli(['volume', 'inspect', vol]);
    assert.equal(ins.code, 0, ins.stderr);
    const [info] = JSON.parse(ins.stdout) as { name: string; backend: string; state: string; mounts: number; status: Record<string, unknown> }[];
    assert.equal(info.name, vol);
    assert.equal(info.backend, 'block');
    assert.equal(info.state, 'ready');
    assert.equal(info.mounts, 0);
    assert.equal(info.status.size, '512MiB');
    assert.equal(info.status.image, image);

    // dockerd finds the volume through VolumeDriver.List/Get and can use it.
    assert.equal((await dockerVolumeNames()).get(vol), bl().driver);
    volumes.add(vol);
    assert.equal(await inContainer(vol, 'echo cli > /data/x && cat /data/x'), 'cli');

    const missing = await bl().cli(['volume', 'inspect', 'e2e-no-such-volume']);
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /does not exist/);

    // Doctor through the daemon (which checks its own --docker-host, set to our dockerd).
    const doc = await bl().cli(['doctor', '--docker-host', e().host, '--socket', bl().socket]);
    assert.equal(doc.code, 0, `doctor failed:\n${doc.stdout}${doc.stderr}`);
    assert.match(doc.stdout, /^ok\s+daemon\s+answering/m);
    assert.match(doc.stdout, new RegExp(`^ok\\s+plugin socket\\s+${escape(bl().socket)} answers`, 'm'));
    assert.match(doc.stdout, new RegExp(`^ok\\s+dockerd sees plugin\\s+.*lists volume driver ${escape(bl().driver)}$`, 'm'));
    // Without a daemon on the given root, doctor checks the --socket and --docker-host it is given.
    const alone = await run([process.execPath, BIN, 'doctor', '--json', '--root', join(root, 'no-daemon-here'),
      '--socket', bl().socket, '--docker-host', e().host], { timeoutMs: 90_000 });
    const checks = (JSON.parse(alone.stdout) as { checks: { name: string; ok: boolean; detail: string }[] }).checks;
    const byName = (n: string) => checks.find((c) => c.name === n);
    assert.equal(byName('daemon')?.ok, false);
    assert.equal(byName('plugin socket')?.ok, true, JSON.stringify(byName('plugin socket')));
    assert.equal(byName('dockerd sees plugin')?.ok, true, JSON.stringify(byName('dockerd sees plugin')));
    assert.ok(byName('dockerd sees plugin')!.detail.includes(e().host));
    assert.equal(alone.code, 1, 'doctor exits 1 when the daemon is not answering');

    const rm = await bl().cli(['volume', 'rm', vol]);
    assert.equal(rm.code, 0, rm.stderr);
    assert.equal(rm.stdout.trim(), vol);
    volumes.delete(vol);
    assert.ok(!existsSync(image));
    const ls2 = JSON.parse((await bl().cli(['volume', 'ls', '--json'])).stdout) as { name: string }[];
    assert.ok(!ls2.some((x) => x.name === vol));
    assert.ok(!(await dockerVolumeNames()).has(vol), 'docker volume ls no longer lists it');
  });

  // 8 ------------------------------------------------------------------------------------------
  t('bad input through docker is refused with a clear message, creates nothing, and the daemon keeps serving', async () => {
    const imagesBefore = listDir(imagesDir());
    const long = 'v' + 'x'.repeat(299);
    const cases: { name: string; opts: string[]; re: RegExp }[] = [
      { name: uniqueName('e2e-bad-'), opts: ['-o', 'backend=block', '-o', 'size=-1G'], re: /size "-1G" is not a size; use a positive number/ },
      { name: uniqueName('e2e-bad-'), opts: ['-o', 'backend=block', '-o', 'size=0'], re: /must be greater than zero/ },
      { name: uniqueName('e2e-bad-'), opts: ['-o', 'backend=block', '-o', 'size=4000T'], re: /is more than the .* free in/ },
      { name: uniqueName('e2e-bad-'), opts: ['-o', 'backend=block'], re: /needs a size/ },
      { name: uniqueName('e2e-bad-'), opts: ['-o', 'backend=block', '-o', 'size=1G', '-o', 'fstype=zfs'], re: /fstype "zfs" is not supported; choose one of ext4, xfs, btrfs/ },
      { name: uniqueName('e2e-bad-'), opts: ['-o', 'size=1G'], re: /unknown option "size" for backend local; accepted options: backend, uid, gid, mode/ },
      { name: uniqueName('e2e-bad-'), opts: ['-o', 'backend=nope'], re: /unknown backend "nope"; configured backends: local, block/ },
      { name: uniqueName('e2e-bad-'), opts: ['-o', 'backend=block', '-o', 'size=1G', '-o', 'mountopts=suid'], re: /mount option "suid" is not allowed; allowed: .*nosuid/ },
      { name: long, opts: [], re: /volume name is 300 characters long; the limit is 255/ },
    ];
    for (const c of cases) {
      const r = await e().docker(['volume', 'create', '-d', bl().driver, ...c.opts, c.name]);
      assert.notEqual(r.code, 0, `${c.opts.join(' ')} must fail`);
      assert.match(r.stderr, c.re, `${c.opts.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, /VolumeDriver\.Create/, 'the refusal comes from the plugin');
    }

    // Nothing was created: not in docker, not in ballast, no image or mountpoint on disk.
    const names = await dockerVolumeNames();
    const ours = JSON.parse((await bl().cli(['volume', 'ls', '--json'])).stdout) as { name: string }[];
    for (const c of cases) {
      assert.ok(!names.has(c.name), `docker volume ls does not list ${c.name.slice(0, 40)}`);
      assert.ok(!ours.some((v) => v.name === c.name));
      const ins = await e().docker(['volume', 'inspect', c.name]);
      assert.notEqual(ins.code, 0);
    }
    assert.deepEqual(listDir(imagesDir()), imagesBefore, 'no image files were left by refused creates');
    for (const d of [join(root, 'backends', 'block', 'mounts'), join(root, 'backends', 'local', 'volumes')]) {
      for (const c of cases) assert.ok(!listDir(d).includes(c.name), `nothing named ${c.name.slice(0, 40)} in ${d}`);
    }

    // The daemon still serves: a valid create right after works.
    const ok = volName('afterbad');
    await createVolume(ok, { backend: 'block', size: '64M' });
    assert.equal(await inContainer(ok, 'echo fine > /data/f && cat /data/f'), 'fine');
    await removeVolume(ok);
    assert.ok(pidAlive(bl().pid()));
  });
});

function escape(s: string): string { return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'); }

async function md5(file: string): Promise<string> {
  const r = await run(['md5sum', file]);
  return r.stdout.split(' ')[0];
}
