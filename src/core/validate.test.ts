import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseSize, validateVolumeName, validateMountId, formatSize } from './validate.js';
import { InvalidArgumentError } from './errors.js';

test('volume names follow Docker\'s rule', () => {
  for (const ok of ['db', 'a', 'A1', 'my-vol_2.0', '9lives', 'x'.repeat(255)]) assert.equal(validateVolumeName(ok), ok);
  for (const bad of ['', '../x', 'a/b', '/abs', '.hidden', '-dash', '_under', 'a b', 'a\0b', 'x'.repeat(256), 'é', 'a\nb', undefined, null, 42, {}, ['db']]) {
    assert.throws(() => validateVolumeName(bad), InvalidArgumentError, `should refuse ${JSON.stringify(bad)}`);
  }
});

test('name errors say what is allowed', () => {
  assert.throws(() => validateVolumeName('../x'), /must start with a letter or digit/);
  assert.throws(() => validateVolumeName('x'.repeat(300)), /300 characters long; the limit is 255/);
});

test('mount IDs are short safe tokens', () => {
  assert.equal(validateMountId('a'.repeat(64)), 'a'.repeat(64));
  for (const bad of ['', 'a/b', '../x', 'x'.repeat(129), 5, null]) assert.throws(() => validateMountId(bad), InvalidArgumentError);
});

test('sizes parse with binary units', () => {
  assert.equal(parseSize('1G'), 1024 ** 3);
  assert.equal(parseSize('512M'), 512 * 1024 ** 2);
  assert.equal(parseSize('10GiB'), 10 * 1024 ** 3);
  assert.equal(parseSize('10gb'), 10 * 1024 ** 3);
  assert.equal(parseSize('1.5G'), 1.5 * 1024 ** 3);
  assert.equal(parseSize('4096'), 4096);
  assert.equal(parseSize(' 2T '), 2 * 1024 ** 4);
});

test('impossible sizes are refused', () => {
  for (const bad of ['0', '0G', '-1G', '-5', 'abc', '1X', '1e9', '', 'G', '1G1', '99999999999T', '1 G G', null, {}]) {
    assert.throws(() => parseSize(bad), InvalidArgumentError, `should refuse ${JSON.stringify(bad)}`);
  }
});

test('formatSize prints exact binary units', () => {
  assert.equal(formatSize(1024 ** 3), '1GiB');
  assert.equal(formatSize(1536 * 1024 ** 2), '1536MiB');
  assert.equal(formatSize(1000), '1000B');
});
