import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import pino, { type Logger } from 'pino';
import type { Config } from '../config/index.js';
import { driverName } from '../config/index.js';
import { SqliteStore } from '../store/sqlite.js';
import type { MetadataStore } from '../store/types.js';
import { BackendRegistry } from '../backends/registry.js';
import { localFactory } from '../backends/local/index.js';
import { blockFactory } from '../backends/block/index.js';
import { VolumeService } from '../core/service.js';
import { hostExec, type Exec } from '../host/exec.js';
import { ProcMountTable, type MountTable } from '../host/mountinfo.js';
import { prepareSocketPath, restrictSocket } from '../host/socket.js';
import { dockerPluginServer } from '../frontends/docker-plugin/server.js';
import { adminServer } from '../frontends/admin/server.js';
import { hostChecks, pluginChecks } from './doctor.js';
import { UnavailableError } from '../core/errors.js';

export const VERSION = '0.1.0';

export interface DaemonOverrides { exec?: Exec; mounts?: MountTable; log?: Logger; store?: MetadataStore }

export interface RunningDaemon {
  readonly service: VolumeService;
  readonly config: Config;
  readonly log: Logger;
  /** Graceful stop: stop accepting, let operations finish (bounded), keep mounts, remove sockets. */
  stop(reason?: string): Promise<void>;
}

/** Composition root: config -> store -> backends -> service -> frontends. */
export async function startDaemon(config: Config, o: DaemonOverrides = {}): Promise<RunningDaemon> {
  const log = o.log ?? pino({ level: config.logLevel, base: { pid: process.pid } });
  const exec = o.exec ?? hostExec;
  const mounts = o.mounts ?? new ProcMountTable();
  await mkdir(config.root, { recursive: true, mode: 0o700 });
  const pidFile = join(config.root, 'ballast.pid');
  await claimPidFile(pidFile);

  const store = o.store ?? new SqliteStore(join(config.root, 'ballast.db'));
  const backends = new BackendRegistry().registerType(localFactory).registerType(blockFactory)
    .instantiate(config.backends, { root: config.root, exec, mounts, log });
  const service = new VolumeService({ store, backends, log, node: config.node, defaultBackend: config.defaultBackend });

  const startedAt = new Date().toISOString();
  const admin = adminServer({
    service, log,
    health: () => ({ ok: true, version: VERSION, node: config.node, root: config.root, socket: config.socket, driver: driverName(config.socket), backends: backends.names(), startedAt, pid: process.pid }),
    doctor: async () => ({ checks: [...(await hostChecks(exec)), ...(await pluginChecks(config.socket, config.dockerHost))] }),
  });
  const plugin = dockerPluginServer(service, log);

  await prepareSocketPath(config.adminSocket);
  await admin.listen({ path: config.adminSocket });
  await restrictSocket(config.adminSocket);
  await prepareSocketPath(config.socket);
  await plugin.listen({ path: config.socket });
  await restrictSocket(config.socket);
  log.info({ socket: config.socket, adminSocket: config.adminSocket, root: config.root, driver: driverName(config.socket), backends: backends.names(), version: VERSION }, 'ballast serving');

  let stopping: Promise<void> | undefined;
  const stop = (reason = 'stop') => (stopping ??= (async () => {
    log.info({ reason }, 'ballast stopping; mounts stay in place');
    const closing = Promise.allSettled([plugin.close(), admin.close()]);
    const drained = await Promise.race([
      service.drain().then(() => true),
      new Promise<boolean>((r) => setTimeout(r, config.shutdownTimeoutSec * 1000, false).unref()),
    ]);
    if (!drained) log.warn({ timeoutSec: config.shutdownTimeoutSec }, 'operations still running at shutdown; they will be finished on the next start');
    await Promise.race([closing, new Promise((r) => setTimeout(r, 2000).unref())]);
    await rm(config.socket, { force: true });
    await rm(config.adminSocket, { force: true });
    await store.close();
    await rm(pidFile, { force: true });
    log.info('ballast stopped');
  })());
  return { service, config, log, stop };
}

async function claimPidFile(file: string): Promise<void> {
  const old = Number((await readFile(file, 'utf8').catch(() => '')).trim());
  if (old && old !== process.pid && isAlive(old)) {
    const cmd = await readFile(`/proc/${old}/cmdline`, 'utf8').catch(() => '');
    if (/ballast|node/.test(cmd)) throw new UnavailableError(`another ballast daemon (pid ${old}) uses this root; stop it first or pick another --root`);
  }
  await writeFile(file, `${process.pid}\n`, { mode: 0o644 });
}

function isAlive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch (e) { return (e as NodeJS.ErrnoException).code === 'EPERM'; }
}
