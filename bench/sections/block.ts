import { existsSync, mkdirSync, mkdtempSync, statSync } from 'node:fs';
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

type FsType = 'ext4' | 'xfs';
type Provisioning = 'thick' | 'thin';

export const BLOCK_DEFAULTS = {
  reps: 21,
  sizes: ['1G', '10G'],
  fstypes: ['ext4', 'xfs'] as FsType[],
  provisioning: ['thick', 'thin'] as Provisioning[],
};
export type BlockOptions = typeof BLOCK_DEFAULTS;

/** The target of every create+mount ratio: Ballast within 1.3x of the same result made by hand. */
const RATIO_TARGET = 1.3;

/**
 * The hand-made baseline, the fastest correct way to the same result with the host tools:
 *   thick: fallocate -l SIZE img    thin: truncate -s SIZE img
 *   mkfs.<fs> (same arguments as Ballast's makeFilesystem) on the image file itself
 *   mkdir mp; mount -t <fs> -o loop img mp   (mount sets up the autoclear loop device)
 * No blkid: the image is new, so it is blank by construction (Ballast skips it for the same reason).
 */
export const BASELINE = {
  thick: ['fallocate -l SIZE IMG', 'mkfs.FS ... IMG', 'mkdir MP', 'mount -t FS -o loop IMG MP'],
  thin: ['truncate -s SIZE IMG', 'mkfs.FS ... IMG', 'mkdir MP', 'mount -t FS -o loop IMG MP'],
  note: 'four steps, three processes; no separate losetup (mount -o loop attaches an autoclear loop device) and no blkid (a new image is blank)',
};

/** Same argv as src/host/blockdev.ts makeFilesystem (label = volume name, 12 chars for xfs). */
function mkfsArgv(fstype: FsType, target: string, label: string): string[] {
  const lbl = label.slice(0, fstype === 'xfs' ? 12 : 16);
  return fstype === 'ext4'
    ? ['mkfs.ext4', '-q', '-E', 'nodiscard,lazy_itable_init=1,lazy_journal_init=1', '-L', lbl, '--', target]
    : ['mkfs.xfs', '-q', '-K', '-L', lbl, '--', target];
}

export async function blockSkipReason(): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return 'needs root (loop devices, mount)';
  for (const t of ['losetup', 'mkfs.ext4', 'mkfs.xfs', 'mount', 'truncate', 'fallocate']) {
    const r = await run(['sh', '-c', `command -v ${t}`], { timeoutMs: 5000 });
    if (r.code !== 0) return `${t} is not installed`;
  }
  const r = await run(['losetup', '-f'], { timeoutMs: 5000 });
  if (r.code !== 0) return `no free loop device (losetup -f: ${r.stderr.trim()})`;
  return undefined;
}

interface Timing { total: number; steps: Record<string, number>; allocated: number }

/** Bytes the image really occupies on disk (st_blocks * 512). */
const allocatedBytes = (path: string): number => statSync(path).blocks * 512;

const SIZE_BYTES: Record<string, number> = { '1G': 2 ** 30, '10G': 10 * 2 ** 30 };
const sizeBytes = (s: string): number => {
  const v = SIZE_BYTES[s];
  if (v === undefined) throw new Error(`bench size ${s} is not one of ${Object.keys(SIZE_BYTES).join(', ')}`);
  return v;
};

/**
 * Section 2: block volumes, create + first mount through the plugin API, thick (the default: the
 * image is fully allocated) and thin (-o provisioning=thin: a sparse image), 1 GiB and 10 GiB, ext4
 * and xfs, each against the same result made by hand (BASELINE). Interleaved (the order flips every
 * repetition) so drift hits both sides; teardown and `sync` are untimed. Every image's allocation
 * is checked after the mount, so a "thick" figure is never measured on a sparse image.
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

  // Thick is the default, so it is asked for by saying nothing; thin is asked for by name.
  const optsFor = (fstype: FsType, size: string, p: Provisioning) => ({ backend: 'block', size, fstype, ...(p === 'thin' ? { provisioning: 'thin' } : {}) });

  const viaBallast = async (fstype: FsType, size: string, p: Provisioning, name: string): Promise<Timing> => {
    const id = randomBytes(32).toString('hex');
    const t0 = performance.now();
    await c.ok('VolumeDriver.Create', { Name: name, Opts: optsFor(fstype, size, p) });
    const t1 = performance.now();
    const m = await c.ok('VolumeDriver.Mount', { Name: name, ID: id });
    const t2 = performance.now();
    // untimed: check the result, then tear down
    if (!mountsUnder(String(m.Mountpoint)).length) throw new Error(`ballast reported ${String(m.Mountpoint)} but nothing is mounted there`);
    const g = await c.ok('VolumeDriver.Get', { Name: name });
    const image = (g.Volume as { Status?: { image?: string } } | undefined)?.Status?.image;
    if (!image) throw new Error(`Get ${name} does not tell the image path: ${JSON.stringify(g).slice(0, 300)}`);
    const allocated = allocatedBytes(image);
    await c.ok('VolumeDriver.Unmount', { Name: name, ID: id });
    await c.ok('VolumeDriver.Remove', { Name: name });
    await ex(['sync']);
    return { total: t2 - t0, steps: { create: t1 - t0, mount: t2 - t1 }, allocated };
  };

  const viaHand = async (fstype: FsType, size: string, p: Provisioning, name: string): Promise<Timing> => {
    const image = join(direct, `${name}.img`);
    const mp = join(direct, 'mnt', name);
    const steps: Record<string, number> = {};
    const step = async <T>(k: string, fn: () => Promise<T>): Promise<T> => { const t = performance.now(); const r = await fn(); steps[k] = performance.now() - t; return r; };
    const undoImage = ctx.cleanups.add(`image ${image}`, async () => { await rm(image, { force: true }); });
    const t0 = performance.now();
    if (p === 'thick') await step('fallocate', () => ex(['fallocate', '-l', size, '--', image]));
    else await step('truncate', () => ex(['truncate', '-s', size, '--', image]));
    await step('mkfs', () => ex(mkfsArgv(fstype, image, name)));
    const undoMount = ctx.cleanups.add(`mount ${mp}`, async () => { await ex(['umount', '--', mp], [0, 32]); });
    await step('mount', async () => { await mkdir(mp, { recursive: true, mode: 0o755 }); await ex(['mount', '-t', fstype, '-o', 'loop', '--', image, mp]); });
    const total = performance.now() - t0;
    // untimed teardown (the loop device is autoclear: it goes with the umount)
    const allocated = allocatedBytes(image);
    await undoMount();
    await rmdir(mp);
    await undoImage();
    await ex(['sync']);
    return { total, steps, allocated };
  };

  type Cell = { fstype: FsType; size: string; p: Provisioning; key: string };
  const cells: Cell[] = [];
  for (const size of o.sizes) for (const f of o.fstypes) for (const p of o.provisioning) cells.push({ fstype: f, size, p, key: `${size} ${f} ${p}` });

  // Probe each provisioning mode once (untimed, small): a build without the option refuses thin
  // creates with an unknown-option error; that is reported, and the hand-made side still runs.
  const refused: Partial<Record<Provisioning, string>> = {};
  for (const p of o.provisioning) {
    const probe = `probe-${p}`;
    const r = await c.post('VolumeDriver.Create', { Name: probe, Opts: optsFor('ext4', '64M', p) });
    const err = String((JSON.parse(r.body.toString('utf8') || '{}') as { Err?: string }).Err ?? '');
    if (r.status !== 200 || err) { refused[p] = err || `status ${r.status}`; ctx.log(`  block: ${p} create refused by this build: ${refused[p]}`); continue; }
    await c.ok('VolumeDriver.Remove', { Name: probe });
  }

  const res: Record<string, { ballast: Timing[]; hand: Timing[] }> = {};
  for (const cell of cells) res[cell.key] = { ballast: [], hand: [] };
  const runCell = async (cell: Cell, name: string, order: 'ballast-first' | 'hand-first', record: boolean) => {
    const sides = [
      async () => { if (refused[cell.p]) return; const t = await viaBallast(cell.fstype, cell.size, cell.p, name); if (record) res[cell.key].ballast.push(t); },
      async () => { const t = await viaHand(cell.fstype, cell.size, cell.p, name); if (record) res[cell.key].hand.push(t); },
    ];
    if (order === 'hand-first') sides.reverse();
    for (const s of sides) await s();
  };
  // One untimed warm-up per cell (page cache of the tools, daemon JIT).
  for (const cell of cells) await runCell(cell, `w-${cell.fstype}-${cell.p}-${randomBytes(2).toString('hex')}`, 'ballast-first', false);
  for (let r = 0; r < o.reps; r++) {
    for (const cell of cells) await runCell(cell, `b${r}-${cell.fstype}-${cell.p}-${randomBytes(2).toString('hex')}`, r % 2 ? 'hand-first' : 'ballast-first', true);
    const last = (k: string, side: 'ballast' | 'hand') => res[k][side].at(-1)?.total.toFixed(0) ?? '-';
    ctx.log(`  rep ${r + 1}/${o.reps}: ${cells.map((x) => `${x.key} ${last(x.key, 'ballast')}/${last(x.key, 'hand')}`).join('; ')} ms (ballast/hand)`);
  }
  c.close();
  await stopDaemon();
  if (existsSync(join(root, 'ballast')) && mountsUnder(root).length) throw new Error(`mounts left under ${root}: ${mountsUnder(root).join(', ')}`);

  const figures: Figure[] = [];
  const details: Record<string, unknown> = {
    sizes: o.sizes, reps: o.reps, interleaved: 'order flips every repetition', baseline: BASELINE,
    ballast: 'VolumeDriver.Create {backend: block, size, fstype[, provisioning: thin]} then VolumeDriver.Mount, through the plugin socket (new connection each)',
    untimed: 'allocation check (st_blocks), Unmount+Remove / umount+rm, then sync',
    refused, cells: {},
  };
  for (const cell of cells) {
    const { ballast, hand } = res[cell.key];
    const bytes = sizeBytes(cell.size);
    const handMs = hand.map((t) => t.total);
    const fraction = (ts: Timing[]) => (ts.length ? round(Math.min(...ts.map((t) => t.allocated)) / bytes, 3) : null);
    const handAlloc = fraction(hand);
    const label = `${cell.fstype} ${cell.size === '1G' ? '1 GiB' : cell.size === '10G' ? '10 GiB' : cell.size} ${cell.p}`;
    figures.push(figure('block', `${label} create+mount median, by hand`, round(median(handMs), 1), 'ms'));
    if (refused[cell.p]) {
      figures.push({ section: 'block', name: `${label} create+mount median, ballast`, value: null, unit: 'ms', pass: null, note: `this build refused the create: ${refused[cell.p]}` });
      figures.push({ section: 'block', name: `${label} ratio ballast/by hand`, value: null, unit: '', target: { op: '<=', value: RATIO_TARGET }, pass: null, note: `not measured: the ${cell.p} create was refused` });
      (details.cells as Record<string, unknown>)[cell.key] = { refused: refused[cell.p], handMs: summarize(handMs), handAllocatedFraction: handAlloc };
      continue;
    }
    const balMs = ballast.map((t) => t.total);
    const ratio = median(balMs) / median(handMs);
    const balAlloc = fraction(ballast);
    // A thick image must be fully allocated, a thin one must not be; otherwise the figure is not what it says.
    const wrongKind = cell.p === 'thick' ? (balAlloc ?? 0) < 0.99 : (balAlloc ?? 1) > 0.5;
    figures.push(figure('block', `${label} create+mount median, ballast`, round(median(balMs), 1), 'ms'));
    const f = figure('block', `${label} ratio ballast/by hand`, round(ratio, 3), '', { op: '<=', value: RATIO_TARGET },
      wrongKind ? `Ballast's image was ${((balAlloc ?? 0) * 100).toFixed(1)}% allocated, so this was not a ${cell.p} create; counted as missed` : undefined);
    if (wrongKind) f.pass = false;
    figures.push(f);
    const stepMedians = (ts: Timing[]) => Object.fromEntries(Object.keys(ts[0].steps).map((k) => [k, round(median(ts.map((t) => t.steps[k])), 1)]));
    (details.cells as Record<string, unknown>)[cell.key] = {
      ballastMs: summarize(balMs), handMs: summarize(handMs), ratio: round(ratio, 3),
      ballastStepMediansMs: stepMedians(ballast), handStepMediansMs: stepMedians(hand),
      allocatedFraction: { ballast: balAlloc, hand: handAlloc },
      samples: { ballast: balMs.map((v) => round(v, 1)), hand: handMs.map((v) => round(v, 1)) },
    };
  }
  // Thick against thin, Ballast's own cost of allocating the image up front (no target).
  for (const size of o.sizes) for (const f of o.fstypes) {
    const thick = res[`${size} ${f} thick`]?.ballast ?? [];
    const thin = res[`${size} ${f} thin`]?.ballast ?? [];
    if (thick.length && thin.length) {
      figures.push(figure('block', `${f} ${size === '1G' ? '1 GiB' : size === '10G' ? '10 GiB' : size} ballast thick/thin create+mount`, round(median(thick.map((t) => t.total)) / median(thin.map((t) => t.total)), 3), ''));
    }
  }
  return { figures, details };
}
