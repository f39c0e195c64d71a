import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ListBlocks } from './server.js';
import type { VolumeSummary } from '../../core/types.js';

const summary = (name: string): VolumeSummary => Object.freeze({ name, mountpoint: `/m/${name}`, createdAt: '2026-01-01T00:00:00.000Z' });
const text = (c: { parts: readonly Buffer[]; length: number }) => { const b = Buffer.concat(c.parts); assert.equal(b.length, c.length); return b.toString(); };
const plain = (l: readonly VolumeSummary[]) => JSON.stringify({ Volumes: l.map((v) => ({ Name: v.name, Mountpoint: v.mountpoint, CreatedAt: v.createdAt })) });

test('List blocks encode exactly what JSON.stringify does, across splices', () => {
  fc.assert(fc.property(fc.array(fc.tuple(fc.boolean(), fc.nat(), fc.string({ minLength: 1, maxLength: 12 })), { maxLength: 60 }), (edits) => {
    const enc = new ListBlocks();
    let list: VolumeSummary[] = Array.from({ length: 500 }, (_, i) => summary(`v${String(i).padStart(4, '0')}`));
    assert.equal(text(enc.encode(Object.freeze(list))), plain(list));
    for (const [insert, at, name] of edits) {
      const i = list.length ? at % (list.length + (insert ? 1 : 0)) : 0;
      list = insert || list.length === 0 ? [...list.slice(0, i), summary(name), ...list.slice(i)] : [...list.slice(0, i), ...list.slice(i + 1)];
      assert.equal(text(enc.encode(Object.freeze(list))), plain(list));
    }
  }), { numRuns: 50 });
  assert.equal(text(new ListBlocks().encode([])), '{"Volumes":[]}');
});
