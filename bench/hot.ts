/**
 * Quick hot-path probe (not part of `npm run bench`): one daemon, a local and an already-mounted
 * block volume, Mount/Unmount pairs and sequential Gets, keep-alive and new connection alternating.
 * For iterating on the hot path; `npm run bench` gives the figures of record.
 *
 *   node dist/bench/hot.js [pairs] [gets] [volumes]    (DAEMON_NODE_FLAGS='--cpu-prof --cpu-prof-dir=DIR' profiles the daemon)
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { NODE_FLAGS } from '../test/helpers/ballast.js';
import { join } from 'node:path';
import { startBallast } from '../test/helpers/ballast.js';
import { PluginClient } from './lib/plugin-client.js';
import { summarize } from './lib/stats.js';

async function main(): Promise<void> {
  const pairs = Number(process.argv[2] ?? 2000);
  const gets = Number(process.argv[3] ?? 5000);
  const volumes = Number(process.argv[4] ?? 1000);
  const root = mkdtempSync('/var/tmp/ballast-hot-');
  const b = await startBallast({ root, socket: join(root, 'plugin.sock'), extraArgs: ['--log-level', 'info'], wrap: process.env.DAEMON_NODE_FLAGS ? ['bash', '-c', `n=$1; shift; exec "$n" ${process.env.DAEMON_NODE_FLAGS} "$@"`, 'wrap'] : undefined });
  const fresh = new PluginClient(b.socket, 'fresh');
  const keep = new PluginClient(b.socket, 'keepAlive');
  const out: Record<string, unknown> = {};
  try {
    for (let i = 0; i < volumes; i++) await keep.ok('VolumeDriver.Create', { Name: `v${String(i).padStart(5, '0')}`, Opts: null });
    const run = async (name: string) => {
      const ms = { mk: [] as number[], uk: [] as number[], mf: [] as number[], uf: [] as number[] };
      for (let i = 0; i < 200; i++) { await keep.ok('VolumeDriver.Mount', { Name: name, ID: `w${i}` }); await keep.ok('VolumeDriver.Unmount', { Name: name, ID: `w${i}` }); }
      for (let i = 0; i < pairs; i++) {
        const id = `hot-${i.toString(16).padStart(60, '0')}`;
        ms.mk.push((await keep.timed('VolumeDriver.Mount', { Name: name, ID: id })).ms);
        ms.uk.push((await keep.timed('VolumeDriver.Unmount', { Name: name, ID: id })).ms);
        ms.mf.push((await fresh.timed('VolumeDriver.Mount', { Name: name, ID: id })).ms);
        ms.uf.push((await fresh.timed('VolumeDriver.Unmount', { Name: name, ID: id })).ms);
      }
      const s = (x: number[]) => { const r = summarize(x); return `p50 ${r.p50} p99 ${r.p99}`; };
      out[name] = { mountKeep: s(ms.mk), unmountKeep: s(ms.uk), mountFresh: s(ms.mf), unmountFresh: s(ms.uf) };
    };
    await run('v00007');
    if (process.getuid?.() === 0 && !process.env.NO_BLOCK) {
      await keep.ok('VolumeDriver.Create', { Name: 'hot-block', Opts: { backend: 'block', size: '64M' } });
      await keep.ok('VolumeDriver.Mount', { Name: 'hot-block', ID: 'holder' });
      try { await run('hot-block'); } finally {
        await keep.post('VolumeDriver.Unmount', { Name: 'hot-block', ID: 'holder' });
        await keep.post('VolumeDriver.Remove', { Name: 'hot-block' });
      }
    }
    const gk: number[] = []; const gf: number[] = [];
    const rnd = () => `v${String(Math.floor(Math.random() * volumes)).padStart(5, '0')}`;
    for (let i = 0; i < 2000; i++) await (i % 2 ? keep : fresh).timed('VolumeDriver.Get', { Name: rnd() });
    for (let i = 0; i < gets; i++) {
      gf.push((await fresh.timed('VolumeDriver.Get', { Name: rnd() })).ms);
      gk.push((await keep.timed('VolumeDriver.Get', { Name: rnd() })).ms);
    }
    const line = (x: number[]) => { const r = summarize(x); return `p50 ${r.p50} p90 ${r.p90} p99 ${r.p99} max ${r.max}`; };
    out.get = { fresh: line(gf), keep: line(gk) };
    if (gets > 0) {
      // The floor: a bare node:http server answering the same body, the same client, the same pattern.
      const body = (await keep.timed('VolumeDriver.Get', { Name: 'v00007' })).res.body;
      writeFileSync(join(root, 'body.json'), body);
      const sock = join(root, 'bare.sock');
      const child = spawn(process.execPath, [...NODE_FLAGS, new URL('./lib/bare-http-server.js', import.meta.url).pathname, sock, join(root, 'body.json')], { stdio: ['ignore', 'pipe', 'inherit'] });
      await new Promise<void>((r) => child.stdout!.on('data', (c: Buffer) => { if (c.toString().includes('listening')) r(); }));
      const bf = new PluginClient(sock, 'fresh'); const bk = new PluginClient(sock, 'keepAlive');
      const ff: number[] = []; const fk: number[] = [];
      for (let i = 0; i < 2000; i++) await (i % 2 ? bk : bf).timed('VolumeDriver.Get', { Name: rnd() });
      for (let i = 0; i < gets; i++) { ff.push((await bf.timed('VolumeDriver.Get', { Name: rnd() })).ms); fk.push((await bk.timed('VolumeDriver.Get', { Name: rnd() })).ms); }
      out.bareFloor = { fresh: line(ff), keep: line(fk) };
      bf.close(); bk.close();
      child.kill('SIGTERM');
    }
  } finally {
    fresh.close(); keep.close();
    await b.stop();
    if (!process.env.KEEP) rmSync(root, { recursive: true, force: true });
    else out.root = root;
  }
  process.stdout.write(`${JSON.stringify(out, null, 1)}\n`);
}

main().catch((e) => { process.stderr.write(`${(e as Error).stack}\n`); process.exit(1); });
