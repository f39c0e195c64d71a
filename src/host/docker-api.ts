import { unixRequest, dockerSocketPath } from './unix-http.js';
import { UnavailableError } from '../core/errors.js';

/** What Ballast asks the Docker engine. An interface so the reconciler can be tested with a fake. */
export interface DockerApi {
  /** Names of volumes of `driver` mounted by containers that are running, paused or restarting. */
  volumesInUse(driver: string): Promise<Set<string>>;
  /** Makes dockerd look up (and so activate) legacy plugins: a volume list. */
  listVolumes(): Promise<void>;
}

interface ContainerSummary { Id: string; State?: string; Mounts?: { Type?: string; Name?: string; Driver?: string }[] }

/** The Docker engine API over its unix socket. */
export class DockerEngineApi implements DockerApi {
  private readonly sock: string;
  constructor(readonly host: string, private readonly timeoutMs = 10_000) { this.sock = dockerSocketPath(host); }

  private async get(path: string, timeoutMs = this.timeoutMs): Promise<unknown> {
    let r;
    try { r = await unixRequest(this.sock, 'GET', path, undefined, { timeoutMs }); } catch (e) {
      throw new UnavailableError(`the Docker engine at ${this.host} is not reachable: ${(e as Error).message}`);
    }
    if (r.status !== 200) throw new UnavailableError(`the Docker engine at ${this.host} answered ${r.status} to GET ${path}: ${r.text.slice(0, 300)}`);
    return r.body;
  }

  async volumesInUse(driver: string): Promise<Set<string>> {
    // Without all=1 the list holds running, paused and restarting containers: those hold their mounts.
    const list = await this.get('/containers/json') as ContainerSummary[];
    const out = new Set<string>();
    for (const c of Array.isArray(list) ? list : []) {
      for (const m of c.Mounts ?? []) if (m.Type === 'volume' && m.Driver === driver && m.Name) out.add(m.Name);
    }
    return out;
  }

  async listVolumes(): Promise<void> { await this.get('/volumes', 60_000); }
}
