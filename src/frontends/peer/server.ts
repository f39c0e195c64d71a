import { createServer, request, type Server } from 'node:http';
import { networkInterfaces } from 'node:os';

/**
 * The peer check (cluster mode): one read-only route on TCP, `GET /v1/peer`, that answers whether this
 * node reaches etcd now. A node that lost etcd asks its peers (src/cluster/self-fence.ts) to tell
 * "etcd is down for everyone" (nobody can take a volume over, so writing goes on) from "I am cut off
 * alone" (the others may take my volumes over once my lease expired, so I stop writing). It answers
 * nothing else, takes no input and changes nothing.
 */
export interface PeerAnswer { readonly node: string; readonly etcd: boolean }

export class PeerServer {
  private server?: Server;
  constructor(private readonly answer: () => PeerAnswer) {}

  /** Listens on host:port (port 0: any free port); resolves with the URL to advertise. */
  async listen(host: string, port: number): Promise<string> {
    const server = createServer((req, res) => {
      if (req.method !== 'GET' || req.url !== '/v1/peer') { res.writeHead(404, { 'content-type': 'application/json' }); res.end('{"error":"not found"}'); return; }
      const body = JSON.stringify(this.answer());
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
    server.requestTimeout = 5_000;
    server.headersTimeout = 5_000;
    await new Promise<void>((resolve, reject) => { server.once('error', reject); server.listen(port, host, () => { server.off('error', reject); resolve(); }); });
    this.server = server;
    const a = server.address();
    return `http://${host}:${typeof a === 'object' && a ? a.port : port}`;
  }

  async close(): Promise<void> {
    const s = this.server;
    if (!s) return;
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }
}

/** Asks the peer at `url` whether it reaches etcd; undefined when it does not answer within timeoutMs. */
export function askPeer(url: string, timeoutMs: number): Promise<PeerAnswer | undefined> {
  return new Promise((resolve) => {
    const req = request(`${url}/v1/peer`, { method: 'GET', timeout: timeoutMs, agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { if (text.length < 4096) text += c; });
      res.on('end', () => {
        try {
          const o = JSON.parse(text) as Partial<PeerAnswer>;
          resolve(res.statusCode === 200 && typeof o.node === 'string' && typeof o.etcd === 'boolean' ? { node: o.node, etcd: o.etcd } : undefined);
        } catch { resolve(undefined); }
      });
      res.on('error', () => resolve(undefined));
    });
    const t = setTimeout(() => { req.destroy(); resolve(undefined); }, timeoutMs);
    req.on('error', () => { clearTimeout(t); resolve(undefined); });
    req.on('close', () => clearTimeout(t));
    req.end();
  });
}

/** `peerListen` of the config as host and port: "auto" is this node's first non-loopback IPv4, port 7421. */
export function peerAddress(peerListen: string): { host: string; port: number } | undefined {
  if (peerListen === 'off') return undefined;
  if (peerListen !== 'auto') {
    const i = peerListen.lastIndexOf(':');
    return { host: peerListen.slice(0, i), port: Number(peerListen.slice(i + 1)) };
  }
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return { host: a.address, port: 7421 };
  }
  return undefined;
}
