/**
 * The record is authoritative: a volume's mountpoint and image path are written into its record at
 * create and read back from there, so changing a backend's `dir`, `imageDir` or `mountDir` in the
 * config and restarting strands no volume. And `GET /v1/doctor` only reads: it runs no reconcile pass.
 *
 * Real daemon, real loop devices and mounts, driven over the plugin socket as dockerd would. Root only.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { startBallast, uniqueName, type BallastProc } from '../helpers/ballast.js';
import { run } from '../helpers/proc.js';
import { parseMountinfo } from '../../src/host/mountinfo.js';
import { unixRequest } from '../../src/host/unix-http.js';

const SKIP = process.getuid?.() !== 0 ? 'needs root (loop devices and mounts)' : undefined;

const mountedAt = (p: string) => parseMountinfo(readFileSync('/proc/self/mountinfo', 'utf8')).some((m) => m.mountpoint === p);

describe('recorded placement and a read-only doctor', { skip: SKIP ?? false }, () => {
  let scratch = '';
  let root = '';
  let cfg = '';
  let b: BallastProc | undefined;
  const config = (sub: string) => JSON.stringify({
    backends: {
      local: { type: 'local', dir: join(scratch, sub, 'volumes') },
      block: { type: 'block', imageDir: join(scratch, sub, 'images'), mountDir: join(scratch, sub, 'mounts') },
    },
  });
  const plugin = async (method: string, body: unknown) => {
    const r = await b!.plugin(method, body);
    assert.equal(r.body.Err, undefined, `${method} ${JSON.stringify(body)}: ${String(r.body.Err)}`);
    return r.body;
  };
  const doctor = async () => {
    const r = await unixRequest(b!.adminSocket, 'GET', '/v1/doctor', undefined, { timeoutMs: 60_000 });
    assert.equal(r.status, 200);
    return (r.body as { checks: { name: string; ok: boolean; warn?: boolean; detail: string }[] }).checks;
  };

  before(async () => {
    scratch = mkdtempSync(join('/var/tmp', 'ballast-placement-'));
    root = join(scratch, 'root');
    cfg = join(scratch, 'ballast.json');
    writeFileSync(cfg, config('old'));
    // No periodic pass during the test: only start-up and what the test asks for run.
    b = await startBallast({ root, configFile: cfg, env: { BALLAST_RECONCILE_INTERVAL_SEC: '3600', BALLAST_LEAK_GRACE_SEC: '3600' } });
  });

  after(async () => {
    if (!b) return;
    for (const mp of parseMountinfo(readFileSync('/proc/self/mountinfo', 'utf8')).map((m) => m.mountpoint).filter((p) => p.startsWith(scratch + '/'))) {
      await run(['umount', '--', mp], { timeoutMs: 30_000 });
    }
    await b.stop();
    rmSync(scratch, { recursive: true, force: true });
  });

  test('volumes made before a change of dir, imageDir and mountDir keep their paths and data; new volumes use the new ones; doctor lists the old ones', async () => {
    const loc = uniqueName('pl-local-');
    const blk = uniqueName('pl-block-');
    await plugin('VolumeDriver.Create', { Name: loc, Opts: {} });
    await plugin('VolumeDriver.Create', { Name: blk, Opts: { backend: 'block', size: '64M' } });
    const locMp = String((await plugin('VolumeDriver.Mount', { Name: loc, ID: 'a'.repeat(64) })).Mountpoint);
    const blkMp = String((await plugin('VolumeDriver.Mount', { Name: blk, ID: 'b'.repeat(64) })).Mountpoint);
    assert.equal(locMp, join(scratch, 'old', 'volumes', loc));
    assert.equal(blkMp, join(scratch, 'old', 'mounts', blk));
    writeFileSync(join(locMp, 'data'), 'local before the change\n');
    writeFileSync(join(blkMp, 'data'), 'block before the change\n');
    const uuid = (await run(['blkid', '-p', '-s', 'UUID', '-o', 'value', join(scratch, 'old', 'images', `${blk}.img`)])).stdout.trim();
    assert.ok(uuid, 'the block image has a filesystem');
    await plugin('VolumeDriver.Unmount', { Name: loc, ID: 'a'.repeat(64) });
    await plugin('VolumeDriver.Unmount', { Name: blk, ID: 'b'.repeat(64) });
    assert.ok(!mountedAt(blkMp));

    // The operator moves every backend directory and restarts.
    await b!.stop();
    writeFileSync(cfg, config('new'));
    await b!.restart();

    const got = await plugin('VolumeDriver.Get', { Name: blk }) as { Volume: { Mountpoint: string; Status: Record<string, unknown> } };
    assert.equal(got.Volume.Mountpoint, blkMp, 'Get answers the recorded mountpoint');
    assert.equal(got.Volume.Status.image, join(scratch, 'old', 'images', `${blk}.img`));
    assert.equal(String((await plugin('VolumeDriver.Mount', { Name: blk, ID: 'c'.repeat(64) })).Mountpoint), blkMp);
    assert.equal(readFileSync(join(blkMp, 'data'), 'utf8'), 'block before the change\n');
    assert.equal(String((await plugin('VolumeDriver.Mount', { Name: loc, ID: 'd'.repeat(64) })).Mountpoint), locMp);
    assert.equal(readFileSync(join(locMp, 'data'), 'utf8'), 'local before the change\n');
    assert.equal((await run(['blkid', '-p', '-s', 'UUID', '-o', 'value', join(scratch, 'old', 'images', `${blk}.img`)])).stdout.trim(), uuid, 'never formatted again');
    assert.ok(!existsSync(join(scratch, 'new', 'images', `${blk}.img`)), 'no new image was made for the old volume');

    const fresh = uniqueName('pl-new-');
    await plugin('VolumeDriver.Create', { Name: fresh, Opts: { backend: 'block', size: '64M' } });
    assert.ok(existsSync(join(scratch, 'new', 'images', `${fresh}.img`)), 'a new volume uses the new imageDir');
    const freshMp = String((await plugin('VolumeDriver.Mount', { Name: fresh, ID: 'e'.repeat(64) })).Mountpoint);
    assert.equal(freshMp, join(scratch, 'new', 'mounts', fresh));

    const paths = (await doctor()).find((c) => c.name === 'volume paths');
    assert.ok(paths?.warn, 'doctor warns about volumes at old paths');
    assert.match(paths!.detail, new RegExp(`${blk} \\(block\\) has its mountpoint at ${blkMp}`));
    assert.match(paths!.detail, new RegExp(`${loc} \\(local\\) has its mountpoint at ${locMp}`));
    assert.ok(!paths!.detail.includes(fresh), 'the new volume is where the config puts it');

    for (const [n, id] of [[blk, 'c'], [loc, 'd'], [fresh, 'e']] as const) await plugin('VolumeDriver.Unmount', { Name: n, ID: id.repeat(64) });
    for (const n of [blk, loc, fresh]) await plugin('VolumeDriver.Remove', { Name: n });
    assert.ok(!existsSync(join(scratch, 'old', 'images', `${blk}.img`)), 'remove deletes the image at its recorded path');
    assert.ok(!existsSync(locMp), 'remove deletes the local directory at its recorded path');
  });

  test('GET /v1/doctor reads the last pass and repairs nothing; POST /v1/repair does', async () => {
    const vol = uniqueName('pl-doc-');
    await plugin('VolumeDriver.Create', { Name: vol, Opts: { backend: 'block', size: '64M' } });
    const mp = String((await plugin('VolumeDriver.Mount', { Name: vol, ID: 'f'.repeat(64) })).Mountpoint);
    // Unmounted behind Ballast's back while referenced: a reconcile pass would mount it again.
    assert.equal((await run(['umount', '--', mp])).code, 0);
    const before = (await unixRequest(b!.adminSocket, 'GET', '/v1/reconcile', undefined, { timeoutMs: 10_000 })).body as { counters: Record<string, number> };
    await doctor();
    await doctor();
    assert.ok(!mountedAt(mp), 'doctor did not remount the volume');
    const after1 = (await unixRequest(b!.adminSocket, 'GET', '/v1/reconcile', undefined, { timeoutMs: 10_000 })).body as { counters: Record<string, number> };
    assert.deepEqual(after1.counters, before.counters, 'doctor ran no reconcile pass');
    const rep = await unixRequest(b!.adminSocket, 'POST', '/v1/repair', {}, { timeoutMs: 60_000 });
    assert.equal(rep.status, 200);
    assert.ok(mountedAt(mp), 'repair mounted the referenced volume again');
    await plugin('VolumeDriver.Unmount', { Name: vol, ID: 'f'.repeat(64) });
    await plugin('VolumeDriver.Remove', { Name: vol });
    mkdirSync(scratch, { recursive: true });
  });
});
