import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { VolumeService } from '../../core/service.js';
import type { VolumeInfo, VolumeSummary } from '../../core/types.js';
import { describeError, field, pathOf, readJsonBody, send } from '../http-common.js';
import { InvalidArgumentError } from '../../core/errors.js';

export const PLUGIN_CT = 'application/vnd.docker.plugins.v1.2+json';

type Handler = (body: unknown) => Promise<string | Buffer>;

/**
 * The Docker Volume Plugin protocol (legacy plugins, v1.2): POST /Plugin.Activate and
 * /VolumeDriver.{Create,Remove,Mount,Unmount,Path,Get,List,Capabilities}, and nothing else (the admin
 * API has its own socket). A thin translator: wire types in, one VolumeService call, wire types out;
 * errors become `{"Err": "..."}`. Written on node:http directly: nine fixed routes need no router, and
 * a framework's per-request work (hooks, reply objects, serializers) was most of what Get cost.
 */
export function dockerPluginHandler(service: VolumeService, log: Logger): (req: IncomingMessage, res: ServerResponse) => void {
  const EMPTY = '{}';
  // With many volumes, encoding List dominates its cost. A store that returns the same frozen
  // summaries while nothing changed (SqliteStore) gets its encoded answer reused; after a change only
  // the summaries that are new are encoded (each frozen summary's fragment is kept while it lives).
  let lastList: { src: readonly VolumeSummary[]; body: Buffer } | undefined;
  const fragments = new WeakMap<VolumeSummary, string>();
  const encodeList = (list: readonly VolumeSummary[]): Buffer => {
    if (lastList?.src === list) return lastList.body;
    const frozen = Object.isFrozen(list);
    const parts = new Array<string>(list.length);
    for (let i = 0; i < list.length; i++) {
      const v = list[i];
      let f = frozen ? fragments.get(v) : undefined;
      if (f === undefined) {
        f = JSON.stringify({ Name: v.name, Mountpoint: v.mountpoint, CreatedAt: v.createdAt });
        if (frozen && Object.isFrozen(v)) fragments.set(v, f);
      }
      parts[i] = f;
    }
    const body = Buffer.from(`{"Volumes":[${parts.join(',')}]}`);
    lastList = frozen ? { src: list, body } : undefined;
    return body;
  };

  const routes = new Map<string, Handler>(Object.entries({
    '/Plugin.Activate': async () => '{"Implements":["VolumeDriver"]}',
    '/VolumeDriver.Capabilities': async () => '{"Capabilities":{"Scope":"local"}}',
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
    readJsonBody(req).then(route).then((body) => send(res, 200, PLUGIN_CT, body), (e) => fail(req, res, e));
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

function toDocker(v: VolumeInfo) {
  return { Name: v.name, Mountpoint: v.mountpoint, CreatedAt: v.createdAt, Status: v.status };
}
