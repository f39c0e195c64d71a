import Fastify, { type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { VolumeService } from '../../core/service.js';
import { acceptJsonAnyContentType, describeError, field, BODY_LIMIT } from '../http-common.js';

export interface AdminDeps {
  readonly service: VolumeService;
  readonly log: Logger;
  readonly health: () => Record<string, unknown>;
  readonly doctor: () => Promise<unknown>;
  readonly reconcile: () => unknown;
  readonly repair: () => Promise<unknown>;
}

/** The admin API the `ballast` CLI talks to, on its own socket (never in /run/docker/plugins). */
export function adminServer(d: AdminDeps): FastifyInstance {
  const app = Fastify({ bodyLimit: BODY_LIMIT, logger: false, return503OnClosing: true });
  acceptJsonAnyContentType(app);
  app.setErrorHandler((err, req, reply) => {
    const { status, message } = describeError(err);
    if (status >= 500) d.log.error({ route: req.url, err: message }, 'admin request failed');
    void reply.code(status).send({ error: message, code: (err as { code?: string }).code ?? 'Internal' });
  });
  app.setNotFoundHandler((req, reply) => {
    void reply.code(404).send({ error: `unknown endpoint ${req.method} ${req.url.slice(0, 200)}`, code: 'NotFound' });
  });

  app.get('/v1/health', async () => d.health());
  app.get('/v1/doctor', async () => d.doctor());
  app.get('/v1/reconcile', async () => d.reconcile());
  app.post('/v1/repair', async () => d.repair());
  app.get('/v1/volumes', async () => ({ volumes: await d.service.listInfo() }));
  app.post('/v1/volumes', async (req, reply) => {
    const v = await d.service.create(field(req.body, 'name'), field(req.body, 'options'));
    return reply.code(201).send(v);
  });
  app.get<{ Params: { name: string } }>('/v1/volumes/:name', async (req) => d.service.get(req.params.name));
  app.delete<{ Params: { name: string } }>('/v1/volumes/:name', async (req, reply) => {
    await d.service.remove(req.params.name);
    return reply.code(204).send();
  });
  return app;
}
