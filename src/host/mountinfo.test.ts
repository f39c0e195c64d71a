import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseMountinfo } from './mountinfo.js';

const SAMPLE = [
  '22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw',
  '120 22 7:0 / /var/lib/ballast/backends/block/mounts/db rw,relatime shared:60 - xfs /dev/loop0 rw,attr2,inode64',
  '121 22 0:50 / /mnt/with\\040space rw - tmpfs tmp rw',
  '122 22 0:51 / /mnt/opt rw master:3 unbindable - fuse.sshfs user@host:/srv\\134x rw,user_id=0',
  'garbage line',
  '',
].join('\n');

test('parses mountinfo lines, optional fields and escapes', () => {
  const m = parseMountinfo(SAMPLE);
  assert.equal(m.length, 4);
  assert.equal(m[1].mountpoint, '/var/lib/ballast/backends/block/mounts/db');
  assert.equal(m[1].fstype, 'xfs');
  assert.equal(m[1].source, '/dev/loop0');
  assert.equal(m[1].majorMinor, '7:0');
  assert.equal(m[2].mountpoint, '/mnt/with space');
  assert.equal(m[3].fstype, 'fuse.sshfs');
  assert.equal(m[3].source, 'user@host:/srv\\x');
  assert.equal(m[3].options, 'rw');
});

test('reads the real table of this process', async () => {
  const { ProcMountTable } = await import('./mountinfo.js');
  const t = new ProcMountTable();
  const root = await t.at('/');
  assert.ok(root, '/ is always mounted');
  assert.equal(await t.at('/definitely/not/a/mountpoint'), undefined);
});
