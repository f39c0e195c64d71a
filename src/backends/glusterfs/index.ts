import { mkdirSync } from 'node:fs';
import type { BackendFactory } from '../types.js';
import { RemoteDirBackend, type RemoteFs } from '../remote-dir.js';
import { ConfigReader } from '../config-values.js';
import { within } from '../../host/paths.js';

/**
 * GlusterFS: each volume is a directory of one Gluster volume, mounted on its own with the FUSE
 * client's subdirectory mount (`server:/gv0/dir`). One client per Ballast volume rather than one shared
 * mount plus bind mounts: a dead client takes down one volume, not all of them; the mount table names
 * each volume's server and directory; and a container never sees its neighbours' directories.
 * The cost is one glusterfs process per mounted volume per host.
 */
export function glusterFs(instance: string, config: Readonly<Record<string, unknown>>, root = '/var/lib/ballast'): RemoteFs {
  const c = new ConfigReader(instance, config);
  const servers = c.list('servers', { required: true, re: /^[a-zA-Z0-9][a-zA-Z0-9.-]*$/, hint: 'host names or IPv4 addresses' });
  const volume = c.req('volume', { re: /^[a-zA-Z0-9_-]+$/, hint: 'a Gluster volume name' });
  const timeoutSec = c.int('mountTimeoutSec', 30, 1, 110);
  const backup = servers.slice(1);
  // One client log per volume (and one for the share root's short-lived mounts) under Ballast's root,
  // instead of a new /var/log/glusterfs/<mountpoint>.log for every temporary mountpoint.
  const logFile = (sub: string) => within(root, 'backends', instance, 'logs', `${sub ? sub.replace(/\//g, '_') : '_share'}.log`);
  return {
    type: 'glusterfs',
    label: `glusterfs backend ${instance} (volume ${volume} on ${servers.join(', ')})`,
    mountTimeoutMs: timeoutSec * 1000,
    statusFacts: { servers: servers.join(','), glusterVolume: volume },
    mountArgv: (sub, mp) => [
      'mount', '-t', 'glusterfs',
      '-o', [...(backup.length ? [`backup-volfile-servers=${backup.join(':')}`] : []), `log-file=${logFile(sub)}`, 'log-level=WARNING'].join(','),
      `${servers[0]}:/${volume}${sub ? `/${sub}` : ''}`, mp,
    ],
  };
}

export const glusterfsFactory: BackendFactory = {
  type: 'glusterfs',
  configKeys: ['servers', 'volume', 'mountTimeoutSec'],
  create: (instance, config, ctx) => {
    const fs = glusterFs(instance, config, ctx.root);
    mkdirSync(within(ctx.root, 'backends', instance, 'logs'), { recursive: true, mode: 0o700 });
    return new RemoteDirBackend(instance, fs, ctx);
  },
};
