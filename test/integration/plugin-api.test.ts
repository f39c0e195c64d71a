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
import Database from 'better-sqlite3';
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
      // Bad input is a 4xx; a size the host cannot hold is out of space (507, ResourceExhausted).
      if (what === 'block size huge') assert.equal(r.status, 507);
      else assert.ok(r.status >= 400 && r.status < 500, `status ${r.status}`);
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
  /**
   * A fuzz run biased toward requests that can succeed: most use a small pool of valid names, option
   * sets and mount IDs (so volumes are created, mounted by several IDs, unmounted and removed many
   * times over), mixed with malformed ones (bad names, options, IDs, JSON, methods). A model of the
   * volumes and their references predicts each valid request's outcome; after every refused request
   * what the daemon reports (List, Get's Status.mounts, the admin API's mount IDs) must equal the
   * model, and at the end so must the ledger in SQLite.
   */
  test('10,000 requests, mostly valid, some hostile: outcomes as the model predicts, refusals change nothing, the ledger equals the model', async () => {
    const NAMES = ['fz1', 'fz2', 'fz3', 'fz4'];
    const IDS = ['a'.repeat(64), `c0ffee${'0'.repeat(58)}`, 'ctr-1'];
    // Option sets that mean the same spec within a set and different specs across sets.
    const OPTSETS: Record<string, Record<string, string>[]> = {
      A: [{}, { backend: 'local' }],
      B: [{ mode: '0700' }, { mode: '700' }],
      C: [{ mode: '0750', uid: '1000' }, { uid: '1000', mode: '750', backend: 'local' }],
    };
    const NAME_OK = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;
    const ID_OK = /^[a-zA-Z0-9_.:-]{1,128}$/;
    type Req = { valid: boolean; method: string; body?: unknown; raw?: string; set?: string };

    const pool = fc.constantFrom(...NAMES);
    const id = fc.constantFrom(...IDS);
    const valid: fc.Arbitrary<Req> = fc.oneof(
      { weight: 25, arbitrary: fc.tuple(pool, fc.constantFrom('A', 'B', 'C'), fc.nat(1)).map(([n, set, i]): Req => ({ valid: true, method: 'Create', body: { Name: n, Opts: OPTSETS[set][i] }, set })) },
      { weight: 12, arbitrary: fc.tuple(pool, id).map(([n, i]): Req => ({ valid: true, method: 'Mount', body: { Name: n, ID: i } })) },
      { weight: 38, arbitrary: fc.tuple(pool, id).map(([n, i]): Req => ({ valid: true, method: 'Unmount', body: { Name: n, ID: i } })) },
      { weight: 20, arbitrary: pool.map((n): Req => ({ valid: true, method: 'Remove', body: { Name: n } })) },
      { weight: 5, arbitrary: fc.tuple(pool, fc.constantFrom('Path', 'Get', 'List', 'Capabilities')).map(([n, m]): Req => ({ valid: true, method: m, body: { Name: n } })) },
    );
    const badName = fc.oneof(
      fc.constantFrom('../x', 'a/b', '', '.', '..', 'x'.repeat(256), 'ok\u0000', '/etc', '-x', '.fz1', 'fz1/..', ' fz1'),
      fc.string({ maxLength: 40 }).filter((x) => !NAME_OK.test(x) || x.length > 255), fc.integer(), fc.constant(null), fc.array(fc.string(), { maxLength: 3 }),
    );
    const optVal = fc.oneof(fc.string({ maxLength: 30 }), fc.constantFrom('0755', '1000', '$(reboot)', '`id`', '; rm -rf /', '../../..', '0', '-1', 'x'.repeat(2000)), fc.integer(), fc.boolean(), fc.constant(null));
    const anyOpts = fc.oneof(fc.dictionary(fc.constantFrom('mode', 'uid', 'gid', 'size', 'backend', 'fstype', 'mountopts', 'x'), optVal, { maxKeys: 4 }), fc.string(), fc.array(fc.integer(), { maxLength: 2 }));
    // Options no local volume accepts: an unknown key always, or not a map at all.
    const badOpts = fc.oneof(
      fc.tuple(fc.constantFrom('size', 'fstype', 'mountopts', 'x', '../x', 'MODE'), optVal, fc.dictionary(fc.constantFrom('mode', 'uid', 'gid'), optVal, { maxKeys: 2 }))
        .map(([k, v, rest]) => ({ ...rest, [k]: v })),
      fc.string(), fc.array(fc.integer(), { maxLength: 2 }), fc.integer(),
    );
    const badId = fc.oneof(fc.constantFrom(undefined, '', '../../etc', 'a b', 'x'.repeat(129), 'id\n'), fc.integer(), fc.string({ maxLength: 10 }).filter((x) => !ID_OK.test(x)));
    const mutating = ['Create', 'Remove', 'Mount', 'Unmount'];
    const bad: fc.Arbitrary<Req> = fc.oneof(
      // A bad name, whatever else.
      fc.tuple(fc.constantFrom(...mutating, 'Path', 'Get'), badName, anyOpts, fc.oneof(id, badId)).map(([m, n, o, i]): Req => ({ valid: false, method: m, body: { Name: n, Opts: o, ID: i } })),
      // A pool name with bad options (Create) or a bad mount ID (Mount, Unmount).
      fc.tuple(pool, badOpts).map(([n, o]): Req => ({ valid: false, method: 'Create', body: { Name: n, Opts: o } })),
      fc.tuple(fc.constantFrom('Mount', 'Unmount'), pool, badId).map(([m, n, i]): Req => ({ valid: false, method: m, body: { Name: n, ID: i } })),
      // Cut-off JSON of a request that would be valid, JSON that is not a request, unknown methods.
      fc.tuple(fc.constantFrom(...mutating), pool, id).map(([m, n, i]): Req => ({ valid: false, method: m, raw: JSON.stringify({ Name: n, ID: i }).slice(0, -1) })),
      fc.tuple(fc.constantFrom(...mutating), fc.jsonValue({ maxDepth: 3 }).filter((v) => !(v !== null && typeof v === 'object' && !Array.isArray(v) && 'Name' in v)))
        .map(([m, v]): Req => ({ valid: false, method: m, raw: JSON.stringify(v ?? null) })),
      fc.tuple(fc.constantFrom('Bogus', 'create', 'Mounts', 'Explode'), pool).map(([m, n]): Req => ({ valid: false, method: m, body: { Name: n } })),
    );
    const samples = fc.sample(fc.oneof({ weight: 3, arbitrary: valid }, { weight: 2, arbitrary: bad }), { numRuns: 10_000, seed: 42 });

    // The model: volume -> its option set and its references (mount ID -> count).
    const model = new Map<string, { set: string; refs: Map<string, number> }>();
    const preexisting = new Set(((await call('VolumeDriver.List', {})).body.Volumes as { Name: string }[]).map((v) => v.Name));
    for (const n of NAMES) assert.ok(!preexisting.has(n), `${n} does not exist before the run`);
    const total = (refs: Map<string, number>) => [...refs.values()].reduce((a, b) => a + b, 0);
    const admin = async () => {
      const r = await unixRequest(d.config.adminSocket, 'GET', '/v1/volumes', undefined, { timeoutMs: 10_000 });
      assert.equal(r.status, 200, r.text);
      return new Map(((r.body as { volumes: { name: string; mounts: number; mountIds: string[] }[] }).volumes).map((v) => [v.name, v]));
    };
    /** What the daemon reports equals the model. */
    const checkState = async (after: string) => {
      const [list, adm, ...gets] = await Promise.all([call('VolumeDriver.List', {}), admin(), ...NAMES.map((n) => call('VolumeDriver.Get', { Name: n }))]);
      const names = (list.body.Volumes as { Name: string }[]).map((v) => v.Name).filter((n) => !preexisting.has(n)).sort();
      assert.deepEqual(names, [...model.keys()].sort(), `List after ${after}`);
      NAMES.forEach((n, i) => {
        const m = model.get(n);
        const g = gets[i].body;
        if (!m) { assert.match(String(g.Err), /does not exist/, `Get ${n} after ${after}`); return; }
        assert.equal(g.Volume?.Status?.mounts, total(m.refs), `Get ${n}: Status.mounts after ${after}`);
        assert.deepEqual([...(adm.get(n)?.mountIds ?? [])].sort(), [...m.refs.keys()].sort(), `admin API: mount IDs of ${n} after ${after}`);
        assert.equal(adm.get(n)?.mounts, total(m.refs), `admin API: mounts of ${n} after ${after}`);
      });
    };

    const ok: Record<string, number> = { Create: 0, Mount: 0, Unmount: 0, Remove: 0 };
    let created = 0; let removed = 0; let refused = 0; let refusedValid = 0;
    const t0 = performance.now();
    for (const [i, q] of samples.entries()) {
      const r = await call(`VolumeDriver.${q.method}`, undefined, q.raw ?? JSON.stringify(q.body ?? null));
      const what = `request ${i}: ${q.method} ${(q.raw ?? JSON.stringify(q.body)).slice(0, 120)} -> ${r.status} ${JSON.stringify(r.body).slice(0, 200)}`;
      assert.ok(r.status < 500, `no server error: ${what}`);
      const success = r.status === 200 && !r.body.Err;
      if (!success) { assert.equal(typeof r.body.Err, 'string', what); assert.ok(r.body.Err.length > 0, what); }
      if (!q.valid) {
        if (mutating.includes(q.method)) assert.ok(!success, `a malformed ${q.method} is refused: ${what}`);
      } else {
        const b = q.body as { Name: string; ID?: string };
        const v = model.get(b.Name);
        switch (q.method) {
          case 'Create':
            if (!v) { assert.ok(success, `create of an absent volume succeeds: ${what}`); model.set(b.Name, { set: q.set!, refs: new Map() }); created++; } else if (v.set === q.set) assert.ok(success, `create with the same options is idempotent: ${what}`);
            else assert.match(String(r.body.Err), /already exists with backend local and options/, `create with other options is a conflict: ${what}`);
            break;
          case 'Mount':
            if (!v) assert.match(String(r.body.Err), /does not exist/, what);
            else {
              assert.ok(success, `mount of an existing volume succeeds: ${what}`);
              assert.equal(r.body.Mountpoint, join(root, 'backends', 'local', 'volumes', b.Name), what);
              v.refs.set(b.ID!, (v.refs.get(b.ID!) ?? 0) + 1);
            }
            break;
          case 'Unmount':
            assert.ok(success, `unmount always succeeds: ${what}`);
            if (v && v.refs.has(b.ID!)) { const c = v.refs.get(b.ID!)! - 1; if (c === 0) v.refs.delete(b.ID!); else v.refs.set(b.ID!, c); }
            break;
          case 'Remove':
            if (v && v.refs.size > 0) assert.match(String(r.body.Err), /is in use by/, `remove of a volume in use is refused: ${what}`);
            else { assert.ok(success, `remove of an unused or absent volume succeeds: ${what}`); if (v) removed++; model.delete(b.Name); }
            break;
          default:
            if (q.method === 'Path' || q.method === 'Get') assert.equal(success, v !== undefined, what);
            else assert.ok(success, what);
        }
        if (success && q.method in ok) ok[q.method]++;
        if (!success) refusedValid++;
      }
      if (!success) { refused++; await checkState(what); }
    }
    const ms = performance.now() - t0;
    console.log(`fuzz: ${samples.length} requests in ${(ms / 1000).toFixed(1)} s; succeeded: ${ok.Create} Create (${created} new volumes), ${ok.Mount} Mount, ${ok.Unmount} Unmount, ${ok.Remove} Remove (${removed} of an existing volume); ` +
      `refused: ${refused} (${refusedValid} of them valid requests the model expected refused), each followed by a state check`);
    for (const [m, n] of Object.entries({ ...ok, 'Create of a new volume': created, 'Remove of an existing volume': removed })) assert.ok(n >= 300, `at least 300 successful ${m}s (got ${n})`);

    // The ledger, the volume records and the journal in SQLite equal the model; the disk agrees.
    await checkState('the run');
    const db = new Database(join(root, 'ballast.db'), { readonly: true, fileMustExist: true });
    try {
      const rows = db.prepare('SELECT volume, mount_id AS id, count FROM mounts').all() as { volume: string; id: string; count: number }[];
      const want = [...model.entries()].flatMap(([n, v]) => [...v.refs.entries()].map(([i, c]) => `${n} ${i} x${c}`)).sort();
      assert.deepEqual(rows.filter((x) => !preexisting.has(x.volume)).map((x) => `${x.volume} ${x.id} x${x.count}`).sort(), want, 'the ledger equals the model');
      const recs = (db.prepare('SELECT name FROM volumes').all() as { name: string }[]).map((x) => x.name).filter((n) => !preexisting.has(n)).sort();
      assert.deepEqual(recs, [...model.keys()].sort(), 'the volume records equal the model');
      assert.deepEqual(db.prepare('SELECT * FROM ops').all(), [], 'no operation is left open in the journal');
    } finally { db.close(); }
    const local = join(root, 'backends', 'local', 'volumes');
    assert.deepEqual((existsSync(local) ? readdirSync(local) : []).filter((n) => !preexisting.has(n)).sort(), [...model.keys()].sort(), 'one directory per volume');
    assert.deepEqual(readdirSync(parent).sort(), ['plug.sock', 'root']);
    assert.deepEqual((await call('Plugin.Activate')).body, { Implements: ['VolumeDriver'] });
    // Leave nothing for later tests: drop the references and the volumes.
    for (const [n, v] of model) {
      for (const [i, c] of v.refs) for (let k = 0; k < c; k++) assert.deepEqual((await call('VolumeDriver.Unmount', { Name: n, ID: i })).body, {});
      assert.deepEqual((await call('VolumeDriver.Remove', { Name: n })).body, {});
    }
  });
});
