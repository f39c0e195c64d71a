import { request } from 'node:http';

export interface UnixResponse { readonly status: number; readonly body: unknown; readonly text: string }

/** One HTTP request over a unix socket, with a timeout. JSON bodies are parsed; others are kept as text. */
export function unixRequest(socketPath: string, method: string, path: string, body?: unknown, opts: { timeoutMs?: number; headers?: Record<string, string>; rawBody?: string | Buffer } = {}): Promise<UnixResponse> {
  return new Promise((resolve, reject) => {
    const payload = opts.rawBody ?? (body === undefined ? undefined : JSON.stringify(body));
    const req = request({
      socketPath, method, path,
      headers: { ...(payload !== undefined ? { 'content-length': Buffer.byteLength(payload) } : {}), ...(opts.headers ?? {}) },
      timeout: opts.timeoutMs ?? 30_000,
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let parsed: unknown = text;
        if (text && /json/.test(String(res.headers['content-type'] ?? ''))) { try { parsed = JSON.parse(text); } catch { /* keep text */ } }
        resolve({ status: res.statusCode ?? 0, body: parsed, text });
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`request ${method} ${path} on ${socketPath} timed out after ${opts.timeoutMs ?? 30_000} ms`)));
    req.on('error', reject);
    if (payload !== undefined) req.write(payload);
    req.end();
  });
}

/** Path of a unix:// docker host. */
export function dockerSocketPath(dockerHost: string): string {
  return dockerHost.replace(/^unix:\/\//, '');
}
