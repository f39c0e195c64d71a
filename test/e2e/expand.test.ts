/**
 * `ballast volume expand` on block volumes, with a real dockerd and real loop devices: xfs and btrfs
 * grown while a container has them mounted (seen by `df` inside that container, and the new space
 * written), ext4 likewise where the kernel allows its online resize and otherwise at the next mount, a thick image stays fully allocated and a thin one sparse, a volume mounted nowhere
 * grown offline (the next container sees the new size), data intact and `fsck -n` clean afterwards;
 * shrinking, a backend without expansion and an unknown volume refused, changing nothing.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { startBallast, type BallastProc } from '../helpers/ballast.js';
import { dockerSkipReason, startDockerEngine, type DockerEngine } from '../helpers/docker-engine.js';
import { Scenario } from '../helpers/scenario.js';
import { teardownSuite } from '../helpers/leftovers.js';
import { run } from '../helpers/proc.js';

const SKIP = dockerSkipReason();
const MiB = 1024 * 1024;

describe('volume expand (e2e)', { skip: SKIP ?? false }, () => {
  let scratch = '';
  let eng: DockerEngine | undefined;
  let b: BallastProc | undefined;
  let s: Scenario;
  before(async () => {
    scratch = mkdtempSync('/var/tmp/ballast-expand-e2e-');
    eng = await startDockerEngine();
    b = await startBallast({ root: join(scratch, 'root'), extraArgs: ['--docker-host', eng.host] });
    s = new Scenario('exp', () => eng!, () => b!);
  });
  after(async () => {
    await teardownSuite({ suite: 'expand e2e', roots: [scratch], engine: eng, containers: s?.containers, volumes: s?.volumes, daemons: [b], stopAfter: eng ? [{ what: 'dockerd', stop: () => eng!.stop() }] : [] });
  });

  const dfBytes = async (ctr: string) => Number((await eng!.ok(['exec', ctr, 'sh', '-c', 'df -B1 /data | tail -n 1'])).split(/\s+/)[1]);
  const expand = (v: string, size: string) => b!.cli(['volume', 'expand', v, size]);
  const imageOf = async (v: string) => String((await s.inspectVolume(v)).Status.image);
  async function fsck(v: string, fstype: string): Promise<void> {
    const img = await imageOf(v);
    const argv = fstype === 'ext4' ? ['e2fsck', '-fn', img] : fstype === 'xfs' ? ['xfs_repair', '-n', '-f', img] : ['btrfs', 'check', '--readonly', img];
    const r = await run(argv, { timeoutMs: 120_000 });
    assert.equal(r.code, 0, `${argv.join(' ')}: ${r.stdout}${r.stderr}`);
  }

  for (const fstype of ['ext4', 'xfs', 'btrfs'] as const) {
    test(`${fstype}: grown while a container has it mounted (online; ext4 at the next mount where this kernel refuses its online resize); df in the container shows it, the new space takes data`, { timeout: 180_000 }, async () => {
      const v = s.volName(fstype);
      await s.createVolume(v, { backend: 'block', size: '320M', fstype });
      const ctr = s.ctrName(fstype);
      await s.runDetached(ctr, v);
      await eng!.ok(['exec', ctr, 'sh', '-c', 'echo "before the grow" > /data/keep && sync']);
      const before = await dfBytes(ctr);
      assert.ok(before <= 320 * MiB, `df before: ${before}`);
      const r = await expand(v, '800M');
      assert.equal(r.code, 0, r.stderr);
      let c = ctr;
      if (fstype === 'ext4' && /could not grow online/.test(r.stdout)) {
        // This kernel refuses ext4's online resize (resize2fs: Permission denied): it grows at the next mount.
        assert.match(r.stdout, /grew from 320 ?MiB to 800 ?MiB \(thick\); its ext4 filesystem could not grow online here \(.+\): it grows at its next mount/);
        assert.equal(await dfBytes(ctr), before, 'unchanged until the next mount');
        await s.removeContainer(ctr);
        c = s.ctrName('ext4-again');
        await s.runDetached(c, v);
      } else {
        assert.match(r.stdout, new RegExp(`grew from 320 ?MiB to 800 ?MiB \\(thick\\); its ${fstype} filesystem grew online`));
      }
      const after = await dfBytes(c);
      assert.ok(after > before + 400 * MiB, `df in the running container: ${before} -> ${after}`);
      // More than the volume held before: 400 MiB written into the grown filesystem.
      await eng!.ok(['exec', c, 'sh', '-c', 'dd if=/dev/zero of=/data/big bs=1M count=400 conv=fsync 2>/dev/null && ls -l /data/big'], 120_000);
      assert.equal(await eng!.ok(['exec', c, 'cat', '/data/keep']), 'before the grow');
      const img = await imageOf(v);
      assert.equal(statSync(img).size, 800 * MiB);
      assert.ok(statSync(img).blocks * 512 >= 800 * MiB, 'a thick image stays fully allocated');
      assert.equal((await s.inspectVolume(v)).Status.sizeBytes ?? 800 * MiB, 800 * MiB);
      await s.removeContainer(c);
      await fsck(v, fstype);
      await s.removeVolume(v);
    });
  }

  test('a thin volume mounted nowhere is grown offline and stays sparse; the next container sees the new size', { timeout: 120_000 }, async () => {
    const v = s.volName('thin');
    await s.createVolume(v, { backend: 'block', size: '128M', provisioning: 'thin' });
    await s.inContainer(v, 'echo kept > /data/k');
    const r = await expand(v, '1G');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /grew from 128 ?MiB to 1 ?GiB \(thin\); its ext4 filesystem was grown offline/);
    const img = await imageOf(v);
    assert.equal(statSync(img).size, 1024 * MiB);
    assert.ok(statSync(img).blocks * 512 < 200 * MiB, `still sparse: ${statSync(img).blocks * 512} bytes allocated`);
    const out = await s.inContainer(v, 'cat /data/k; df -B1 /data | tail -n 1');
    assert.match(out, /^kept\n/);
    assert.ok(Number(out.split('\n')[1].split(/\s+/)[1]) > 900 * MiB, out);
    await fsck(v, 'ext4');
    await s.removeVolume(v);
  });

  test('shrinking, a backend without expansion, an unknown volume and a bad size are refused and change nothing', { timeout: 60_000 }, async () => {
    const v = s.volName('keep');
    await s.createVolume(v, { backend: 'block', size: '256M' });
    const img = await imageOf(v);
    const sizeBefore = statSync(img).size;
    const shrink = await expand(v, '128M');
    assert.notEqual(shrink.code, 0);
    assert.match(shrink.stderr, /is 256 ?MiB; shrinking it to 128 ?MiB is refused.*nothing was changed/);
    for (const bad of ['lots', '1X', '1.5.5G']) {
      const r = await expand(v, bad);
      assert.notEqual(r.code, 0, bad);
      assert.match(r.stderr, /size/i);
    }
    assert.equal(statSync(img).size, sizeBefore);
    const same = await expand(v, '256M');
    assert.equal(same.code, 0);
    assert.match(same.stdout, /is 256 ?MiB already; nothing to do/);
    const l = s.volName('local');
    await s.createVolume(l, { backend: 'local' });
    const r = await expand(l, '1G');
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /backend local \(type local\) does not support expansion; nothing was changed/);
    const none = await expand('no-such-volume', '1G');
    assert.notEqual(none.code, 0);
    assert.match(none.stderr, /no-such-volume/);
    await s.removeVolume(v);
    await s.removeVolume(l);
  });
});
