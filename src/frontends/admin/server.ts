import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { VolumeService } from '../../core/service.js';
import { describeError, field } from '../http-common.js';

export interface AdminDeps {
  readonly service: VolumeService;
  readonly log: Logger;
  readonly health: () => Record<string, unknown>;
  readonly doctor: () => Promise<unknown>;
  readonly reconcile: () => unknown;
  readonly repair: () => Promise<unknown>;
}

/** The admin API the `ballast` CLI talks to, under /v1, served on its own socket (never in /run/docker/plugins). */
export function adminRoutes(d: AdminDeps) {
  return async (app: FastifyInstance): Promise<void> => routes(app, d);
}

function routes(app: FastifyInstance, d: AdminDeps): void {
  app.setErrorHandler((err, req, reply) => {
    const { status, message } = describeError(err);
    if (status >= 500) d.log.error({ route: req.url, err: message }, 'admin request failed');
    void reply.code(status).send({ error: message, code: (err as { code?: string }).code ?? 'Internal' });
  });
  app.setNotFoundHandler((req, reply) => {
    void reply.code(404).send({ error: `unknown endpoint ${req.method} ${req.url.slice(0, 200)}`, code: 'NotFound' });
  });

  app.get('/health', async () => d.health());
  app.get('/doctor', async () => d.doctor());
  app.get('/reconcile', async () => d.reconcile());
  app.post('/repair', async () => d.repair());
  app.get('/volumes', async () => ({ volumes: await d.service.listInfo() }));
  app.post('/volumes', async (req, reply) => {
    const v = await d.service.create(field(req.body, 'name'), field(req.body, 'options'));
    return reply.code(201).send(v);
  });
  app.get<{ Params: { name: string } }>('/volumes/:name', async (req) => d.service.get(req.params.name));
  app.delete<{ Params: { name: string } }>('/volumes/:name', async (req, reply) => {
    await d.service.remove(req.params.name);
    return reply.code(204).send();
  });
}
