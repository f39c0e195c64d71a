/**
 * The Cinder backend's API layer against a fake Keystone + Cinder on loopback (node:http): token reuse
 * and renewal, the catalog, Cinder's errors as sentences, bounds on a server that does not answer,
 * option validation, connection_info decoding, and the attach rules. The real Keystone, Cinder and
 * Ceph are exercised by test/e2e/cinder.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import pino from 'pino';
import { cinderFactory, connectionOf, META } from './index.js';
import { KeystoneSession, authSettings, endpointFromCatalog, serviceMessage } from './api.js';
import { byPath, connectIscsi, disconnectIscsi, iscsiTargetOf } from './iscsi.js';
import type { BackendContext } from '../types.js';
import type { Exec } from '../../host/exec.js';
import type { VolumeRecord } from '../../core/types.js';

const PASSWORD = 's3cret-Pa55';

interface Fake {
  url: string;
  tokens: number;
  calls: string[];
  volumes: Map<string, Record<string, unknown> & { metadata: Record<string, string> }>;
  attachments: Map<string, { id: string; volume_id: string; status: string; connection_info: Record<string, unknown> }>;
  /** Lifetime of issued tokens (ms). */
  life: number;
  /** Next Cinder answers forced: status and body. */
  force: { status: number; body: unknown }[];
  revoke: Set<string>;
  hang: boolean;
  close(): Promise<void>;
}

async function fake(): Promise<Fake> {
  const f: Partial<Fake> = { tokens: 0, calls: [], volumes: new Map(), attachments: new Map(), life: 3_600_000, force: [], revoke: new Set(), hang: false };
  const json = (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) => { res.writeHead(status, { 'Content-Type': 'application/json', ...headers }); res.end(JSON.stringify(body)); };
  const server: Server = createServer(async (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = chunks.length ? JSON.parse(Buffer.concat(chunks).toString()) : undefined;
    const u = new URL(req.url!, 'http://x');
    f.calls!.push(`${req.method} ${u.pathname}`);
    if (u.pathname === '/v3/auth/tokens') {
      const pw = body?.auth?.identity?.password?.user?.password;
      if (pw !== PASSWORD) return json(res, 401, { error: { code: 401, message: 'The request you have made requires authentication.', title: 'Unauthorized' } });
      f.tokens!++;
      const now = Date.now();
      return json(res, 201, { token: { issued_at: new Date(now).toISOString(), expires_at: new Date(now + f.life!).toISOString(), project: { id: 'p1' }, catalog: [
        { type: 'identity', endpoints: [] },
        { type: 'volumev3', endpoints: [{ interface: 'public', region_id: 'Other', url: 'http://wrong.invalid/v3/p1' }, { interface: 'public', region_id: 'RegionOne', url: `${f.url}/cinder/v3/p1` }] },
      ] } }, { 'X-Subject-Token': `tok${f.tokens}` });
    }
    if (f.hang) return; // never answers
    const tok = String(req.headers['x-auth-token'] ?? '');
    if (!/^tok\d+$/.test(tok) || f.revoke!.has(tok)) return json(res, 401, { error: { message: 'invalid token' } });
    const forced = f.force!.shift();
    if (forced) return json(res, forced.status, forced.body);
    const p = u.pathname.replace(/^\/cinder\/v3\/p1/, '');
    let m: RegExpExecArray | null;
    if (req.method === 'POST' && p === '/volumes') {
      const id = randomUUID();
      const v = { id, name: body.volume.name, status: 'creating', size: body.volume.size, multiattach: false, metadata: body.volume.metadata ?? {}, attachments: [] };
      f.volumes!.set(id, v);
      setTimeout(() => { v.status = body.volume.size > 100 ? 'error' : 'available'; }, 150);
      return json(res, 202, { volume: v });
    }
    if (req.method === 'GET' && p === '/volumes/detail') {
      const want = JSON.parse(u.searchParams.get('metadata') ?? '{}') as Record<string, string>;
      return json(res, 200, { volumes: [...f.volumes!.values()].filter((v) => Object.entries(want).every(([k, x]) => v.metadata[k] === x)) });
    }
    if ((m = /^\/volumes\/([^/]+)$/.exec(p))) {
      const v = f.volumes!.get(m[1]);
      if (!v) return json(res, 404, { itemNotFound: { message: `Volume ${m[1]} could not be found.`, code: 404 } });
      if (req.method === 'DELETE') { f.volumes!.delete(m[1]); return json(res, 202, {}); }
      return json(res, 200, { volume: v });
    }
    if ((m = /^\/volumes\/([^/]+)\/metadata(?:\/(.+))?$/.exec(p))) {
      const v = f.volumes!.get(m[1])!;
      if (req.method === 'DELETE') { delete v.metadata[decodeURIComponent(m[2])]; return json(res, 200, {}); }
      Object.assign(v.metadata, body.metadata);
      return json(res, 200, { metadata: v.metadata });
    }
    if (p === '/messages') return json(res, 200, { messages: [{ user_message: 'schedule allocate volume: Could not find any available weighted backend.', created_at: '2026-01-01T00:00:00' }] });
    if (req.method === 'GET' && p === '/attachments') {
      return json(res, 200, { attachments: [...f.attachments!.values()].filter((a) => a.volume_id === u.searchParams.get('volume_id')).map(({ connection_info: _c, ...a }) => a) });
    }
    if (req.method === 'POST' && p === '/attachments') {
      const vid = body.attachment.volume_uuid;
      const v = f.volumes!.get(vid)!;
      if ([...f.attachments!.values()].some((a) => a.volume_id === vid) && !v.multiattach) return json(res, 400, { badRequest: { message: `Invalid volume: Volume ${vid} status must be available or downloading to reserve, but the current status is in-use.`, code: 400 } });
      const a = { id: randomUUID(), volume_id: vid, status: 'attaching', connection_info: { driver_volume_type: 'rbd', name: `rbd/volume-${vid}`, hosts: ['127.0.0.1'], ports: ['3300'], auth_username: 'cinder', secret_uuid: 'x' } };
      f.attachments!.set(a.id, a);
      return json(res, 200, { attachment: a });
    }
    if ((m = /^\/attachments\/([^/]+)(\/action)?$/.exec(p))) {
      const a = f.attachments!.get(m[1]);
      if (!a) return json(res, 404, { itemNotFound: { message: 'not found' } });
      if (req.method === 'DELETE') { f.attachments!.delete(m[1]); return json(res, 200, {}); }
      if (m[2]) { a.status = 'attached'; return json(res, 204, {}); }
      return json(res, 200, { attachment: a });
    }
    return json(res, 404, { itemNotFound: { message: `no route ${p}` } });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  f.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  f.close = () => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); });
  return f as Fake;
}

function setup(f: Fake, extra: Record<string, unknown> = {}) {
  const root = mkdtempSync(join(tmpdir(), 'cinder-unit-'));
  const pwFile = join(root, 'password');
  writeFileSync(pwFile, `${PASSWORD}\n`, { mode: 0o600 });
  const exec: Exec = async (argv) => { throw new Error(`unexpected ${argv.join(' ')}`); };
  const ctx: BackendContext = { root, exec, mounts: { list: async () => [], at: async () => undefined }, log: pino({ level: 'silent' }), node: 'node-a' };
  const config = { authUrl: `${f.url}/v3`, username: 'admin', passwordFile: pwFile, project: 'admin', region: 'RegionOne', requestTimeoutSec: 2, createTimeoutSec: 5, ...extra };
  const b = cinderFactory.create('os', config, ctx);
  return { b, root, config, done: () => rmSync(root, { recursive: true, force: true }) };
}
const rec = (spec: Record<string, unknown>, details: Record<string, unknown> = {}): VolumeRecord => ({ name: 'v1', backend: 'os', spec, mountpoint: '/x/mounts/v1', createdAt: '', state: 'creating', details, revision: 0 });

test('cinder: create rounds the size up to GiB, waits until available, marks the volume with metadata; one token serves every call', async () => {
  const f = await fake();
  const h = setup(f);
  try {
    const spec = h.b.parseOptions({ size: '1536M', type: 'fast' });
    assert.equal(spec.size, 2);
    const t0 = Date.now();
    const details = await h.b.provision(rec(spec));
    assert.ok(Date.now() - t0 >= 140, 'waited for available');
    const v = f.volumes.get(String(details.cinderId))!;
    assert.equal(v.status, 'available');
    assert.equal(v.metadata[META.volume], 'v1');
    assert.equal(v.metadata[META.createdBy], 'ballast');
    assert.equal(JSON.parse(v.metadata[META.spec]).size, 2);
    assert.equal(f.tokens, 1, 'one authentication for all calls');
    // A create that crashed after Cinder made the volume, resumed: no second volume.
    const again = await h.b.provision(rec(spec), { resumed: true });
    assert.equal(again.cinderId, details.cinderId);
    assert.equal(f.volumes.size, 1);
    // Not resumed, with a marked volume there: refused (the store lost it; repair adopts it).
    await assert.rejects(h.b.provision(rec(spec)), /marked as Ballast volume v1 already.*ballast repair/);
  } finally { h.done(); await f.close(); }
});

test('cinder: a volume that goes to error fails the create with Cinder\'s own user message and is deleted', async () => {
  const f = await fake();
  const h = setup(f);
  try {
    await assert.rejects(h.b.provision(rec(h.b.parseOptions({ size: '200G' }))), /went to status error: schedule allocate volume: Could not find any available weighted backend/);
    assert.equal(f.volumes.size, 0, 'the failed volume is not left behind');
  } finally { h.done(); await f.close(); }
});

test('cinder: errors carry Cinder\'s message and the right kind; the password never appears', async () => {
  const f = await fake();
  const h = setup(f);
  try {
    f.force.push({ status: 413, body: { overLimit: { code: 413, message: 'VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed gigabytes quota. Requested 5G, quota is 3G and 0G has been consumed.' } } });
    await assert.rejects(h.b.provision(rec(h.b.parseOptions({ size: '5G' }))), (e: Error & { code?: string }) => {
      assert.equal(e.code, 'ResourceExhausted');
      assert.match(e.message, /creating volume v1 failed.*413.*exceeds allowed gigabytes quota.*quota/);
      assert.ok(!e.message.includes(PASSWORD));
      return true;
    });
    f.force.push({ status: 404, body: { itemNotFound: { message: 'Volume type with name nope could not be found.', code: 404 } } });
    await assert.rejects(h.b.provision(rec(h.b.parseOptions({ size: '1G', type: 'nope' }))), /Volume type with name nope could not be found/);
    // Wrong password: Keystone's 401, a sentence that says what to check, no password.
    writeFileSync(String(h.config.passwordFile), 'wrong');
    const other = setup(f, { passwordFile: h.config.passwordFile });
    await assert.rejects(other.b.provision(rec(other.b.parseOptions({ size: '1G' }))), (e: Error) => /Keystone refused authenticating user admin.*check username, passwordFile/.test(e.message) && !e.message.includes('wrong'));
    other.done();
  } finally { h.done(); await f.close(); }
});

test('cinder: a token is renewed before it expires, and at once when Cinder says 401', async () => {
  const f = await fake();
  const h = setup(f);
  try {
    const s = new KeystoneSession(authSettings('os', h.config), 'os');
    f.life = 4_000; // renewed once a quarter of the lifetime is left
    const a = await s.get();
    assert.equal((await s.get()).token, a.token, 'cached');
    await new Promise((r) => setTimeout(r, 3_100));
    assert.notEqual((await s.get()).token, a.token, 'renewed ahead of expiry');
    f.life = 3_600_000;
    await h.b.provision(rec(h.b.parseOptions({ size: '1G' })));
    const before = f.tokens;
    for (const t of Array.from({ length: before }, (_, i) => `tok${i + 1}`)) f.revoke.add(t);
    const n = await h.b.provision(rec(h.b.parseOptions({ size: '1G' }), {}), { resumed: true });
    assert.ok(n.cinderId);
    assert.equal(f.tokens, before + 1, 'one new token after the 401');
  } finally { h.done(); await f.close(); }
});

test('cinder: a Cinder that does not answer fails within the request timeout; one that is down fails at once', async () => {
  const f = await fake();
  const h = setup(f, { requestTimeoutSec: 1 });
  try {
    await h.b.parseOptions({ size: '1G' });
    await new KeystoneSession(authSettings('os', h.config), 'os').get();
    f.hang = true;
    const t0 = Date.now();
    await assert.rejects(h.b.provision(rec(h.b.parseOptions({ size: '1G' }))), (e: Error & { code?: string }) => e.code === 'Unavailable' && /Cinder at http:\/\/127\.0\.0\.1:\d+ did not answer within 1 s.*is it up and reachable/.test(e.message));
    assert.ok(Date.now() - t0 < 3_000, `bounded: ${Date.now() - t0} ms`);
  } finally { h.done(); await f.close(); }
  const down = setup({ url: 'http://127.0.0.1:9' } as Fake);
  try {
    await assert.rejects(down.b.provision(rec(down.b.parseOptions({ size: '1G' }))), /Keystone at http:\/\/127\.0\.0\.1:9 could not be reached/);
  } finally { down.done(); }
});

test('cinder: attach reuses this node\'s attachment, refuses another node\'s on a volume that is not multiattach, naming it', async () => {
  const f = await fake();
  const h = setup(f);
  try {
    const spec = h.b.parseOptions({ size: '1G' });
    const details = await h.b.provision(rec(spec));
    const vol = { ...rec(spec, details), state: 'ready' as const };
    const a1 = await (h.b as unknown as { attach: (v: VolumeRecord, n: string) => Promise<{ attachmentId: string; connection: Record<string, string> }> }).attach(vol, 'node-a');
    assert.equal(a1.connection.driver, 'rbd');
    assert.equal(a1.connection.image, `volume-${String(details.cinderId)}`);
    assert.equal(a1.connection.monitors, '127.0.0.1:3300');
    assert.equal(a1.connection.formatted, undefined, 'never formatted: the first stage may format it');
    const again = await (h.b as unknown as { attach: (v: VolumeRecord, n: string) => Promise<{ attachmentId: string }> }).attach(vol, 'node-a');
    assert.equal(again.attachmentId, a1.attachmentId, 'idempotent');
    assert.equal(f.attachments.size, 1);
    const label = f.volumes.get(String(details.cinderId))!.metadata[META.attachmentPrefix + a1.attachmentId];
    assert.match(label, /^node-a \d{4}-/);
    await assert.rejects((h.b as unknown as { attach: (v: VolumeRecord, n: string) => Promise<unknown> }).attach(vol, 'node-b'), /attached to node node-a \(attachment [0-9a-f-]+, attaching\) in Cinder, and it is not multiattach/);
    await (h.b as unknown as { detach: (v: VolumeRecord, n: string) => Promise<void> }).detach(vol, 'node-a');
    assert.equal(f.attachments.size, 0);
    assert.equal(f.volumes.get(String(details.cinderId))!.metadata[META.attachmentPrefix + a1.attachmentId], undefined, 'label gone');
  } finally { h.done(); await f.close(); }
});

test('cinder: options are validated before anything is sent', async () => {
  const f = await fake();
  const h = setup(f);
  try {
    assert.throws(() => h.b.parseOptions({}), /needs a size/);
    assert.throws(() => h.b.parseOptions({ size: '1G', color: 'red' }), /color/);
    assert.throws(() => h.b.parseOptions({ existing: '../../etc' }), /not a Cinder volume id/);
    assert.throws(() => h.b.parseOptions({ existing: randomUUID(), size: '1G' }), /adopts a Cinder volume as it is/);
    assert.throws(() => h.b.parseOptions({ snapshot: randomUUID(), source: randomUUID() }), /at most one/);
    assert.throws(() => h.b.parseOptions({ size: '1G', type: 'a b' }), /not a Cinder volume type/);
    assert.throws(() => h.b.parseOptions({ size: '1G', multiattach: 'yes' }), /true or false/);
    assert.throws(() => h.b.parseOptions({ size: '1G', mountopts: 'exec,dev' }), /dev/);
    assert.throws(() => h.b.parseOptions({ size: '100T' }), /64 TiB/);
    assert.deepEqual(h.b.parseOptions({ snapshot: 'AAAAAAAA-0000-0000-0000-000000000000' }).snapshot, 'aaaaaaaa-0000-0000-0000-000000000000');
    assert.equal(f.calls.length, 0);
    assert.throws(() => cinderFactory.create('x', { auth: 'noauth' }, { root: '/tmp', exec: async () => ({ code: 0, stdout: '', stderr: '' }), mounts: { list: async () => [], at: async () => undefined }, log: pino({ level: 'silent' }) }), /projectId/);
  } finally { h.done(); await f.close(); }
});

test('cinder: connection_info is read flattened or nested; unknown drivers and odd values are refused; the catalog is searched by type, interface and region', () => {
  const flat = connectionOf({ driver_volume_type: 'rbd', name: 'volumes/volume-1', hosts: ['10.0.0.1', '10.0.0.2'], ports: ['6789', 6789], auth_username: 'cinder', keyring: 'SECRET' }, 'v');
  assert.deepEqual(flat.rbd, { pool: 'volumes', image: 'volume-1', monitors: '10.0.0.1:6789,10.0.0.2:6789', user: 'cinder' });
  assert.ok(!JSON.stringify(flat).includes('SECRET'));
  assert.equal(connectionOf({ driver_volume_type: 'rbd', data: { name: 'p/i', hosts: [], ports: [] } }, 'v').rbd?.image, 'i');
  assert.throws(() => connectionOf({ driver_volume_type: 'rbd', name: 'p/i;rm -rf' }, 'v'), /not POOL\/IMAGE/);
  assert.throws(() => connectionOf({ driver_volume_type: 'nfs' }, 'v'), /cannot connect \(it connects rbd and iscsi\)/);
  assert.equal(connectionOf({ driver_volume_type: 'rbd', name: 'p/i', hosts: ['a;b', '1.2.3.4'], ports: ['1', 'x'] }, 'v').rbd?.monitors, undefined);
  const cat = [{ type: 'volumev3', endpoints: [{ interface: 'internal', region_id: 'R1', url: 'http://i/' }, { interface: 'public', region_id: 'R2', url: 'http://p2/' }] }];
  assert.equal(endpointFromCatalog(cat, { interface: 'public', region: 'R2' }, 'x'), 'http://p2');
  assert.throws(() => endpointFromCatalog(cat, { interface: 'public', region: 'R1' }, 'x'), /no block-storage \(volumev3\) endpoint with interface public in region R1/);
  assert.equal(serviceMessage('{"badRequest": {"message": "Invalid volume", "code": 400}}'), 'Invalid volume');
  assert.equal(serviceMessage('<html><body>502 Bad Gateway</body></html>'), '502 Bad Gateway');
});

test('cinder iscsi: login, then the by-path device; a session that exists is success; odd targets never reach argv', async () => {
  const t = iscsiTargetOf({ target_portal: '10.0.0.5:3260', target_iqn: 'iqn.2010-10.org.openstack:volume-1', target_lun: 1 }, 'v');
  const calls: string[] = [];
  let appeared = false;
  const exec: Exec = async (argv, o) => {
    calls.push(argv.join(' '));
    const code = argv.includes('--login') ? 15 : 0; // already logged in
    if (!(o.okCodes ?? [0]).includes(code)) throw new Error('bad exit');
    setTimeout(() => { appeared = true; }, 150);
    return { code, stdout: '', stderr: '' };
  };
  const dev = await connectIscsi(exec, t, 'v', { exists: (p) => appeared && p === byPath(t) });
  assert.equal(dev, '/dev/disk/by-path/ip-10.0.0.5:3260-iscsi-iqn.2010-10.org.openstack:volume-1-lun-1');
  assert.deepEqual(calls, [
    'iscsiadm -m node -T iqn.2010-10.org.openstack:volume-1 -p 10.0.0.5:3260 --op new',
    'iscsiadm -m node -T iqn.2010-10.org.openstack:volume-1 -p 10.0.0.5:3260 --login',
  ]);
  await assert.rejects(connectIscsi(exec, t, 'v', { waitMs: 200, exists: () => false }), /did not appear within 0 s; is udev running/);
  await disconnectIscsi(exec, t);
  assert.ok(calls.at(-2)!.endsWith('--logout') && calls.at(-1)!.endsWith('--op delete'));
  assert.throws(() => iscsiTargetOf({ target_portal: '10.0.0.5:3260 -o x', target_iqn: 'iqn.2010-10.org.openstack:v', target_lun: 0 }, 'v'), /not usable/);
  assert.throws(() => iscsiTargetOf({ target_portal: '10.0.0.5:3260', target_iqn: '--op=delete', target_lun: 0 }, 'v'), /not usable/);
});
