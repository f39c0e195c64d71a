import { Command, Option } from 'commander';
import { loadConfig, LOG_LEVELS, type ConfigInput } from '../config/index.js';
import { startDaemon, VERSION } from '../daemon/index.js';
import { AdminClient, CliError, describeProgress, streamCall, withProgress } from './client.js';
import type { SnapshotInfo, VolumeInfo } from '../core/types.js';
import type { Check } from '../daemon/doctor.js';
import { hostChecks, pluginChecks } from '../daemon/doctor.js';
import { hostExec } from '../host/exec.js';
import { BallastError } from '../core/errors.js';
import type { PassReport } from '../reconciler/index.js';

const program = new Command();
program.name('ballast').description('Ballast: storage orchestrator for containers (Docker volume plugin)').version(VERSION);

const rootOpt = () => new Option('--root <dir>', 'state directory (database, images, mountpoints)');
const adminOpt = () => new Option('--admin-socket <path>', 'admin API socket (default <root>/admin.sock)');
const configOpt = () => new Option('--config <file>', 'JSON config file');

function clientFrom(o: ConfigInput): AdminClient {
  const cfg = loadConfig({ root: o.root, adminSocket: o.adminSocket, config: o.config });
  return new AdminClient(cfg.adminSocket);
}

program.command('daemon')
  .description('run the plugin daemon (foreground); mounts stay in place when it stops')
  .addOption(rootOpt())
  .option('--socket <path>', 'Docker plugin socket (its name is the driver name)')
  .addOption(adminOpt())
  .addOption(configOpt())
  .addOption(new Option('--log-level <level>', 'log level').choices([...LOG_LEVELS]))
  .option('--docker-host <uri>', 'Docker engine API, unix:///path (default $DOCKER_HOST or unix:///var/run/docker.sock)')
  .option('--node <name>', 'node name (default: hostname)')
  .action(async (o: ConfigInput) => {
    const cfg = loadConfig(o);
    const d = await startDaemon(cfg);
    const onSignal = (sig: string) => { void d.stop(sig).then(() => process.exit(0), (e) => { d.log.error({ err: String(e) }, 'stop failed'); process.exit(1); }); };
    process.once('SIGTERM', () => onSignal('SIGTERM'));
    process.once('SIGINT', () => onSignal('SIGINT'));
  });

const volume = program.command('volume').description('manage volumes through the daemon');

volume.command('create <name>')
  .description('create a volume')
  .option('-o, --opt <key=value>', 'volume option (repeatable), e.g. -o size=10G', (v: string, acc: string[]) => [...acc, v], [] as string[])
  .option('-b, --backend <name>', 'backend instance (same as -o backend=NAME)')
  .addOption(rootOpt()).addOption(adminOpt()).addOption(configOpt())
  .action(async (name: string, o: ConfigInput & { opt: string[]; backend?: string }) => {
    const options = keyValues(o.opt, o.backend);
    const v = await withProgress(`creating ${name}`, clientFrom(o).call<VolumeInfo>('POST', '/v1/volumes', { name, options }));
    console.log(v.name);
  });

volume.command('ls').alias('list')
  .description('list volumes')
  .option('--json', 'print JSON')
  .addOption(rootOpt()).addOption(adminOpt()).addOption(configOpt())
  .action(async (o: ConfigInput & { json?: boolean }) => {
    const { volumes } = await clientFrom(o).call<{ volumes: VolumeInfo[] }>('GET', '/v1/volumes');
    if (o.json) { console.log(JSON.stringify(volumes, null, 2)); return; }
    // Block volumes: how they are provisioned, what their image holds on the host (allocated) and what
    // their filesystem uses (only while mounted).
    const rows = [['NAME', 'BACKEND', 'TYPE', 'SIZE', 'MOUNTS', 'STATE', 'PROVISIONING', 'ALLOCATED', 'USED', 'CREATED']];
    const cell = (x: unknown) => (x === undefined || x === null ? '-' : String(x));
    for (const v of volumes) {
      const s = v.status;
      const prov = s.provisioning === undefined ? '-' : `${String(s.provisioning)}${s.frozen ? ' (frozen)' : ''}`;
      rows.push([v.name, v.backend, v.type, cell(s.size), String(v.mounts), v.state, prov, cell(s.allocated), cell(s.used), v.createdAt]);
    }
    console.log(table(rows));
  });

volume.command('inspect <names...>')
  .description('show volumes as JSON')
  .addOption(rootOpt()).addOption(adminOpt()).addOption(configOpt())
  .action(async (names: string[], o: ConfigInput) => {
    const c = clientFrom(o);
    const out = [];
    for (const n of names) out.push(await c.call<VolumeInfo>('GET', `/v1/volumes/${encodeURIComponent(n)}`));
    console.log(JSON.stringify(out, null, 2));
  });

volume.command('expand <name> <size>')
  .description('grow a volume and its filesystem (online where it is mounted); shrinking is refused')
  .addOption(rootOpt()).addOption(adminOpt()).addOption(configOpt())
  .action(async (name: string, size: string, o: ConfigInput) => {
    const r = await withProgress(`expanding ${name}`, clientFrom(o).call<{ note: string }>('POST', `/v1/volumes/${encodeURIComponent(name)}/expand`, { size }));
    console.log(r.note);
  });

volume.command('rm <names...>').alias('remove')
  .description('remove volumes (refused while mounted)')
  .addOption(rootOpt()).addOption(adminOpt()).addOption(configOpt())
  .action(async (names: string[], o: ConfigInput) => {
    const c = clientFrom(o);
    for (const n of names) {
      await withProgress(`removing ${n}`, c.call('DELETE', `/v1/volumes/${encodeURIComponent(n)}`));
      console.log(n);
    }
  });

const snapshot = program.command('snapshot').description('point-in-time snapshots of volumes, and clones of them (docker volume create -o from-snapshot=NAME)');

snapshot.command('create <volume> [name]')
  .description('take a snapshot of a volume (its filesystem frozen for the copy where it is mounted); default name <volume>-<UTC time>')
  .option('--json', 'print JSON')
  .addOption(rootOpt()).addOption(adminOpt()).addOption(configOpt())
  .action(async (vol: string, name: string | undefined, o: ConfigInput & { json?: boolean }) => {
    const s = await withProgress(`snapshotting ${vol}`, clientFrom(o).call<SnapshotInfo>('POST', '/v1/snapshots', { volume: vol, ...(name ? { name } : {}) }));
    if (o.json) { console.log(JSON.stringify(s, null, 2)); return; }
    console.log(`${s.name}${s.method ? ` (${s.method}${s.frozenMs !== undefined ? `, frozen ${s.frozenMs} ms` : ''})` : ''}`);
  });

snapshot.command('ls [volume]').alias('list')
  .description('list snapshots, of one volume or of all')
  .option('--json', 'print JSON')
  .addOption(rootOpt()).addOption(adminOpt()).addOption(configOpt())
  .action(async (vol: string | undefined, o: ConfigInput & { json?: boolean }) => {
    const { snapshots } = await clientFrom(o).call<{ snapshots: SnapshotInfo[] }>('GET', `/v1/snapshots${vol ? `?volume=${encodeURIComponent(vol)}` : ''}`);
    if (o.json) { console.log(JSON.stringify(snapshots, null, 2)); return; }
    const rows = [['NAME', 'VOLUME', 'BACKEND', 'SIZE', 'STATE', 'METHOD', 'CLONES', 'CREATED']];
    for (const s of snapshots) rows.push([s.name, s.volume, s.backend, s.size ? formatBytes(s.size) : '-', s.state, s.method ?? '-', s.clones.join(',') || '-', s.createdAt]);
    console.log(table(rows));
  });

snapshot.command('inspect <names...>')
  .description('show snapshots as JSON')
  .addOption(rootOpt()).addOption(adminOpt()).addOption(configOpt())
  .action(async (names: string[], o: ConfigInput) => {
    const c = clientFrom(o);
    const out = [];
    for (const n of names) out.push(await c.call<SnapshotInfo>('GET', `/v1/snapshots/${encodeURIComponent(n)}`));
    console.log(JSON.stringify(out, null, 2));
  });

snapshot.command('rm <names...>').alias('remove')
  .description('remove snapshots (clones made from them stay; RBD clones are flattened first)')
  .addOption(rootOpt()).addOption(adminOpt()).addOption(configOpt())
  .action(async (names: string[], o: ConfigInput) => {
    const c = clientFrom(o);
    for (const n of names) {
      const r = await withProgress(`removing snapshot ${n}`, c.call<{ name: string; note?: string }>('DELETE', `/v1/snapshots/${encodeURIComponent(n)}`));
      console.log(r.note ? `${n}: ${r.note}` : n);
    }
  });

const backup = program.command('backup').description('backups of volumes with restic, to a directory or S3 (backupTargets in the config); restore into any backend, on any node');

/** Runs a streamed operation: progress on a terminal (stderr), nothing else unless asked. */
async function streamed<T>(o: ConfigInput, path: string, body: unknown): Promise<T> {
  const cfg = loadConfig({ root: o.root, adminSocket: o.adminSocket, config: o.config });
  const tty = process.stderr.isTTY;
  try {
    return await streamCall<T>(cfg.adminSocket, 'POST', path, body, (p) => { if (tty && p.phase !== 'done') process.stderr.write(`\r\x1b[K${describeProgress(p)}`); });
  } finally { if (tty) process.stderr.write('\r\x1b[K'); }
}

backup.command('create <volume>')
  .description('back up a volume (from a snapshot of it: consistent, and the volume stays in use); incremental against its earlier backups')
  .option('--to <target>', 'backup target (default: the only one, or defaultBackupTarget)')
  .option('--json', 'print JSON')
  .addOption(rootOpt()).addOption(adminOpt()).addOption(configOpt())
  .action(async (vol: string, o: ConfigInput & { to?: string; json?: boolean }) => {
    const r = await streamed<{ id: string; target: string; bytes: number; dataAdded: number; durationSec: number; filesNew: number; filesChanged: number; filesUnmodified: number }>(o, '/v1/backups', { volume: vol, ...(o.to ? { target: o.to } : {}) });
    if (o.json) { console.log(JSON.stringify(r, null, 2)); return; }
    console.log(`${r.id}  (target ${r.target}: ${formatBytes(r.bytes)} in ${r.filesNew + r.filesChanged + r.filesUnmodified} files, ${formatBytes(r.dataAdded)} added, ${r.durationSec.toFixed(1)} s)`);
  });

backup.command('ls [volume]').alias('list')
  .description('list backups, of every target or one')
  .option('--from <target>', 'only this backup target')
  .option('--json', 'print JSON')
  .addOption(rootOpt()).addOption(adminOpt()).addOption(configOpt())
  .action(async (vol: string | undefined, o: ConfigInput & { from?: string; json?: boolean }) => {
    const q = new URLSearchParams({ ...(o.from ? { target: o.from } : {}), ...(vol ? { volume: vol } : {}) }).toString();
    const r = await clientFrom(o).call<{ backups: { id: string; target: string; volume?: string; backend?: string; size?: number; node: string; time: string }[]; errors: { target: string; error: string }[] }>('GET', `/v1/backups${q ? `?${q}` : ''}`, undefined, 600_000);
    if (r.errors.length) process.exitCode = 5;
    if (o.json) { console.log(JSON.stringify(r, null, 2)); return; }
    const rows = [['ID', 'TARGET', 'VOLUME', 'BACKEND', 'SIZE', 'NODE', 'TIME']];
    for (const b of r.backups) rows.push([b.id, b.target, b.volume ?? '-', b.backend ?? '-', b.size ? formatBytes(b.size) : '-', b.node, b.time]);
    console.log(table(rows));
    for (const e of r.errors) process.stderr.write(`ballast: target ${e.target} could not be listed: ${e.error}\n`);
  });

backup.command('restore <id>')
  .description('restore a backup into a new volume, on any backend (default: the default backend, with the backed-up size)')
  .requiredOption('--into <volume>', 'name of the new volume')
  .option('--from <target>', 'backup target holding it')
  .option('-b, --backend <name>', 'backend of the new volume')
  .option('-o, --opt <key=value>', 'option of the new volume (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
  .option('--json', 'print JSON')
  .addOption(rootOpt()).addOption(adminOpt()).addOption(configOpt())
  .action(async (id: string, o: ConfigInput & { into: string; from?: string; backend?: string; opt: string[]; json?: boolean }) => {
    const options = keyValues(o.opt, o.backend);
    const v = await streamed<VolumeInfo>(o, `/v1/backups/${encodeURIComponent(id)}/restore`, { into: o.into, ...(o.from ? { target: o.from } : {}), options });
    if (o.json) { console.log(JSON.stringify(v, null, 2)); return; }
    console.log(v.name);
  });

backup.command('rm <ids...>').alias('remove')
  .description('remove backups (their data is pruned from the repository)')
  .option('--from <target>', 'backup target holding them')
  .addOption(rootOpt()).addOption(adminOpt()).addOption(configOpt())
  .action(async (ids: string[], o: ConfigInput & { from?: string }) => {
    const c = clientFrom(o);
    for (const id of ids) {
      const r = await withProgress(`removing backup ${id}`, c.call<{ id: string; note?: string }>('DELETE', `/v1/backups/${encodeURIComponent(id)}${o.from ? `?target=${encodeURIComponent(o.from)}` : ''}`, undefined, 1_800_000));
      console.log(r.note ? `${id}: ${r.note}` : id);
    }
  });

const node = program.command('node').description('nodes of the cluster');
node.command('ls').alias('list')
  .description('list the nodes: up (holding their lease) or down, and the volumes each holds')
  .option('--json', 'print JSON')
  .addOption(rootOpt()).addOption(adminOpt()).addOption(configOpt())
  .action(async (o: ConfigInput & { json?: boolean }) => {
    type Held = { volume: string; mode: string; since: string; references: number };
    const r = await clientFrom(o).call<{ node: string; lease?: { ttlSec: number; held: boolean; renewedAt?: string }; nodes: { name: string; alive: boolean; since?: string; volumes: Held[] }[] }>('GET', '/v1/nodes');
    if (o.json) { console.log(JSON.stringify(r, null, 2)); return; }
    const rows = [['NODE', 'STATE', 'SINCE', 'VOLUMES']];
    for (const n of r.nodes) {
      const vols = n.volumes.map((v) => `${v.volume} (${v.mode}${v.references ? `, ${v.references} mount${v.references > 1 ? 's' : ''}` : ''})`).join(', ') || '-';
      rows.push([`${n.name}${n.name === r.node ? ' (this node)' : ''}`, n.alive ? 'up' : 'down (no lease)', n.since ?? '-', vols]);
    }
    console.log(table(rows));
    if (r.lease) console.log(`\nthis node's lease: ${r.lease.held ? 'held' : 'NOT held'}, TTL ${r.lease.ttlSec} s${r.lease.renewedAt ? `, renewed ${r.lease.renewedAt}` : ''}`);
  });

node.command('fence <node>')
  .description('confirm that a node is down (powered off or cut off for good), so its volumes can be used elsewhere; refused while it holds its lease')
  .option('--json', 'print JSON')
  .addOption(rootOpt()).addOption(adminOpt()).addOption(configOpt())
  .action(async (name: string, o: ConfigInput & { json?: boolean }) => {
    const r = await clientFrom(o).call<{ fenced: string; volumes: { volume: string; epoch: number; referencesDropped: number }[] }>('POST', `/v1/nodes/${encodeURIComponent(name)}/fence`);
    if (o.json) { console.log(JSON.stringify(r, null, 2)); return; }
    if (r.volumes.length === 0) { console.log(`node ${r.fenced} held no volume`); return; }
    for (const v of r.volumes) console.log(`released ${v.volume} from node ${r.fenced} (epoch ${v.epoch}, ${v.referencesDropped} reference${v.referencesDropped === 1 ? '' : 's'} dropped)`);
  });

program.command('doctor')
  .description('check loop devices, FUSE, mkfs tools, the plugin socket and whether dockerd sees the plugin')
  .option('--json', 'print JSON')
  .option('--socket <path>', 'plugin socket to check when the daemon is not running')
  .option('--docker-host <uri>', 'Docker engine API to check when the daemon is not running')
  .addOption(rootOpt()).addOption(adminOpt()).addOption(configOpt())
  .action(async (o: ConfigInput & { json?: boolean }) => {
    const cfg = loadConfig(o);
    let checks: Check[];
    try {
      checks = (await new AdminClient(cfg.adminSocket).call<{ checks: Check[] }>('GET', '/v1/doctor', undefined, 90_000)).checks;
      checks.unshift({ name: 'daemon', ok: true, detail: `answering on ${cfg.adminSocket}` });
    } catch (e) {
      checks = [{ name: 'daemon', ok: false, detail: (e as Error).message }, ...(await hostChecks(hostExec)), ...(await pluginChecks(cfg.socket, cfg.dockerHost))];
    }
    if (o.json) console.log(JSON.stringify({ checks }, null, 2));
    else for (const c of checks) console.log(`${c.ok ? 'ok  ' : c.warn ? 'warn' : 'FAIL'}  ${c.name.padEnd(20)} ${c.detail}`);
    if (checks.some((c) => !c.ok && !c.warn)) process.exitCode = 1;
  });

program.command('repair')
  .description('reconcile now: drop leaked references (no grace period), retry uncertain volumes, clean stray mounts and loop devices')
  .option('--json', 'print JSON')
  .addOption(rootOpt()).addOption(adminOpt()).addOption(configOpt())
  .action(async (o: ConfigInput & { json?: boolean }) => {
    const r = await withProgress('repairing', clientFrom(o).call<PassReport>('POST', '/v1/repair', undefined, 600_000));
    if (o.json) { console.log(JSON.stringify(r, null, 2)); return; }
    for (const x of r.repairs) console.log(`repaired  ${x.kind.padEnd(22)} ${x.volume ? x.volume + ': ' : ''}${x.detail}`);
    for (const u of r.uncertain) console.log(`uncertain ${u.volume}: ${u.error}`);
    for (const x of r.orphans) console.log(`kept      ${x.kind.padEnd(22)} ${x.path}: ${x.detail}`);
    if (r.docker !== 'ok') console.log(`note      leaked references not checked: ${r.docker}`);
    console.log(`${r.repairs.length} repair(s), ${r.uncertain.length} uncertain volume(s), ${r.orphans.length} orphan(s) kept, ${r.volumes} volume(s) checked in ${r.ms} ms`);
    if (r.uncertain.length > 0) process.exitCode = 1;
  });

/** `-o KEY=VALUE` options (and `--backend`) as the map the API takes. */
function keyValues(kvs: readonly string[], backend?: string): Record<string, string> {
  const options: Record<string, string> = {};
  for (const kv of kvs) {
    const i = kv.indexOf('=');
    if (i <= 0) throw new CliError(`option ${JSON.stringify(kv)} is not key=value`, 2);
    options[kv.slice(0, i)] = kv.slice(i + 1);
  }
  if (backend) options.backend = backend;
  return options;
}

function formatBytes(n: number): string {
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n; let i = 0;
  while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
  return `${i === 0 ? v : v.toFixed(v >= 10 ? 0 : 1)}${u[i]}`;
}

function table(rows: string[][]): string {
  const w = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(w[i])).join('  ').trimEnd()).join('\n');
}

program.parseAsync(process.argv).catch((e: unknown) => {
  const code = e instanceof CliError ? e.exitCode : e instanceof BallastError ? (e.code === 'InvalidArgument' ? 2 : e.code === 'Unavailable' ? 5 : 1) : 1;
  process.stderr.write(`ballast: ${(e as Error).message}\n`);
  process.exit(code);
});
