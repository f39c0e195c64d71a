import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { VolumeService } from '../../core/service.js';
import type { VolumeInfo, VolumeSummary } from '../../core/types.js';
import { describeError, field } from '../http-common.js';
import { InvalidArgumentError } from '../../core/errors.js';

/**
 * The Docker Volume Plugin protocol (legacy plugins, v1.2): POST /Plugin.Activate and
 * /VolumeDriver.{Create,Remove,Mount,Unmount,Path,Get,List,Capabilities}. A thin translator: wire
 * types in, one VolumeService call, wire types out; errors become `{"Err": "..."}`.
 */
export function dockerPluginRoutes(service: VolumeService, log: Logger) {
  return async (app: FastifyInstance): Promise<void> => routes(app, service, log);
}

/** Errors in the plugin protocol's form, `{"Err": "..."}`. */
export function pluginErrors(app: FastifyInstance, log: Logger): void {
  app.setErrorHandler((err, req, reply) => {
    const { status, message } = describeError(err);
    if (status >= 500) log.error({ route: req.url, err: message }, 'plugin request failed');
    void reply.code(status).header('content-type', PLUGIN_CT).send({ Err: message });
  });
}

/** The answer to a path nobody serves, in the plugin protocol's form. */
export function pluginNotFound(app: FastifyInstance): void {
  app.setNotFoundHandler((req, reply) => {
    void reply.code(404).header('content-type', PLUGIN_CT).send({ Err: `unknown endpoint ${req.method} ${req.url.slice(0, 200)}; this is a Docker volume plugin (VolumeDriver.*)` });
  });
}

function routes(app: FastifyInstance, service: VolumeService, log: Logger): void {
  pluginErrors(app, log);
  app.addHook('onSend', async (_req, reply, payload) => {
    reply.header('content-type', PLUGIN_CT);
    return payload;
  });

  app.post('/Plugin.Activate', async () => ({ Implements: ['VolumeDriver'] }));
  app.post('/VolumeDriver.Capabilities', async () => ({ Capabilities: { Scope: 'local' } }));
  app.post('/VolumeDriver.Create', async (req) => {
    await service.create(field(notEmpty(req.body), 'Name'), field(req.body, 'Opts'));
    return {};
  });
  app.post('/VolumeDriver.Remove', async (req) => {
    await service.remove(field(notEmpty(req.body), 'Name'));
    return {};
  });
  app.post('/VolumeDriver.Mount', async (req) => ({ Mountpoint: await service.mount(field(notEmpty(req.body), 'Name'), field(req.body, 'ID')) }));
  app.post('/VolumeDriver.Unmount', async (req) => {
    await service.unmount(field(notEmpty(req.body), 'Name'), field(req.body, 'ID'));
    return {};
  });
  app.post('/VolumeDriver.Path', async (req) => ({ Mountpoint: await service.path(field(req.body, 'Name')) }));
  app.post('/VolumeDriver.Get', async (req) => ({ Volume: toDocker(await service.get(field(req.body, 'Name'))) }));
  // With many volumes, encoding List dominates its cost. A store that returns the same frozen
  // summaries while nothing changed (SqliteStore) gets its encoded answer reused; any other array is
  // encoded afresh.
  let lastList: { src: readonly VolumeSummary[]; body: Buffer } | undefined;
  app.post('/VolumeDriver.List', async (_req, reply) => {
    const list = await service.list();
    let body = lastList?.src === list ? lastList.body : undefined;
    if (!body) {
      body = Buffer.from(JSON.stringify({ Volumes: list.map((v) => ({ Name: v.name, Mountpoint: v.mountpoint, CreatedAt: v.createdAt })) }));
      lastList = Object.isFrozen(list) ? { src: list, body } : undefined;
    }
    void reply.type(PLUGIN_CT);
    return body;
  });
}

export const PLUGIN_CT = 'application/vnd.docker.plugins.v1.2+json';

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
