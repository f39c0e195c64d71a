import { readFileSync } from 'node:fs';
import { ConfigReader } from '../config-values.js';
import { InvalidArgumentError, UnavailableError } from '../../core/errors.js';

/**
 * How Ballast talks to OpenStack: Keystone v3 password auth (the token cached and renewed before it
 * expires, the block-storage endpoint found in the service catalog) or noauth for test deployments,
 * and Cinder's v3 REST API with explicit microversions. Every request has a timeout, so a Keystone or
 * Cinder that is down or hung fails an operation within a bound. The password is read from a file at
 * each authentication and never appears in argv, logs, errors or Status; tokens never appear in logs.
 */

/** A non-2xx answer of Cinder or Keystone, with the service's own message. */
export class OpenStackHttpError extends Error {
  constructor(readonly status: number, readonly serviceMessage: string, readonly what: string) {
    super(`${what}: HTTP ${status}: ${serviceMessage}`);
  }
}

/** Cinder's (and Keystone's) error bodies: `{"badRequest": {"message": "...", "code": 400}}`, `{"error": {"message": ...}}`. */
export function serviceMessage(text: string): string {
  try {
    const j = JSON.parse(text) as unknown;
    if (j && typeof j === 'object') {
      for (const v of Object.values(j as Record<string, unknown>)) {
        if (v && typeof v === 'object' && typeof (v as { message?: unknown }).message === 'string') return ((v as { message: string }).message).slice(0, 500);
      }
      if (typeof (j as { message?: unknown }).message === 'string') return (j as { message: string }).message.slice(0, 500);
    }
  } catch { /* not JSON */ }
  return text.replace(/<[^>]*>/g, ' ').replace(/\s+/g, ' ').trim().slice(0, 300) || 'no message';
}

export interface AuthSettings {
  readonly mode: 'keystone' | 'noauth';
  readonly authUrl?: string;
  readonly username?: string;
  readonly passwordFile?: string;
  readonly userDomain: string;
  readonly projectDomain: string;
  readonly project?: string;
  readonly projectId?: string;
  readonly region?: string;
  /** Block-storage endpoint given explicitly (`%(project_id)s` is replaced); otherwise from the catalog. */
  readonly endpoint?: string;
  readonly interface: 'public' | 'internal' | 'admin';
  readonly requestTimeoutMs: number;
}

export const AUTH_CONFIG_KEYS = ['auth', 'authUrl', 'username', 'passwordFile', 'userDomain', 'projectDomain', 'project', 'projectId', 'region', 'endpoint', 'interface', 'requestTimeoutSec'] as const;

export function authSettings(instance: string, config: Readonly<Record<string, unknown>>): AuthSettings {
  const c = new ConfigReader(instance, config);
  const mode = c.str('auth', { def: 'keystone', re: /^(keystone|noauth)$/, hint: 'keystone or noauth' }) as 'keystone' | 'noauth';
  const url = /^https?:\/\/[a-zA-Z0-9.:\[\]-]+(\/[a-zA-Z0-9._~%()$\/-]*)?$/;
  const s: AuthSettings = {
    mode,
    authUrl: c.str('authUrl', { required: mode === 'keystone', re: url, hint: 'the Keystone v3 URL, e.g. http://keystone:5000/v3' })?.replace(/\/+$/, ''),
    username: c.str('username', { required: mode === 'keystone', re: /^[^\s"]{1,255}$/, hint: 'a Keystone user name' }),
    passwordFile: mode === 'keystone' ? c.absPath('passwordFile') : undefined,
    userDomain: c.str('userDomain', { def: 'Default', re: /^[^\s"]{1,255}$/, hint: 'a domain name' })!,
    projectDomain: c.str('projectDomain', { def: 'Default', re: /^[^\s"]{1,255}$/, hint: 'a domain name' })!,
    project: c.str('project', { re: /^[^\s"]{1,255}$/, hint: 'a project name' }),
    projectId: c.str('projectId', { required: mode === 'noauth', re: /^[a-zA-Z0-9_-]{1,64}$/, hint: 'a project id' }),
    region: c.str('region', { re: /^[^\s"]{1,255}$/, hint: 'a region name such as RegionOne' }),
    endpoint: c.str('endpoint', { required: mode === 'noauth', re: url, hint: 'the block-storage URL, e.g. http://cinder:8776/v3/%(project_id)s' })?.replace(/\/+$/, ''),
    interface: c.str('interface', { def: 'public', re: /^(public|internal|admin)$/, hint: 'public, internal or admin' }) as 'public' | 'internal' | 'admin',
    requestTimeoutMs: c.int('requestTimeoutSec', 20, 1, 110) * 1000,
  };
  if (mode === 'keystone' && !s.project && !s.projectId) throw new InvalidArgumentError(`backend ${instance}: set project (a project name) or projectId for Keystone`);
  return s;
}

interface Session { readonly token: string; readonly endpoint: string; readonly expiresAt: number; readonly renewAt: number }

/** One HTTP request with a timeout; network failures and timeouts become UnavailableError naming the service. */
async function send(url: string, init: RequestInit & { timeoutMs: number; service: string; what: string }): Promise<Response> {
  try {
    return await fetch(url, { ...init, signal: AbortSignal.timeout(init.timeoutMs) });
  } catch (e) {
    const err = e as Error & { cause?: { code?: string; message?: string } };
    const timedOut = err.name === 'TimeoutError' || err.name === 'AbortError';
    const why = timedOut ? `did not answer within ${init.timeoutMs / 1000} s` : `could not be reached (${err.cause?.code ?? err.cause?.message ?? err.message})`;
    throw new UnavailableError(`${init.service} at ${new URL(url).origin} ${why} (${init.what}); is it up and reachable?`, { cause: e });
  }
}

/**
 * A Keystone v3 session: a project-scoped token from password auth, renewed when a quarter of its
 * lifetime (at most a minute) is left, or at once when Cinder answers 401 (a token revoked or expired
 * early). Concurrent callers share one authentication.
 */
export class KeystoneSession {
  private session?: Session;
  private pending?: Promise<Session>;

  constructor(private readonly s: AuthSettings, private readonly label: string, private readonly now: () => number = Date.now) {}

  async get(): Promise<Session> {
    const cur = this.session;
    if (cur && this.now() < cur.renewAt) return cur;
    this.pending ??= this.authenticate().finally(() => { this.pending = undefined; });
    return this.pending;
  }

  /** Drops the cached token (Cinder said 401): the next get() authenticates again. */
  invalidate(token: string): void { if (this.session?.token === token) this.session = undefined; }

  private async authenticate(): Promise<Session> {
    const s = this.s;
    if (s.mode === 'noauth') {
      const session = { token: `${s.username ?? 'admin'}:${s.projectId}`, endpoint: substitute(s.endpoint!, s.projectId!), expiresAt: Infinity, renewAt: Infinity };
      this.session = session;
      return session;
    }
    let password: string;
    try { password = readFileSync(s.passwordFile!, 'utf8').replace(/\r?\n$/, ''); } catch (e) {
      throw new InvalidArgumentError(`${this.label}: cannot read the Keystone password file ${s.passwordFile}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    const scope = s.projectId ? { project: { id: s.projectId } } : { project: { name: s.project, domain: { name: s.projectDomain } } };
    const body = JSON.stringify({ auth: { identity: { methods: ['password'], password: { user: { name: s.username, domain: { name: s.userDomain }, password } } }, scope } });
    const what = `authenticating user ${s.username} for project ${s.projectId ?? s.project}`;
    const r = await send(`${s.authUrl}/auth/tokens`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body, timeoutMs: s.requestTimeoutMs, service: 'Keystone', what });
    const text = await r.text();
    if (r.status === 401) throw new OpenStackHttpError(401, `${serviceMessage(text)} (check username, passwordFile, userDomain and project of backend ${this.label})`, `Keystone refused ${what}`);
    if (!r.ok) throw new OpenStackHttpError(r.status, serviceMessage(text), `Keystone: ${what}`);
    const token = r.headers.get('x-subject-token');
    if (!token) throw new UnavailableError(`Keystone answered ${what} without an X-Subject-Token header`);
    const t = (JSON.parse(text) as { token: KeystoneToken }).token;
    const expiresAt = Date.parse(t.expires_at);
    const issuedAt = t.issued_at ? Date.parse(t.issued_at) : this.now();
    const life = Math.max(0, expiresAt - issuedAt);
    const endpoint = s.endpoint ? substitute(s.endpoint, t.project?.id ?? s.projectId ?? '') : endpointFromCatalog(t.catalog ?? [], s, this.label);
    const session = { token, endpoint, expiresAt, renewAt: expiresAt - Math.min(60_000, life / 4) };
    this.session = session;
    return session;
  }
}

interface KeystoneToken {
  expires_at: string;
  issued_at?: string;
  project?: { id: string; name?: string };
  catalog?: { type: string; name?: string; endpoints: { interface: string; region?: string; region_id?: string; url: string }[] }[];
}

function substitute(url: string, projectId: string): string {
  return url.replace(/%\(project_id\)s|\$\(project_id\)s|%\(tenant_id\)s/g, projectId);
}

/** The block-storage endpoint of the catalog: service type block-storage, volumev3 or volume, the configured interface and region. */
export function endpointFromCatalog(catalog: NonNullable<KeystoneToken['catalog']>, s: Pick<AuthSettings, 'interface' | 'region'>, label: string): string {
  for (const type of ['block-storage', 'volumev3']) {
    for (const svc of catalog.filter((c) => c.type === type)) {
      const ep = svc.endpoints.find((e) => e.interface === s.interface && (!s.region || (e.region_id ?? e.region) === s.region));
      if (ep) return ep.url.replace(/\/+$/, '');
    }
  }
  const seen = catalog.map((c) => c.type).join(', ') || 'none';
  throw new InvalidArgumentError(`${label}: the Keystone catalog has no block-storage (volumev3) endpoint with interface ${s.interface}${s.region ? ` in region ${s.region}` : ''} (service types: ${seen}); set endpoint, interface or region`);
}

/** The microversions Ballast needs: attachments (3.27), os-complete (3.44). */
export const MICROVERSION = '3.44';

/** A thin, typed client of the Cinder v3 API. */
export class CinderApi {
  constructor(private readonly session: KeystoneSession, private readonly timeoutMs: number) {}

  /**
   * One call; `ok` lists the statuses that are answers (404 for a lookup). A 401 renews the token
   * and retries once. A call that may be repeated (GET, DELETE, and the calls the caller marks
   * `idempotent`: a metadata merge, an os-complete) is retried twice on 500/502/503/504 (Cinder on
   * SQLite answers 500 when its database is locked for a moment); a create never is. Other statuses
   * throw OpenStackHttpError with Cinder's message.
   */
  async call<T = unknown>(method: string, path: string, what: string, body?: unknown, ok: readonly number[] = [], idempotent = method === 'GET' || method === 'DELETE'): Promise<{ status: number; json: T }> {
    let transient = 0;
    for (let attempt = 0; ; attempt++) {
      const ses = await this.session.get();
      const r = await send(`${ses.endpoint}${path}`, {
        method, timeoutMs: this.timeoutMs, service: 'Cinder', what,
        headers: { 'X-Auth-Token': ses.token, 'OpenStack-API-Version': `volume ${MICROVERSION}`, Accept: 'application/json', ...(body === undefined ? {} : { 'Content-Type': 'application/json' }) },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
      const text = await r.text();
      if (r.status === 401 && attempt === 0) { this.session.invalidate(ses.token); continue; }
      if (idempotent && [500, 502, 503, 504].includes(r.status) && transient < 2) { await new Promise((res) => setTimeout(res, 200 * ++transient)); continue; }
      if (!r.ok && !ok.includes(r.status)) throw new OpenStackHttpError(r.status, serviceMessage(text), `Cinder: ${what}`);
      return { status: r.status, json: (text ? JSON.parse(text) : {}) as T };
    }
  }

  async getVolume(id: string): Promise<CinderVolume | undefined> {
    const r = await this.call<{ volume: CinderVolume }>('GET', `/volumes/${encodeURIComponent(id)}`, `reading volume ${id}`, undefined, [404]);
    return r.status === 404 ? undefined : r.json.volume;
  }

  /** Volumes whose metadata has every key/value of `metadata` (Cinder filters server-side). */
  async listVolumes(metadata: Readonly<Record<string, string>>): Promise<CinderVolume[]> {
    const q = encodeURIComponent(JSON.stringify(metadata));
    const out: CinderVolume[] = [];
    let marker: string | undefined;
    for (let page = 0; page < 100; page++) {
      const r = await this.call<{ volumes: CinderVolume[] }>('GET', `/volumes/detail?metadata=${q}&limit=200${marker ? `&marker=${marker}` : ''}`, 'listing volumes');
      out.push(...r.json.volumes);
      if (r.json.volumes.length < 200) break;
      marker = r.json.volumes[r.json.volumes.length - 1].id;
    }
    return out;
  }

  async createVolume(body: Record<string, unknown>, what: string): Promise<CinderVolume> {
    return (await this.call<{ volume: CinderVolume }>('POST', '/volumes', what, { volume: body })).json.volume;
  }

  /** Deletes the volume; gone already is success. */
  async deleteVolume(id: string, what: string): Promise<void> {
    await this.call('DELETE', `/volumes/${encodeURIComponent(id)}`, what, undefined, [404]);
  }

  async setMetadata(id: string, metadata: Readonly<Record<string, string>>, what: string): Promise<void> {
    await this.call('POST', `/volumes/${encodeURIComponent(id)}/metadata`, what, { metadata }, [], true);
  }

  async createAttachment(volumeId: string, connector: Readonly<Record<string, unknown>>, what: string): Promise<CinderAttachment> {
    return (await this.call<{ attachment: CinderAttachment }>('POST', '/attachments', what, { attachment: { volume_uuid: volumeId, connector } })).json.attachment;
  }

  async getAttachment(id: string): Promise<CinderAttachment | undefined> {
    const r = await this.call<{ attachment: CinderAttachment }>('GET', `/attachments/${encodeURIComponent(id)}`, `reading attachment ${id}`, undefined, [404]);
    return r.status === 404 ? undefined : r.json.attachment;
  }

  async completeAttachment(id: string, what: string): Promise<void> {
    await this.call('POST', `/attachments/${encodeURIComponent(id)}/action`, what, { 'os-complete': null }, [], true);
  }

  /** Deletes the attachment; gone already is success. */
  async deleteAttachment(id: string, what: string): Promise<void> {
    await this.call('DELETE', `/attachments/${encodeURIComponent(id)}`, what, undefined, [404]);
  }

  /** Cinder's user messages about a resource (why a volume went to error), newest first; none when the API has none. */
  async messagesAbout(resourceId: string): Promise<string[]> {
    try {
      const r = await this.call<{ messages?: { user_message?: string; created_at?: string }[] }>('GET', `/messages?resource_uuid=${encodeURIComponent(resourceId)}`, 'reading user messages', undefined, [404]);
      return (r.json.messages ?? []).sort((a, b) => (b.created_at ?? '').localeCompare(a.created_at ?? '')).map((m) => m.user_message ?? '').filter(Boolean);
    } catch { return []; }
  }
}

export interface CinderVolume {
  readonly id: string;
  readonly name: string | null;
  readonly status: string;
  readonly size: number;
  readonly volume_type?: string | null;
  readonly availability_zone?: string;
  readonly multiattach?: boolean;
  readonly metadata?: Readonly<Record<string, string>>;
  readonly attachments?: readonly { readonly attachment_id?: string; readonly host_name?: string | null; readonly server_id?: string | null; readonly attached_at?: string }[];
  readonly created_at?: string;
}

export interface CinderAttachment {
  readonly id: string;
  readonly status: string;
  readonly volume_id?: string;
  readonly instance?: string | null;
  readonly attach_mode?: string;
  readonly attached_at?: string | null;
  readonly connection_info?: Readonly<Record<string, unknown>> | null;
}
