/**
 * Backups with restic (Debian's package) to a directory target, with a real dockerd and real loop
 * devices: a backup of a block volume taken while a container writes to it restores into a new block
 * volume and into a local one (another backend) with the same tree (checksums); a second backup after
 * changing 1% of the data adds about 1%; progress is streamed; a second daemon with its own root and
 * mount namespace (another host that reaches the same target with the same password) restores it
 * through the Docker plugin API (`-o from-backup=ID`); SIGKILL at each backup and restore step leaves
 * no half-visible backup, no mount and no temporary snapshot, and the operation can be run again; a
 * target that is down, an unknown target or backup id are refused with a sentence and change nothing.
 * (Backups to S3 on radosgw are in the Ceph suite.)
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { startBallast, type BallastProc } from '../helpers/ballast.js';
import { dockerSkipReason, startDockerEngine, type DockerEngine } from '../helpers/docker-engine.js';
import { Scenario } from '../helpers/scenario.js';
import { teardownSuite } from '../helpers/leftovers.js';
import { run } from '../helpers/proc.js';
import { parseMountinfo } from '../../src/host/mountinfo.js';
import { unixRequest } from '../../src/host/unix-http.js';
import { BACKEND_FAULT_POINTS } from '../../src/core/faults.js';

const SKIP = dockerSkipReason() ?? (existsSync('/usr/bin/restic') ? undefined : 'restic is not installed (scripts/install-test-deps.sh installs it)');
const TREE = 'mkdir -p /data/tree/a/b /data/tree/c && for i in 1 2 3 4 5 6; do dd if=/dev/urandom of=/data/tree/a/f$i bs=4k count=$((i*37)) 2>/dev/null; done'
  + ' && dd if=/dev/urandom of=/data/tree/a/b/big bs=1M count=24 2>/dev/null && echo small > /data/tree/c/s && ln -s ../a/f1 /data/tree/c/link && chmod 0600 /data/tree/a/f2 && chown 7:8 /data/tree/a/f3 && sync';
const SUMS = 'cd /data/tree && find . -type f | sort | xargs sha256sum && readlink c/link && stat -c "%a %u:%g" a/f2 a/f3';
const WRITER = ['sh', '-c', "trap 'exit 0' TERM; i=0; while :; do i=$((i+1)); echo $i >> /data/counter; [ $((i % 20)) -eq 0 ] && sync /data/counter; done"];
const MiB = 1024 * 1024;

interface Backup { id: string; target: string; volume?: string; backend?: string; size?: number; node: string; time: string; dataAdded?: number; bytes?: number }

describe('backups with restic (e2e)', { skip: SKIP ?? false }, () => {
  let scratch = '';
  let eng: DockerEngine | undefined;
  let a: BallastProc | undefined;
  let b: BallastProc | undefined;
  let s: Scenario;
  const bVolumes = new Set<string>();
  const covered = new Set<string>();

  const okCli = async (p: BallastProc, args: string[], timeoutMs = 300_000) => {
    const r = await p.cli(args, timeoutMs);
    assert.equal(r.code, 0, `ballast ${args.join(' ')}: ${r.stderr}`);
    return r.stdout.trim();
  };
  const backupCreate = async (vol: string, target = 'repo') => JSON.parse(await okCli(a!, ['backup', 'create', vol, '--to', target, '--json'])) as Backup & { dataAdded: number; bytes: number };
  const backupLs = async (p: BallastProc, vol?: string) => (JSON.parse(await okCli(p, ['backup', 'ls', ...(vol ? [vol] : []), '--from', 'repo', '--json'])) as { backups: Backup[] }).backups;
  const tempSnapshots = async () => (JSON.parse(await okCli(a!, ['snapshot', 'ls', '--json'])) as { name: string }[]).filter((x) => x.name.startsWith('_'));
  const mountsUnder = (dir: string, pid?: number) => parseMountinfo(readFileSync(pid ? `/proc/${pid}/mountinfo` : '/proc/self/mountinfo', 'utf8')).filter((m) => m.mountpoint.startsWith(dir + '/'));

  before(async () => {
    scratch = mkdtempSync('/var/tmp/ballast-backup-e2e-');
    const pw = join(scratch, 'restic-password');
    writeFileSync(pw, `${randomBytes(24).toString('hex')}\n`, { mode: 0o600 });
    mkdirSync(join(scratch, 'targets'));
    const cfg = join(scratch, 'config.json');
    writeFileSync(cfg, JSON.stringify({
      backends: { block: { type: 'block' }, local: { type: 'local' } },
      backupTargets: {
        repo: { type: 'dir', path: join(scratch, 'targets', 'repo'), passwordFile: pw },
        // A backup disk that is not mounted: its parent does not exist.
        gone: { type: 'dir', path: join(scratch, 'not-mounted', 'repo'), passwordFile: pw },
      },
      defaultBackupTarget: 'repo',
    }));
    eng = await startDockerEngine();
    // node-b: another host (own root, own mount namespace) that reaches the same target with the same password.
    b = await startBallast({ root: join(scratch, 'node-b'), configFile: cfg, wrap: ['unshare', '-m', '--propagation', 'private'], extraArgs: ['--node', 'node-b', '--docker-host', `unix://${join(scratch, 'no-dockerd.sock')}`] });
    a = await startBallast({ root: join(scratch, 'node-a'), configFile: cfg, extraArgs: ['--node', 'node-a', '--docker-host', eng.host] });
    s = new Scenario('bkp', () => eng!, () => a!);
  });
  after(async () => {
    for (const v of bVolumes) await b?.plugin('VolumeDriver.Remove', { Name: v }).catch(() => undefined);
    await teardownSuite({ suite: 'backups e2e', roots: [scratch], engine: eng, containers: s?.containers, volumes: s?.volumes, daemons: [a, b], stopAfter: eng ? [{ what: 'dockerd', stop: () => eng!.stop() }] : [] });
  });

  test('a backup taken while a container writes restores into a new block volume and into a local one with the same tree', { timeout: 300_000 }, async () => {
    const v = s.volName('src');
    await s.createVolume(v, { backend: 'block', size: '256M' });
    await s.inContainer(v, TREE);
    const sums = await s.inContainer(v, SUMS);
    const ctr = s.ctrName('writer');
    await s.runDetached(ctr, v, WRITER);
    const bk = await backupCreate(v);
    assert.match(bk.id, /^[0-9a-f]{8}$/);
    assert.equal(bk.volume, v);
    assert.ok(bk.bytes >= 24 * MiB, `the backup holds the tree (${bk.bytes} bytes)`);
    assert.deepEqual(await tempSnapshots(), [], 'the snapshot it was taken from is gone');
    assert.deepEqual(mountsUnder(a!.root).filter((m) => m.mountpoint.includes('/backups/')), [], 'nothing is left mounted');
    const ls = await backupLs(a!, v);
    assert.deepEqual(ls.map((x) => [x.id, x.target, x.volume, x.backend, x.size, x.node]), [[bk.id, 'repo', v, 'block', 256 * MiB, 'node-a']]);

    const r1 = s.volName('r-block');
    assert.equal(await okCli(a!, ['backup', 'restore', bk.id, '--into', r1]), r1);
    s.volumes.add(r1);
    const st = (await s.inspectVolume(r1)).Status;
    assert.equal(st.backend, 'block');
    assert.equal(st.sizeBytes, 256 * MiB, 'the backed-up volume\'s size by default');
    assert.equal(await s.inContainer(r1, SUMS), sums);
    const counter = (await s.inContainer(r1, 'cat /data/counter')).split('\n').map(Number);
    counter.forEach((n, i) => assert.equal(n, i + 1, 'the counter in the backup is a prefix of what was written'));

    // Another backend type, through docker: the backup holds files, not blocks.
    const r2 = s.volName('r-local');
    await s.createVolume(r2, { backend: 'local', 'from-backup': bk.id });
    assert.equal(await s.inContainer(r2, SUMS), sums, 'restored into a local directory volume');
    await s.removeContainer(ctr);
    for (const x of [r1, r2, v]) await s.removeVolume(x);
  });

  test('a second backup after changing 1% of the data adds about 1%; progress is streamed', { timeout: 300_000 }, async () => {
    const v = s.volName('inc');
    await s.createVolume(v, { backend: 'block', size: '256M' });
    await s.inContainer(v, 'dd if=/dev/urandom of=/data/big bs=1M count=100 2>/dev/null && sync');
    // The first one over the admin API as an NDJSON stream.
    const res = await unixRequest(a!.adminSocket, 'POST', '/v1/backups', { volume: v }, { timeoutMs: 300_000, headers: { 'content-type': 'application/json', accept: 'application/x-ndjson' } });
    assert.equal(res.status, 200);
    const lines = res.text.trim().split('\n').map((l) => JSON.parse(l) as { progress?: Record<string, number | string>; result?: Backup & { dataAdded: number } });
    const result = lines.at(-1)!.result!;
    assert.ok(result.dataAdded > 95 * MiB, `the first backup stores the data (${result.dataAdded})`);
    assert.ok(lines.some((l) => typeof l.progress?.bytesDone === 'number' && typeof l.progress?.totalBytes === 'number'), `progress lines with bytes: ${res.text.slice(0, 500)}`);
    // 1 MiB of the 100 rewritten in the middle.
    await s.inContainer(v, 'dd if=/dev/urandom of=/data/big bs=1M count=1 seek=50 conv=notrunc 2>/dev/null && sync');
    const second = await backupCreate(v);
    assert.ok(second.dataAdded < 4 * MiB, `the second backup adds about the changed 1 MiB: ${second.dataAdded} bytes`);
    assert.ok(second.dataAdded > 0.5 * MiB, `and does add it: ${second.dataAdded} bytes`);
    assert.equal((await backupLs(a!, v)).length, 2);
    const r = s.volName('inc-r');
    await s.createVolume(r, { 'from-backup': second.id });
    assert.equal(await s.inContainer(r, 'sha256sum < /data/big'), await s.inContainer(v, 'sha256sum < /data/big'));
    for (const x of [r, v]) await s.removeVolume(x);
  });

  test('another host restores a backup through the Docker plugin API', { timeout: 300_000 }, async () => {
    const v = s.volName('xnode');
    await s.createVolume(v, { backend: 'block', size: '128M' });
    await s.inContainer(v, TREE);
    const bk = await backupCreate(v);
    assert.ok((await backupLs(b!)).some((x) => x.id === bk.id), 'node-b lists the backup node-a made');
    const name = `xr-${randomBytes(4).toString('hex')}`;
    const c = await b!.plugin('VolumeDriver.Create', { Name: name, Opts: { backend: 'local', 'from-backup': bk.id } });
    assert.equal(c.body.Err ?? '', '', JSON.stringify(c.body));
    bVolumes.add(name);
    const m = await b!.plugin('VolumeDriver.Mount', { Name: name, ID: 'x1' });
    const mp = String(m.body.Mountpoint);
    const sum = await run(['nsenter', '-t', String(b!.pid()), '-m', 'sh', '-c', `cd ${mp}/tree && find . -type f | sort | xargs sha256sum`], { timeoutMs: 30_000 });
    assert.equal(sum.stdout.trim(), (await s.inContainer(v, 'cd /data/tree && find . -type f | sort | xargs sha256sum')).trim());
    await b!.plugin('VolumeDriver.Unmount', { Name: name, ID: 'x1' });
    await s.removeVolume(v);
  });

  /** Restarts node-a with BALLAST_FAULT=point, runs `step` (the daemon dies at the point), then restarts it plainly. */
  async function crashAt(point: string, step: () => Promise<unknown>): Promise<void> {
    assert.equal(await a!.stop(), 0);
    await a!.restart({ BALLAST_FAULT: point });
    const from = a!.logs().length;
    await step();
    assert.equal((await a!.exited()).signal, 'SIGKILL', `the daemon died at ${point}`);
    assert.ok(a!.logs().slice(from).includes(`fault injection: SIGKILL at ${point}`));
    covered.add(point);
    await a!.restart();
  }

  test('SIGKILL at every backup and restore step: no half-visible backup, no mount or snapshot left, and it runs again', { timeout: 600_000 }, async () => {
    const v = s.volName('crash');
    await s.createVolume(v, { backend: 'block', size: '128M' });
    await s.inContainer(v, TREE);
    const sums = await s.inContainer(v, SUMS);
    const before = (await backupLs(a!, v)).length;
    await crashAt('backup.snapshot-mounted', () => a!.cli(['backup', 'create', v]));
    assert.equal((await backupLs(a!, v)).length, before, 'no backup appeared');
    assert.deepEqual(await tempSnapshots(), [], 'the temporary snapshot was removed at the restart');
    assert.deepEqual(mountsUnder(a!.root).filter((m) => m.mountpoint.includes('/backups/')), [], 'and unmounted');
    // Killed once restic saved it: the backup is complete and listed; the leftovers go at the restart.
    await crashAt('backup.stored', () => a!.cli(['backup', 'create', v]));
    const saved = await backupLs(a!, v);
    assert.equal(saved.length, before + 1, 'the backup restic finished is there, whole');
    assert.deepEqual(await tempSnapshots(), []);
    assert.deepEqual(mountsUnder(a!.root).filter((m) => m.mountpoint.includes('/backups/')), []);
    const again = await backupCreate(v);
    assert.equal((await backupLs(a!, v)).length, before + 2, 'and a backup runs again');
    // A restore killed after restic wrote it, before the volume was ready: finished by the restart.
    const r = s.volName('crash-r');
    await crashAt('restore.restored', () => a!.cli(['backup', 'restore', again.id, '--into', r]));
    assert.equal((await s.inspectVolume(r)).Status.state, 'ready');
    assert.equal(await s.inContainer(r, SUMS), sums, 'the restarted daemon restored it again, whole');
    for (const x of [r, v]) await s.removeVolume(x);
  });

  test('bad input and a target that is down are refused with a sentence and change nothing', { timeout: 180_000 }, async () => {
    const v = s.volName('bad');
    await s.createVolume(v, { backend: 'block', size: '64M' });
    const vols = await eng!.ok(['volume', 'ls', '-q']);
    const refuse = async (args: string[], re: RegExp, code: number) => {
      const r = await a!.cli(args, 120_000);
      assert.equal(r.code, code, `ballast ${args.join(' ')}: exit ${r.code}: ${r.stderr}`);
      assert.match(r.stderr, re);
    };
    await refuse(['backup', 'create', v, '--to', 'gone'], /backup target gone \(directory .*\) cannot be used: its parent directory .* does not exist; mount the backup disk/, 5);
    await refuse(['backup', 'create', v, '--to', 'nope'], /backup target "nope" is not configured; configured: repo, gone/, 3);
    await refuse(['backup', 'create', 'no-such-volume'], /volume no-such-volume does not exist/, 3);
    await refuse(['backup', 'restore', 'deadbeef', '--into', 'x1'], /backup deadbeef does not exist in target repo/, 3);
    await refuse(['backup', 'restore', 'zz', '--into', 'x2'], /not a backup id|is not valid/, 2);
    await refuse(['volume', 'create', 'x3', '-o', 'from-backup=deadbeef', '-o', 'from-volume=x'], /not both/, 2);
    await refuse(['backup', 'rm', 'deadbeef'], /backup deadbeef does not exist in target repo/, 3);
    assert.equal(await eng!.ok(['volume', 'ls', '-q']), vols, 'no volume was made');
    assert.deepEqual(await tempSnapshots(), [], 'no snapshot was left');
    assert.ok(!existsSync(join(scratch, 'not-mounted')), 'no directory was made in place of the missing backup disk');
    const ls = await a!.cli(['backup', 'ls', '--json']);
    assert.equal(ls.code, 5, 'ls answers what it can and says which target failed');
    assert.match((JSON.parse(ls.stdout) as { errors: { target: string; error: string }[] }).errors[0].error, /parent directory .* does not exist|cannot be used|no restic repository/);
    await s.removeVolume(v);
  });

  test('every backup fault point was covered', () => {
    const missing = BACKEND_FAULT_POINTS.backup.filter((p) => !covered.has(p));
    assert.deepEqual(missing, [], `covered: ${[...covered].join(', ')}`);
  });
});
