import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { VolumeService } from '../../core/service.js';
import { describeError, field, pathOf, readJsonBody, send } from '../http-common.js';

/** What the admin API asks of the backups (src/backups/service.ts). */
export interface BackupApi {
  list(target?: string, volume?: string): Promise<unknown>;
  create(volume: unknown, target: unknown, progress: Progress): Promise<unknown>;
  restore(id: string, target: unknown, into: unknown, options: unknown, progress: Progress): Promise<unknown>;
  remove(id: string, target?: string): Promise<unknown>;
}

export interface AdminDeps {
  readonly service: VolumeService;
  /** Backups (restic); absent until the daemon has built it. */
  readonly backups?: BackupApi;
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
const NDJSON_CT = 'application/x-ndjson; charset=utf-8';
/** Progress of a long operation, sent as one NDJSON line each when the client asked for a stream. */
export type Progress = (p: Readonly<Record<string, unknown>>) => void;
type Answer = { status: number; body?: unknown };
interface Call { readonly req: IncomingMessage; readonly params: readonly string[]; readonly query: URLSearchParams; readonly body: () => Promise<unknown>; readonly progress: Progress }
type Route = { readonly method: string; readonly pattern: RegExp; readonly readsBody: boolean; readonly streams: boolean; readonly fn: (c: Call) => Promise<Answer> };
const ok = (body: unknown): Answer => ({ status: 200, body });

const SEG = '([^/]+)';
function route(method: string, path: string, fn: (c: Call) => Promise<Answer>, o: { body?: boolean; stream?: boolean } = {}): Route {
  return { method, pattern: new RegExp(`^${path.replace(/:[a-z]+/g, SEG)}$`), readsBody: !!o.body, streams: !!o.stream, fn };
}

function decode(seg: string): string { try { return decodeURIComponent(seg); } catch { return seg; } }

function backupsOf(d: AdminDeps): BackupApi {
  if (!d.backups) throw Object.assign(new Error('backups are not available in this daemon'), { statusCode: 404 });
  return d.backups;
}

/**
 * The admin API the `ballast` CLI talks to, under /v1, served on its own socket only (never in
 * /run/docker/plugins, and never on the plugin socket). Errors are `{"error", "code"}`. A long
 * operation (backup, restore) asked with `Accept: application/x-ndjson` answers a stream: a line
 * `{"progress": {...}}` now and then, and a last line `{"result": ...}` or `{"error", "code"}`.
 */
export function adminHandler(d: AdminDeps): (req: IncomingMessage, res: ServerResponse) => void {
  const routes: Route[] = [
    route('GET', '/v1/health', async () => ok(d.health())),
    route('GET', '/v1/doctor', async () => ok(await d.doctor())),
    route('GET', '/v1/reconcile', async () => ok(d.reconcile())),
    route('POST', '/v1/repair', async () => ok(await d.repair())),
    route('GET', '/v1/nodes', async () => ok(await d.nodes())),
    route('POST', '/v1/nodes/:node/fence', async (c) => ok(await d.fence(c.params[0]))),
    route('GET', '/v1/volumes', async () => ok({ volumes: await d.service.listInfo() })),
    route('POST', '/v1/volumes', async (c) => {
      const body = await c.body();
      return { status: 201, body: await d.service.create(field(body, 'name'), field(body, 'options')) };
    }, { body: true }),
    route('GET', '/v1/volumes/:name', async (c) => ok(await d.service.get(c.params[0]))),
    route('DELETE', '/v1/volumes/:name', async (c) => { await d.service.remove(c.params[0]); return { status: 204 }; }),
    route('POST', '/v1/volumes/:name/expand', async (c) => ok(await d.service.expand(c.params[0], field(await c.body(), 'size'))), { body: true }),
    route('GET', '/v1/snapshots', async (c) => ok({ snapshots: await d.service.listSnapshots(c.query.get('volume') ?? undefined) })),
    route('POST', '/v1/snapshots', async (c) => {
      const body = await c.body();
      return { status: 201, body: await d.service.createSnapshot(field(body, 'volume'), field(body, 'name')) };
    }, { body: true }),
    route('GET', '/v1/snapshots/:name', async (c) => ok(await d.service.getSnapshot(c.params[0]))),
    route('DELETE', '/v1/snapshots/:name', async (c) => ok(await d.service.removeSnapshot(c.params[0]))),
    route('GET', '/v1/backups', async (c) => ok(await backupsOf(d).list(c.query.get('target') ?? undefined, c.query.get('volume') ?? undefined))),
    route('POST', '/v1/backups', async (c) => {
      const body = await c.body();
      return { status: 201, body: await backupsOf(d).create(field(body, 'volume'), field(body, 'target'), c.progress) };
    }, { body: true, stream: true }),
    route('POST', '/v1/backups/:id/restore', async (c) => {
      const body = await c.body();
      return { status: 201, body: await backupsOf(d).restore(c.params[0], field(body, 'target'), field(body, 'into'), field(body, 'options'), c.progress) };
    }, { body: true, stream: true }),
    route('DELETE', '/v1/backups/:id', async (c) => ok(await backupsOf(d).remove(c.params[0], c.query.get('target') ?? undefined))),
  ];

  return (req, res) => {
    const path = pathOf(req.url);
    let found: { r: Route; params: string[] } | undefined;
    for (const r of routes) {
      if (r.method !== req.method) continue;
      const m = r.pattern.exec(path);
      if (m) { found = { r, params: m.slice(1).map(decode) }; break; }
    }
    if (!found) {
      req.resume();
      send(res, 404, JSON_CT, JSON.stringify({ error: `unknown endpoint ${req.method} ${String(req.url).slice(0, 200)}`, code: 'NotFound' }));
      return;
    }
    const { r, params } = found;
    if (!r.readsBody) req.resume();
    const q = String(req.url ?? '').indexOf('?');
    const query = new URLSearchParams(q < 0 ? '' : String(req.url).slice(q + 1));
    const stream = r.streams && String(req.headers.accept ?? '').includes('application/x-ndjson');
    const line = (o: unknown) => { if (!res.writableEnded && !res.destroyed) res.write(`${JSON.stringify(o)}\n`); };
    let last = 0;
    const progress: Progress = stream ? (p) => {
      if (!res.headersSent) res.writeHead(200, { 'content-type': NDJSON_CT });
      const now = Date.now();
      if (now - last >= 200 || p.done === true) { last = now; line({ progress: p }); }
    } : () => undefined;
    r.fn({ req, params, query, body: () => readJsonBody(req), progress }).then(
      (a) => {
        if (stream) {
          if (!res.headersSent) res.writeHead(200, { 'content-type': NDJSON_CT });
          line({ result: a.body ?? null });
          res.end();
          return;
        }
        if (a.status === 204) { res.writeHead(204); res.end(); return; }
        send(res, a.status, JSON_CT, JSON.stringify(a.body));
      },
      (err) => {
        const { status, message } = describeError(err);
        if (status >= 500) d.log.error({ route: req.url, err: message }, 'admin request failed');
        const body = { error: message, code: (err as { code?: string }).code ?? (status === 404 ? 'NotFound' : 'Internal') };
        if (stream && res.headersSent) { line(body); res.end(); return; }
        send(res, status, JSON_CT, JSON.stringify(body));
      },
    );
  };
}
