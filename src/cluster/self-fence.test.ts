/**
 * The self-fence decision with a fake lease view and fake peers, on a fake clock: a node that lost etcd
 * freezes at its deadline (last answered keepalive's send + TTL - margin) unless every live peer answers
 * that it cannot reach etcd either; it fences when a peer reaches etcd or does not answer, or when it has
 * nobody to ask; and it resumes when etcd answers again.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import pino from 'pino';
import { SelfFence } from './self-fence.js';
import type { Membership, Peer } from './membership.js';
import type { PeerAnswer } from '../frontends/peer/server.js';

function setup(peers: Peer[], answers: Record<string, PeerAnswer | undefined>) {
  let now = 0;
  const view = { reachable: true, heldUntilMs: 10_000 };
  const membership = { health: () => view, peers: () => peers } as unknown as Membership;
  const fenced: string[] = [];
  let resumed = 0;
  const sf = new SelfFence({
    node: 'n1', membership, marginMs: 3000, peerTimeoutMs: 1000, log: pino({ level: 'silent' }), now: () => now,
    fence: async (reason) => { fenced.push(reason); return ['db']; },
    resume: async () => { resumed++; return ['db: thawed']; },
    ask: async (url) => answers[url],
  });
  const at = async (t: number) => { now = t; await sf.tick(); await new Promise((r) => setImmediate(r)); await sf.tick(); };
  return { sf, view, fenced, resumed: () => resumed, at };
}

test('cut off alone (a peer reaches etcd): frozen at the deadline, not before; resumed when etcd answers again', async () => {
  const s = setup([{ name: 'n2', url: 'u2' }, { name: 'n3', url: 'u3' }], { u2: { node: 'n2', etcd: true }, u3: undefined });
  s.view.reachable = false; // last answered keepalive was sent at 0: lease certain until 10 s, deadline 7 s
  await s.at(1000);
  assert.equal(s.sf.status().mode, 'etcd-unreachable');
  assert.equal(s.sf.status().deadlineInSec, 6);
  await s.at(6900);
  assert.deepEqual(s.fenced, [], 'not before the deadline');
  await s.at(7000);
  assert.equal(s.fenced.length, 1);
  assert.match(s.fenced[0], /node n2 reaches etcd; node n3 did not answer/);
  assert.deepEqual(s.sf.status().volumes, ['db']);
  assert.equal(s.sf.status().mode, 'fenced');
  await s.at(9000);
  assert.equal(s.fenced.length, 1, 'fenced once');
  s.view.reachable = true;
  await s.at(12_000);
  assert.equal(s.resumed(), 1);
  assert.equal(s.sf.status().mode, 'ok');
});

test('etcd down for everyone (every peer answers it cannot reach etcd): no fence; a peer that reaches etcd later fences', async () => {
  const answers: Record<string, PeerAnswer | undefined> = { u2: { node: 'n2', etcd: false }, u3: { node: 'n3', etcd: false } };
  const s = setup([{ name: 'n2', url: 'u2' }, { name: 'n3', url: 'u3' }], answers);
  s.view.reachable = false;
  await s.at(1000);
  await s.at(7500);
  await s.at(8000);
  assert.deepEqual(s.fenced, []);
  assert.equal(s.sf.status().mode, 'etcd-down-everywhere');
  answers.u3 = { node: 'n3', etcd: true }; // etcd is back for n3 but not for n1: n1 is the odd one out
  await s.at(9600);
  await s.at(9700);
  assert.equal(s.fenced.length, 1);
  assert.match(s.fenced[0], /node n3 reaches etcd/);
});

test('nobody to ask: fenced at the deadline (it cannot tell etcd-down-everywhere from cut off)', async () => {
  const s = setup([], {});
  s.view.reachable = false;
  await s.at(500);
  await s.at(7000);
  assert.equal(s.fenced.length, 1);
  assert.match(s.fenced[0], /no other live node to ask/);
});

test('a node that reaches etcd never fences', async () => {
  const s = setup([], {});
  for (const t of [1000, 7000, 20_000]) { s.view.heldUntilMs = t + 10_000; await s.at(t); }
  assert.deepEqual(s.fenced, []);
  assert.equal(s.sf.status().mode, 'ok');
});
