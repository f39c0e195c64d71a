import { test } from 'node:test';
import assert from 'node:assert/strict';
import pino from 'pino';
import { Writable } from 'node:stream';
import { SpaceWatcher, SPACE_DEFAULTS } from './space.js';
import type { Backend, SpaceGate, ThinSpace } from '../backends/types.js';
import type { BackendRegistry } from '../backends/registry.js';
import type { MetadataStore } from '../store/types.js';
import type { VolumeRecord } from '../core/types.js';

const MiB = 1024 ** 2;

function rec(name: string): VolumeRecord {
  return { name, backend: 'block', spec: { size: 100 * MiB, provisioning: 'thin' }, mountpoint: `/m/${name}`, createdAt: '', state: 'ready', details: { image: `/img/${name}.img` }, revision: 1 };
}

function setup(o: { free: number; dirty?: number; mounted?: string[] } ) {
  const calls: string[] = [];
  let gate: SpaceGate | undefined;
  const backend = {
    name: 'block', type: 'block',
    thinImage: (v: VolumeRecord) => ({ image: v.details.image as string, size: 100 * MiB }),
    freeze: async (v: VolumeRecord) => { calls.push(`freeze ${v.name}`); },
    thaw: async (v: VolumeRecord) => { calls.push(`thaw ${v.name}`); },
    setSpaceGate: (g: SpaceGate) => { gate = g; },
  } as unknown as Backend & ThinSpace;
  const backends = { all: () => [backend], has: () => true, get: () => backend } as unknown as BackendRegistry;
  const vols = (o.mounted ?? []).map(rec);
  const store = { listVolumes: async () => vols } as unknown as MetadataStore;
  const lines: { msg: string; op?: string; volume?: string }[] = [];
  const log = pino({ level: 'debug' }, new Writable({ write(c, _e, cb) { lines.push(JSON.parse(String(c))); cb(); } }));
  const fs = { free: o.free, total: 1000 * MiB };
  const mounted = new Set(vols.map((v) => v.mountpoint));
  let t = 0;
  const w = new SpaceWatcher({
    backends, store, log, withLock: (_v, fn) => fn(), settings: { ...SPACE_DEFAULTS, criticalMinMiB: 0, pollMs: 1000 },
    statfs: () => ({ totalBytes: fs.total, freeBytes: fs.free }), allocated: () => 50 * MiB, isMounted: (p) => mounted.has(p),
    dirtyBytes: () => o.dirty ?? 0, now: () => (t += 1000),
  });
  return { w, calls, lines, fs, mounted, gate: () => { assert.ok(gate); return gate; } };
}

test('below the critical level mounted thin volumes are frozen once, one log line each; thawed above critical + margin', async () => {
  const s = setup({ free: 500 * MiB, mounted: ['a', 'b'] });
  await s.w.start(); await s.w.stop();
  await s.w.poll();
  assert.deepEqual(s.calls.sort(), ['thaw a', 'thaw b'], 'a precautionary thaw at start (a crashed daemon may have left them frozen)');
  assert.equal(s.lines.filter((l) => l.op === 'thaw').length, 0, 'not reported as a thaw');
  s.calls.length = 0;
  s.fs.free = 140 * MiB; // below warning (150)
  await s.w.poll();
  assert.deepEqual(s.calls, []);
  assert.equal(s.w.report()[0].level, 'warning');
  assert.match(s.gate().note('a') ?? '', /^warning: /);
  s.fs.free = 45 * MiB; // below critical (50 + headroom)
  await s.w.poll();
  assert.deepEqual(s.calls.sort(), ['freeze a', 'freeze b']);
  assert.equal(s.lines.filter((l) => l.op === 'freeze').length, 2, 'one line per volume');
  assert.ok(s.gate().isFrozen('a'));
  assert.match(s.gate().refuseMount(rec('c'), '/img/c.img') ?? '', /volume c is thin .* below the critical level .* new mounts of thin volumes there wait/);
  await s.w.poll();
  assert.equal(s.calls.length, 2, 'no second freeze');
  s.fs.free = 300 * MiB;
  await s.w.poll();
  // The fall from 500 to 45 MiB set a headroom (rate x 2 polls, capped by the holes: 2 x 50 MiB), so
  // thawing waits until free is above 5 % + headroom + 2 %.
  const r = s.w.report()[0];
  assert.ok(r.headroomBytes > 0 && r.headroomBytes <= 100 * MiB, `headroom ${r.headroomBytes}`);
  s.fs.free = r.resumeBytes + MiB;
  for (let i = 0; i < 5 && s.calls.length < 4; i++) await s.w.poll();
  assert.deepEqual(s.calls.slice(2).sort(), ['thaw a', 'thaw b']);
  assert.equal(s.lines.filter((l) => l.op === 'thaw').length, 2);
  assert.ok(!s.gate().isFrozen('a'));
});

test('hysteresis: between critical and critical + margin a frozen volume stays frozen', async () => {
  const s = setup({ free: 45 * MiB, mounted: ['a'] });
  await s.w.start(); await s.w.stop();
  await s.w.poll();
  assert.deepEqual(s.calls, ['freeze a']);
  s.fs.free = 55 * MiB; // above 5 % (50) but below 5 % + 2 % (70)
  await s.w.poll();
  assert.deepEqual(s.calls, ['freeze a']);
  s.fs.free = 71 * MiB;
  await s.w.poll();
  assert.deepEqual(s.calls, ['freeze a', 'thaw a']);
});

test('data still in memory raises the critical level, capped by the holes of the mounted thin images', async () => {
  const s = setup({ free: 90 * MiB, dirty: 80 * MiB, mounted: ['a'] }); // above 5 % (50 MiB), below 5 % + headroom
  await s.w.start(); await s.w.stop();
  await s.w.poll();
  const r = s.w.report()[0];
  assert.equal(r.headroomBytes, 50 * MiB, 'min(dirty 80, holes 100-50)');
  assert.equal(r.level, 'critical');
  assert.deepEqual(s.calls, ['freeze a']);
});

test('an unmounted volume is dropped and no longer frozen; new mounts allowed when space is fine', async () => {
  const s = setup({ free: 500 * MiB, mounted: ['a'] });
  await s.w.start(); await s.w.stop();
  await s.w.poll();
  assert.equal(s.gate().refuseMount(rec('c'), '/img/c.img'), undefined);
  s.gate().unpublished(rec('a'));
  s.mounted.clear();
  await s.w.poll();
  assert.deepEqual(s.w.report(), []);
});

test('the critical level has a floor in bytes (the first poll interval of a burst): defaults 256 MiB, 200 ms', () => {
  assert.equal(SPACE_DEFAULTS.criticalMinMiB, 256);
  assert.equal(SPACE_DEFAULTS.pollMs, 200);
  const w = (freeMiB: number) => new SpaceWatcher({
    backends: { all: () => [], has: () => false } as unknown as BackendRegistry,
    store: { listVolumes: async () => [] } as unknown as MetadataStore, log: pino({ level: 'silent' }), withLock: (_v, fn) => fn(),
    settings: SPACE_DEFAULTS, statfs: () => ({ totalBytes: 1000 * MiB, freeBytes: freeMiB * MiB }), allocated: () => 0, isMounted: () => true, dirtyBytes: () => 0,
  });
  assert.match(w(200).refuseMount(rec('x'), '/img/x.img') ?? '', /200\.0MiB of 1000\.0MiB free, below the critical level of 256\.0MiB/);
  assert.equal(w(300).refuseMount(rec('x'), '/img/x.img'), undefined);
});
