import Fastify, { type FastifyInstance } from 'fastify';
import { createServer, type Server } from 'node:http';
import type { Logger } from 'pino';
import type { VolumeService } from '../core/service.js';
import { acceptJsonAnyContentType, BODY_LIMIT } from './http-common.js';
import { dockerPluginRoutes, pluginErrors, pluginNotFound } from './docker-plugin/server.js';
import { adminRoutes, type AdminDeps } from './admin/server.js';

export interface Api {
  readonly app: FastifyInstance;
  /** Serves the plugin protocol on `pluginSocket` and the admin API on `adminSocket`. */
  listen(pluginSocket: string, adminSocket: string): Promise<void>;
  close(): Promise<void>;
}

/**
 * One Fastify instance behind both sockets (one router, one set of parsers: a second instance costs
 * several MB of memory). The plugin protocol lives at the root, the admin API under /v1, each with its
 * own error form: `{"Err": ...}` for dockerd, `{"error", "code"}` for the CLI.
 */
export function buildApi(service: VolumeService, log: Logger, admin: AdminDeps): Api {
  const app = Fastify({ bodyLimit: BODY_LIMIT, logger: false, return503OnClosing: true });
  acceptJsonAnyContentType(app);
  pluginNotFound(app);
  pluginErrors(app, log); // what fails before a route is found (a body that does not parse)
  void app.register(dockerPluginRoutes(service, log));
  void app.register(adminRoutes(admin), { prefix: '/v1' });
  let adminServer: Server | undefined;
  return {
    app,
    async listen(pluginSocket, adminSocket) {
      await app.ready();
      adminServer = createServer(app.routing);
      await new Promise<void>((resolve, reject) => {
        adminServer!.once('error', reject);
        adminServer!.listen(adminSocket, () => { adminServer!.off('error', reject); resolve(); });
      });
      await app.listen({ path: pluginSocket });
    },
    async close() {
      const closingAdmin = adminServer ? new Promise<void>((r) => adminServer!.close(() => r())) : Promise.resolve();
      adminServer?.closeAllConnections();
      await Promise.all([app.close(), closingAdmin]);
    },
  };
}
