import type { BackendFactory } from '../types.js';
import { RemoteDirBackend, parseSubpath, type RemoteFs } from '../remote-dir.js';
import { ConfigReader } from '../config-values.js';

/**
 * S3 through s3fs: each volume is a prefix ("directory") of a bucket, or of a prefix of one. The
 * credentials stay in `passwdFile` (KEY:SECRET, mode 0600); s3fs reads them from there, so they
 * never reach argv, logs or Status.
 */
export function s3Fs(instance: string, config: Readonly<Record<string, unknown>>): RemoteFs {
  const c = new ConfigReader(instance, config);
  const url = c.req('url', { re: /^https?:\/\/[a-zA-Z0-9.-]+(:\d{1,5})?\/?$/, hint: 'http(s)://host[:port]' });
  const bucket = c.req('bucket', { re: /^[a-z0-9][a-z0-9.-]{1,62}$/, hint: 'an S3 bucket name' });
  const prefix = config.prefix === undefined ? '' : parseSubpath(c.req('prefix'), `backend ${instance}: prefix`);
  const passwdFile = c.absPath('passwdFile')!;
  const region = c.str('region', { re: /^[a-z0-9-]+$/, hint: 'a region name such as us-east-1' });
  const pathStyle = c.bool('pathStyle', true);
  const timeoutSec = c.int('mountTimeoutSec', 30, 1, 110);
  const opts = [
    `url=${url}`, `passwd_file=${passwdFile}`, ...(pathStyle ? ['use_path_request_style'] : []), ...(region ? [`endpoint=${region}`] : []),
    'allow_other', 'mp_umask=0022', 'retries=3', `connect_timeout=${Math.min(timeoutSec, 10)}`,
  ].join(',');
  return {
    type: 's3',
    label: `s3 backend ${instance} (bucket ${bucket} at ${url})`,
    mountTimeoutMs: timeoutSec * 1000,
    statusFacts: { url, bucket, ...(prefix ? { prefix } : {}) },
    mountArgv: (sub, mp) => {
      const path = [prefix, sub].filter(Boolean).join('/');
      return ['s3fs', path ? `${bucket}:/${path}` : bucket, mp, '-o', opts];
    },
  };
}

export const s3Factory: BackendFactory = {
  type: 's3',
  configKeys: ['url', 'bucket', 'prefix', 'passwdFile', 'region', 'pathStyle', 'mountTimeoutSec'],
  create: (instance, config, ctx) => new RemoteDirBackend(instance, s3Fs(instance, config), ctx),
};
