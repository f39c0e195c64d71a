import { existsSync, mkdirSync, mkdtempSync } from 'node:fs';
import { mkdir, rm, rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { startBallast } from '../../test/helpers/ballast.js';
import { run } from '../../test/helpers/proc.js';
import { hostExec } from '../../src/host/exec.js';
import { PluginClient } from '../lib/plugin-client.js';
import { median, round, summarize } from '../lib/stats.js';
import { figure, type Figure } from '../lib/report.js';
import { loopsUnder, mountsUnder, removeTree } from '../lib/cleanup.js';
import type { BenchContext, SectionResult } from '../lib/context.js';

export const BLOCK_DEFAULTS = { reps: 21, size: '1G', fstypes: ['ext4', 'xfs'] as ('ext4' | 'xfs')[] };
export type BlockOptions = typeof BLOCK_DEFAULTS;

/** Same argv as src/host/blockdev.ts makeFilesystem (label = volume name, 12 chars for xfs). */
function mkfsArgv(fstype: 'ext4' | 'xfs', target: string, label: string): string[] {
  const lbl = label.slice(0, fstype === 'xfs' ? 12 : 16);
  return fstype === 'ext4'
    ? ['mkfs.ext4', '-q', '-E', 'nodiscard,lazy_itable_init=1,lazy_journal_init=1', '-L', lbl, '--', target]
    : ['mkfs.xfs', '-q', '-K', '-L', lbl, '--', target];
}

export async function blockSkipReason(): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return 'needs root (loop devices, mount)';
  for (const t of ['losetup', 'blkid', 'mkfs.ext4', 'mkfs.xfs', 'mount', 'truncate']) {
    const r = await run(['sh', '-c', `command -v ${t}`], { timeoutMs: 5000 });
    if (r.code !== 0) return `${t} is not installed`;
  }
  const r = await run(['losetup', '-f'], { timeoutMs: 5000 });
  if (r.code !== 0) return `no free loop device (losetup -f: ${r.stderr.trim()})`;
  return undefined;
}

interface Timing { total: number; steps: Record<string, number> }

/**
 * Section 2: a 1 GiB block volume, create + first mount through the plugin API, against the same
 * steps done directly with the host tools. Interleaved (the order flips every repetition) so drift
 * hits both sides; teardown and `sync` are untimed.
 */
export async function blockSection(ctx: BenchContext, o: BlockOptions = BLOCK_DEFAULTS): Promise<SectionResult> {
  const skip = await blockSkipReason();
  if (skip) return { figures: [], details: {}, skipped: skip };

  const root = mkdtempSync(join(ctx.tmpBase, 'block-'));
  ctx.cleanups.add(`block root ${root}`, async () => {
    for (const m of mountsUnder(root)) await run(['umount', '--', m], { timeoutMs: 30_000 });
    for (const d of await loopsUnder(root)) await run(['losetup', '-d', d], { timeoutMs: 15_000 });
    await removeTree(root);
  });
  const direct = join(root, 'direct');
  mkdirSync(direct);
  const b = await startBallast({ root: join(root, 'ballast'), socket: join(root, 'plugin.sock'), extraArgs: ['--log-level', 'info'] });
  const stopDaemon = ctx.cleanups.add(`block daemon pid ${b.pid()}`, async () => { await b.stop(); });
  const c = new PluginClient(b.socket, 'fresh');
  const ex = (argv: string[], okCodes?: number[]) => hostExec(argv, { timeoutMs: 120_000, okCodes });

  const viaBallast = async (fstype: string, name: string): Promise<Timing> => {
    const id = randomBytes(32).toString('hex');
    const t0 = performance.now();
    await c.ok('VolumeDriver.Create', { Name: name, Opts: { backend: 'block', size: o.size, fstype } });
    const t1 = performance.now();
    const m = await c.ok('VolumeDriver.Mount', { Name: name, ID: id });
    const t2 = performance.now();
    // untimed teardown
    if (!mountsUnder(String(m.Mountpoint)).length) throw new Error(`ballast reported ${String(m.Mountpoint)} but nothing is mounted there`);
    await c.ok('VolumeDriver.Unmount', { Name: name, ID: id });
    await c.ok('VolumeDriver.Remove', { Name: name });
    await ex(['sync']);
    return { total: t2 - t0, steps: { create: t1 - t0, mount: t2 - t1 } };
  };

  const viaTools = async (fstype: 'ext4' | 'xfs', name: string): Promise<Timing> => {
    const image = join(direct, `${name}.img`);
    const mp = join(direct, 'mnt', name);
    const steps: Record<string, number> = {};
    const step = async <T>(k: string, fn: () => Promise<T>): Promise<T> => { const t = performance.now(); const r = await fn(); steps[k] = performance.now() - t; return r; };
    const t0 = performance.now();
    await step('truncate', () => ex(['truncate', '-s', o.size, '--', image]));
    const dev = (await step('losetup', () => ex(['losetup', '-f', '--show', '--', image]))).stdout.trim();
    const undoLoop = ctx.cleanups.add(`loop ${dev}`, async () => { await ex(['losetup', '-d', dev]); });
    const probe = await step('blkid', () => ex(['blkid', '-p', '-o', 'export', '--', dev], [0, 2]));
    if (probe.code !== 2) throw new Error(`fresh loop device ${dev} is not blank: ${probe.stdout}`);
    await step('mkfs', () => ex(mkfsArgv(fstype, dev, name)));
    await step('mount', async () => { await mkdir(mp, { recursive: true, mode: 0o755 }); await ex(['mount', '-t', fstype, '--', dev, mp]); });
    const total = performance.now() - t0;
    // untimed teardown
    await ex(['umount', '--', mp]);
    await undoLoop();
    await rm(image, { force: true });
    await rmdir(mp);
    await ex(['sync']);
    return { total, steps };
  };

  const res: Record<string, { ballast: Timing[]; direct: Timing[] }> = {};
  for (const f of o.fstypes) res[f] = { ballast: [], direct: [] };
  // One untimed warm-up pair per filesystem (page cache of the tools, daemon JIT).
  for (const f of o.fstypes) { await viaBallast(f, `bw-${f}`); await viaTools(f, `dw-${f}`); }
  for (let r = 0; r < o.reps; r++) {
    for (const f of o.fstypes) {
      const name = `b${r}-${f}-${randomBytes(2).toString('hex')}`;
      const pair = [
        async () => { res[f].ballast.push(await viaBallast(f, name)); },
        async () => { res[f].direct.push(await viaTools(f, name)); },
      ];
      if (r % 2 === 1) pair.reverse();
      for (const p of pair) await p();
    }
    ctx.log(`  rep ${r + 1}/${o.reps}: ${o.fstypes.map((f) => `${f} ballast ${res[f].ballast.at(-1)!.total.toFixed(0)} ms / direct ${res[f].direct.at(-1)!.total.toFixed(0)} ms`).join('; ')}`);
  }
  c.close();
  await stopDaemon();
  if (existsSync(join(root, 'ballast')) && mountsUnder(root).length) throw new Error(`mounts left under ${root}: ${mountsUnder(root).join(', ')}`);

  const figures: Figure[] = [];
  const details: Record<string, unknown> = { size: o.size, reps: o.reps, interleaved: 'order flips every repetition', untimed: 'Unmount+Remove / umount+losetup -d+rm, then sync', fstypes: {} };
  for (const f of o.fstypes) {
    const bal = res[f].ballast.map((t) => t.total);
    const dir = res[f].direct.map((t) => t.total);
    const ratio = median(bal) / median(dir);
    figures.push(figure('block', `${f} create+mount median, ballast`, round(median(bal), 1), 'ms'));
    figures.push(figure('block', `${f} create+mount median, direct tools`, round(median(dir), 1), 'ms'));
    figures.push(figure('block', `${f} ratio ballast/direct`, round(ratio, 3), '', { op: '<=', value: 1.3 }));
    const stepMedians = (ts: Timing[]) => Object.fromEntries(Object.keys(ts[0].steps).map((k) => [k, round(median(ts.map((t) => t.steps[k])), 1)]));
    (details.fstypes as Record<string, unknown>)[f] = {
      ballastMs: summarize(bal), directMs: summarize(dir), ratio: round(ratio, 3),
      ballastStepMediansMs: stepMedians(res[f].ballast), directStepMediansMs: stepMedians(res[f].direct),
      samples: { ballast: bal.map((v) => round(v, 1)), direct: dir.map((v) => round(v, 1)) },
    };
  }
  return { figures, details };
}
