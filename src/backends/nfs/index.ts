import type { BackendFactory, OptionDoc } from '../types.js';
import { RemoteDirBackend, type RemoteFs } from '../remote-dir.js';
import { ConfigReader, parseMountOptions } from '../config-values.js';
import { InvalidArgumentError } from '../../core/errors.js';

/** NFS mount options a volume or an instance may ask for; nothing else reaches mount(8). */
export const NFS_OPTION_ALLOWLIST: Readonly<Record<string, RegExp | true>> = {
  nfsvers: /^(3|4|4\.0|4\.1|4\.2)$/, vers: /^(3|4|4\.0|4\.1|4\.2)$/, proto: /^(tcp|tcp6|rdma)$/, port: /^\d{1,5}$/,
  hard: true, soft: true, timeo: /^\d{1,6}$/, retrans: /^\d{1,3}$/, rsize: /^\d{4,8}$/, wsize: /^\d{4,8}$/,
  actimeo: /^\d{1,5}$/, noac: true, nolock: true, noatime: true, nodiratime: true, relatime: true, nosuid: true, nodev: true, noexec: true,
  ro: true, rw: true, sec: /^(sys|krb5|krb5i|krb5p)$/,
};

const OPTIONS: readonly OptionDoc[] = [
  { name: 'mountopts', help: `comma-separated NFS mount options from: ${Object.keys(NFS_OPTION_ALLOWLIST).join(', ')}` },
];

/** NFS: each volume is a directory of an export, mounted with the kernel client. */
export function nfsFs(instance: string, config: Readonly<Record<string, unknown>>): RemoteFs {
  const c = new ConfigReader(instance, config);
  const server = c.host('server');
  const exportPath = c.absPath('export')!.replace(/\/+$/, '') || '/';
  const mo = config.mountOptions;
  if (mo !== undefined && (!Array.isArray(mo) || mo.some((x) => typeof x !== 'string'))) {
    throw new InvalidArgumentError(`backend ${instance}: mountOptions must be a list of strings such as ["nfsvers=4.2", "hard"]`);
  }
  const base = parseMountOptions((mo as string[] | undefined)?.join(','), NFS_OPTION_ALLOWLIST);
  const timeoutSec = c.int('mountTimeoutSec', 30, 1, 110);
  return {
    type: 'nfs',
    label: `nfs backend ${instance} (server ${server}:${exportPath})`,
    mountTimeoutMs: timeoutSec * 1000,
    statusFacts: { server, export: exportPath },
    mountArgv: (sub, mp, spec) => {
      const opts = [...base, ...(((spec.mountopts as string[] | undefined) ?? []).filter((o) => !base.includes(o)))];
      return ['mount', '-t', 'nfs', ...(opts.length ? ['-o', opts.join(',')] : []), `${server}:${sub ? `${exportPath === '/' ? '' : exportPath}/${sub}` : exportPath}`, mp];
    },
  };
}

export const nfsFactory: BackendFactory = {
  type: 'nfs',
  configKeys: ['server', 'export', 'mountOptions', 'mountTimeoutSec'],
  create: (instance, config, ctx) => new RemoteDirBackend(instance, nfsFs(instance, config), ctx, {
    options: OPTIONS,
    parse: (opts) => ({ mountopts: parseMountOptions(opts.mountopts, NFS_OPTION_ALLOWLIST) }),
  }),
};
