import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { basename, isAbsolute, join } from 'node:path';
import { InvalidArgumentError } from '../core/errors.js';
import { parseBackupTargets, type BackupTarget } from '../backups/targets.js';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** The whole daemon configuration, parsed once and frozen. The only module that reads env and defaults. */
export interface Config {
  /** State: database, block images, mountpoints. */
  readonly root: string;
  /** Docker plugin socket; its basename without .sock is the driver name dockerd knows. */
  readonly socket: string;
  /** Admin API socket for the `ballast` CLI. */
  readonly adminSocket: string;
  readonly logLevel: LogLevel;
  /** Docker engine API, for `ballast doctor` and (later) leaked-reference cleanup. unix:///path or a path. */
  readonly dockerHost: string;
  readonly node: string;
  readonly defaultBackend: string;
  /** Backend instances: name -> { type, ...settings }. */
  readonly backends: Readonly<Record<string, Readonly<Record<string, unknown>>>>;
  /** Seconds a graceful stop waits for operations in flight. */
  readonly shutdownTimeoutSec: number;
  /** Seconds between reconciler passes. */
  readonly reconcileIntervalSec: number;
  /** A mount reference younger than this is never taken for leaked (its container may be starting). */
  readonly leakGraceSec: number;
  /** Fault injection points (BALLAST_FAULT), for crash tests only. */
  readonly faults: readonly string[];
  /** Free-space watch of the host filesystems holding mounted thin block images (src/reconciler/space.ts). */
  readonly space: Readonly<SpaceConfig>;
  /** Where volume records, the mount ledger and the journal live: SQLite under `root` (default) or etcd. */
  readonly store: StoreConfig;
  /** Where `ballast backup create` puts backups (restic repositories on a directory or S3; src/backups/targets.ts). */
  readonly backupTargets: Readonly<Record<string, BackupTarget>>;
  /** The target a backup command without --to / --from uses (default: the only target, if there is one). */
  readonly defaultBackupTarget?: string;
}

/**
 * `store` in the config file. `{ "type": "sqlite" }` (the default): the embedded store in
 * `<root>/ballast.db`, for one host. `{ "type": "etcd", "endpoints": [...] }`: the cluster store
 * (src/store/etcd.ts), with `prefix` (`/ballast/`), `timeoutSec` (5: the bound on every write),
 * `staleReadSec` (60: how long reads answer from the local copy while etcd is unreachable),
 * `leaseTtlSec` (10: the TTL of the lease that keeps this node registered), the cluster timing
 * `keepaliveSec` (TTL/5), `selfFenceMarginSec` (3, at most 30 % of the TTL), `takeoverGraceSec` (1), `peerTimeoutSec` (1, at most TTL/10) and
 * `peerListen` ("auto", or `host:port`, or "off"), checked against each other (clusterTiming),
 * `tls` (`{ ca, cert, key }`, files) and `auth` (`{ user, passwordFile }`; the password is read from
 * the file when the store opens, and is never held in the config nor logged).
 */
export type StoreConfig =
  | { readonly type: 'sqlite' }
  | {
    readonly type: 'etcd'; readonly endpoints: readonly string[]; readonly prefix: string; readonly timeoutSec: number; readonly staleReadSec: number;
    /** TTL of the lease that keeps this node registered (node ls shows a node without one as down). */
    readonly leaseTtlSec: number;
    /** Cluster timing (see clusterTiming): keepalive interval, self-fence margin, takeover grace, peer check. */
    readonly keepaliveSec: number; readonly selfFenceMarginSec: number; readonly takeoverGraceSec: number; readonly peerTimeoutSec: number;
    /** `host:port` the peer check listens on and is advertised at ("auto": this node's first non-loopback IPv4, port 7421; "off"). */
    readonly peerListen: string;
    readonly tls?: { readonly ca: string; readonly cert?: string; readonly key?: string };
    readonly auth?: { readonly user: string; readonly passwordFile: string };
  };
const ETCD_KEYS = ['type', 'endpoints', 'prefix', 'timeoutSec', 'staleReadSec', 'leaseTtlSec', 'keepaliveSec', 'selfFenceMarginSec', 'takeoverGraceSec', 'peerTimeoutSec', 'peerListen', 'tls', 'auth'] as const;

/**
 * `space` in the config file. Levels are free space in percent of the host filesystem holding thin
 * images: below `warnFreePercent` (15) the daemon logs and doctor/Status warn; below
 * `criticalFreePercent` (5, at least `criticalMinMiB` 256, plus a headroom for data still in memory and
 * the rate free space falls at) mounted thin volumes are frozen and new mounts of thin volumes refused,
 * until free space is above critical + `resumeMarginPercent` (2). `pollMs` (200) is how often free
 * space is read while thin volumes are mounted.
 */
export interface SpaceConfig { readonly warnFreePercent: number; readonly criticalFreePercent: number; readonly criticalMinMiB: number; readonly resumeMarginPercent: number; readonly pollMs: number }
const SPACE_KEYS = ['warnFreePercent', 'criticalFreePercent', 'criticalMinMiB', 'resumeMarginPercent', 'pollMs'] as const;

export const DEFAULTS = {
  root: '/var/lib/ballast',
  socket: '/run/docker/plugins/ballast.sock',
  logLevel: 'info' as LogLevel,
  dockerHost: 'unix:///var/run/docker.sock',
  defaultBackend: 'local',
  backends: { local: { type: 'local' }, block: { type: 'block' } },
  shutdownTimeoutSec: 30,
  reconcileIntervalSec: 15,
  leakGraceSec: 120,
  space: { warnFreePercent: 15, criticalFreePercent: 5, criticalMinMiB: 256, resumeMarginPercent: 2, pollMs: 200 } as SpaceConfig,
};

export interface ConfigInput {
  root?: string; socket?: string; adminSocket?: string; config?: string; logLevel?: string;
  dockerHost?: string; node?: string;
}

const FILE_KEYS = ['root', 'socket', 'adminSocket', 'logLevel', 'dockerHost', 'node', 'defaultBackend', 'backends', 'shutdownTimeoutSec', 'reconcileIntervalSec', 'leakGraceSec', 'space', 'store', 'backupTargets', 'defaultBackupTarget'];

/** Merges defaults < config file < environment < flags, validates, and freezes the result. */
export function loadConfig(flags: ConfigInput = {}, env: NodeJS.ProcessEnv = process.env): Config {
  let file: Record<string, unknown> = {};
  const cfgPath = flags.config ?? env.BALLAST_CONFIG;
  if (cfgPath) {
    let text: string;
    try { text = readFileSync(cfgPath, 'utf8'); } catch (e) { throw new InvalidArgumentError(`cannot read config file ${cfgPath}: ${(e as Error).message}`); }
    try { file = JSON.parse(text); } catch (e) { throw new InvalidArgumentError(`config file ${cfgPath} is not valid JSON: ${(e as Error).message}`); }
    if (!file || typeof file !== 'object' || Array.isArray(file)) throw new InvalidArgumentError(`config file ${cfgPath} must hold a JSON object`);
    for (const k of Object.keys(file)) {
      if (!FILE_KEYS.includes(k)) throw new InvalidArgumentError(`unknown key ${JSON.stringify(k)} in ${cfgPath}; accepted keys: ${FILE_KEYS.join(', ')}`);
    }
  }
  const pick = <T>(flag: T | undefined, envv: string | undefined, fromFile: unknown, def: T): T =>
    (flag ?? (envv as T | undefined) ?? (fromFile as T | undefined) ?? def);

  const root = pick(flags.root, env.BALLAST_ROOT, file.root, DEFAULTS.root);
  const socket = pick(flags.socket, env.BALLAST_SOCKET, file.socket, DEFAULTS.socket);
  const adminSocket = pick(flags.adminSocket, env.BALLAST_ADMIN_SOCKET, file.adminSocket, join(root, 'admin.sock'));
  const logLevel = pick(flags.logLevel, env.BALLAST_LOG_LEVEL, file.logLevel, DEFAULTS.logLevel) as LogLevel;
  let dockerHost = pick(flags.dockerHost, env.DOCKER_HOST, file.dockerHost, DEFAULTS.dockerHost);
  const node = pick(flags.node, env.BALLAST_NODE, file.node, hostname());
  const backends = (file.backends ?? DEFAULTS.backends) as Record<string, Record<string, unknown>>;
  const defaultBackend = (file.defaultBackend ?? (file.backends ? Object.keys(backends)[0] : DEFAULTS.defaultBackend)) as string;
  const shutdownTimeoutSec = (file.shutdownTimeoutSec ?? DEFAULTS.shutdownTimeoutSec) as number;
  const num = (v: string | undefined) => (v === undefined || v === '' ? undefined : Number(v));
  const reconcileIntervalSec = (num(env.BALLAST_RECONCILE_INTERVAL_SEC) ?? file.reconcileIntervalSec ?? DEFAULTS.reconcileIntervalSec) as number;
  const leakGraceSec = (num(env.BALLAST_LEAK_GRACE_SEC) ?? file.leakGraceSec ?? DEFAULTS.leakGraceSec) as number;
  const faults = (env.BALLAST_FAULT ?? '').split(',').map((s) => s.trim()).filter(Boolean);

  for (const [k, v] of [['root', root], ['socket', socket], ['adminSocket', adminSocket]] as const) {
    if (typeof v !== 'string' || !isAbsolute(v) || v.includes('\0')) throw new InvalidArgumentError(`${k} must be an absolute path, got ${JSON.stringify(v)}`);
  }
  if (!socket.endsWith('.sock')) throw new InvalidArgumentError(`socket ${socket} must end in .sock (dockerd finds plugins by that name)`);
  if (!LOG_LEVELS.includes(logLevel)) throw new InvalidArgumentError(`log level ${JSON.stringify(logLevel)} is not one of ${LOG_LEVELS.join(', ')}`);
  if (dockerHost.startsWith('/')) dockerHost = `unix://${dockerHost}`;
  if (!dockerHost.startsWith('unix:///')) throw new InvalidArgumentError(`docker host ${dockerHost} is not supported; use unix:///path/to/docker.sock`);
  if (!backends || typeof backends !== 'object' || Array.isArray(backends) || Object.keys(backends).length === 0) {
    throw new InvalidArgumentError('backends must be an object naming at least one backend instance');
  }
  for (const [name, b] of Object.entries(backends)) {
    if (!/^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$/.test(name)) throw new InvalidArgumentError(`backend name ${JSON.stringify(name)} is not valid`);
    if (!b || typeof b !== 'object' || Array.isArray(b)) throw new InvalidArgumentError(`backend ${name} must be an object with a type`);
  }
  if (!(defaultBackend in backends)) throw new InvalidArgumentError(`defaultBackend ${JSON.stringify(defaultBackend)} is not among the backends: ${Object.keys(backends).join(', ')}`);
  if (typeof shutdownTimeoutSec !== 'number' || !(shutdownTimeoutSec > 0 && shutdownTimeoutSec <= 600)) throw new InvalidArgumentError('shutdownTimeoutSec must be a number of seconds between 0 and 600');
  if (typeof reconcileIntervalSec !== 'number' || !(reconcileIntervalSec >= 0.1 && reconcileIntervalSec <= 3600)) throw new InvalidArgumentError('reconcileIntervalSec must be a number of seconds between 0.1 and 3600');
  if (typeof leakGraceSec !== 'number' || !(leakGraceSec >= 0 && leakGraceSec <= 86400)) throw new InvalidArgumentError('leakGraceSec must be a number of seconds between 0 and 86400');

  const space = parseSpace(file.space, reconcileIntervalSec);
  const store = parseStore(file.store);
  const backupTargets = parseBackupTargets(file.backupTargets);
  const defaultBackupTarget = file.defaultBackupTarget as string | undefined;
  if (defaultBackupTarget !== undefined && (typeof defaultBackupTarget !== 'string' || !(defaultBackupTarget in backupTargets))) {
    throw new InvalidArgumentError(`defaultBackupTarget ${JSON.stringify(defaultBackupTarget)} is not among the backupTargets: ${Object.keys(backupTargets).join(', ') || '(none)'}`);
  }

  return deepFreeze({
    root, socket, adminSocket, logLevel, dockerHost, node, defaultBackend, backends: structuredClone(backends), shutdownTimeoutSec,
    reconcileIntervalSec, leakGraceSec, faults, space, store, backupTargets, ...(defaultBackupTarget ? { defaultBackupTarget } : {}),
  });
}

function parseStore(v: unknown): StoreConfig {
  if (v === undefined) return { type: 'sqlite' };
  const isObj = (x: unknown): x is Record<string, unknown> => !!x && typeof x === 'object' && !Array.isArray(x);
  if (!isObj(v)) throw new InvalidArgumentError('store must be an object: {"type": "sqlite"} or {"type": "etcd", "endpoints": [...]}');
  const only = (o: Record<string, unknown>, where: string, keys: readonly string[]) => {
    for (const k of Object.keys(o)) if (!keys.includes(k)) throw new InvalidArgumentError(`unknown key ${JSON.stringify(k)} in ${where}; accepted keys: ${keys.join(', ')}`);
  };
  if (v.type === 'sqlite') { only(v, 'store', ['type']); return { type: 'sqlite' }; }
  if (v.type !== 'etcd') throw new InvalidArgumentError(`store.type ${JSON.stringify(v.type)} is not one of sqlite, etcd`);
  only(v, 'store', ETCD_KEYS);
  const file = (x: unknown, what: string): string => {
    if (typeof x !== 'string' || !isAbsolute(x)) throw new InvalidArgumentError(`${what} must be an absolute file path`);
    return x;
  };
  const endpoints = v.endpoints;
  if (!Array.isArray(endpoints) || endpoints.length === 0) throw new InvalidArgumentError('store.endpoints must list at least one etcd client URL, e.g. ["http://10.0.0.1:2379"]');
  for (const e of endpoints) {
    if (typeof e !== 'string' || !/^https?:\/\/[^\s/,]+:\d+$/.test(e)) throw new InvalidArgumentError(`store.endpoints: ${JSON.stringify(e)} is not an etcd client URL like http://host:2379 or https://host:2379`);
  }
  const prefix = v.prefix ?? '/ballast/';
  if (typeof prefix !== 'string' || !/^\/[\x21-\x7e]*\/$/.test(prefix)) throw new InvalidArgumentError(`store.prefix ${JSON.stringify(prefix)} must start and end with / and hold no space or control character`);
  const timeoutSec = v.timeoutSec ?? 5;
  if (typeof timeoutSec !== 'number' || !(timeoutSec >= 0.1 && timeoutSec <= 120)) throw new InvalidArgumentError('store.timeoutSec must be a number of seconds between 0.1 and 120');
  const leaseTtlSec = v.leaseTtlSec ?? 10;
  if (typeof leaseTtlSec !== 'number' || !Number.isInteger(leaseTtlSec) || !(leaseTtlSec >= 2 && leaseTtlSec <= 600)) throw new InvalidArgumentError('store.leaseTtlSec must be a whole number of seconds between 2 and 600');
  const staleReadSec = v.staleReadSec ?? 60;
  if (typeof staleReadSec !== 'number' || !(staleReadSec >= 1 && staleReadSec <= 86400)) throw new InvalidArgumentError('store.staleReadSec must be a number of seconds between 1 and 86400');
  let tls: { ca: string; cert?: string; key?: string } | undefined;
  if (v.tls !== undefined) {
    if (!isObj(v.tls)) throw new InvalidArgumentError('store.tls must be an object with ca (and cert and key for a client certificate)');
    only(v.tls, 'store.tls', ['ca', 'cert', 'key']);
    tls = { ca: file(v.tls.ca, 'store.tls.ca') };
    if ((v.tls.cert === undefined) !== (v.tls.key === undefined)) throw new InvalidArgumentError('store.tls needs both cert and key, or neither');
    if (v.tls.cert !== undefined) { tls.cert = file(v.tls.cert, 'store.tls.cert'); tls.key = file(v.tls.key, 'store.tls.key'); }
  }
  if (tls && endpoints.some((e: string) => e.startsWith('http://'))) throw new InvalidArgumentError('store.tls is given, so every store.endpoints URL must start with https://');
  if (!tls && endpoints.some((e: string) => e.startsWith('https://'))) throw new InvalidArgumentError('store.endpoints has an https:// URL; give store.tls.ca, the CA that signed the etcd certificates');
  let auth: { user: string; passwordFile: string } | undefined;
  if (v.auth !== undefined) {
    if (!isObj(v.auth)) throw new InvalidArgumentError('store.auth must be an object with user and passwordFile');
    only(v.auth, 'store.auth', ['user', 'passwordFile']);
    if (typeof v.auth.user !== 'string' || !v.auth.user) throw new InvalidArgumentError('store.auth.user must be a non-empty string');
    auth = { user: v.auth.user, passwordFile: file(v.auth.passwordFile, 'store.auth.passwordFile') };
  }
  const num = (k: string, def: number, lo: number, hi: number): number => {
    const x = v[k] ?? def;
    if (typeof x !== 'number' || !(x >= lo && x <= hi)) throw new InvalidArgumentError(`store.${k} must be a number of seconds between ${lo} and ${hi}`);
    return x;
  };
  const keepaliveSec = num('keepaliveSec', leaseTtlSec / 5, 0.2, 120);
  const selfFenceMarginSec = num('selfFenceMarginSec', Math.min(3, leaseTtlSec * 0.3), 0.5, 300);
  const takeoverGraceSec = num('takeoverGraceSec', 1, 0, 60);
  const peerTimeoutSec = num('peerTimeoutSec', Math.min(1, leaseTtlSec / 10), 0.1, 30);
  const peerListen = v.peerListen ?? 'auto';
  if (typeof peerListen !== 'string' || !(peerListen === 'auto' || peerListen === 'off' || /^[0-9.]+:\d{1,5}$/.test(peerListen))) {
    throw new InvalidArgumentError(`store.peerListen ${JSON.stringify(peerListen)} must be "auto", "off", or an IPv4 address and port such as "10.0.0.5:7421"`);
  }
  clusterTiming({ leaseTtlSec, keepaliveSec, selfFenceMarginSec, takeoverGraceSec, peerTimeoutSec });
  return { type: 'etcd', endpoints: [...endpoints] as string[], prefix, timeoutSec, staleReadSec, leaseTtlSec, keepaliveSec, selfFenceMarginSec, takeoverGraceSec, peerTimeoutSec, peerListen, ...(tls ? { tls } : {}), ...(auth ? { auth } : {}) };
}

/**
 * The timing rule of cluster mode, checked when the config is read (and so at every start):
 * - a node counts on its lease until the send time of its last keepalive that etcd answered plus the TTL
 *   (etcd cannot have expired it earlier), and stops writing to its exclusive volumes (self-fence) at
 *   that time minus `selfFenceMarginSec`, so it is frozen before any other node can see the lease gone;
 * - before that deadline two keepalives must have had their chance to fail and the peers their chance to
 *   answer: 2 x keepaliveSec + peerTimeoutSec < leaseTtlSec - selfFenceMarginSec;
 * - another node takes a volume over only after the lease is gone plus `takeoverGraceSec`, and only once
 *   the old holder is fenced at the storage; a Mount waits for that at most TTL + grace + 2 s.
 * So a takeover after a crash takes the TTL, the grace, the fence (about 1 s for Ceph) and the stage.
 * Returns the derived figures (milliseconds).
 */
export function clusterTiming(t: { leaseTtlSec: number; keepaliveSec: number; selfFenceMarginSec: number; takeoverGraceSec: number; peerTimeoutSec: number }): { selfFenceAfterMs: number; takeoverWaitMs: number } {
  const before = t.leaseTtlSec - t.selfFenceMarginSec;
  if (!(2 * t.keepaliveSec + t.peerTimeoutSec < before)) {
    throw new InvalidArgumentError(`cluster timing: 2 x store.keepaliveSec (${t.keepaliveSec}) + store.peerTimeoutSec (${t.peerTimeoutSec}) must be shorter than store.leaseTtlSec (${t.leaseTtlSec}) - store.selfFenceMarginSec (${t.selfFenceMarginSec}) = ${before} s, so that a node that lost etcd has tried twice and asked its peers before it must stop writing; lower keepaliveSec or the margin, or raise the TTL`);
  }
  if (t.takeoverGraceSec > t.leaseTtlSec) throw new InvalidArgumentError(`cluster timing: store.takeoverGraceSec (${t.takeoverGraceSec}) must not be longer than store.leaseTtlSec (${t.leaseTtlSec})`);
  return { selfFenceAfterMs: Math.round(before * 1000), takeoverWaitMs: Math.round((t.leaseTtlSec + t.takeoverGraceSec + 2) * 1000) };
}

function parseSpace(v: unknown, reconcileIntervalSec: number): SpaceConfig {
  if (v === undefined) return { ...DEFAULTS.space, pollMs: Math.min(DEFAULTS.space.pollMs, reconcileIntervalSec * 500) };
  if (!v || typeof v !== 'object' || Array.isArray(v)) throw new InvalidArgumentError(`space must be an object with some of ${SPACE_KEYS.join(', ')}`);
  for (const k of Object.keys(v)) {
    if (!(SPACE_KEYS as readonly string[]).includes(k)) throw new InvalidArgumentError(`unknown key ${JSON.stringify(k)} in space; accepted keys: ${SPACE_KEYS.join(', ')}`);
  }
  const o = { ...DEFAULTS.space, ...(v as Partial<SpaceConfig>) };
  for (const k of ['warnFreePercent', 'criticalFreePercent', 'resumeMarginPercent'] as const) {
    if (typeof o[k] !== 'number' || !(o[k] >= 0 && o[k] <= 90)) throw new InvalidArgumentError(`space.${k} must be a number between 0 and 90 (percent of the filesystem)`);
  }
  if (typeof o.criticalMinMiB !== 'number' || !(o.criticalMinMiB >= 0 && o.criticalMinMiB <= 1024 * 1024)) throw new InvalidArgumentError('space.criticalMinMiB must be a number of MiB between 0 and 1048576');
  if (o.criticalFreePercent > o.warnFreePercent) throw new InvalidArgumentError(`space.criticalFreePercent (${o.criticalFreePercent}) must not be above space.warnFreePercent (${o.warnFreePercent})`);
  if (typeof o.pollMs !== 'number' || !(o.pollMs >= 50 && o.pollMs <= 60_000)) throw new InvalidArgumentError('space.pollMs must be a number of milliseconds between 50 and 60000');
  if (o.pollMs >= reconcileIntervalSec * 1000) throw new InvalidArgumentError(`space.pollMs (${o.pollMs}) must be shorter than the reconcile interval (${reconcileIntervalSec * 1000} ms)`);
  return o;
}

/** Driver name dockerd uses for a socket: its basename without ".sock". */
export function driverName(socket: string): string { return basename(socket, '.sock'); }

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object') { for (const v of Object.values(o)) deepFreeze(v); Object.freeze(o); }
  return o;
}
