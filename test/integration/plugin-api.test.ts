/**
 * The Docker plugin protocol over a real unix socket, with the daemon in-process and the local
 * backend (no root needed). Requests are sent as dockerd sends them: POST, JSON body, no Content-Type.
 */
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import pino from 'pino';
import fc from 'fast-check';
import { loadConfig } from '../../src/config/index.js';
import { startDaemon, type RunningDaemon } from '../../src/daemon/index.js';
import { unixRequest } from '../../src/host/unix-http.js';

const parent = mkdtempSync(join(tmpdir(), 'ballast-it-'));
const root = join(parent, 'root');
const socket = join(parent, 'plug.sock');
let d: RunningDaemon;

const call = async (method: string, body?: unknown, raw?: string | Buffer, headers: Record<string, string> = {}) => {
  const r = await unixRequest(socket, 'POST', `/${method}`, body, { rawBody: raw, headers, timeoutMs: 10_000 });
  return { status: r.status, body: JSON.parse(r.text || '{}') as Record<string, any>, ct: r.text };
};

before(async () => {
  const config = loadConfig({ root, socket, logLevel: 'silent' }, {});
  d = await startDaemon(config, { log: pino({ level: 'silent' }), docker: null });
});
after(async () => {
  await d.stop();
  rmSync(parent, { recursive: true, force: true });
});

describe('protocol', () => {
  test('Activate and Capabilities', async () => {
    assert.deepEqual((await call('Plugin.Activate')).body, { Implements: ['VolumeDriver'] });
    assert.deepEqual((await call('VolumeDriver.Capabilities', {})).body, { Capabilities: { Scope: 'local' } });
  });

  test('lifecycle of a local volume without a Content-Type header', async () => {
    const g0 = await call('VolumeDriver.Get', { Name: 'web' });
    assert.match(g0.body.Err, /volume web does not exist/);
    assert.deepEqual((await call('VolumeDriver.Create', { Name: 'web', Opts: { mode: '0750', uid: '1000' } })).body, {});
    const g = (await call('VolumeDriver.Get', { Name: 'web' })).body.Volume;
    assert.equal(g.Name, 'web');
    assert.equal(g.Mountpoint, join(root, 'backends', 'local', 'volumes', 'web'));
    assert.match(g.CreatedAt, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
    assert.ok(!Number.isNaN(Date.parse(g.CreatedAt)));
    assert.equal(g.Status.backend, 'local');
    assert.equal(g.Status.mounts, 0);
    const m = await call('VolumeDriver.Mount', { Name: 'web', ID: 'c'.repeat(64) });
    assert.equal(m.body.Mountpoint, g.Mountpoint);
    assert.ok(existsSync(m.body.Mountpoint));
    assert.equal((await call('VolumeDriver.Path', { Name: 'web' })).body.Mountpoint, g.Mountpoint);
    assert.equal((await call('VolumeDriver.Get', { Name: 'web' })).body.Volume.Status.mounts, 1);
    const rm1 = await call('VolumeDriver.Remove', { Name: 'web' });
    assert.match(rm1.body.Err, /in use by 1 mount: cccccccccccc/);
    assert.deepEqual((await call('VolumeDriver.Unmount', { Name: 'web', ID: 'c'.repeat(64) })).body, {});
    const list = (await call('VolumeDriver.List', {})).body.Volumes;
    assert.ok(list.some((v: { Name: string }) => v.Name === 'web'));
    assert.deepEqual((await call('VolumeDriver.Remove', { Name: 'web' })).body, {});
    assert.ok(!existsSync(g.Mountpoint));
  });

  test('any Content-Type is read as JSON', async () => {
    for (const ct of ['application/json', 'text/plain', 'application/vnd.docker.plugins.v1.2+json', 'application/x-www-form-urlencoded']) {
      const r = await call('VolumeDriver.Get', undefined, JSON.stringify({ Name: 'nope' }), { 'content-type': ct });
      assert.match(r.body.Err, /volume nope does not exist/, ct);
    }
  });

  test('idempotent Create: same options succeed, different options are a clear error', async () => {
    assert.deepEqual((await call('VolumeDriver.Create', { Name: 'idem', Opts: { mode: '755' } })).body, {});
    assert.deepEqual((await call('VolumeDriver.Create', { Name: 'idem', Opts: { mode: '0755' } })).body, {});
    const r = await call('VolumeDriver.Create', { Name: 'idem', Opts: { mode: '0700' } });
    assert.match(r.body.Err, /volume idem already exists with backend local and options mode=0755; remove it first/);
    await call('VolumeDriver.Remove', { Name: 'idem' });
  });
});

describe('bad input gets a clear Err and changes nothing', () => {
  const cases: [string, string, unknown, RegExp][] = [
    ['empty name', 'VolumeDriver.Create', { Name: '' }, /name is missing/],
    ['missing name', 'VolumeDriver.Create', {}, /name is missing/],
    ['path traversal', 'VolumeDriver.Create', { Name: '../x' }, /not allowed/],
    ['slash', 'VolumeDriver.Create', { Name: 'a/b' }, /not allowed/],
    ['NUL', 'VolumeDriver.Create', { Name: 'a\u0000b' }, /not allowed/],
    ['300 characters', 'VolumeDriver.Create', { Name: 'x'.repeat(300) }, /300 characters long/],
    ['number name', 'VolumeDriver.Create', { Name: 5 }, /name is missing/],
    ['options not a map', 'VolumeDriver.Create', { Name: 'ok1', Opts: 'size=1G' }, /options must be a map/],
    ['options an array', 'VolumeDriver.Create', { Name: 'ok1', Opts: ['a'] }, /options must be a map/],
    ['unknown option', 'VolumeDriver.Create', { Name: 'ok1', Opts: { size: '1G' } }, /unknown option "size" for backend local; accepted options: backend, uid, gid, mode/],
    ['unknown backend', 'VolumeDriver.Create', { Name: 'ok1', Opts: { backend: 'nfs9' } }, /unknown backend "nfs9"; configured backends: local, block/],
    ['shell in mode', 'VolumeDriver.Create', { Name: 'ok1', Opts: { mode: '0755; rm -rf /' } }, /not a octal mode/],
    ['command substitution in uid', 'VolumeDriver.Create', { Name: 'ok1', Opts: { uid: '$(id)' } }, /not a whole number/],
    ['control character in value', 'VolumeDriver.Create', { Name: 'ok1', Opts: { mode: '07\n55' } }, /control characters/],
    ['option name with a slash', 'VolumeDriver.Create', { Name: 'ok1', Opts: { '../x': '1' } }, /option name/],
    ['mount without ID', 'VolumeDriver.Mount', { Name: 'ok1' }, /mount ID is missing/],
    ['mount ID traversal', 'VolumeDriver.Mount', { Name: 'ok1', ID: '../../etc' }, /mount ID is missing or malformed/],
    ['remove traversal', 'VolumeDriver.Remove', { Name: '..' }, /not allowed/],
    ['get traversal', 'VolumeDriver.Get', { Name: '../../etc/passwd' }, /not allowed/],
    ['block size negative', 'VolumeDriver.Create', { Name: 'b1', Opts: { backend: 'block', size: '-1G' } }, /not a size/],
    ['block size zero', 'VolumeDriver.Create', { Name: 'b1', Opts: { backend: 'block', size: '0' } }, /greater than zero/],
    ['block size huge', 'VolumeDriver.Create', { Name: 'b1', Opts: { backend: 'block', size: '900T' } }, /is more than the .* free/],
    ['block size garbage', 'VolumeDriver.Create', { Name: 'b1', Opts: { backend: 'block', size: 'lots' } }, /not a size/],
    ['block mount option injection', 'VolumeDriver.Create', { Name: 'b1', Opts: { backend: 'block', size: '1G', mountopts: 'noatime,suid,dev' } }, /"suid" is not allowed/],
  ];
  for (const [what, method, body, re] of cases) {
    test(what, async () => {
      const r = await call(method, body);
      assert.ok(r.status >= 400 && r.status < 500, `status ${r.status}`);
      assert.match(r.body.Err, re);
    });
  }

  test('an empty body (how dockerd retries a call the plugin died answering) says what happened', async () => {
    for (const method of ['VolumeDriver.Create', 'VolumeDriver.Remove', 'VolumeDriver.Mount', 'VolumeDriver.Unmount']) {
      const r = await call(method, undefined, '');
      assert.equal(r.status, 400, method);
      assert.match(r.body.Err, /volume name is missing: the request body is empty\. dockerd re-sends a request without its body/, method);
    }
  });

  test('malformed JSON, non-object bodies, huge bodies and unknown routes', async () => {
    let r = await call('VolumeDriver.Create', undefined, '{"Name": "x",');
    assert.equal(r.status, 400); assert.match(r.body.Err, /not valid JSON/);
    r = await call('VolumeDriver.Create', undefined, '[1,2]');
    assert.match(r.body.Err, /must be a JSON object/);
    r = await call('VolumeDriver.Create', undefined, 'null');
    assert.match(r.body.Err, /must be a JSON object/);
    r = await call('VolumeDriver.Create', undefined, Buffer.alloc(1024 * 1024 + 10, 'a'));
    assert.equal(r.status, 413); assert.match(r.body.Err, /larger than 1048576 bytes/);
    r = await call('VolumeDriver.Explode', {});
    assert.equal(r.status, 404); assert.match(r.body.Err, /unknown endpoint POST \/VolumeDriver.Explode/);
    const g = await unixRequest(socket, 'GET', '/VolumeDriver.List', undefined, { timeoutMs: 5000 });
    assert.equal(g.status, 404); assert.match(JSON.parse(g.text).Err, /unknown endpoint GET/);
  });

  test('prototype keys in options are refused or inert', async () => {
    const r = await call('VolumeDriver.Create', undefined, '{"Name":"proto1","Opts":{"__proto__":{"backend":"block"},"constructor":"x"}}');
    assert.ok(r.body.Err, 'refused');
    assert.equal(({} as Record<string, unknown>).backend, undefined);
  });

  test('after all of it: the daemon serves, no volume was created, nothing left the root', async () => {
    assert.deepEqual((await call('Plugin.Activate')).body, { Implements: ['VolumeDriver'] });
    const vols = (await call('VolumeDriver.List', {})).body.Volumes.map((v: { Name: string }) => v.Name);
    assert.deepEqual(vols, []);
    assert.deepEqual(readdirSync(parent).sort(), ['plug.sock', 'root']);
    const local = join(root, 'backends', 'local', 'volumes');
    assert.deepEqual(existsSync(local) ? readdirSync(local) : [], []);
    const images = join(root, 'backends', 'block', 'images');
    assert.deepEqual(existsSync(images) ? readdirSync(images) : [], []);
  });
});

describe('fuzz', () => {
  test('10,000 random and hostile requests: no 5xx, no crash, store consistent, nothing outside the root', async () => {
    const name = fc.oneof(
      fc.constantFrom('db', 'fz1', 'fz-2', '../x', 'a/b', '', '.', '..', 'x'.repeat(256), 'ok\u0000', '/etc', 'Z9'),
      fc.string({ maxLength: 40 }), fc.integer(), fc.constant(null), fc.array(fc.string(), { maxLength: 3 }),
    );
    const optVal = fc.oneof(fc.string({ maxLength: 30 }), fc.constantFrom('0755', '1000', '$(reboot)', '`id`', '; rm -rf /', '../../..', '0', '-1', 'x'.repeat(2000)), fc.integer(), fc.boolean(), fc.constant(null));
    const opts = fc.oneof(fc.dictionary(fc.constantFrom('mode', 'uid', 'gid', 'size', 'backend', 'fstype', 'mountopts', '__proto__', 'x'), optVal, { maxKeys: 4 }), fc.string(), fc.constant(null), fc.array(fc.integer(), { maxLength: 2 }));
    const method = fc.constantFrom('Create', 'Remove', 'Mount', 'Unmount', 'Path', 'Get', 'List', 'Capabilities', 'Bogus');
    const body = fc.oneof(
      fc.record({ Name: name, Opts: opts, ID: fc.oneof(fc.string({ unit: fc.constantFrom(...'0123456789abcdef'), minLength: 64, maxLength: 64 }), fc.string({ maxLength: 10 })) }, { requiredKeys: [] }),
      fc.jsonValue({ maxDepth: 3 }),
    );
    const samples = fc.sample(fc.tuple(method, body, fc.boolean()), { numRuns: 10_000, seed: 42 });
    let ok = 0; let refused = 0;
    for (let i = 0; i < samples.length; i += 16) {
      const rs = await Promise.all(samples.slice(i, i + 16).map(async ([m, b, garble]) => {
        const raw = garble ? JSON.stringify(b).slice(0, -1) : JSON.stringify(b ?? null);
        return call(`VolumeDriver.${m}`, undefined, raw);
      }));
      for (const r of rs) {
        assert.ok(r.status < 500, `no server error: ${r.status} ${JSON.stringify(r.body)}`);
        if (r.status === 200 && !r.body.Err) ok++; else { refused++; assert.equal(typeof r.body.Err, 'string'); assert.ok(r.body.Err.length > 0); }
      }
    }
    assert.ok(ok > 0 && refused > 0, `both outcomes seen (ok ${ok}, refused ${refused})`);
    // Store and disk agree; every stored name is valid; nothing was written outside the root.
    const vols = (await call('VolumeDriver.List', {})).body.Volumes as { Name: string; Mountpoint: string }[];
    for (const v of vols) {
      assert.match(v.Name, /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/);
      assert.ok(v.Mountpoint.startsWith(root + '/'));
      assert.ok(existsSync(v.Mountpoint), `${v.Name} has its directory`);
    }
    const local = join(root, 'backends', 'local', 'volumes');
    assert.deepEqual((existsSync(local) ? readdirSync(local) : []).sort(), vols.map((v) => v.Name).sort());
    assert.deepEqual(readdirSync(parent).sort(), ['plug.sock', 'root']);
    assert.deepEqual((await call('Plugin.Activate')).body, { Implements: ['VolumeDriver'] });
  });
});
