/**
 * A real OpenStack Keystone + Cinder (+ RabbitMQ) on 127.0.0.1 for the cinder backend's tests, with the
 * RBD driver against a Ceph the caller started (test/servers/ceph.ts: pool `rbd`, client.admin).
 * Debian 12 packages: keystone 22.0 (Zed), cinder 21.3 (Zed, API 3.0-3.70), rabbitmq-server 3.10.
 * Adapted from shared/recipes/keystone-up.sh and cinder-up.sh. Start to ready takes ~15 s on 2 cores
 * (it is CPU-bound: ~30 s of CPU, mostly Python imports and RabbitMQ's boot).
 *
 * - Keystone: uwsgi on 127.0.0.1:5000 (the app loaded once by the master, 2 forked workers of 1 thread:
 *   more threads lock sqlite), sqlite in WAL mode (without it the db locks up after the first token),
 *   fernet tokens, bcrypt at its least cost. db_sync and bootstrap (admin/secret, project admin, domain
 *   Default, region RegionOne) run in one Python process; a service project, a `cinder` service user
 *   (random password, admin on service) and the volumev3 service with its three endpoints
 *   http://127.0.0.1:8776/v3/%(project_id)s are made over plain HTTP (fetch).
 * - RabbitMQ on 127.0.0.1:5672 (dist port 25672) under a node name of its own; epmd on 127.0.0.1:4369 is
 *   started here first, in the foreground (so it never daemonizes and is stopped by its PID), unless
 *   one already listens there (then it is shared and left alone).
 * - Cinder: cinder-api (one worker: parent + a forked child) on 127.0.0.1:8776, cinder-scheduler,
 *   cinder-volume (parent + one child per backend), `auth_strategy = keystone` (or noauth with
 *   `keystone: false`: token `admin:<projectId>`), sqlite in WAL mode, backend `ceph` (host n1, so the
 *   pool is `n1@ceph#ceph`, volumes `volume-<id>` in the Ceph pool `rbd`, as client.admin).
 *   Ready means the scheduler knows that pool (GET /scheduler-stats/get_pools), not a blind sleep.
 *
 * Every daemon is spawned by this process, detached into a session of its own, so that it and all it
 * forks (found through /proc by session id, even once re-parented) are stopped by PID, never by name.
 * Every command is an argv array with a timeout. Passwords travel in files (0600), the environment and
 * request bodies, never in argv. All state lives under `dir`, which stop() removes. The ports are fixed
 * (5000, 8776, 5672, 25672): start fails at once, naming the port, when one is taken.
 */
import { spawn } from 'node:child_process';
import { chmodSync, closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { run, sleep, waitFor } from '../helpers/proc.js';
import { descendants, gone, killPids, listening } from './common.js';

const PY = '/usr/bin/python3';
const RABBIT = '/usr/lib/rabbitmq/bin/rabbitmq-server';
const KEYSTONE_PORT = 5000;
const CINDER_PORT = 8776;
const AMQP_PORT = 5672;
const RABBIT_DIST_PORT = 25672;
const EPMD_PORT = 4369;

export interface OpenStackReply { status: number; json: any; text: string; headers: Headers }

export interface OpenStack {
  readonly dir: string;
  /** http://127.0.0.1:5000/v3 ('' with keystone: false). */
  readonly authUrl: string;
  /** http://127.0.0.1:8776/v3 (the project id follows: the catalog's URL is .../v3/%(project_id)s). */
  readonly cinderUrl: string;
  readonly userName: 'admin';
  readonly adminPassword: 'secret';
  /** A 0600 file holding exactly the admin password: no trailing newline. */
  readonly adminPasswordFile: string;
  readonly projectName: 'admin';
  /** The admin project's id (32 hex). */
  readonly projectId: string;
  readonly userDomainName: 'Default';
  readonly projectDomainName: 'Default';
  readonly region: 'RegionOne';
  /** Cinder's pool for the backend: `n1@ceph#ceph`. */
  readonly pool: string;
  /** Milliseconds from start until Cinder's scheduler knew the volume backend. */
  readonly startMs: number;
  readonly laps: readonly string[];
  /** A fresh project-scoped admin token from Keystone (`admin:<projectId>` with keystone: false). */
  token(): Promise<string>;
  /** Keystone's full answer to a password auth (token, expires_at, catalog), for tests that need more. */
  authenticate(password?: string): Promise<OpenStackReply & { token?: string }>;
  /**
   * An authenticated admin call to Cinder under /v3/{projectId} (path starts with '/'), e.g.
   * api('POST', '/volumes', {...}, { 'OpenStack-API-Version': 'volume 3.44' }). Reuses one token, renewed
   * when it has less than a quarter of its life left, and once more on a 401. Never throws on an HTTP
   * error status; throws on a network error or after timeoutMs (default 30 s).
   */
  api(method: string, path: string, body?: unknown, headers?: Record<string, string>, timeoutMs?: number): Promise<OpenStackReply>;
  /** PUT os-quota-sets for the admin project (e.g. { gigabytes: 2 } or { volumes: 1 }; -1 = unlimited). */
  setQuota(q: { gigabytes?: number; volumes?: number; snapshots?: number; [k: string]: number | undefined }): Promise<void>;
  /** Creates a public volume type (optionally with extra specs, e.g. { multiattach: '<is> True' }); returns its id. */
  createVolumeType(name: string, extraSpecs?: Record<string, string>): Promise<string>;
  /** Waits until GET /volumes/{id} shows one of the statuses (throws when it shows 'error' unless that is wanted). */
  waitVolume(id: string, statuses: string[], timeoutMs?: number): Promise<any>;
  /** SIGSTOP every cinder-api process (parent and worker): connections are accepted by the kernel and then hang. */
  pauseCinderApi(): void;
  resumeCinderApi(): void;
  /** Stops cinder-api (parent and worker, by PID): connections are refused. */
  stopCinderApi(): Promise<void>;
  /** Starts cinder-api again and waits until it answers. */
  startCinderApi(): Promise<void>;
  /** SIGSTOP uwsgi's master and workers: Keystone (and so every Cinder call needing validation) hangs. */
  pauseKeystone(): void;
  resumeKeystone(): void;
  /** PIDs of every process of every daemon (parents, workers, beam and its helpers), for leftovers checks. */
  pids(): number[];
  /** Stops every daemon by PID (children included) and removes dir. */
  stop(): Promise<void>;
}

export interface StartOpenStackOptions {
  /** ceph.conf of the cluster the RBD driver uses (pool `rbd`, user admin). */
  cephConf: string;
  /** client.admin's keyring, when cephConf does not name it (a [client.admin] keyring line is then added to a copy). */
  cephKeyring?: string;
  /**
   * Keystone's `[token] expiration` in seconds (default 3600; keystone accepts any integer >= 0, this
   * harness >= 1). issued_at is truncated to the second, so a token lives expiration - (0..1) s. Cinder
   * answers 401 for an expired token at once, even one it validated and cached before (keystonemiddleware
   * checks expires_at on every request); `[token] allow_expired_window` only matters for requests that
   * also carry a service token, so it is not set. Cinder's own service user re-authenticates by itself.
   */
  tokenExpirationSec?: number;
  /** Start Keystone and use it for Cinder's auth (default true); false = Cinder with auth_strategy noauth. */
  keystone?: boolean;
}

/** Why Keystone + Cinder cannot be started here, or undefined. */
export function openstackSkipReason(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (Cinder, RabbitMQ and Ceph daemons)';
  const need: [string, string][] = [
    ['/usr/bin/keystone-manage', 'keystone'], ['/usr/bin/keystone-wsgi-public', 'keystone'], ['/usr/bin/uwsgi', 'uwsgi-core'],
    ['/usr/lib/uwsgi/plugins/python3_plugin.so', 'uwsgi-plugin-python3'],
    ['/usr/bin/cinder-api', 'cinder-api'], ['/usr/bin/cinder-scheduler', 'cinder-scheduler'], ['/usr/bin/cinder-volume', 'cinder-volume'],
    ['/usr/bin/cinder-manage', 'cinder-common'], ['/etc/cinder/api-paste.ini', 'cinder-common'], [RABBIT, 'rabbitmq-server'], ['/usr/bin/epmd', 'erlang-base'],
    [PY, 'python3'], ['/usr/bin/ceph', 'ceph-common'],
  ];
  const missing = need.filter(([f]) => !existsSync(f));
  if (missing.length) return `OpenStack is not installed: missing ${missing.map(([f]) => f).join(', ')} (apt-get install ${[...new Set(missing.map(([, p]) => p))].join(' ')}, or run scripts/install-test-deps.sh)`;
  return undefined;
}

/** The /proc/<pid>/stat fields after the command name: [state, ppid, pgrp, session, ...] (undefined when gone). */
function statOf(pid: number): string[] | undefined {
  try { const s = readFileSync(`/proc/${pid}/stat`, 'utf8'); return s.slice(s.lastIndexOf(')') + 2).split(' '); } catch { return undefined; }
}

/**
 * Every live process of the session `sid`. Each daemon is spawned detached (setsid), so its PID is its
 * session's id, and everything it forks stays in that session even after being re-parented to init
 * (a cinder-api worker whose parent died, a worker the parent respawned while being stopped).
 */
function sessionMembers(sid: number): number[] {
  const out: number[] = [];
  for (const p of readdirSync('/proc').filter((x) => /^\d+$/.test(x)).map(Number)) {
    const f = statOf(p);
    if (f && Number(f[3]) === sid && f[0] !== 'Z') out.push(p);
  }
  return out;
}

/** PIDs of processes whose comm is `comm` (read from /proc). */
function pidsByComm(comm: string): number[] {
  const out: number[] = [];
  for (const p of readdirSync('/proc').filter((x) => /^\d+$/.test(x))) {
    try { if (readFileSync(`/proc/${p}/comm`, 'utf8').trim() === comm) out.push(Number(p)); } catch { /* gone */ }
  }
  return out;
}

function cmdline(pid: number): string {
  try { return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' '); } catch { return ''; }
}

function signal(pids: number[], sig: NodeJS.Signals): void {
  for (const p of pids) { try { process.kill(p, sig); } catch { /* gone */ } }
}

/**
 * Stops one daemon: SIGTERM to `first` (default: the leader only, which stops its own children), waits
 * up to graceMs for the whole session to be gone, then SIGKILLs whatever is left of it.
 */
async function halt(sid: number, graceMs: number, first: number[] = [sid]): Promise<void> {
  const members = sessionMembers(sid);
  if (!members.length) return;
  signal(members, 'SIGCONT');
  signal(first, 'SIGTERM');
  const end = Date.now() + graceMs;
  while (Date.now() < end && sessionMembers(sid).length) await sleep(50);
  const left = sessionMembers(sid);
  if (left.length) await killPids(left, 'SIGKILL', 5_000);
}

const tail = (f: string, n = 1500) => { try { return `--- ${f}:\n${readFileSync(f, 'utf8').slice(-n)}`; } catch { return ''; } };

export async function startOpenStack(dir: string, opts: StartOpenStackOptions): Promise<OpenStack> {
  const t0 = Date.now();
  const laps: string[] = [];
  const lap = (what: string) => laps.push(`${what} at +${((Date.now() - t0) / 1000).toFixed(1)} s`);
  const withKeystone = opts.keystone ?? true;
  const exp = opts.tokenExpirationSec;
  if (exp !== undefined && (!Number.isInteger(exp) || exp < 1)) throw new Error(`startOpenStack: tokenExpirationSec must be a positive integer, not ${exp}`);
  if (!existsSync(opts.cephConf)) throw new Error(`startOpenStack: no ceph.conf at ${opts.cephConf}`);
  const ports: [string, number][] = [['Cinder API', CINDER_PORT], ['RabbitMQ', AMQP_PORT], ['RabbitMQ dist', RABBIT_DIST_PORT]];
  if (withKeystone) ports.unshift(['Keystone', KEYSTONE_PORT]);
  for (const [what, port] of ports) {
    if (listening(port)) throw new Error(`port ${port} on 127.0.0.1 for ${what} is already in use (an OpenStack left over from an earlier run? stop it by its PID)`);
  }

  const K = join(dir, 'keystone'); const C = join(dir, 'cinder'); const R = join(dir, 'rabbit');
  for (const d of [join(K, 'log'), join(K, 'fernet-keys'), join(K, 'credential-keys'), join(C, 'state'), join(C, 'log'), join(C, 'lock'),
    join(R, 'mnesia'), join(R, 'log'), join(R, 'home')]) mkdirSync(d, { recursive: true });
  chmodSync(join(K, 'fernet-keys'), 0o700); chmodSync(join(K, 'credential-keys'), 0o700);
  const adminPassword = 'secret' as const;
  const adminPasswordFile = join(dir, 'admin-password');
  writeFileSync(adminPasswordFile, adminPassword, { mode: 0o600 });
  const cinderPassword = randomBytes(12).toString('hex');
  const authUrl = withKeystone ? `http://127.0.0.1:${KEYSTONE_PORT}/v3` : '';
  const cinderUrl = `http://127.0.0.1:${CINDER_PORT}/v3`;
  const pool = 'n1@ceph#ceph';

  // Ceph: the driver reads client.admin's keyring through the conf; with cephKeyring, a copy that names it.
  let cephConf = opts.cephConf;
  if (opts.cephKeyring) {
    cephConf = join(C, 'ceph.conf');
    writeFileSync(cephConf, `${readFileSync(opts.cephConf, 'utf8')}\n[client.admin]\nkeyring = ${opts.cephKeyring}\n`);
  }

  const keystoneConf = join(K, 'keystone.conf');
  writeFileSync(keystoneConf, `[DEFAULT]
log_dir = ${K}/log
log_file = keystone.log
[database]
connection = sqlite:///${K}/keystone.sqlite
sqlite_synchronous = false
[identity]
# bcrypt's least cost (default 12, ~0.3 s of CPU for every password auth and user create): test passwords only.
password_hash_rounds = 4
[token]
provider = fernet
${exp !== undefined ? `expiration = ${exp}\n` : ''}[fernet_tokens]
key_repository = ${K}/fernet-keys
[fernet_receipts]
key_repository = ${K}/fernet-keys
[credential]
key_repository = ${K}/credential-keys
[oslo_policy]
policy_dirs = /etc/keystone/policy.d
`, { mode: 0o600 });
  const uwsgiIni = join(K, 'keystone-uwsgi.ini');
  const uwsgiPidFile = join(K, 'uwsgi.pid');
  writeFileSync(uwsgiIni, `[uwsgi]
plugins = python3
http-socket = 127.0.0.1:${KEYSTONE_PORT}
wsgi-file = /usr/bin/keystone-wsgi-public
env = OS_KEYSTONE_CONFIG_FILES=${keystoneConf}
chdir = ${K}
master = true
processes = 2
threads = 1
lazy-apps = false
die-on-term = true
no-orphans = true
buffer-size = 65535
add-header = Connection: close
pidfile = ${uwsgiPidFile}
logto = ${K}/log/uwsgi.log
`);

  const cinderConf = join(C, 'cinder.conf');
  writeFileSync(cinderConf, `[DEFAULT]
auth_strategy = ${withKeystone ? 'keystone' : 'noauth'}
host = n1
my_ip = 127.0.0.1
state_path = ${C}/state
log_dir = ${C}/log
api_paste_config = /etc/cinder/api-paste.ini
rootwrap_config = /etc/cinder/rootwrap.conf
osapi_volume_listen = 127.0.0.1
osapi_volume_listen_port = ${CINDER_PORT}
osapi_volume_workers = 1
transport_url = rabbit://guest:guest@127.0.0.1:${AMQP_PORT}/
enabled_backends = ceph
default_volume_type = __DEFAULT__
graceful_shutdown_timeout = 5
# Periodic tasks (among them cinder-volume's first capabilities report to the scheduler) start at once
# instead of after a random delay of up to 60 s: the scheduler schedules nothing before that report.
periodic_fuzzy_delay = 0
# The scheduler lists a backend only once its service row has a heartbeat, the first of which comes
# report_interval seconds after start (default 10).
report_interval = 2
[database]
connection = sqlite:///${C}/cinder.sqlite
sqlite_synchronous = false
[oslo_concurrency]
lock_path = ${C}/lock
[ceph]
volume_driver = cinder.volume.drivers.rbd.RBDDriver
volume_backend_name = ceph
rbd_pool = rbd
rbd_ceph_conf = ${cephConf}
rbd_user = admin
rbd_flatten_volume_from_snapshot = false
${withKeystone ? `[keystone_authtoken]
www_authenticate_uri = ${authUrl}
auth_url = ${authUrl}
auth_type = password
project_domain_name = Default
user_domain_name = Default
project_name = service
username = cinder
password = ${cinderPassword}
region_name = RegionOne
` : ''}`, { mode: 0o600 });

  // --- process bookkeeping: every daemon is our child, stopped by PID ---
  type Name = 'uwsgi' | 'epmd' | 'rabbit' | 'cinder-api' | 'cinder-scheduler' | 'cinder-volume';
  const pids = new Map<Name, number>();
  const logOf: Record<Name, string[]> = {
    uwsgi: [join(K, 'log', 'uwsgi.log'), join(K, 'log', 'keystone.log')],
    epmd: [join(R, 'log', 'epmd.out')],
    rabbit: [join(R, 'log', 'stdout.log')],
    'cinder-api': [join(C, 'log', 'cinder-api.out'), join(C, 'log', 'cinder-api.log')],
    'cinder-scheduler': [join(C, 'log', 'cinder-scheduler.out'), join(C, 'log', 'cinder-scheduler.log')],
    'cinder-volume': [join(C, 'log', 'cinder-volume.out'), join(C, 'log', 'cinder-volume.log')],
  };
  const logs = (n: Name) => logOf[n].map((f) => tail(f)).filter(Boolean).join('\n');
  const launch = (n: Name, argv: string[], out: string, env: NodeJS.ProcessEnv = process.env, cwd?: string) => {
    const fd = openSync(out, 'a');
    const c = spawn(argv[0], argv.slice(1), { stdio: ['ignore', fd, fd], detached: true, env, cwd });
    closeSync(fd);
    c.on('error', () => undefined);
    c.unref();
    pids.set(n, c.pid!);
    return c.pid!;
  };
  const alive = (n: Name) => { const p = pids.get(n); return p !== undefined && !gone(p); };
  /** The daemon's PID and every process it forked (its session, see sessionMembers). */
  const tree = (n: Name) => { const p = pids.get(n); return p === undefined ? [] : [...new Set([...(gone(p) ? [] : [p]), ...descendants(p), ...sessionMembers(p)])]; };
  const must = async (argv: string[], timeoutMs = 120_000, env?: NodeJS.ProcessEnv, logFile?: string) => {
    const r = await run(argv, { timeoutMs, env });
    if (logFile) writeFileSync(logFile, r.stdout + r.stderr);
    if (r.code !== 0) throw new Error(`${argv.slice(0, 4).join(' ')} ... failed (${r.code}): ${(r.stderr || r.stdout).trim().slice(-1500)}`);
    return r.stdout;
  };
  /** Waits for cond, failing early with the daemon's logs when it died. */
  const until = async (n: Name, what: string, cond: () => Promise<boolean> | boolean, timeoutMs: number, everyMs = 100) => {
    const end = Date.now() + timeoutMs;
    let last: unknown;
    while (Date.now() < end) {
      if (!alive(n)) throw new Error(`${n} exited while waiting for ${what}:\n${logs(n)}`);
      try { if (await cond()) return; } catch (e) { last = e; }
      await sleep(everyMs);
    }
    throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (${(last as Error).message})` : ''}:\n${logs(n)}`);
  };
  const epmdBefore = new Set(pidsByComm('epmd'));

  let stopped = false;
  const stopAll = async () => {
    if (stopped) return;
    stopped = true;
    const sid = (n: Name) => pids.get(n);
    const stopOne = async (n: Name, graceMs: number, first?: (leader: number) => number[]) => {
      const p = sid(n);
      if (p !== undefined) await halt(p, graceMs, first?.(p));
    };
    // Cinder first (it talks to rabbit and keystone): SIGTERM to each parent, which stops its workers
    // (graceful_shutdown_timeout = 5), all three at once.
    await Promise.all((['cinder-api', 'cinder-scheduler', 'cinder-volume'] as Name[]).map((n) => stopOne(n, 8_000)));
    await Promise.all([
      // rabbitmq-server (a sh) runs erl (beam.smp) as its child, which has erl_child_setup and inet_gethost:
      // SIGTERM to the sh (it traps it and stops beam) and to beam itself.
      stopOne('rabbit', 10_000, (p) => [p, ...sessionMembers(p).filter((x) => /beam/.test(cmdline(x)))]),
      // uwsgi's master (die-on-term: it stops its workers); its pidfile names it.
      stopOne('uwsgi', 8_000, (p) => {
        const master = (() => { try { return Number(readFileSync(uwsgiPidFile, 'utf8').trim()); } catch { return p; } })();
        return [...new Set([p, master])];
      }),
    ]);
    // epmd last (beam unregisters from it): ours by PID; one that erl daemonized itself anyway (none
    // should: ours runs first) is an epmd that was not there before start, found through /proc.
    await stopOne('epmd', 5_000);
    const stray = pidsByComm('epmd').filter((p) => !epmdBefore.has(p) && /epmd/.test(cmdline(p)));
    if (stray.length) await killPids(stray, 'SIGTERM', 5_000);
    if (process.env.BALLAST_KEEP_LOGS) process.stderr.write(`openstack: kept ${dir} (BALLAST_KEEP_LOGS)\n`);
    else rmSync(dir, { recursive: true, force: true });
  };

  // --- HTTP ---
  type Reply = OpenStackReply;
  const http = async (method: string, url: string, body?: unknown, headers: Record<string, string> = {}, timeoutMs = 30_000): Promise<Reply> => {
    const h: Record<string, string> = { Accept: 'application/json', ...headers };
    if (body !== undefined) h['Content-Type'] = 'application/json';
    const r = await fetch(url, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body), signal: AbortSignal.timeout(timeoutMs) });
    const text = await r.text();
    let json: any;
    try { json = text ? JSON.parse(text) : undefined; } catch { json = undefined; }
    return { status: r.status, json, text, headers: r.headers };
  };
  const authBody = (password: string) => ({ auth: {
    identity: { methods: ['password'], password: { user: { name: 'admin', domain: { name: 'Default' }, password } } },
    scope: { project: { name: 'admin', domain: { name: 'Default' } } },
  } });
  const authenticate = async (password: string = adminPassword) => {
    const r = await http('POST', `${authUrl}/auth/tokens`, authBody(password));
    return { ...r, token: r.headers.get('x-subject-token') ?? undefined };
  };
  let projectId = withKeystone ? '' : randomBytes(16).toString('hex');
  let cached: { token: string; issued: number; expires: number } | undefined;
  const freshToken = async () => {
    if (!withKeystone) return { token: `admin:${projectId}`, issued: Date.now(), expires: Infinity };
    const r = await authenticate();
    if (r.status !== 201 || !r.token) throw new Error(`keystone auth failed (${r.status}): ${r.text.slice(0, 500)}`);
    return { token: r.token, issued: Date.now(), expires: Date.parse(r.json.token.expires_at) };
  };
  const adminToken = async () => {
    const now = Date.now();
    if (!cached || now > cached.expires - (cached.expires - cached.issued) / 4) cached = await freshToken();
    return cached.token;
  };
  const api = async (method: string, path: string, body?: unknown, headers: Record<string, string> = {}, timeoutMs = 30_000) => {
    const url = `${cinderUrl}/${projectId}${path}`;
    let r = await http(method, url, body, { 'X-Auth-Token': await adminToken(), ...headers }, timeoutMs);
    if (r.status === 401 && withKeystone) { cached = undefined; r = await http(method, url, body, { 'X-Auth-Token': await adminToken(), ...headers }, timeoutMs); }
    return r;
  };
  /**
   * A harness call that must succeed. Cinder on SQLite answers 500 now and then ("database is locked"):
   * retried a few times; a retried create that had gone through answers 409, and `onConflict` (if
   * given) then finds what it made.
   */
  const mustApi = async (method: string, path: string, body: unknown, want: number[], onConflict?: () => Promise<unknown>) => {
    for (let i = 0; ; i++) {
      const r = await api(method, path, body);
      if (want.includes(r.status)) return r.json;
      if (i > 0 && r.status === 409 && onConflict) return onConflict();
      if (r.status < 500 || i >= 4) throw new Error(`cinder ${method} ${path} gave ${r.status}: ${r.text.slice(0, 800)}`);
      await sleep(300 * (i + 1));
    }
  };

  const startApi = async () => {
    launch('cinder-api', ['/usr/bin/cinder-api', '--config-file', cinderConf], join(C, 'log', 'cinder-api.out'));
    await until('cinder-api', `cinder-api on 127.0.0.1:${CINDER_PORT}`, async () => (await http('GET', `http://127.0.0.1:${CINDER_PORT}/`, undefined, {}, 3000)).status === 300, 90_000, 200);
  };

  try {
    // sqlite in WAL mode from the start (the mode is stored in the file): db_sync and the daemons then never lock each other out.
    await must([PY, '-c', 'import sqlite3,sys\nfor f in sys.argv[1:]:\n  c=sqlite3.connect(f); assert c.execute("PRAGMA journal_mode=WAL").fetchone()[0]=="wal"; c.close()',
      join(K, 'keystone.sqlite'), join(C, 'cinder.sqlite')], 20_000);

    const rabbitUp = (async () => {
      if (!listening(EPMD_PORT)) {
        launch('epmd', ['/usr/bin/epmd', '-address', '127.0.0.1', '-port', String(EPMD_PORT)], join(R, 'log', 'epmd.out'));
        await until('epmd', `epmd on 127.0.0.1:${EPMD_PORT}`, () => listening(EPMD_PORT), 10_000, 50);
      }
      writeFileSync(join(R, 'enabled_plugins'), '[].\n');
      launch('rabbit', [RABBIT], join(R, 'log', 'stdout.log'), {
        PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C.UTF-8', LC_ALL: 'C.UTF-8',
        HOME: join(R, 'home'), RABBITMQ_NODENAME: `ballast${process.pid}@localhost`, RABBITMQ_NODE_IP_ADDRESS: '127.0.0.1',
        RABBITMQ_NODE_PORT: String(AMQP_PORT), RABBITMQ_DIST_PORT: String(RABBIT_DIST_PORT), RABBITMQ_MNESIA_BASE: join(R, 'mnesia'),
        RABBITMQ_LOG_BASE: join(R, 'log'), RABBITMQ_PID_FILE: join(R, 'rabbit.pid'), RABBITMQ_ENABLED_PLUGINS_FILE: join(R, 'enabled_plugins'),
        RABBITMQ_CONFIG_FILE: join(R, 'rabbitmq'), RABBITMQ_ADVANCED_CONFIG_FILE: join(R, 'advanced.config'), RABBITMQ_CONF_ENV_FILE: join(R, 'rabbitmq-env.conf'),
        ERL_EPMD_ADDRESS: '127.0.0.1', ERL_EPMD_PORT: String(EPMD_PORT),
        RABBITMQ_SERVER_START_ARGS: '-kernel inet_dist_use_interface {127,0,0,1}',
        // Erlang's schedulers busy-wait by default: CPU the Python daemons need on a small machine.
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS: '+sbwt none +sbwtdcpu none +sbwtdio none',
      }, join(R, 'home'));
      await until('rabbit', `RabbitMQ on 127.0.0.1:${AMQP_PORT}`, () => listening(AMQP_PORT), 120_000, 100);
      lap('rabbitmq listening');
    })();
    const cinderDb = (async () => {
      await must(['/usr/bin/cinder-manage', '--config-file', cinderConf, 'db', 'sync'], 180_000, undefined, join(C, 'log', 'dbsync.log'));
      lap('cinder db sync');
    })();
    const keystoneUp = (async () => {
      if (!withKeystone) return;
      // The fernet and credential key repositories as fernet_setup / credential_setup make them (keys 0 =
      // staged and 1 = primary, each 32 random bytes in urlsafe base64): the app checks for them when it
      // loads, but touches the database only on requests, so uwsgi loads it while the database is made.
      for (const d of ['fernet-keys', 'credential-keys']) for (const i of ['0', '1']) {
        writeFileSync(join(K, d, i), randomBytes(32).toString('base64').replace(/\+/g, '-').replace(/\//g, '_'), { mode: 0o600 });
      }
      launch('uwsgi', ['/usr/bin/uwsgi', '--ini', uwsgiIni], join(K, 'log', 'uwsgi.out'), process.env, K);
      // db_sync and bootstrap in one python process (each keystone-manage costs ~3 s of imports on its own);
      // the two keystone-manage commands one by one if that fails. The password goes in the environment
      // (OS_BOOTSTRAP_PASSWORD), not on argv.
      const steps = [['db_sync'],
        ['bootstrap', '--bootstrap-username', 'admin', '--bootstrap-project-name', 'admin', '--bootstrap-role-name', 'admin',
          '--bootstrap-region-id', 'RegionOne', '--bootstrap-admin-url', `${authUrl}/`, '--bootstrap-internal-url', `${authUrl}/`,
          '--bootstrap-public-url', `${authUrl}/`]];
      const env = { ...process.env, OS_BOOTSTRAP_PASSWORD: adminPassword };
      const script = join(K, 'keystone-setup.py');
      writeFileSync(script, [
        'import json, sys',
        'from keystone.cmd import cli',
        'conf, steps = sys.argv[1], json.loads(sys.argv[2])',
        "cli.main(argv=['keystone-manage', '--config-file', conf] + steps[0])",
        'for s in steps[1:]:',
        "    cli.CONF(args=['--config-file', conf] + s, project='keystone')",
        '    cli.CONF.command.cmd_class.main()', ''].join('\n'));
      const one = await run([PY, script, keystoneConf, JSON.stringify(steps)], { timeoutMs: 180_000, env });
      writeFileSync(join(K, 'log', 'setup.out'), one.stdout + one.stderr);
      if (one.code !== 0) {
        lap(`keystone setup in one process failed (${one.code}), running keystone-manage twice`);
        for (const s of steps) await must(['/usr/bin/keystone-manage', '--config-file', keystoneConf, ...s], 180_000, env);
      }
      lap('keystone db_sync and bootstrap');
      await until('uwsgi', `keystone on 127.0.0.1:${KEYSTONE_PORT}`, async () => (await http('GET', `${authUrl}/`, undefined, {}, 3000)).status === 200, 60_000, 100);
      lap('keystone answering');
      // Identity objects for Cinder over plain REST.
      const t = await freshToken();
      cached = t;
      const k = async (method: string, path: string, body: unknown, want: number[]) => {
        const r = await http(method, `${authUrl}${path}`, body, { 'X-Auth-Token': t.token });
        if (!want.includes(r.status)) throw new Error(`keystone ${method} ${path} gave ${r.status}: ${r.text.slice(0, 800)}`);
        return r.json;
      };
      const [projects, svc, user, roles, service] = await Promise.all([
        k('GET', '/projects?name=admin', undefined, [200]),
        k('POST', '/projects', { project: { name: 'service', domain_id: 'default', description: 'Service project' } }, [201]),
        k('POST', '/users', { user: { name: 'cinder', domain_id: 'default', password: cinderPassword } }, [201]),
        k('GET', '/roles?name=admin', undefined, [200]),
        k('POST', '/services', { service: { type: 'volumev3', name: 'cinderv3', description: 'OpenStack Block Storage' } }, [201]),
      ]);
      projectId = projects.projects[0].id;
      await Promise.all([
        k('PUT', `/projects/${svc.project.id}/users/${user.user.id}/roles/${roles.roles[0].id}`, undefined, [204]),
        ...['public', 'internal', 'admin'].map((i) => k('POST', '/endpoints', { endpoint: { service_id: service.service.id, interface: i, region_id: 'RegionOne',
          url: `http://127.0.0.1:${CINDER_PORT}/v3/%(project_id)s` } }, [201])),
      ]);
      lap('keystone: service project, cinder user, volumev3 service and endpoints');
    })();

    // Each Cinder daemon starts as soon as what it needs is there.
    await cinderDb;
    const apiUp = (async () => { await startApi(); lap('cinder-api answering'); })();
    await rabbitUp;
    launch('cinder-scheduler', ['/usr/bin/cinder-scheduler', '--config-file', cinderConf], join(C, 'log', 'cinder-scheduler.out'));
    launch('cinder-volume', ['/usr/bin/cinder-volume', '--config-file', cinderConf], join(C, 'log', 'cinder-volume.out'));
    await Promise.all([keystoneUp, apiUp]);
    // Ready when the scheduler knows the backend's pool (it has the volume service's capabilities): a
    // create before that waits in the scheduler or fails with "No valid backend". First both services
    // up in os-services (read from the database; get_pools is an RPC call to the scheduler, which
    // hangs for up to a minute while no scheduler listens yet).
    const daemonsAlive = () => { for (const n of ['cinder-scheduler', 'cinder-volume'] as Name[]) if (!alive(n)) throw new Error(`${n} exited:\n${logs(n)}`); };
    const withLogs = (e: Error) => { throw new Error(`${e.message}\n${logs('cinder-volume')}\n${logs('cinder-scheduler')}`); };
    await waitFor(async () => {
      daemonsAlive();
      const r = await api('GET', '/os-services', undefined, {}, 5_000);
      const up = (b: string) => (r.json?.services ?? []).some((x: { binary: string; state: string }) => x.binary === b && x.state === 'up');
      return r.status === 200 && up('cinder-scheduler') && up('cinder-volume');
    }, 'cinder-scheduler and cinder-volume to be up in os-services', 120_000, 200).catch(withLogs);
    lap('scheduler and volume services up');
    await waitFor(async () => {
      daemonsAlive();
      const r = await api('GET', '/scheduler-stats/get_pools', undefined, {}, 5_000);
      return r.status === 200 && (r.json?.pools ?? []).some((p: { name: string }) => p.name === pool);
    }, `the scheduler to know pool ${pool}`, 120_000, 200).catch(withLogs);
    lap('scheduler knows the ceph pool');
  } catch (e) {
    await stopAll().catch(() => undefined);
    throw e;
  }

  const waitVolume = async (id: string, statuses: string[], timeoutMs = 60_000) => {
    let last: any;
    await waitFor(async () => {
      const r = await api('GET', `/volumes/${id}`);
      last = r.json?.volume;
      if (r.status !== 200) throw new Error(`GET volume ${id}: ${r.status} ${r.text.slice(0, 300)}`);
      if (last?.status === 'error' && !statuses.includes('error')) throw new Error(`volume ${id} went to error`);
      return statuses.includes(last?.status);
    }, `volume ${id} to be ${statuses.join('|')} (last: ${last?.status})`, timeoutMs, 200);
    return last;
  };
  const apiPids = () => tree('cinder-api');
  const keystonePids = () => tree('uwsgi');

  return {
    dir, authUrl, cinderUrl, userName: 'admin', adminPassword, adminPasswordFile, projectName: 'admin', projectId,
    userDomainName: 'Default', projectDomainName: 'Default', region: 'RegionOne', pool,
    startMs: Date.now() - t0, laps,
    token: async () => (await freshToken()).token,
    authenticate,
    api,
    async setQuota(q) { await mustApi('PUT', `/os-quota-sets/${projectId}`, { quota_set: q }, [200]); },
    async createVolumeType(name, extraSpecs) {
      const byName = async () => ({ volume_type: ((await api('GET', '/types')).json.volume_types as { id: string; name: string }[]).find((t) => t.name === name) });
      const r = await mustApi('POST', '/types', { volume_type: { name, 'os-volume-type-access:is_public': true, ...(extraSpecs ? { extra_specs: extraSpecs } : {}) } }, [200], byName);
      return r.volume_type.id as string;
    },
    waitVolume,
    pauseCinderApi() { signal(apiPids(), 'SIGSTOP'); },
    resumeCinderApi() { signal(apiPids(), 'SIGCONT'); },
    async stopCinderApi() {
      const p = pids.get('cinder-api');
      if (p !== undefined) await halt(p, 8_000);
      await waitFor(() => !listening(CINDER_PORT), `port ${CINDER_PORT} to be free`, 10_000, 50);
    },
    async startCinderApi() { if (!alive('cinder-api')) await startApi(); },
    pauseKeystone() { signal(keystonePids(), 'SIGSTOP'); },
    resumeKeystone() { signal(keystonePids(), 'SIGCONT'); },
    pids: () => (['uwsgi', 'epmd', 'rabbit', 'cinder-api', 'cinder-scheduler', 'cinder-volume'] as Name[]).flatMap(tree),
    stop: stopAll,
  };
}
