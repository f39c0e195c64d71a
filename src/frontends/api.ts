import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { VolumeService } from '../core/service.js';
import { dockerPluginHandler, PLUGIN_CT } from './docker-plugin/server.js';
import { adminHandler, type AdminDeps } from './admin/server.js';

export interface Api {
  /** Serves the plugin protocol on `pluginSocket` and the admin API on `adminSocket`. */
  listen(pluginSocket: string, adminSocket: string): Promise<void>;
  close(): Promise<void>;
}

/**
 * One purpose per socket: the plugin socket serves the Docker volume plugin protocol and nothing else,
 * the admin socket serves the admin API (/v1/...) and nothing else; a path of the other one is a 404 in
 * the socket's own error form. Both are plain node:http servers with a handler each (no framework:
 * a second router instance, or a per-request check of which socket a request came in on, would cost
 * memory or time on the hot path; two handlers cost neither).
 */
export function buildApi(service: VolumeService, log: Logger, admin: AdminDeps): Api {
  let closing = false;
  const guard = (h: (req: IncomingMessage, res: ServerResponse) => void, ct: string, body: string) =>
    (req: IncomingMessage, res: ServerResponse) => {
      if (!closing) { h(req, res); return; }
      req.resume();
      res.writeHead(503, { 'content-type': ct, connection: 'close' });
      res.end(body);
    };
  const stopping = 'Ballast is stopping; retry in a moment';
  const plugin = createServer(guard(dockerPluginHandler(service, log), PLUGIN_CT, JSON.stringify({ Err: stopping })));
  const adminServer = createServer(guard(adminHandler(admin), 'application/json; charset=utf-8', JSON.stringify({ error: stopping, code: 'Unavailable' })));
  for (const s of [plugin, adminServer]) s.keepAliveTimeout = 72_000;
  const listen = (s: Server, path: string) => new Promise<void>((resolve, reject) => {
    s.once('error', reject);
    s.listen(path, () => { s.off('error', reject); resolve(); });
  });
  const close = (s: Server) => new Promise<void>((r) => { if (!s.listening) { r(); return; } s.close(() => r()); s.closeIdleConnections(); });
  return {
    async listen(pluginSocket, adminSocket) {
      await listen(adminServer, adminSocket);
      await listen(plugin, pluginSocket);
    },
    async close() {
      closing = true;
      await Promise.all([close(plugin), close(adminServer)]);
    },
  };
}
