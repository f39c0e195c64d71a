import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { daemonLogger } from './logger.js';
import type { Config } from '../config/index.js';
import { clusterTiming, driverName } from '../config/index.js';
import { SqliteStore } from '../store/sqlite.js';
import { StoreReserve } from '../store/reserve.js';
import { LocalMembership, type Membership } from '../cluster/membership.js';
import type { MetadataStore } from '../store/types.js';
import { BackendRegistry } from '../backends/registry.js';
import { localFactory } from '../backends/local/index.js';
import { blockFactory } from '../backends/block/index.js';
import { sshfsFactory } from '../backends/sshfs/index.js';
import { glusterfsFactory } from '../backends/glusterfs/index.js';
import { nfsFactory } from '../backends/nfs/index.js';
import { s3Factory } from '../backends/s3/index.js';
import { cephfsFactory } from '../backends/cephfs/index.js';
import { rbdFactory } from '../backends/rbd/index.js';
import { cinderFactory } from '../backends/cinder/index.js';
import { BackupService } from '../backups/service.js';
import { VolumeService } from '../core/service.js';
import { hostExec, type Exec } from '../host/exec.js';
import { ProcMountTable, type MountTable } from '../host/mountinfo.js';
import { prepareSocketPath, restrictSocket } from '../host/socket.js';
import { buildApi } from '../frontends/api.js';
import { hostChecks, leaseCheck, placementCheck, pluginChecks, reconcilerChecks, selfFenceCheck, spaceCheck } from './doctor.js';
import type { SelfFence } from '../cluster/self-fence.js';
import type { PeerServer } from '../frontends/peer/server.js';
import { SpaceWatcher } from '../reconciler/space.js';
import { InvalidArgumentError, UnavailableError } from '../core/errors.js';
import { faultInjector } from '../core/faults.js';
import { Reconciler } from '../reconciler/index.js';
import { DockerEngineApi, type DockerApi } from '../host/docker-api.js';
import { allLoopDevices } from '../host/blockdev.js';

export const VERSION = '0.1.0';

export interface DaemonOverrides { exec?: Exec; mounts?: MountTable; log?: Logger; store?: MetadataStore; docker?: DockerApi | null }

export interface RunningDaemon {
  readonly service: VolumeService;
  readonly reconciler: Reconciler;
  /** Milliseconds from start until the socket served, and the start-up recovery + reconcile report. */
  readonly startup: { readonly serveMs: number; readonly recovered: number; readonly repairs: number };
  readonly config: Config;
  readonly log: Logger;
  /** Graceful stop: stop accepting, let operations finish (bounded), keep mounts, remove sockets. */
  stop(reason?: string): Promise<void>;
}

/** Composition root: config -> store -> backends -> service -> frontends. */
export async function startDaemon(config: Config, o: DaemonOverrides = {}): Promise<RunningDaemon> {
  const log = o.log ?? daemonLogger(config.logLevel);
  const exec = o.exec ?? hostExec;
  const mounts = o.mounts ?? new ProcMountTable();
  await mkdir(config.root, { recursive: true, mode: 0o700 });
  const pidFile = join(config.root, 'ballast.pid');
  await claimPidFile(pidFile);

  const t0 = performance.now();
  const fault = faultInjector(config.faults);
  // Space kept for the store's own writes on a full disk (Unmount, journal, ledger); doctor reports its use.
  const sc = config.store;
  const reserve = o.store || sc.type !== 'sqlite' ? undefined : new StoreReserve(config.root);
  // The etcd client (gRPC) is loaded only in cluster mode: on one host it would cost memory for nothing.
  // The node registry: in cluster mode a lease in etcd, renewed while this daemon runs and reaches etcd.
  let store: MetadataStore;
  let membership: Membership = new LocalMembership(config.node, VERSION);
  // Cluster mode: the peer check (is etcd down for everyone, or only for me?) and the self-fence.
  let peerServer: PeerServer | undefined;
  let selfFence: SelfFence | undefined;
  let selfFenceUp: ((s: VolumeService) => SelfFence) | undefined;
  if (o.store) store = o.store;
  else if (sc.type === 'etcd') {
    const [{ EtcdStore }, { EtcdMembership }, peer, sf] = await Promise.all([import('../store/etcd.js'), import('../cluster/membership.js'), import('../frontends/peer/server.js'), import('../cluster/self-fence.js')]);
    const es = await EtcdStore.open({ ...sc, onEvent: (event, detail) => log[event === 'watch-resumed' ? 'info' : 'warn']({ op: 'store', event, outcome: detail }, `cluster store: ${detail}`) });
    store = es;
    const addr = peer.peerAddress(sc.peerListen);
    let peerUrl: string | undefined;
    if (addr) {
      peerServer = new peer.PeerServer(() => ({ node: config.node, etcd: selfFence?.reachesEtcd() ?? true }));
      try { peerUrl = await peerServer.listen(addr.host, addr.port); } catch (e) {
        await es.close();
        throw new UnavailableError(`the peer check of cluster mode cannot listen on ${addr.host}:${addr.port}: ${(e as Error).message}; set store.peerListen to a free "address:port" of this node (or "off", and then a node that loses etcd always stops writing to its exclusive volumes)`);
      }
    }
    const m = new EtcdMembership(config.node, es, { ttlSec: sc.leaseTtlSec, keepaliveSec: sc.keepaliveSec, version: VERSION, peerUrl }, log);
    membership = m;
    selfFenceUp = (svc) => new sf.SelfFence({
      node: config.node, membership: m, marginMs: sc.selfFenceMarginSec * 1000, peerTimeoutMs: sc.peerTimeoutSec * 1000, log,
      fence: (reason) => svc.selfFence(reason), resume: () => svc.resumeAfterSelfFence(),
    });
  } else store = new SqliteStore(join(config.root, 'ballast.db'), { reserve, node: config.node });
  const backends = new BackendRegistry()
    .registerType(localFactory).registerType(blockFactory)
    .registerType(sshfsFactory).registerType(glusterfsFactory).registerType(nfsFactory).registerType(s3Factory)
    .registerType(cephfsFactory).registerType(rbdFactory).registerType(cinderFactory)
    .instantiate(config.backends, { root: config.root, exec, mounts, log, fault, node: config.node, cluster: sc.type === 'etcd' });
  // Cluster mode: the store is shared by every node (etcd), so volumes are attached before they are staged.
  const timing = sc.type === 'etcd' ? clusterTiming(sc) : undefined;
  const service = new VolumeService({
    store, backends, log, node: config.node, defaultBackend: config.defaultBackend, fault, cluster: config.store.type === 'etcd', exec, mounts,
    liveness: membership,
    ...(sc.type === 'etcd' && timing ? { timing: { takeoverGraceMs: sc.takeoverGraceSec * 1000, takeoverWaitMs: timing.takeoverWaitMs, suspectBelowSec: sc.leaseTtlSec - 2 * sc.keepaliveSec - 1 } } : {}),
  });
  // Backups (restic): also the restorer of -o from-backup=ID, which recovery may roll forward.
  const backups = new BackupService({ service, targets: config.backupTargets, defaultTarget: config.defaultBackupTarget, root: config.root, node: config.node, log, fault });
  service.setRestorer(backups);
  selfFence = selfFenceUp?.(service);
  // Registers itself as the space gate of backends with thin volumes, before recovery mounts anything.
  const space = new SpaceWatcher({ backends, store, withLock: (v, fn) => service.withLock(v, fn), log, settings: config.space });
  const docker = o.docker === null ? undefined : (o.docker ?? new DockerEngineApi(config.dockerHost, 3000));
  const reconciler = new Reconciler({
    service, store, backends, mounts, loops: () => allLoopDevices(exec), docker, driver: driverName(config.socket), log, node: config.node,
    leakGraceMs: config.leakGraceSec * 1000, intervalMs: config.reconcileIntervalSec * 1000,
  });

  // Before serving: finish or undo what a crash interrupted, then make the host match the ledger.
  const recovered = await service.recover();
  const first = await reconciler.runOnce({ checkDocker: true });
  const reconciledMs = Math.round(performance.now() - t0);

  const startedAt = new Date().toISOString();
  const api = buildApi(service, log, {
    service, backups, log,
    health: () => ({ ok: true, version: VERSION, node: config.node, root: config.root, socket: config.socket, driver: driverName(config.socket), backends: backends.names(), startedAt, pid: process.pid }),
    // Doctor reads: the last reconcile pass (the periodic one, or the one at start), never a new pass
    // that could repair something behind the operator's back. Repair stays a POST.
    doctor: async () => ({
      checks: [
        ...(await hostChecks(exec)), ...(await pluginChecks(config.socket, config.dockerHost)),
        ...reconcilerChecks(reconciler.status().last ?? first, reconciler.status().counters),
        placementCheck(await service.placementDrift()),
        ...(membership.lease() ? [leaseCheck(membership.lease()!)] : []),
        ...(selfFence ? [selfFenceCheck(selfFence.status(), service.frozenBySelfFence())] : []),
        spaceCheck(space.report()),
        ...(reserve ? [reserve.check()] : []),
      ],
    }),
    reconcile: () => reconciler.status(),
    repair: () => reconciler.runOnce({ repair: true, checkDocker: true }),
    fence: async (node: string) => {
      if (!/^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$/.test(node)) throw new InvalidArgumentError(`node name ${JSON.stringify(node.slice(0, 80))} is not valid`);
      return { fenced: node, volumes: await service.fenceNode(node, (n) => membership.isAlive(n)) };
    },
    nodes: async () => {
      const [registered, held] = await Promise.all([membership.nodes(), service.holdings()]);
      const names = new Set([...registered.map((n) => n.name), ...held.keys()]);
      return {
        node: config.node, lease: membership.lease(), ...(selfFence ? { selfFence: selfFence.status() } : {}),
        nodes: [...names].sort().map((name) => {
          const r = registered.find((n) => n.name === name);
          return { name, alive: r?.alive ?? false, ...(r?.since ? { since: r.since } : {}), ...(r?.version ? { version: r.version } : {}), volumes: held.get(name) ?? [] };
        }),
      };
    },
  });

  await prepareSocketPath(config.adminSocket);
  await prepareSocketPath(config.socket);
  const umask = process.umask(0o177); // the sockets are born 0600
  try { await api.listen(config.socket, config.adminSocket); } finally { process.umask(umask); }
  await restrictSocket(config.adminSocket);
  await restrictSocket(config.socket);
  const serveMs = Math.round(performance.now() - t0);
  log.info({ socket: config.socket, adminSocket: config.adminSocket, root: config.root, driver: driverName(config.socket), backends: backends.names(), version: VERSION, serveMs, reconciledMs, reconcilePassMs: first.ms, volumes: first.volumes, recovered: recovered.length, repairs: first.repairs.length }, 'ballast serving');
  await membership.start();
  selfFence?.start();
  reconciler.start();
  await space.start();
  // Swarm schedules onto a legacy plugin only once dockerd has activated it; a volume list does that.
  if (docker) {
    void docker.listVolumes().then(
      () => log.info({ dockerHost: config.dockerHost }, 'asked dockerd to activate the plugin'),
      (e) => log.warn({ dockerHost: config.dockerHost, err: String((e as Error).message) }, 'could not ask dockerd to activate the plugin'),
    );
  }

  let stopping: Promise<void> | undefined;
  const stop = (reason = 'stop') => (stopping ??= (async () => {
    log.info({ reason }, 'ballast stopping; mounts stay in place');
    await reconciler.stop();
    selfFence?.stop();
    await membership.stop();
    await peerServer?.close();
    await space.stop();
    const closing = api.close();
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
  return { service, reconciler, config, log, stop, startup: { serveMs, recovered: recovered.length, repairs: first.repairs.length } };
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
