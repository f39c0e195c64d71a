/**
 * Model-based concurrency test against a real daemon, real loop devices and mounts (root): many
 * clients send random Create/Mount/Unmount/Remove calls at once; a reference model follows the
 * answers. Afterwards the ledger, the host's mount table and loop devices, and the model agree.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { startBallast, type BallastProc } from '../helpers/ballast.js';
import { run } from '../helpers/proc.js';
import { teardownSuite } from '../helpers/leftovers.js';

const skip = process.getuid?.() !== 0 ? 'needs root (loop devices and mounts)' : undefined;
let dir = '';
let b: BallastProc;

const VOLUMES = [
  { name: 'ml0', opts: { backend: 'local' } },
  { name: 'ml1', opts: { backend: 'local', mode: '0700' } },
  { name: 'mb0', opts: { backend: 'block', size: '16M' } },
  { name: 'mb1', opts: { backend: 'block', size: '16M', mountopts: 'noatime' } },
];
const CLIENTS = 12;
const OPS_PER_CLIENT = 50;
const SEED = Number(process.env.BALLAST_MODEL_SEED ?? 20261121);

type Cmd = { kind: 'create' | 'remove' | 'mount' | 'unmount'; vol: number; pick: number };

before(async () => {
  if (skip) return;
  dir = mkdtempSync('/var/tmp/ballast-model-');
  b = await startBallast({ root: join(dir, 'root'), socket: join(dir, 'p.sock'), extraArgs: ['--docker-host', `unix://${join(dir, 'no-docker.sock')}`] });
});
after(async () => {
  if (skip) return;
  await teardownSuite({ suite: 'model e2e', roots: [dir], daemons: [b] });
});

function mountsUnder(prefix: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' ')[4]).filter((m) => m?.startsWith(prefix + '/'));
}
async function loopsUnder(prefix: string): Promise<string[]> {
  const r = await run(['losetup', '-J', '-l', '-O', 'NAME,BACK-FILE'], { timeoutMs: 10_000 });
  if (!r.stdout.trim()) return [];
  return (JSON.parse(r.stdout).loopdevices as { name: string; 'back-file': string }[]).filter((l) => l['back-file']?.startsWith(prefix + '/')).map((l) => l.name);
}

test(`${CLIENTS} clients x ${OPS_PER_CLIENT} random concurrent calls agree with the model (seed ${SEED})`, { skip, timeout: 240_000 }, async (t) => {
  const cmd = fc.record({ kind: fc.constantFrom('create', 'remove', 'mount', 'mount', 'unmount', 'unmount'), vol: fc.nat(VOLUMES.length - 1), pick: fc.nat(1000) }) as fc.Arbitrary<Cmd>;
  const plans = fc.sample(fc.array(cmd, { minLength: OPS_PER_CLIENT, maxLength: OPS_PER_CLIENT }), { numRuns: CLIENTS, seed: SEED });

  // The model: live mount IDs per volume (each successful Mount uses a fresh ID; Unmount only follows
  // a Mount whose answer was received, so per ID the order is known).
  const refs = VOLUMES.map(() => new Set<string>());
  const outcomes: Record<string, number> = {};
  const unexpected: string[] = [];
  const note = (k: string) => { outcomes[k] = (outcomes[k] ?? 0) + 1; };

  await Promise.all(plans.map(async (plan, client) => {
    const mine: { id: string; vol: number }[] = [];
    for (const c of plan) {
      const v = VOLUMES[c.vol];
      let r: { status: number; body: Record<string, unknown> };
      if (c.kind === 'create') {
        r = await b.plugin('VolumeDriver.Create', { Name: v.name, Opts: v.opts });
      } else if (c.kind === 'remove') {
        r = await b.plugin('VolumeDriver.Remove', { Name: v.name });
        if (r.status === 200) assert.equal(refs[c.vol].size, 0, `Remove of ${v.name} succeeded while the model holds ${[...refs[c.vol]]}`);
      } else if (c.kind === 'mount') {
        const id = `c${client}-${randomBytes(6).toString('hex')}`;
        r = await b.plugin('VolumeDriver.Mount', { Name: v.name, ID: id });
        if (r.status === 200) { refs[c.vol].add(id); mine.push({ id, vol: c.vol }); }
      } else {
        if (mine.length > 0) {
          const [m] = mine.splice(c.pick % mine.length, 1);
          r = await b.plugin('VolumeDriver.Unmount', { Name: VOLUMES[m.vol].name, ID: m.id });
          if (r.status === 200) refs[m.vol].delete(m.id); else unexpected.push(`unmount ${m.id}: ${r.status} ${JSON.stringify(r.body)}`);
        } else {
          r = await b.plugin('VolumeDriver.Unmount', { Name: v.name, ID: `unknown-${client}` });
          if (r.status !== 200) unexpected.push(`unmount of an unknown ID: ${r.status} ${JSON.stringify(r.body)}`);
        }
      }
      const err = typeof r.body.Err === 'string' ? r.body.Err : '';
      note(`${c.kind}:${r.status}`);
      // Allowed refusals: not found, in use, mid-operation. Never an internal error.
      if (r.status >= 500) unexpected.push(`${c.kind} ${v.name}: ${r.status} ${err}`);
      if (r.status === 200 && err) unexpected.push(`${c.kind} ${v.name}: 200 with Err ${err}`);
    }
  }));
  t.diagnostic(`outcomes: ${JSON.stringify(outcomes)}`);
  assert.deepEqual(unexpected, []);
  assert.ok((outcomes['mount:200'] ?? 0) > 10 && (outcomes['create:200'] ?? 0) > 5 && (outcomes['remove:200'] ?? 0) > 0, `a varied run: ${JSON.stringify(outcomes)}`);

  const loops = await loopsUnder(dir);
  const mounted = new Set(mountsUnder(dir));
  for (const [i, v] of VOLUMES.entries()) {
    const g = await b.plugin('VolumeDriver.Get', { Name: v.name });
    const model = [...refs[i]].sort();
    if (g.status !== 200) {
      assert.deepEqual(model, [], `${v.name} is gone, so the model must hold no mounts`);
      continue;
    }
    const vol = g.body.Volume as { Mountpoint: string; Status: { mounts: number } };
    assert.equal(vol.Status.mounts, model.length, `${v.name}: ledger count equals the model`);
    const info = JSON.parse((await b.cli(['volume', 'inspect', v.name])).stdout)[0] as { mountIds: string[] };
    assert.deepEqual([...info.mountIds].sort(), model, `${v.name}: ledger IDs equal the model`);
    if (v.opts.backend === 'block') {
      assert.equal(mounted.has(vol.Mountpoint), model.length > 0, `${v.name}: mounted exactly when referenced`);
    } else {
      assert.ok(existsSync(vol.Mountpoint));
    }
  }
  const blockMounted = VOLUMES.filter((v, i) => v.opts.backend === 'block' && refs[i].size > 0).length;
  assert.equal(loops.length, blockMounted, 'one loop device per mounted block volume, none leaked');

  // Release everything the model holds; then nothing is mounted or attached, and every volume can go.
  for (const [i, v] of VOLUMES.entries()) {
    for (const id of refs[i]) assert.equal((await b.plugin('VolumeDriver.Unmount', { Name: v.name, ID: id })).status, 200);
    const r = await b.plugin('VolumeDriver.Remove', { Name: v.name });
    assert.equal(r.status, 200, JSON.stringify(r.body));
  }
  assert.deepEqual(mountsUnder(dir), []);
  assert.deepEqual(await loopsUnder(dir), []);
});
