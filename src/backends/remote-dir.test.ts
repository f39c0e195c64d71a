import { test } from 'node:test';
import assert from 'node:assert/strict';
import pino from 'pino';
import { nfsFs, nfsFactory } from './nfs/index.js';
import { sshfsFs, sshfsFactory } from './sshfs/index.js';
import { glusterFs, glusterfsFactory } from './glusterfs/index.js';
import { s3Fs } from './s3/index.js';
import { parseSubpath, RemoteDirBackend } from './remote-dir.js';
import { spawn } from 'node:child_process';
import type { BackendContext } from './types.js';

const ctx = { root: '/var/lib/ballast', exec: async () => ({ code: 0, stdout: '', stderr: '' }), mounts: { list: async () => [], at: async () => undefined }, log: pino({ level: 'silent' }) } as BackendContext;

test('nfs: kernel mount argv with allowlisted options from the instance and the volume', () => {
  const fs = nfsFs('n', { server: 'filer1', export: '/exports/docker/', mountOptions: ['nfsvers=4.2', 'hard'] });
  assert.deepEqual(fs.mountArgv('db', '/m/db', { mountopts: ['noatime', 'hard'] }),
    ['mount', '-t', 'nfs', '-o', 'nfsvers=4.2,hard,noatime', 'filer1:/exports/docker/db', '/m/db']);
  assert.deepEqual(fs.mountArgv('', '/m/root', {}), ['mount', '-t', 'nfs', '-o', 'nfsvers=4.2,hard', 'filer1:/exports/docker', '/m/root']);
  assert.deepEqual(nfsFs('n', { server: 'f', export: '/' }).mountArgv('x', '/m', {}), ['mount', '-t', 'nfs', 'f:/x', '/m']);
});

test('nfs: anything off the allowlist is refused, per volume and per instance', () => {
  const b = nfsFactory.create('n', { server: 'filer1', export: '/e' }, ctx);
  assert.deepEqual(b.parseOptions({ mountopts: 'nfsvers=3,soft,timeo=600' }), { mountopts: ['nfsvers=3', 'soft', 'timeo=600'], existing: false });
  for (const bad of ['exec,suid', 'nfsvers=9', 'timeo=1;reboot', 'context=system_u', 'loop', 'rsize=abc', 'hard=1']) {
    assert.throws(() => b.parseOptions({ mountopts: bad }), /is not allowed/, bad);
  }
  assert.throws(() => nfsFs('n', { server: 'f', export: '/e', mountOptions: ['suid'] }), /is not allowed/);
  assert.throws(() => nfsFs('n', { server: 'f', export: '/e', mountOptions: 'hard' }), /must be a list of strings/);
  assert.throws(() => nfsFs('n', { server: 'f,o=x', export: '/e' }), /may not contain commas/);
  assert.throws(() => nfsFs('n', { export: '/e' }), /server is required/);
  assert.throws(() => nfsFs('n', { server: 'f', export: 'rel' }), /absolute path/);
});

test('sshfs: argv names the key file, never a secret; config values cannot add mount options', () => {
  const fs = sshfsFs('s', { host: 'files.example', port: 2222, user: 'backup', path: '/srv/vols', identityFile: '/etc/ballast/id_ed25519' }, '/var/lib/ballast');
  const argv = fs.mountArgv('db', '/m/db', {});
  assert.equal(argv[0], 'sshfs');
  assert.equal(argv[1], 'backup@files.example:/srv/vols/db');
  assert.equal(argv[2], '/m/db');
  const o = argv[4].split(',');
  assert.ok(o.includes('IdentityFile=/etc/ballast/id_ed25519') && o.includes('port=2222') && o.includes('BatchMode=yes') && o.includes('reconnect'));
  assert.ok(o.includes('UserKnownHostsFile=/var/lib/ballast/backends/s/known_hosts') && o.includes('StrictHostKeyChecking=accept-new'));
  assert.equal(fs.mountArgv('', '/m/r', {})[1], 'backup@files.example:/srv/vols');
  assert.throws(() => sshfsFs('s', { host: 'h', path: '/p,allow_root', identityFile: '/k' }, '/r'), /may not contain commas/);
  assert.throws(() => sshfsFs('s', { host: 'h', path: '/p', identityFile: '/k', port: 70000 }, '/r'), /port must be a whole number/);
  assert.throws(() => sshfsFs('s', { host: '-oProxyCommand=x', path: '/p', identityFile: '/k' }, '/r'), /host/);
});

test('glusterfs: subdirectory mount with backup volfile servers', () => {
  const fs = glusterFs('g', { servers: ['g1', 'g2', 'g3'], volume: 'gv0' }, '/r');
  assert.deepEqual(fs.mountArgv('db', '/m/db', {}), ['mount', '-t', 'glusterfs', '-o', 'backup-volfile-servers=g2:g3,log-file=/r/backends/g/logs/db.log,log-level=WARNING', 'g1:/gv0/db', '/m/db']);
  assert.deepEqual(glusterFs('g', { servers: ['g1'], volume: 'gv0' }, '/r').mountArgv('', '/m', {}), ['mount', '-t', 'glusterfs', '-o', 'log-file=/r/backends/g/logs/_share.log,log-level=WARNING', 'g1:/gv0', '/m']);
  assert.equal(fs.mountArgv('team/db', '/m/x', {})[4].split(',')[1], 'log-file=/r/backends/g/logs/team_db.log');
  assert.throws(() => glusterFs('g', { servers: [], volume: 'gv0' }), /non-empty list/);
  assert.throws(() => glusterFs('g', { servers: ['g1'], volume: 'gv0/../x' }), /volume is not valid/);
});

test('s3: bucket and prefix path, credentials only as a file', () => {
  const fs = s3Fs('s', { url: 'http://127.0.0.1:4568', bucket: 'b1', prefix: 'docker/vols', passwdFile: '/etc/ballast/s3.passwd' });
  const argv = fs.mountArgv('db', '/m/db', {});
  assert.deepEqual(argv.slice(0, 3), ['s3fs', 'b1:/docker/vols/db', '/m/db']);
  assert.ok(argv[4].split(',').includes('passwd_file=/etc/ballast/s3.passwd'));
  assert.deepEqual(fs.mountArgv('', '/m/r', {}).slice(0, 2), ['s3fs', 'b1:/docker/vols']);
  assert.deepEqual(s3Fs('s', { url: 'http://h', bucket: 'b1', passwdFile: '/p' }).mountArgv('', '/m', {}).slice(0, 2), ['s3fs', 'b1']);
  assert.throws(() => s3Fs('s', { url: 'http://h', bucket: 'b1', passwdFile: '/p', prefix: '../up' }), /relative path inside the share/);
  assert.throws(() => s3Fs('s', { url: 'ftp://h', bucket: 'b1', passwdFile: '/p' }), /url is not valid/);
});

test('existing= must stay inside the share', () => {
  assert.equal(parseSubpath('team/db/', 'existing'), 'team/db');
  for (const bad of ['../etc', '/abs', 'a/../b', 'a//b', '', '.', 'a b', 'a\u0000b', 'x'.repeat(600)]) {
    assert.throws(() => parseSubpath(bad, 'existing'), /relative path inside the share/, bad);
  }
});

test('nfs: per-volume options, nested existing= paths, label and status name the server, timeout from the config', () => {
  const b = nfsFactory.create('n', { server: 'filer1', export: '/exports/docker', mountTimeoutSec: 12 }, ctx);
  assert.deepEqual(b.parseOptions({ existing: 'team/db/', mountopts: 'ro,noatime' }), { mountopts: ['ro', 'noatime'], dir: 'team/db', existing: true });
  assert.deepEqual(b.parseOptions({}), { mountopts: [], existing: false });
  assert.throws(() => b.parseOptions({ size: '1G' }), /unknown option "size" for backend n; accepted options: backend, existing, mountopts/);
  assert.throws(() => b.parseOptions({ existing: '../up' }), /relative path inside the share/);
  const fs = nfsFs('n', { server: 'filer1', export: '/exports/docker', mountTimeoutSec: 12 });
  assert.equal(fs.mountTimeoutMs, 12_000);
  assert.equal(nfsFs('n', { server: 'filer1', export: '/e' }).mountTimeoutMs, 30_000);
  assert.equal(fs.label, 'nfs backend n (server filer1:/exports/docker)');
  assert.deepEqual(fs.statusFacts, { server: 'filer1', export: '/exports/docker' });
  assert.deepEqual(fs.mountArgv('team/db', '/m/v', { mountopts: ['ro'] }), ['mount', '-t', 'nfs', '-o', 'ro', 'filer1:/exports/docker/team/db', '/m/v']);
  assert.equal(b.status({ name: 'v', backend: 'n', spec: { mountopts: [], dir: 'team/db', existing: true }, mountpoint: '/m/v', createdAt: '', state: 'ready', details: {}, revision: 0 }).dir, 'team/db');
  assert.throws(() => nfsFs('n', { server: 'f', export: '/e', mountTimeoutSec: 0 }), /mountTimeoutSec must be a whole number/);
});

test('sshfs and glusterfs take no per-volume option but existing=', () => {
  const s = sshfsFactory.create('s', { host: 'h', path: '/p', identityFile: '/k' }, ctx);
  const g = glusterfsFactory.create('g', { servers: ['g1'], volume: 'gv0' }, ctx);
  for (const b of [s, g]) {
    assert.deepEqual(b.parseOptions({ existing: 'a/b' }), { dir: 'a/b', existing: true });
    assert.throws(() => b.parseOptions({ size: '1G' }), new RegExp(`unknown option "size" for backend ${b.name}; accepted options: backend, existing$`));
  }
});

test('checkHealth: a mount is dead only when its client process is gone, not while a live client waits for its server', async () => {
  const notConnected = async (argv: readonly string[]) => {
    if (argv[0] === 'stat') throw new Error("stat failed: exit code 1: stat: cannot statx '/x': Transport endpoint is not connected");
    return { code: 0, stdout: '', stderr: '' };
  };
  const b = glusterfsFactory.create('g', { servers: ['g1'], volume: 'gv0' }, { ...ctx, root: '/var/lib/ballast-unit-test', exec: notConnected });
  const name = `v${process.pid}`;
  const mp = b.place(name).mountpoint;
  const vol = { name, backend: 'g', spec: { existing: false }, mountpoint: mp, createdAt: '', state: 'ready' as const, details: {}, revision: 0 };
  const dead = await (b as RemoteDirBackend).checkHealth(vol, mp);
  assert.equal(dead.healthy, false);
  assert.match(dead.reason ?? '', /not connected/);
  // A live process with the mountpoint among its arguments stands for the client (glusterfs, sshfs).
  const client = spawn('sh', ['-c', 'sleep 30; :', 'glusterfs', mp], { stdio: 'ignore' });
  try {
    await new Promise((r) => setTimeout(r, 100));
    const away = await (b as RemoteDirBackend).checkHealth(vol, mp);
    assert.equal(away.healthy, true);
    assert.match(away.reason ?? '', new RegExp(`glusterfs client \\(pid ${client.pid}\\) is running and reconnects by itself`));
  } finally {
    client.kill('SIGKILL');
  }
  const healthy = glusterfsFactory.create('g', { servers: ['g1'], volume: 'gv0' }, ctx) as RemoteDirBackend;
  assert.deepEqual(await healthy.checkHealth(vol, mp), { healthy: true });
});
