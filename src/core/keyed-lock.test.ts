import { test } from 'node:test';
import assert from 'node:assert/strict';
import { KeyedLock } from './keyed-lock.js';

const tick = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('operations on one key run one at a time, in order', async () => {
  const lock = new KeyedLock();
  const log: string[] = [];
  let inside = 0; let maxInside = 0;
  const job = (i: number) => lock.run('v', async () => {
    inside++; maxInside = Math.max(maxInside, inside);
    log.push(`start${i}`); await tick(5); log.push(`end${i}`);
    inside--;
    return i;
  });
  const results = await Promise.all([job(1), job(2), job(3)]);
  assert.deepEqual(results, [1, 2, 3]);
  assert.equal(maxInside, 1);
  assert.deepEqual(log, ['start1', 'end1', 'start2', 'end2', 'start3', 'end3']);
  assert.equal(lock.size, 0, 'an idle key leaves no entry');
});

test('different keys run in parallel', async () => {
  const lock = new KeyedLock();
  let inside = 0; let maxInside = 0;
  await Promise.all(['a', 'b', 'c'].map((k) => lock.run(k, async () => {
    inside++; maxInside = Math.max(maxInside, inside); await tick(20); inside--;
  })));
  assert.equal(maxInside, 3);
});

test('a failing operation releases the key', async () => {
  const lock = new KeyedLock();
  await assert.rejects(lock.run('v', async () => { throw new Error('boom'); }), /boom/);
  assert.equal(await lock.run('v', async () => 7), 7);
  assert.equal(lock.isBusy('v'), false);
});

test('idle waits for queued work', async () => {
  const lock = new KeyedLock();
  let done = false;
  void lock.run('v', async () => { await tick(20); done = true; });
  assert.equal(lock.isBusy('v'), true);
  await lock.idle();
  assert.equal(done, true);
});
