import { test } from 'node:test';
import assert from 'node:assert/strict';
import pino from 'pino';
import { reconcilerChecks, spaceCheck } from './doctor.js';
import { Reconciler } from '../reconciler/index.js';
import { VolumeService } from '../core/service.js';
import { MemoryStore } from '../store/memory.js';
import { BackendRegistry } from '../backends/registry.js';
import { FakeBackend, fakeFactory } from '../../test/fakes/backend.js';
import type { BackendContext } from '../backends/types.js';

function setup() {
  const fake = new FakeBackend();
  const store = new MemoryStore();
  const reg = new BackendRegistry().registerType(fakeFactory(fake)).instantiate({ fake: { type: 'fake' } }, {} as BackendContext);
  const log = pino({ level: 'silent' });
  const svc = new VolumeService({ store, backends: reg, log, node: 'n1', defaultBackend: 'fake' });
  const rec = new Reconciler({
    service: svc, store, backends: reg, mounts: { list: async () => [], at: async () => undefined }, loops: async () => [],
    docker: { volumesInUse: async () => new Set(), listVolumes: async () => undefined }, driver: 'ballast', log, node: 'n1', leakGraceMs: 60_000, intervalMs: 1000,
  });
  return { fake, store, svc, rec };
}

// The error for a damaged volume ends "see ballast doctor": doctor must then name it.
test('doctor names damaged records (and says none when there are none); the pass leaves them alone', async () => {
  const { fake, store, svc, rec } = setup();
  await svc.create('fine', {});
  const clean = reconcilerChecks(await rec.runOnce({ checkDocker: true }), rec.status().counters).find((c) => c.name === 'damaged records');
  assert.deepEqual(clean, { name: 'damaged records', ok: true, detail: 'none' });

  await store.insertVolume({
    name: 'broken', backend: 'fake', spec: {}, mountpoint: '/x/broken', createdAt: '2026-01-01T00:00:00Z', state: 'damaged',
    details: { damage: 'the stored record does not decode (Unexpected token)' },
  });
  fake.calls.length = 0;
  const r = await rec.runOnce({ checkDocker: true, repair: true });
  assert.deepEqual(r.damaged, [{ volume: 'broken', detail: 'the stored record does not decode (Unexpected token)' }]);
  assert.deepEqual(fake.calls, [], 'nothing is done to a damaged volume');
  const c = reconcilerChecks(r, rec.status().counters).find((x) => x.name === 'damaged records');
  assert.ok(c && !c.ok && !c.warn, 'a damaged record fails doctor');
  assert.match(c.detail, /^broken: the stored record does not decode \(Unexpected token\)\. Ballast will not mount, format or delete/);
  await assert.rejects(svc.mount('broken', 'm1'), /damaged.*see ballast doctor/);
});

test('thin volume space: ok with nothing mounted, warn below the warning level, fails when critical and names the frozen volumes', () => {
  assert.deepEqual(spaceCheck([]), { name: 'thin volume space', ok: true, detail: 'no thin volumes mounted' });
  const r = { dir: '/img', totalBytes: 100 * 1048576, freeBytes: 10 * 1048576, warnBytes: 15 * 1048576, criticalBytes: 5 * 1048576, resumeBytes: 7 * 1048576, headroomBytes: 0, volumes: ['a', 'b'], frozen: [] as string[], at: '' };
  const w = spaceCheck([{ ...r, level: 'warning' }]);
  assert.equal(w.ok, true); assert.equal(w.warn, true);
  assert.match(w.detail, /\/img: 10\.0MiB of 100\.0MiB free \(warning; warning below 15\.0MiB, critical below 5\.0MiB\), thin volumes a, b\. Free space/);
  const c = spaceCheck([{ ...r, freeBytes: 4 * 1048576, level: 'critical', frozen: ['a', 'b'] }]);
  assert.equal(c.ok, false);
  assert.match(c.detail, /frozen: a, b \(their writers wait until more than 7\.0MiB is free\)/);
});
