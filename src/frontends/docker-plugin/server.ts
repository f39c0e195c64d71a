import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { VolumeService } from '../../core/service.js';
import type { VolumeInfo, VolumeSummary } from '../../core/types.js';
import { describeError, field, pathOf, readJsonBody, send } from '../http-common.js';
import { InvalidArgumentError } from '../../core/errors.js';

export const PLUGIN_CT = 'application/vnd.docker.plugins.v1.2+json';

/** An answer in pieces, written with one writev (a List of many volumes is never copied into one buffer). */
interface Chunks { readonly parts: readonly Buffer[]; readonly length: number }
type Handler = (body: unknown) => Promise<string | Buffer | Chunks>;

/**
 * The Docker Volume Plugin protocol (legacy plugins, v1.2): POST /Plugin.Activate and
 * /VolumeDriver.{Create,Remove,Mount,Unmount,Path,Get,List,Capabilities}, and nothing else (the admin
 * API has its own socket). A thin translator: wire types in, one VolumeService call, wire types out;
 * errors become `{"Err": "..."}`. Written on node:http directly: nine fixed routes need no router, and
 * a framework's per-request work (hooks, reply objects, serializers) was most of what Get cost.
 */
export function dockerPluginHandler(service: VolumeService, log: Logger): (req: IncomingMessage, res: ServerResponse) => void {
  const EMPTY = '{}';
  const CAPABILITIES = JSON.stringify({ Capabilities: { Scope: service.scope } });
  // With many volumes, encoding List dominates its cost. A store that returns the same frozen
  // summaries while nothing changed (SqliteStore) gets its encoded answer reused; after a change (the
  // store splices its frozen list) only the block of the answer around the change is encoded again.
  let lastList: { src: readonly VolumeSummary[]; body: Chunks | Buffer } | undefined;
  const encodeList = (list: readonly VolumeSummary[]): Chunks | Buffer => {
    if (lastList?.src === list) return lastList.body;
    const body = Object.isFrozen(list) ? blocks.encode(list) : Buffer.from(`{"Volumes":[${list.map(fragment).join(',')}]}`);
    lastList = Object.isFrozen(list) ? { src: list, body } : undefined;
    return body;
  };
  const blocks = new ListBlocks();

  const routes = new Map<string, Handler>(Object.entries({
    '/Plugin.Activate': async () => '{"Implements":["VolumeDriver"]}',
    '/VolumeDriver.Capabilities': async () => CAPABILITIES,
    '/VolumeDriver.Create': async (b) => { await service.create(field(notEmpty(b), 'Name'), field(b, 'Opts')); return EMPTY; },
    '/VolumeDriver.Remove': async (b) => { await service.remove(field(notEmpty(b), 'Name')); return EMPTY; },
    '/VolumeDriver.Mount': async (b) => JSON.stringify({ Mountpoint: await service.mount(field(notEmpty(b), 'Name'), field(b, 'ID')) }),
    '/VolumeDriver.Unmount': async (b) => { await service.unmount(field(notEmpty(b), 'Name'), field(b, 'ID')); return EMPTY; },
    '/VolumeDriver.Path': async (b) => JSON.stringify({ Mountpoint: await service.path(field(b, 'Name')) }),
    '/VolumeDriver.Get': async (b) => JSON.stringify({ Volume: toDocker(await service.get(field(b, 'Name'))) }),
    '/VolumeDriver.List': async () => encodeList(await service.list()),
  } satisfies Record<string, Handler>));

  const fail = (req: IncomingMessage, res: ServerResponse, err: unknown) => {
    const { status, message } = describeError(err);
    if (status >= 500) log.error({ route: req.url, err: message }, 'plugin request failed');
    send(res, status, PLUGIN_CT, JSON.stringify({ Err: message }));
  };

  return (req, res) => {
    const route = req.method === 'POST' ? routes.get(pathOf(req.url)) : undefined;
    if (route === undefined) {
      req.resume();
      send(res, 404, PLUGIN_CT, JSON.stringify({ Err: `unknown endpoint ${req.method} ${String(req.url).slice(0, 200)}; this is a Docker volume plugin (VolumeDriver.*)` }));
      return;
    }
    readJsonBody(req).then(route).then((body) => {
      if (typeof body === 'string' || Buffer.isBuffer(body)) { send(res, 200, PLUGIN_CT, body); return; }
      res.writeHead(200, { 'content-type': PLUGIN_CT, 'content-length': body.length });
      res.cork();
      for (const p of body.parts) res.write(p);
      res.uncork();
      res.end();
    }, (e) => fail(req, res, e));
  };
}

/**
 * dockerd retries a plugin call whose connection failed (the plugin restarted while answering it)
 * with the request body it already sent, now drained: the retry arrives empty. Say so, instead of
 * only "name is missing": Ballast finished or undid the interrupted operation when it started again.
 */
function notEmpty(body: unknown): unknown {
  if (body === undefined || body === null || (typeof body === 'object' && Object.keys(body).length === 0)) {
    throw new InvalidArgumentError('volume name is missing: the request body is empty. dockerd re-sends a request without its body when the plugin restarted while answering it; Ballast finished or undid the interrupted operation when it started again, so run the docker command again');
  }
  return body;
}

function fragment(v: VolumeSummary): string {
  return JSON.stringify({ Name: v.name, Mountpoint: v.mountpoint, CreatedAt: v.createdAt });
}

const OPEN = Buffer.from('{"Volumes":['), CLOSE = Buffer.from(']}'), COMMA = Buffer.from(',');

/**
 * The encoded List answer kept in blocks of consecutive summaries (about 64 each). A block ends after
 * a summary whose name hashes to 0 mod 64, so the boundaries depend on the names alone: inserting or
 * removing one volume changes the one block it falls in, and every other block is reused as it is
 * (found by its first summary, checked item by item by identity). The summaries must be frozen (they
 * never change while they live); the cache holds them weakly.
 */
export class ListBlocks {
  private readonly byFirst = new WeakMap<VolumeSummary, { items: readonly VolumeSummary[]; buf: Buffer }>();

  encode(list: readonly VolumeSummary[]): Chunks {
    const parts: Buffer[] = [OPEN];
    let i = 0;
    while (i < list.length) {
      if (i > 0) parts.push(COMMA);
      const c = this.byFirst.get(list[i]);
      if (c && sameRun(list, i, c.items)) { parts.push(c.buf); i += c.items.length; continue; }
      let j = i;
      while (j < list.length - 1 && !endsBlock(list[j].name)) j++;
      const items = list.slice(i, j + 1);
      const buf = Buffer.from(items.map(fragment).join(','));
      this.byFirst.set(list[i], { items, buf });
      parts.push(buf);
      i = j + 1;
    }
    parts.push(CLOSE);
    let length = 0;
    for (const p of parts) length += p.length;
    return { parts, length };
  }
}

function sameRun(list: readonly VolumeSummary[], at: number, items: readonly VolumeSummary[]): boolean {
  if (items.length > list.length - at) return false;
  for (let k = 0; k < items.length; k++) if (list[at + k] !== items[k]) return false;
  return true;
}

/** FNV-1a of the name, low 6 bits zero: about one name in 64 ends a block. */
function endsBlock(name: string): boolean {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) { h ^= name.charCodeAt(i); h = Math.imul(h, 0x01000193); }
  return (h & 63) === 0;
}

function toDocker(v: VolumeInfo) {
  return { Name: v.name, Mountpoint: v.mountpoint, CreatedAt: v.createdAt, Status: v.status };
}
