import type { BackendFactory } from '../types.js';
import { RemoteDirBackend, type RemoteFs } from '../remote-dir.js';
import { ConfigReader } from '../config-values.js';
import { within } from '../../host/paths.js';

/**
 * sshfs: each volume is a directory under `path` on an SSH server, mounted with sshfs (a FUSE daemon
 * that outlives Ballast). The key is read from `identityFile`: its path is on the command line, its
 * contents never are (nor in logs or Status).
 */
export function sshfsFs(instance: string, config: Readonly<Record<string, unknown>>, root: string): RemoteFs {
  const c = new ConfigReader(instance, config);
  const host = c.host('host');
  const port = c.int('port', 22, 1, 65535);
  const user = c.str('user', { def: 'root', re: /^[a-z_][a-z0-9_.-]*$/i, hint: 'a user name' })!;
  const path = c.absPath('path')!.replace(/\/+$/, '') || '/';
  const identityFile = c.absPath('identityFile')!;
  const knownHostsFile = c.absPath('knownHostsFile', false);
  const timeoutSec = c.int('mountTimeoutSec', 30, 1, 110);
  const opts = [
    `port=${port}`, `IdentityFile=${identityFile}`, 'IdentitiesOnly=yes', 'BatchMode=yes', 'PasswordAuthentication=no',
    knownHostsFile ? `UserKnownHostsFile=${knownHostsFile}` : `UserKnownHostsFile=${within(root, 'backends', instance, 'known_hosts')}`,
    `StrictHostKeyChecking=${knownHostsFile ? 'yes' : 'accept-new'}`,
    `ConnectTimeout=${Math.min(timeoutSec, 15)}`, 'ServerAliveInterval=15', 'ServerAliveCountMax=3', 'reconnect', 'allow_other',
  ].join(',');
  return {
    type: 'sshfs',
    label: `sshfs backend ${instance} (server ${user}@${host}:${port})`,
    mountTimeoutMs: timeoutSec * 1000,
    statusFacts: { server: `${user}@${host}:${port}`, path },
    mountArgv: (sub, mp) => ['sshfs', `${user}@${host}:${sub ? `${path === '/' ? '' : path}/${sub}` : path}`, mp, '-o', opts],
  };
}

export const sshfsFactory: BackendFactory = {
  type: 'sshfs',
  configKeys: ['host', 'port', 'user', 'path', 'identityFile', 'knownHostsFile', 'mountTimeoutSec'],
  create: (instance, config, ctx) => new RemoteDirBackend(instance, sshfsFs(instance, config, ctx.root), ctx),
};
