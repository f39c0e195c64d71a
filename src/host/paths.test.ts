import { test } from 'node:test';
import assert from 'node:assert/strict';
import { within } from './paths.js';

test('within keeps paths inside the base', () => {
  assert.equal(within('/var/lib/ballast', 'mounts', 'db'), '/var/lib/ballast/mounts/db');
  assert.throws(() => within('/var/lib/ballast', '..', 'etc'), /outside/);
  assert.throws(() => within('/var/lib/ballast', 'a/../../x'), /outside/);
  assert.throws(() => within('/var/lib/ballast', '/etc/passwd'), /outside/);
  assert.throws(() => within('/var/lib/ballast', '../ballast2/x'), /outside/);
});
