import { Agent, request } from 'node:http';

/**
 * Minimal Docker-plugin client for measurements. `fresh` opens a new unix-socket connection per
 * request (agent: false, so Node sends `Connection: close`), which is what dockerd's plugin client
 * does; `keepAlive` reuses one connection. The body is collected as bytes and not parsed, so the
 * time measured ends at the last byte of the response (dockerd's JSON decoding is not ours).
 */
export interface PluginResponse { status: number; body: Buffer }

export class PluginClient {
  private readonly agent: Agent | false;
  constructor(private readonly socketPath: string, mode: 'fresh' | 'keepAlive' = 'fresh') {
    this.agent = mode === 'fresh' ? false : new Agent({ keepAlive: true, maxSockets: 64 });
  }

  post(method: string, body: unknown = {}): Promise<PluginResponse> {
    const payload = JSON.stringify(body);
    return new Promise((resolve, reject) => {
      const req = request({
        socketPath: this.socketPath, method: 'POST', path: `/${method}`, agent: this.agent,
        headers: { 'content-length': Buffer.byteLength(payload) }, timeout: 130_000,
      }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
        res.on('error', reject);
      });
      req.on('timeout', () => req.destroy(new Error(`${method} timed out`)));
      req.on('error', reject);
      req.end(payload);
    });
  }

  /** post() that must answer 200 with no Err; returns the parsed body. */
  async ok(method: string, body: unknown = {}): Promise<Record<string, unknown>> {
    const r = await this.post(method, body);
    const parsed = JSON.parse(r.body.toString('utf8') || '{}') as Record<string, unknown>;
    if (r.status !== 200 || parsed.Err) throw new Error(`${method} ${JSON.stringify(body).slice(0, 200)} -> ${r.status} ${String(parsed.Err ?? '')}`);
    return parsed;
  }

  /** Times one request in ms (to the last response byte); throws on a non-200. */
  async timed(method: string, body: unknown = {}): Promise<{ ms: number; res: PluginResponse }> {
    const t0 = performance.now();
    const res = await this.post(method, body);
    const ms = performance.now() - t0;
    if (res.status !== 200) throw new Error(`${method} -> ${res.status}: ${res.body.toString('utf8').slice(0, 300)}`);
    return { ms, res };
  }

  close(): void { if (this.agent) this.agent.destroy(); }
}
