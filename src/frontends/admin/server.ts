import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { VolumeService } from '../../core/service.js';
import { describeError, field, pathOf, readJsonBody, send } from '../http-common.js';

export interface AdminDeps {
  readonly service: VolumeService;
  readonly log: Logger;
  readonly health: () => Record<string, unknown>;
  readonly doctor: () => Promise<unknown>;
  readonly reconcile: () => unknown;
  readonly repair: () => Promise<unknown>;
  /** The node registry with what each node holds (`ballast node ls`). */
  readonly nodes: () => Promise<unknown>;
  /** `ballast node fence NODE`. */
  readonly fence: (node: string) => Promise<unknown>;
}

const JSON_CT = 'application/json; charset=utf-8';
type Answer = { status: number; body?: unknown };
type Route = (req: IncomingMessage, param: string | undefined) => Promise<Answer>;
const ok = (body: unknown): Answer => ({ status: 200, body });

/**
 * The admin API the `ballast` CLI talks to, under /v1, served on its own socket only (never in
 * /run/docker/plugins, and never on the plugin socket). Errors are `{"error", "code"}`.
 */
export function adminHandler(d: AdminDeps): (req: IncomingMessage, res: ServerResponse) => void {
  const routes = new Map<string, Route>(Object.entries({
    'GET /v1/health': async () => ok(d.health()),
    'GET /v1/doctor': async () => ok(await d.doctor()),
    'GET /v1/reconcile': async () => ok(d.reconcile()),
    'POST /v1/repair': async () => ok(await d.repair()),
    'GET /v1/nodes': async () => ok(await d.nodes()),
    'GET /v1/volumes': async () => ok({ volumes: await d.service.listInfo() }),
    'POST /v1/volumes': async (req) => {
      const body = await readJsonBody(req);
      return { status: 201, body: await d.service.create(field(body, 'name'), field(body, 'options')) };
    },
    'GET /v1/volumes/:name': async (_req, name) => ok(await d.service.get(name)),
    'DELETE /v1/volumes/:name': async (_req, name) => { await d.service.remove(name); return { status: 204 }; },
  } satisfies Record<string, Route>));

  return (req, res) => {
    const path = pathOf(req.url);
    let route = routes.get(`${req.method} ${path}`);
    let param: string | undefined;
    if (!route && req.method === 'POST' && /^\/v1\/nodes\/[^/]+\/fence$/.test(path)) {
      let node: string;
      try { node = decodeURIComponent(path.slice(10, -6)); } catch { node = path.slice(10, -6); }
      route = async () => ok(await d.fence(node));
    }
    if (!route && req.method === 'POST' && /^\/v1\/volumes\/[^/]+\/expand$/.test(path)) {
      let name: string;
      try { name = decodeURIComponent(path.slice(12, -7)); } catch { name = path.slice(12, -7); }
      route = async (r) => ok(await d.service.expand(name, field(await readJsonBody(r), 'size')));
    }
    if (!route && path.startsWith('/v1/volumes/') && path.indexOf('/', 12) < 0 && path.length > 12) {
      route = routes.get(`${req.method} /v1/volumes/:name`);
      try { param = decodeURIComponent(path.slice(12)); } catch { param = path.slice(12); }
    }
    if (!route) {
      req.resume();
      send(res, 404, JSON_CT, JSON.stringify({ error: `unknown endpoint ${req.method} ${String(req.url).slice(0, 200)}`, code: 'NotFound' }));
      return;
    }
    if (!(req.method === 'POST' && (path === '/v1/volumes' || path.endsWith('/expand')))) req.resume(); // only create and expand read a body
    route(req, param).then(
      (a) => {
        if (a.status === 204) { res.writeHead(204); res.end(); return; }
        send(res, a.status, JSON_CT, JSON.stringify(a.body));
      },
      (err) => {
        const { status, message } = describeError(err);
        if (status >= 500) d.log.error({ route: req.url, err: message }, 'admin request failed');
        send(res, status, JSON_CT, JSON.stringify({ error: message, code: (err as { code?: string }).code ?? 'Internal' }));
      },
    );
  };
}
