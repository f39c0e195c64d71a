/**
 * Snapshots and clones with a real dockerd and real loop devices: a snapshot of a block volume taken
 * while a container writes to it holds a clean filesystem (`fsck -n`) and a prefix of what was written,
 * and the writer goes on once it is taken; clones (`-o from-snapshot`, `-o from-volume`) hold the same
 * files (checksums of a written tree) and can be mounted beside their source (xfs: nouuid; btrfs: its
 * temp-fsid); the image directory's filesystem decides reflink (xfs with reflink) or copy (ext4); local
 * directories keep owners and modes. Bad input is refused and changes nothing; a volume with snapshots
 * is not removed. Crashes (SIGKILL) at every snapshot step are rolled back or forward on the next start,
 * and a filesystem frozen when the daemon died is thawed by the restarted one.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, writeFileSync, existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { startBallast, type BallastProc } from '../helpers/ballast.js';
import { dockerSkipReason, startDockerEngine, type DockerEngine } from '../helpers/docker-engine.js';
import { Scenario } from '../helpers/scenario.js';
import { teardownSuite } from '../helpers/leftovers.js';
import { run, sleep, waitFor } from '../helpers/proc.js';
import { BACKEND_FAULT_POINTS } from '../../src/core/faults.js';

const SKIP = dockerSkipReason();
/** Writes a tree of files with random data (nested dirs, a few sizes) under /data/tree. */
const TREE = 'mkdir -p /data/tree/a/b /data/tree/c && for i in 1 2 3 4 5 6; do dd if=/dev/urandom of=/data/tree/a/f$i bs=4k count=$((i*37)) 2>/dev/null; done'
  + ' && dd if=/dev/urandom of=/data/tree/a/b/big bs=1M count=24 2>/dev/null && echo small > /data/tree/c/s && ln -s ../a/f1 /data/tree/c/link && sync';
/** Checksums of every file of the tree, sorted by path, plus the symlink's target. */
const SUMS = 'cd /data/tree && find . -type f | sort | xargs sha256sum && readlink c/link';
/** Appends 1, 2, 3, ... to /data/counter (one line each, a sync every 20) until stopped. */
const WRITER = ['sh', '-c', "trap 'exit 0' TERM; i=0; while :; do i=$((i+1)); echo $i >> /data/counter; [ $((i % 20)) -eq 0 ] && sync /data/counter; done"];

describe('snapshots and clones (e2e)', { skip: SKIP ?? false }, () => {
  let scratch = '';
  let eng: DockerEngine | undefined;
  let b: BallastProc | undefined;
  let s: Scenario;
  let xfsDir = '';
  const ownMounts: string[] = [];
  const covered = new Set<string>();

  const cli = (args: string[], timeoutMs?: number) => b!.cli(args, timeoutMs);
  const okCli = async (args: string[], timeoutMs?: number) => {
    const r = await cli(args, timeoutMs);
    assert.equal(r.code, 0, `ballast ${args.join(' ')}: ${r.stderr}`);
    return r.stdout.trim();
  };
  const snapshots = async (vol?: string) => JSON.parse(await okCli(['snapshot', 'ls', ...(vol ? [vol] : []), '--json'])) as { name: string; volume: string; state: string; method?: string; frozenMs?: number; clones: string[]; size: number }[];
  const imageOf = async (v: string) => String((await s.inspectVolume(v)).Status.image);
  const snapImage = (dir: string, name: string) => join(dir, 'snapshots', `${name}.img`);
  /**
   * fsck -n of a snapshot image. xfs: a freeze writes every change in place but leaves its log
   * uncovered, which xfs_repair -n refuses to judge; so a copy is mounted once (log recovery, nouuid) and
   * unmounted, and the copy is checked.
   */
  async function fsckImage(img: string, fstype: string): Promise<void> {
    if (fstype === 'xfs') {
      const copy = join(scratch, 'xfs-check.img');
      const mp = join(scratch, 'xfs-check');
      mkdirSync(mp, { recursive: true });
      for (const argv of [['cp', '--sparse=always', img, copy], ['mount', '-o', 'loop,nouuid', copy, mp], ['umount', mp]]) {
        const r = await run(argv, { timeoutMs: 120_000 });
        assert.equal(r.code, 0, `${argv.join(' ')}: ${r.stderr}`);
      }
      img = copy;
    }
    const argv = fstype === 'ext4' ? ['e2fsck', '-fn', img] : fstype === 'xfs' ? ['xfs_repair', '-n', '-f', img] : ['btrfs', 'check', '--readonly', img];
    const r = await run(argv, { timeoutMs: 120_000 });
    assert.equal(r.code, 0, `${argv.join(' ')}: ${r.stdout}${r.stderr}`);
  }
  const lines = (text: string) => text.split('\n').filter(Boolean).map(Number);
  const assertCounting = (ns: number[], what: string) => ns.forEach((n, i) => assert.equal(n, i + 1, `${what}: line ${i + 1} is ${n}`));

  before(async () => {
    scratch = mkdtempSync('/var/tmp/ballast-snap-e2e-');
    // An xfs filesystem with reflink for one backend's images (the host's is ext4: plain copies).
    const xfsImg = join(scratch, 'xfs-host.img');
    xfsDir = join(scratch, 'xfs');
    mkdirSync(xfsDir);
    for (const argv of [['truncate', '-s', '3G', xfsImg], ['mkfs.xfs', '-q', '-m', 'reflink=1', xfsImg], ['mount', '-o', 'loop', xfsImg, xfsDir]]) {
      const r = await run(argv, { timeoutMs: 60_000 });
      assert.equal(r.code, 0, `${argv.join(' ')}: ${r.stderr}`);
    }
    ownMounts.push(xfsDir);
    const cfg = join(scratch, 'config.json');
    writeFileSync(cfg, JSON.stringify({
      backends: {
        local: { type: 'local' },
        block: { type: 'block' },
        blockx: { type: 'block', imageDir: join(xfsDir, 'images') },
      },
    }));
    eng = await startDockerEngine();
    b = await startBallast({ root: join(scratch, 'root'), configFile: cfg, extraArgs: ['--docker-host', eng.host] });
    s = new Scenario('snp', () => eng!, () => b!);
  });
  after(async () => {
    // Snapshots first: a volume that has some is not removed.
    if (b) for (const x of await snapshots().catch(() => [])) await cli(['snapshot', 'rm', x.name]).catch(() => undefined);
    await teardownSuite({
      suite: 'snapshots e2e', roots: [scratch], engine: eng, containers: s?.containers, volumes: s?.volumes, daemons: [b], ownMounts,
      stopAfter: eng ? [{ what: 'dockerd', stop: () => eng!.stop() }] : [],
    });
  });

  test('block ext4: a snapshot taken while a container writes holds a clean filesystem and a prefix of what was written; the writer goes on; a clone of it holds the same tree', { timeout: 300_000 }, async () => {
    const v = s.volName('ext4');
    await s.createVolume(v, { backend: 'block', size: '256M' });
    await s.inContainer(v, TREE);
    const sums = await s.inContainer(v, SUMS);
    const ctr = s.ctrName('writer');
    await s.runDetached(ctr, v, WRITER);
    await waitFor(async () => Number((await eng!.ok(['exec', ctr, 'sh', '-c', 'wc -l < /data/counter'])).trim()) > 200, 'the writer to write', 20_000);
    const before = Number((await eng!.ok(['exec', ctr, 'sh', '-c', 'wc -l < /data/counter'])).trim());
    const out = await okCli(['snapshot', 'create', v, `${v}-s1`]);
    assert.match(out, new RegExp(`^${v}-s1 \\(copy, frozen [\\d.]+ ms\\)$`), 'the image directory is on ext4: a plain (sparse) copy');
    const [info] = await snapshots(v);
    assert.equal(info.state, 'ready');
    assert.equal(info.size, 256 * 1024 * 1024);
    // The writer goes on: the filesystem was thawed.
    const afterSnap = Number((await eng!.ok(['exec', ctr, 'sh', '-c', 'wc -l < /data/counter'])).trim());
    await waitFor(async () => Number((await eng!.ok(['exec', ctr, 'sh', '-c', 'wc -l < /data/counter'])).trim()) > afterSnap + 200, 'the writer to go on after the snapshot', 20_000);
    const img = snapImage(join(b!.root, 'backends', 'block', 'images'), `${v}-s1`);
    await fsckImage(img, 'ext4');

    const c = s.volName('clone');
    await s.createVolume(c, { 'from-snapshot': `${v}-s1` });
    assert.equal((await s.inspectVolume(c)).Status.backend, 'block', 'a clone is made by its source\'s backend');
    assert.equal(await s.inContainer(c, SUMS), sums, 'the clone holds the tree as written');
    await s.removeContainer(ctr);
    const final = lines(await s.inContainer(v, 'cat /data/counter'));
    const snap = lines(await s.inContainer(c, 'cat /data/counter'));
    assertCounting(final, 'the source');
    assertCounting(snap, 'the snapshot');
    assert.ok(snap.length >= before, `the snapshot has every line written before it was asked for (${snap.length} >= ${before})`);
    assert.ok(snap.length < final.length, `the writer wrote more after it (${snap.length} < ${final.length})`);
    assert.deepEqual((await snapshots(v))[0].clones, [c]);
    // A thick clone is fully allocated.
    const cimg = await imageOf(c);
    assert.ok(statSync(cimg).blocks * 512 >= 256 * 1024 * 1024, 'the thick clone\'s image is allocated in full');

    // A volume with snapshots is not removed; removing the snapshot leaves the clone as it is.
    const rm = await eng!.docker(['volume', 'rm', v]);
    assert.notEqual(rm.code, 0);
    assert.match(rm.stderr, new RegExp(`volume ${v} has 1 snapshot \\(${v}-s1\\); remove it first with ballast snapshot rm`));
    assert.equal(await okCli(['snapshot', 'rm', `${v}-s1`]), `${v}-s1`);
    assert.ok(!existsSync(img), 'its image is gone');
    assert.equal(await s.inContainer(c, SUMS), sums, 'the clone does not depend on the snapshot');
    await s.removeVolume(c);
    await s.removeVolume(v);
  });

  for (const fstype of ['xfs', 'btrfs'] as const) {
    test(`block ${fstype} on an xfs image directory with reflink: the snapshot is a reflink, a clone of the running volume mounts beside it and holds the same tree`, { timeout: 300_000 }, async () => {
      const v = s.volName(fstype);
      await s.createVolume(v, { backend: 'blockx', size: '400M', fstype });
      await s.inContainer(v, TREE);
      const sums = await s.inContainer(v, SUMS);
      const ctr = s.ctrName(`${fstype}-running`);
      await s.runDetached(ctr, v);
      const out = await okCli(['snapshot', 'create', v, `${v}-s`]);
      assert.match(out, /\(reflink, frozen [\d.]+ ms\)$/);
      await fsckImage(snapImage(join(xfsDir, 'images'), `${v}-s`), fstype);
      // A clone of the volume itself (a snapshot taken for it and removed after), while the source is mounted.
      const c = s.volName(`${fstype}-clone`);
      await s.createVolume(c, { 'from-volume': v });
      assert.deepEqual((await snapshots()).filter((x) => x.name.startsWith('_')), [], 'the clone\'s own snapshot is gone');
      const ctr2 = s.ctrName(`${fstype}-clone`);
      await s.runDetached(ctr2, c);
      assert.equal(await eng!.ok(['exec', ctr2, 'sh', '-c', SUMS]), sums, 'the clone, mounted beside its source, holds the same tree');
      await eng!.ok(['exec', ctr2, 'sh', '-c', 'echo clone-only > /data/tree/c/s && sync']);
      assert.equal(await eng!.ok(['exec', ctr, 'cat', '/data/tree/c/s']), 'small', 'a write to the clone does not reach the source');
      await s.removeContainer(ctr2);
      await s.removeContainer(ctr);
      await cli(['snapshot', 'rm', `${v}-s`]);
      await s.removeVolume(c);
      await s.removeVolume(v);
    });
  }

  test('local: snapshot and clones keep the tree, owners and modes', { timeout: 120_000 }, async () => {
    const v = s.volName('local');
    await s.createVolume(v, { backend: 'local', uid: '1234', gid: '5678', mode: '0750' });
    await s.inContainer(v, `${TREE} && chown 42:43 /data/tree/a/f2 && chmod 0600 /data/tree/a/f2`);
    const sums = await s.inContainer(v, SUMS);
    const meta = await s.inContainer(v, 'stat -c "%u %g %a" /data /data/tree/a/f2');
    assert.equal(await okCli(['snapshot', 'create', v, `${v}-s`]), `${v}-s (copy)`);
    await s.inContainer(v, 'echo changed > /data/tree/c/s');
    const c = s.volName('local-clone');
    await s.createVolume(c, { 'from-snapshot': `${v}-s` });
    assert.equal(await s.inContainer(c, SUMS), sums, 'the clone holds the tree as it was when the snapshot was taken');
    assert.equal(await s.inContainer(c, 'stat -c "%u %g %a" /data /data/tree/a/f2'), meta);
    await okCli(['snapshot', 'rm', `${v}-s`]);
    await s.removeVolume(c);
    await s.removeVolume(v);
  });

  test('bad input is refused with a sentence and changes nothing', { timeout: 120_000 }, async () => {
    const v = s.volName('bad');
    await s.createVolume(v, { backend: 'block', size: '64M' });
    const volsBefore = await eng!.ok(['volume', 'ls', '-q']);
    const refuse = async (args: string[], re: RegExp, code: number) => {
      const r = await cli(args);
      assert.equal(r.code, code, `ballast ${args.join(' ')}: exit ${r.code}: ${r.stderr}`);
      assert.match(r.stderr, re);
    };
    await refuse(['snapshot', 'create', 'no-such-volume'], /volume no-such-volume does not exist/, 3);
    await refuse(['snapshot', 'create', v, '../escape'], /snapshot name "\.\.\/escape" is not allowed/, 2);
    await refuse(['snapshot', 'create', v, '_hidden'], /snapshot name "_hidden" is not allowed/, 2);
    await refuse(['volume', 'create', 'x1', '-o', 'from-snapshot=nope'], /snapshot nope does not exist, so volume x1 cannot be cloned from it/, 3);
    await refuse(['volume', 'create', 'x2', '-o', `from-volume=${v}`, '-o', 'fstype=xfs'], /a clone has the options of its source .*option fstype cannot be given with from-volume/, 2);
    await refuse(['volume', 'create', 'x3', '-o', `from-volume=${v}`, '-o', 'size=1G'], /a clone has the size of its source \(64 ?MiB\); create it without -o size, then grow it with ballast volume expand x3 SIZE/, 2);
    await refuse(['volume', 'create', 'x4', '-o', `from-volume=${v}`, '-b', 'local'], /a clone is made by the backend of its source: volume .* is on backend block, not local/, 2);
    await refuse(['volume', 'create', 'x5', '-o', `from-volume=${v}`, '-o', 'from-snapshot=a'], /give one of from-snapshot and from-volume, not both/, 2);
    const d = await eng!.docker(['volume', 'create', '-d', b!.driver, '-o', 'from-snapshot=nope', 'x6']);
    assert.notEqual(d.code, 0);
    assert.match(d.stderr, /snapshot nope does not exist/);
    assert.equal(await okCli(['snapshot', 'rm', 'never-was']), 'never-was', 'removing what does not exist succeeds');
    assert.equal(await eng!.ok(['volume', 'ls', '-q']), volsBefore, 'no volume was made');
    assert.deepEqual((await snapshots()).filter((x) => /^(x\d|nope|never-was)/.test(x.name) || x.volume === v), [], 'no snapshot was made');
    assert.equal((await run(['ls', join(b!.root, 'backends', 'block', 'images', 'snapshots')], { timeoutMs: 5000 })).stdout.trim(), '', 'no snapshot image was left');
    await s.removeVolume(v);
  });

  /** Restarts the daemon with BALLAST_FAULT=point, runs `step` (which makes the daemon reach it and die), then restarts it plainly. */
  async function crashAt(point: string, step: () => Promise<unknown>): Promise<void> {
    assert.equal(await b!.stop(), 0);
    await b!.restart({ BALLAST_FAULT: point });
    const from = b!.logs().length;
    await step();
    const ex = await b!.exited();
    assert.equal(ex.signal, 'SIGKILL', `the daemon died at ${point}`);
    assert.ok(b!.logs().slice(from).includes(`fault injection: SIGKILL at ${point}`), `the log shows ${point} was reached`);
    covered.add(point);
    await b!.restart();
  }

  test('crashes at every snapshot step: rolled back (and thawed) or forward on the next start', { timeout: 600_000 }, async () => {
    const v = s.volName('crash');
    await s.createVolume(v, { backend: 'block', size: '128M' });
    await s.inContainer(v, TREE);
    const sums = await s.inContainer(v, SUMS);
    const ctr = s.ctrName('crash-writer');
    await s.runDetached(ctr, v, WRITER);
    const count = async () => Number((await eng!.ok(['exec', ctr, 'sh', '-c', 'wc -l < /data/counter'])).trim());

    // Killed while the filesystem is frozen: the writer stalls until the restarted daemon thaws it.
    assert.equal(await b!.stop(), 0);
    await b!.restart({ BALLAST_FAULT: 'snapshot.frozen' });
    await cli(['snapshot', 'create', v, `${v}-a`]);
    assert.equal((await b!.exited()).signal, 'SIGKILL');
    covered.add('snapshot.frozen');
    const stalled = await count();
    await sleep(1500);
    assert.equal(await count(), stalled, 'the writer waits while the filesystem is frozen and the daemon is dead');
    await b!.restart();
    await waitFor(async () => (await count()) > stalled + 100, 'the writer to go on once the restarted daemon thawed the filesystem', 20_000);
    assert.deepEqual(await snapshots(v), [], 'the interrupted snapshot was rolled back');
    assert.match(b!.logs(), new RegExp(`roll back interrupted snapshot ${v}-a`));

    for (const point of ['snapshot.recorded', 'snapshot.taken']) {
      await crashAt(point, () => cli(['snapshot', 'create', v, `${v}-b`]));
      assert.deepEqual(await snapshots(v), [], `a snapshot interrupted at ${point} is rolled back`);
      assert.ok(!existsSync(snapImage(join(b!.root, 'backends', 'block', 'images'), `${v}-b`)), 'and its image is gone');
    }
    await okCli(['snapshot', 'create', v, `${v}-c`]);
    // A clone interrupted after its image was copied: the restarted daemon finishes it.
    const c = s.volName('crash-clone');
    await crashAt('block.clone-copied', () => eng!.docker(['volume', 'create', '-d', b!.driver, '-o', `from-snapshot=${v}-c`, c]));
    assert.equal((await s.inspectVolume(c)).Status.state, 'ready', 'the interrupted clone was rolled forward');
    assert.equal(await s.inContainer(c, SUMS), sums);
    // A snapshot removal interrupted after it was marked: finished on the next start.
    await crashAt('snapshot-rm.marked', () => cli(['snapshot', 'rm', `${v}-c`]));
    assert.deepEqual(await snapshots(v), [], 'the interrupted removal was rolled forward');
    // A clone of a volume interrupted once provisioned: its own snapshot is gone after the restart.
    const c2 = s.volName('crash-clone2');
    await crashAt('create.provisioned', () => eng!.docker(['volume', 'create', '-d', b!.driver, '-o', `from-volume=${v}`, c2]));
    assert.equal((await s.inspectVolume(c2)).Status.state, 'ready');
    assert.deepEqual((await snapshots()).filter((x) => x.name.startsWith('_')), [], 'the temporary snapshot of the clone was removed');
    await s.removeContainer(ctr);
    for (const x of [c, c2]) await s.removeVolume(x);
    await s.removeVolume(v);
  });

  test('every snapshot fault point was covered', () => {
    const missing = BACKEND_FAULT_POINTS.snapshot.filter((p) => !covered.has(p));
    assert.deepEqual(missing, [], `covered: ${[...covered].join(', ')}`);
  });
});
