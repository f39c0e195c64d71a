/** The daemon as a process: sockets, signals, stale sockets, a second daemon, and the CLI's exit codes. */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { startBallast, BIN } from '../helpers/ballast.js';
import { run } from '../helpers/proc.js';

const parent = mkdtempSync(join(tmpdir(), 'ballast-daemon-'));
after(() => rmSync(parent, { recursive: true, force: true }));

test('serves on a 0600 socket, survives SIGKILL with a stale socket, removes its socket on SIGTERM', async () => {
  const root = join(parent, 'r1');
  const socket = join(parent, 'p1.sock');
  const b = await startBallast({ root, socket });
  assert.equal(statSync(socket).mode & 0o777, 0o600);
  assert.equal(statSync(b.adminSocket).mode & 0o777, 0o600);
  assert.deepEqual((await b.plugin('VolumeDriver.Create', { Name: 'keep' })).body, {});
  await b.kill9();
  assert.ok(existsSync(socket), 'a killed daemon leaves its socket behind');
  await b.restart(); // removes the stale socket and serves again
  assert.equal(((await b.plugin('VolumeDriver.Get', { Name: 'keep' })).body.Volume as { Name: string }).Name, 'keep');
  const code = await b.stop('SIGTERM');
  assert.equal(code, 0);
  assert.ok(!existsSync(socket), 'plugin socket removed on SIGTERM');
  assert.ok(!existsSync(b.adminSocket), 'admin socket removed on SIGTERM');
  assert.ok(!existsSync(join(root, 'ballast.pid')));
});

test('SIGINT stops it too', async () => {
  const b = await startBallast({ root: join(parent, 'r2'), socket: join(parent, 'p2.sock') });
  assert.equal(await b.stop('SIGINT'), 0);
  assert.ok(!existsSync(b.socket));
});

test('a second daemon refuses a socket that is served, and a root that is in use', async () => {
  const b = await startBallast({ root: join(parent, 'r3'), socket: join(parent, 'p3.sock') });
  try {
    const other = await run([process.execPath, BIN, 'daemon', '--root', join(parent, 'r3b'), '--socket', b.socket], { timeoutMs: 20_000 });
    assert.notEqual(other.code, 0);
    assert.match(other.stderr, /another process already serves .*p3.sock/);
    const same = await run([process.execPath, BIN, 'daemon', '--root', b.root, '--socket', join(parent, 'p3c.sock')], { timeoutMs: 20_000 });
    assert.notEqual(same.code, 0);
    assert.match(same.stderr, /another ballast daemon \(pid \d+\) uses this root/);
    assert.deepEqual((await b.plugin('Plugin.Activate')).body, { Implements: ['VolumeDriver'] }, 'the first still serves');
  } finally { await b.stop(); }
});

test('a path that is not a socket is left alone', async () => {
  const file = join(parent, 'notasock.sock');
  writeFileSync(file, 'data');
  const r = await run([process.execPath, BIN, 'daemon', '--root', join(parent, 'r4'), '--socket', file], { timeoutMs: 20_000 });
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /exists and is not a socket/);
  assert.ok(existsSync(file));
});

test('CLI: volume create, ls, inspect, rm and exit codes', async () => {
  const b = await startBallast({ root: join(parent, 'r5'), socket: join(parent, 'p5.sock') });
  try {
    let r = await b.cli(['volume', 'create', 'cli1', '-o', 'mode=0700']);
    assert.equal(r.code, 0, r.stderr); assert.equal(r.stdout.trim(), 'cli1');
    r = await b.cli(['volume', 'ls']);
    assert.match(r.stdout, /^NAME\s+BACKEND\s+TYPE/);
    assert.match(r.stdout, /cli1\s+local\s+local/);
    r = await b.cli(['volume', 'inspect', 'cli1']);
    const info = JSON.parse(r.stdout)[0];
    assert.equal(info.name, 'cli1'); assert.equal(info.spec.mode, 0o700);
    r = await b.cli(['volume', 'inspect', 'nope']);
    assert.equal(r.code, 3); assert.match(r.stderr, /volume nope does not exist/);
    r = await b.cli(['volume', 'create', '../x']);
    assert.equal(r.code, 2); assert.match(r.stderr, /not allowed/);
    r = await b.cli(['volume', 'create', 'cli2', '-o', 'size=1G']);
    assert.equal(r.code, 2); assert.match(r.stderr, /accepted options: backend, uid, gid, mode/);
    r = await b.cli(['volume', 'create', 'cli1', '-o', 'mode=0755']);
    assert.equal(r.code, 4); assert.match(r.stderr, /already exists/);
    r = await b.cli(['volume', 'rm', 'cli1']);
    assert.equal(r.code, 0, r.stderr);
    r = await b.cli(['volume', 'ls', '--json']);
    assert.deepEqual(JSON.parse(r.stdout), []);
  } finally { await b.stop(); }
  const down = await run([process.execPath, BIN, 'volume', 'ls', '--root', join(parent, 'r5')], { timeoutMs: 20_000 });
  assert.equal(down.code, 5);
  assert.match(down.stderr, /cannot reach the ballast daemon/);
});

test('doctor without a daemon reports it and still checks the host', async () => {
  const r = await run([process.execPath, BIN, 'doctor', '--json', '--root', join(parent, 'r6'), '--socket', join(parent, 'none.sock'), '--docker-host', `unix://${join(parent, 'nodocker.sock')}`], { timeoutMs: 30_000 });
  assert.equal(r.code, 1);
  const { checks } = JSON.parse(r.stdout) as { checks: { name: string; ok: boolean; detail: string }[] };
  const byName = Object.fromEntries(checks.map((c) => [c.name, c]));
  assert.equal(byName.daemon.ok, false);
  assert.equal(byName['plugin socket'].ok, false);
  assert.match(byName['dockerd sees plugin'].detail, /no Docker engine reachable/);
  assert.ok('mkfs.ext4' in byName && 'loop devices' in byName && 'FUSE' in byName);
});
