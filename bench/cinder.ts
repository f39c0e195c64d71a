/**
 * Ballast Cinder benchmark (issue 9), in one run against a real Keystone, Cinder (RBD driver) and
 * one-node Ceph on loopback (test/servers), a real dockerd and one Ballast daemon:
 * - create: `VolumeDriver.Create` of a 1 GiB volume until it answers (Cinder's create and the wait
 *   until `available`) against the same API calls by hand (POST /volumes, then GET every 100 ms);
 * - attach: `VolumeDriver.Mount` of a formatted volume (attachment create, rbd-fuse, loop device,
 *   mount, attachment complete) against the same steps by hand (POST /attachments, rbd-fuse with the
 *   same client settings, losetup, mount, os-complete); target: under 2 s and at most 1.2x by hand;
 * - end to end: `docker volume create` plus `docker run --rm -v vol:/data:nocopy busybox true`, against
 *   the hand-made create, wait, attach, mkfs, mount, complete, `docker run -v dir:/data`, unmount and
 *   attachment delete. (Without `nocopy` dockerd mounts a volume twice per run, Mount, Unmount, Mount,
 *   Unmount, to copy the image's content into it first: that run is reported too, with no target.)
 * Rounds alternate which side goes first; medians.
 *
 *   npm run bench:cinder [-- --out FILE] [-- --rounds N]
 *
 * One JSON object goes to stdout and to --out (default ./bench-cinder.json); the table to stderr.
 * Exits non-zero only on an error, never on a missed target. Everything is torn down at the end.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { startDockerEngine, type DockerEngine } from '../test/helpers/docker-engine.js';
import { startBallast, type BallastProc } from '../test/helpers/ballast.js';
import { run, sleep, waitFor } from '../test/helpers/proc.js';
import { startCeph, type CephCluster } from '../test/servers/ceph.js';
import { startOpenStack, type OpenStack } from '../test/servers/openstack.js';
import { rbdClientArgs } from '../src/backends/ceph/rbd-fuse.js';
import { PluginClient } from './lib/plugin-client.js';
import { figure, type Figure } from './lib/report.js';
import { writeResult } from './lib/result.js';
import { median } from './lib/stats.js';
import { loadAvg } from './lib/proc-status.js';

function parseArgs(argv: string[]): { out: string; rounds: number } {
  let out = 'bench-cinder.json';
  let rounds = 5;
  for (let i = 0; i < argv.length; i++) {
    const [flag, inline] = argv[i].includes('=') ? argv[i].split('=', 2) : [argv[i], undefined];
    const val = () => inline ?? argv[++i];
    if (flag === '--out') out = val();
    else if (flag === '--rounds') { rounds = Number(val()); if (!Number.isInteger(rounds) || rounds < 1 || rounds > 50) throw new Error('--rounds needs an integer between 1 and 50'); }
    else if (flag === '-h' || flag === '--help') { process.stderr.write('usage: node dist/bench/cinder.js [--out FILE] [--rounds N]\n'); process.exit(0); }
    else throw new Error(`unknown argument ${argv[i]}`);
  }
  return { out: resolve(out), rounds };
}

const V = { 'OpenStack-API-Version': 'volume 3.44' };
const ms = (t0: number) => Math.round((performance.now() - t0) * 10) / 10;

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const t0 = performance.now();
  const log = (s: string) => process.stderr.write(`[${((performance.now() - t0) / 1000).toFixed(1).padStart(6)}s] ${s}\n`);
  const loadStart = loadAvg();
  const scratch = mkdtempSync('/var/tmp/ballast-bench-cinder-');
  const figures: Figure[] = [];
  const errors: string[] = [];
  const raw: Record<string, number[]> = { createBallast: [], createHand: [], attachBallast: [], attachHand: [], e2eBallast: [], e2eHand: [], runCopyBallast: [] };
  let ceph: CephCluster | undefined;
  let os: OpenStack | undefined;
  let eng: DockerEngine | undefined;
  let b: BallastProc | undefined;
  const handMounts: string[] = [];
  try {
    [ceph, eng] = await Promise.all([startCeph(join(scratch, 'ceph'), { osdSizeGiB: 8, rgw: false }), startDockerEngine()]);
    os = await startOpenStack(join(scratch, 'openstack'), { cephConf: ceph.conf, cephKeyring: ceph.keyring });
    log(`servers up (Keystone and Cinder in ${(os.startMs / 1000).toFixed(1)} s)`);
    const root = join(scratch, 'ballast');
    mkdirSync(root, { recursive: true });
    const configFile = join(root, 'ballast.json');
    writeFileSync(configFile, JSON.stringify({ defaultBackend: 'cinder', backends: { cinder: {
      type: 'cinder', authUrl: os.authUrl, username: os.userName, passwordFile: os.adminPasswordFile, project: os.projectName, region: os.region,
      cephConf: ceph.conf, cephKeyring: ceph.keyring,
    } } }));
    b = await startBallast({ root, configFile, wrap: ['setsid'], extraArgs: ['--log-level', 'info', '--docker-host', eng.host] });
    const plugin = new PluginClient(b.socket);
    const api = os.api.bind(os);

    // By hand: the same calls with a token fetched once (Ballast caches its token too).
    /** A POST that Cinder on SQLite may answer 500 for a moment ("database is locked"): tried again, as a person would. */
    const call = async (method: string, path: string, body?: unknown, headers?: Record<string, string>) => {
      for (let i = 0; ; i++) { const r = await api(method, path, body, headers); if (r.status < 500 || i === 3) return r; await sleep(200); }
    };
    const post = (path: string, body: unknown, headers?: Record<string, string>) => call('POST', path, body, headers);
    const handCreate = async (name: string): Promise<string> => {
      const r = await post('/volumes', { volume: { size: 1, name } });
      if (r.status !== 202) throw new Error(`hand create: ${r.status} ${r.text}`);
      const id = r.json.volume.id as string;
      for (;;) { const g = await api('GET', `/volumes/${id}`); if (g.json.volume.status === 'available') return id; await sleep(100); }
    };
    const handAttach = async (id: string, dir: string, mkfs: boolean): Promise<{ id: string; att: string; loop: string; mnt: string; fuse: string }> => {
      let a = await api('POST', '/attachments', { attachment: { volume_uuid: id, connector: { host: 'bench-hand', platform: 'x86_64', os_type: 'linux', multipath: false } } }, V);
      if (a.status >= 500) {
        // Cinder on SQLite answers 500 now and then; the attachment may have been made anyway.
        const l = await call('GET', `/attachments/detail?volume_id=${id}`, undefined, V);
        const got = (l.json.attachments as { id: string }[] | undefined) ?? [];
        a = got.length === 1 ? await call('GET', `/attachments/${got[0].id}`, undefined, V) : a;
      }
      if (a.status !== 200) throw new Error(`hand attach: ${a.status} ${a.text}`);
      const info = a.json.attachment.connection_info as { name?: string; data?: { name: string } };
      const [pool, image] = String(info.name ?? info.data?.name).split('/');
      const fuse = join(dir, 'fuse'); const mnt = join(dir, 'mnt');
      mkdirSync(fuse, { recursive: true }); mkdirSync(mnt, { recursive: true });
      const f = await run(['rbd-fuse', '-c', ceph!.conf, '--keyring', ceph!.keyring, ...rbdClientArgs(10), '-p', pool, '-r', image, fuse], { timeoutMs: 30_000 });
      if (f.code !== 0) throw new Error(`hand rbd-fuse: ${f.stderr}`);
      handMounts.push(fuse);
      const loop = (await run(['losetup', '--find', '--show', '--', join(fuse, image)], { timeoutMs: 15_000 })).stdout.trim();
      if (mkfs) await run(['mkfs.ext4', '-q', loop], { timeoutMs: 60_000 });
      const m = await run(['mount', '-t', 'ext4', '--', loop, mnt], { timeoutMs: 30_000 });
      if (m.code !== 0) throw new Error(`hand mount: ${m.stderr}`);
      handMounts.push(mnt);
      await run(['losetup', '-d', loop], { timeoutMs: 15_000 }); // autoclear, as Ballast does
      const c = await post(`/attachments/${a.json.attachment.id}/action`, { 'os-complete': null }, V);
      if (c.status >= 300) throw new Error(`hand complete: ${c.status} ${c.text}`);
      return { id, att: a.json.attachment.id as string, loop, mnt, fuse };
    };
    const handDetach = async (h: { id: string; att: string; mnt: string; fuse: string }, wait = true) => {
      await run(['umount', h.mnt], { timeoutMs: 30_000 });
      await run(['umount', h.fuse], { timeoutMs: 30_000 });
      handMounts.splice(0, handMounts.length, ...handMounts.filter((m) => m !== h.mnt && m !== h.fuse));
      const d = await call('DELETE', `/attachments/${h.att}`, undefined, V);
      if (d.status >= 300) throw new Error(`hand detach: ${d.status} ${d.text}`);
      // cinder-volume lets the attachment go asynchronously: the next attach needs the volume available again.
      if (wait) await waitFor(async () => (await api('GET', `/volumes/${h.id}`)).json.volume?.status === 'available' || undefined, `volume ${h.id} to be available`, 60_000, 50);
    };
    const handDelete = async (id: string) => {
      await call('DELETE', `/volumes/${id}`);
      await waitFor(async () => (await api('GET', `/volumes/${id}`)).status === 404 || undefined, `volume ${id} to go`, 120_000, 200);
    };

    // Warm-up: one of each, not counted.
    {
      await plugin.ok('VolumeDriver.Create', { Name: 'warm', Opts: { size: '1G' } });
      const id = 'warm'; const mid = 'w'.repeat(64);
      await plugin.ok('VolumeDriver.Mount', { Name: id, ID: mid });
      await plugin.ok('VolumeDriver.Unmount', { Name: id, ID: mid });
      await plugin.ok('VolumeDriver.Remove', { Name: id });
      const hid = await handCreate('warm-hand');
      const h = await handAttach(hid, join(scratch, 'warm-hand'), true);
      await handDetach(h);
      await handDelete(hid);
    }

    for (let r = 0; r < args.rounds; r++) {
      const order = r % 2 ? ['hand', 'ballast'] : ['ballast', 'hand'];
      for (const side of order) {
        if (side === 'ballast') {
          const name = `bc${r}`; const mid = `${r}`.padStart(64, 'a');
          let t = performance.now();
          await plugin.ok('VolumeDriver.Create', { Name: name, Opts: { size: '1G' } });
          raw.createBallast.push(ms(t));
          // The first mount formats; the measured one attaches a formatted volume.
          await plugin.ok('VolumeDriver.Mount', { Name: name, ID: mid });
          await plugin.ok('VolumeDriver.Unmount', { Name: name, ID: mid });
          t = performance.now();
          await plugin.ok('VolumeDriver.Mount', { Name: name, ID: mid });
          raw.attachBallast.push(ms(t));
          await plugin.ok('VolumeDriver.Unmount', { Name: name, ID: mid });
          await plugin.ok('VolumeDriver.Remove', { Name: name });
          const e = `be${r}`;
          t = performance.now();
          await eng.ok(['volume', 'create', '-d', b.driver, '-o', 'size=1G', e], 150_000);
          await eng.ok(['run', '--rm', '-v', `${e}:/data:nocopy`, 'busybox:local', 'true'], 150_000);
          raw.e2eBallast.push(ms(t));
          // Without nocopy dockerd mounts the volume twice per run (once to copy the image's /data into
          // it at container create, once at start): reported, with no target.
          t = performance.now();
          await eng.ok(['run', '--rm', '-v', `${e}:/data`, 'busybox:local', 'true'], 150_000);
          raw.runCopyBallast.push(ms(t));
          await eng.ok(['volume', 'rm', e], 150_000);
        } else {
          let t = performance.now();
          const id = await handCreate(`hc${r}`);
          raw.createHand.push(ms(t));
          const dir = join(scratch, `hand-${r}`);
          await handDetach(await handAttach(id, dir, true));
          t = performance.now();
          const h = await handAttach(id, dir, false);
          raw.attachHand.push(ms(t));
          await handDetach(h);
          await handDelete(id);
          const dir2 = join(scratch, `hand-e2e-${r}`);
          t = performance.now();
          const id2 = await handCreate(`he${r}`);
          const h2 = await handAttach(id2, dir2, true);
          await eng.ok(['run', '--rm', '-v', `${h2.mnt}:/data`, 'busybox:local', 'true'], 150_000);
          await handDetach(h2, false); // Ballast's last Unmount does not wait for cinder-volume either
          raw.e2eHand.push(ms(t));
          await waitFor(async () => (await api('GET', `/volumes/${id2}`)).json.volume?.status === 'available' || undefined, `volume ${id2} to be available`, 60_000, 50);
          await handDelete(id2);
        }
      }
      log(`round ${r + 1}: create ${raw.createBallast.at(-1)} / ${raw.createHand.at(-1)} ms, attach ${raw.attachBallast.at(-1)} / ${raw.attachHand.at(-1)} ms, end to end ${raw.e2eBallast.at(-1)} / ${raw.e2eHand.at(-1)} ms (ballast / by hand)`);
    }
    const pair = (section: string, key: 'create' | 'attach' | 'e2e', targets: { abs?: number; ratio?: number }) => {
      const bm = median(raw[`${key}Ballast`]); const hm = median(raw[`${key}Hand`]);
      figures.push(figure(section, 'ballast, median', bm, 'ms', targets.abs ? { op: '<', value: targets.abs } : undefined));
      figures.push(figure(section, 'by hand (curl-equivalent calls, rbd-fuse, mount), median', hm, 'ms'));
      figures.push(figure(section, 'ratio ballast / by hand', Math.round((bm / hm) * 100) / 100, 'x', targets.ratio ? { op: '<=', value: targets.ratio } : undefined));
    };
    pair('create to available', 'create', {});
    pair('attach: attachment create to mounted', 'attach', { abs: 2000, ratio: 1.2 });
    pair('docker volume create + docker run -v vol:/data:nocopy', 'e2e', { ratio: 1.2 });
    figures.push(figure('docker run -v vol:/data (no nocopy: dockerd mounts twice)', 'ballast, median (a formatted volume)', median(raw.runCopyBallast), 'ms'));
  } catch (e) {
    errors.push((e as Error).stack ?? String(e));
    log(`FAILED: ${(e as Error).message}`);
  } finally {
    for (const m of handMounts.reverse()) await run(['umount', '-l', m], { timeoutMs: 10_000 });
    if (b) await b.stop().catch(() => undefined);
    if (eng) await eng.stop().catch((e: Error) => errors.push(`dockerd: ${e.message}`));
    if (os) await os.stop().catch((e: Error) => errors.push(`openstack: ${e.message}`));
    if (ceph) await ceph.stop().catch((e: Error) => errors.push(`ceph: ${e.message}`));
    // What the daemon left mounted by design (FUSE clients outlive it) is gone with Ceph; the tree goes.
    const left = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' ')[4]).filter((m) => m?.startsWith(`${scratch}/`)).sort().reverse();
    for (const m of left) await run(['umount', '-l', '--', m], { timeoutMs: 10_000 });
    if (errors.length && process.env.BALLAST_KEEP_LOGS) log(`kept ${scratch} for its logs`); else rmSync(scratch, { recursive: true, force: true });
  }
  writeResult({ benchmark: 'ballast-cinder', title: 'Ballast Cinder benchmark', out: args.out, t0, loadStart, figures, errors, extra: { raw } });
}

main().catch((e) => { process.stderr.write(`bench:cinder: ${(e as Error).stack ?? String(e)}\n`); process.exit(1); });
