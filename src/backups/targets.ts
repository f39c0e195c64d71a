import { readFile } from 'node:fs/promises';
import { posix } from 'node:path';
import { FailedPreconditionError, InvalidArgumentError } from '../core/errors.js';

/**
 * Backup targets: where Ballast's volume backups go (restic repositories), from the config file's
 * `backupTargets` section:
 *
 *   "backupTargets": {
 *     "nas": { "type": "dir", "path": "/mnt/nas/ballast-backups", "passwordFile": "/etc/ballast/restic-password" },
 *     "offsite": { "type": "s3", "url": "https://s3.example.com", "bucket": "backups", "prefix": "ballast",
 *                  "credentialsFile": "/etc/ballast/s3-credentials", "region": "eu-west-1",
 *                  "passwordFile": "/etc/ballast/restic-password" }
 *   }
 *
 * - `passwordFile` is required for every target: one line, the restic repository password. restic
 *   encrypts everything with it, so every node of a cluster must have the same password in its file, or
 *   a node cannot read (restore) what another node backed up; and a lost password means lost backups.
 *   Ballast never reads it into argv, the environment or a log: restic reads the file itself.
 * - `dir`: `path` is the repository directory (absolute). Its parent must exist (a backup disk that is
 *   not mounted is reported, not silently replaced by a directory on the root disk).
 * - `s3`: `url` is http(s)://host[:port], `bucket` an S3 bucket name, `prefix` an optional path inside
 *   the bucket; `credentialsFile` holds `ACCESS_KEY:SECRET_KEY` on one line (the format of s3fs's passwd
 *   file; s3fs's `bucket:ACCESS_KEY:SECRET_KEY` form is accepted for this bucket too). The keys reach
 *   restic only through its environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), never argv or logs.
 *   `region` is optional (restic's `-o s3.region=`).
 */
export type BackupTarget = DirBackupTarget | S3BackupTarget;

export interface DirBackupTarget {
  readonly name: string;
  readonly type: 'dir';
  /** The restic repository directory. */
  readonly path: string;
  readonly passwordFile: string;
}

export interface S3BackupTarget {
  readonly name: string;
  readonly type: 's3';
  /** http(s)://host[:port], without a trailing slash. */
  readonly url: string;
  readonly bucket: string;
  /** Path inside the bucket (no leading or trailing "/"), or undefined for the bucket's root. */
  readonly prefix?: string;
  readonly credentialsFile: string;
  readonly region?: string;
  readonly passwordFile: string;
}

export const TARGET_NAME_RE = /^[a-z][a-z0-9-]{0,62}$/;
const DIR_KEYS = ['type', 'path', 'passwordFile'] as const;
const S3_KEYS = ['type', 'url', 'bucket', 'prefix', 'credentialsFile', 'region', 'passwordFile'] as const;
const URL_RE = /^https?:\/\/[a-zA-Z0-9.-]+(:\d{1,5})?\/?$/;
const BUCKET_RE = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;
const PREFIX_SEGMENT_RE = /^[A-Za-z0-9._-]+$/;
const REGION_RE = /^[a-z0-9-]{1,64}$/;

const isPlainObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v) && Object.getPrototypeOf(v) === Object.prototype;

class TargetReader {
  constructor(private readonly where: string, private readonly c: Readonly<Record<string, unknown>>) {}

  fail(key: string, what: string): never {
    throw new InvalidArgumentError(`${this.where}: ${key} ${what}`);
  }

  keys(accepted: readonly string[]): void {
    for (const k of Object.keys(this.c)) {
      if (!accepted.includes(k)) throw new InvalidArgumentError(`unknown key ${JSON.stringify(k)} in ${this.where}; accepted keys: ${accepted.join(', ')}`);
    }
  }

  str(key: string, opts: { required?: boolean; re?: RegExp; hint?: string } = {}): string | undefined {
    const v = this.c[key];
    if (v === undefined) {
      if (opts.required) this.fail(key, `is required${opts.hint ? ` (${opts.hint})` : ''}`);
      return undefined;
    }
    if (typeof v !== 'string' || v.length === 0 || v.length > 1024) this.fail(key, `must be a non-empty string${opts.hint ? ` (${opts.hint})` : ''}`);
    if (/[\u0000-\u001f\u007f]/.test(v)) this.fail(key, 'may not contain control characters');
    if (opts.re && !opts.re.test(v)) this.fail(key, `${JSON.stringify(v)} is not valid${opts.hint ? ` (${opts.hint})` : ''}`);
    return v;
  }

  /** An absolute, normalized path ("/a/b", not "a/b", "/a/../b" or "/a/b/"). */
  absPath(key: string, hint: string): string {
    const v = this.str(key, { required: true, hint })!;
    if (!v.startsWith('/')) this.fail(key, `${JSON.stringify(v)} is not an absolute path (${hint})`);
    if (v === '/' || posix.normalize(v) !== v || v.endsWith('/')) this.fail(key, `${JSON.stringify(v)} is not a normalized absolute path such as /var/lib/x (no "..", "//" or trailing "/")`);
    return v;
  }
}

const PASSWORD_HINT = 'an absolute path to a file holding the restic repository password on one line; every node of a cluster must use the same password';

/** Validates the config's `backupTargets` section (undefined: none) into targets by name. */
export function parseBackupTargets(raw: unknown): Record<string, BackupTarget> {
  if (raw === undefined || raw === null) return {};
  if (!isPlainObject(raw)) throw new InvalidArgumentError('backupTargets must be an object of target name -> { type: "dir" | "s3", ... }');
  const out: Record<string, BackupTarget> = {};
  for (const [name, section] of Object.entries(raw)) {
    if (!TARGET_NAME_RE.test(name)) {
      throw new InvalidArgumentError(`backup target name ${JSON.stringify(name)} is not allowed; it must start with a lowercase letter and contain only lowercase letters, digits and "-" (at most 63 characters)`);
    }
    const where = `backupTargets.${name}`;
    if (!isPlainObject(section)) throw new InvalidArgumentError(`${where} must be an object such as { "type": "dir", "path": "/mnt/backups", "passwordFile": "/etc/ballast/restic-password" }`);
    const r = new TargetReader(where, section);
    const type = section.type;
    if (type === 'dir') {
      r.keys(DIR_KEYS);
      out[name] = Object.freeze({
        name, type: 'dir',
        path: r.absPath('path', 'an absolute path to the repository directory'),
        passwordFile: r.absPath('passwordFile', PASSWORD_HINT),
      });
    } else if (type === 's3') {
      r.keys(S3_KEYS);
      const url = r.str('url', { required: true, re: URL_RE, hint: 'http(s)://host[:port]' })!.replace(/\/$/, '');
      const bucket = r.str('bucket', { required: true, re: BUCKET_RE, hint: 'an S3 bucket name: lowercase letters, digits, "." and "-"' })!;
      const prefixRaw = r.str('prefix');
      let prefix: string | undefined;
      if (prefixRaw !== undefined) {
        const segs = prefixRaw.replace(/^\/+|\/+$/g, '').split('/');
        if (segs.some((s) => !PREFIX_SEGMENT_RE.test(s) || s === '.' || s === '..')) {
          r.fail('prefix', `${JSON.stringify(prefixRaw)} is not valid (a path inside the bucket such as "ballast/backups": letters, digits, ".", "_" and "-" between "/")`);
        }
        prefix = segs.join('/');
      }
      const region = r.str('region', { re: REGION_RE, hint: 'a region name such as us-east-1' });
      out[name] = Object.freeze({
        name, type: 's3', url, bucket, ...(prefix ? { prefix } : {}),
        credentialsFile: r.absPath('credentialsFile', 'an absolute path to a file holding ACCESS_KEY:SECRET_KEY on one line'),
        ...(region ? { region } : {}),
        passwordFile: r.absPath('passwordFile', PASSWORD_HINT),
      });
    } else {
      throw new InvalidArgumentError(`${where}: type ${type === undefined ? 'is required' : `${JSON.stringify(type)} is not known`}; accepted types: dir, s3`);
    }
  }
  return out;
}

/** The repository string restic's -r takes: the directory, or `s3:<url>/<bucket>[/<prefix>]`. */
export function repositoryOf(t: BackupTarget): string {
  return t.type === 'dir' ? t.path : `s3:${t.url}/${t.bucket}${t.prefix ? `/${t.prefix}` : ''}`;
}

/** "backup target nas (directory /mnt/nas/x)", for messages. Holds no secret. */
export function describeTarget(t: BackupTarget): string {
  return t.type === 'dir'
    ? `backup target ${t.name} (directory ${t.path})`
    : `backup target ${t.name} (bucket ${t.bucket}${t.prefix ? `/${t.prefix}` : ''} at ${t.url})`;
}

export interface S3Credentials { readonly accessKeyId: string; readonly secretAccessKey: string }

/**
 * Reads an s3 target's credentials file: `ACCESS_KEY:SECRET_KEY` (or `bucket:ACCESS_KEY:SECRET_KEY`
 * for the target's bucket) on its first non-empty line. Errors name the file, never its content.
 */
export async function readS3Credentials(t: S3BackupTarget): Promise<S3Credentials> {
  let text: string;
  try {
    text = await readFile(t.credentialsFile, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? 'error';
    throw new FailedPreconditionError(`the S3 credentials file ${t.credentialsFile} of backup target ${t.name} cannot be read (${code}); create it with ACCESS_KEY:SECRET_KEY on one line, mode 0600`, { cause: e });
  }
  const line = text.split(/\r?\n/).map((l) => l.trim()).find((l) => l.length > 0 && !l.startsWith('#')) ?? '';
  const parts = line.split(':');
  const bad = () => new FailedPreconditionError(`the S3 credentials file ${t.credentialsFile} of backup target ${t.name} is not in the form ACCESS_KEY:SECRET_KEY (one line, as s3fs's passwd file); fix the file`);
  let key: string | undefined;
  let secret: string | undefined;
  if (parts.length === 2) [key, secret] = parts;
  else if (parts.length === 3 && parts[0] === t.bucket) [, key, secret] = parts;
  else throw bad();
  if (!key || !secret || /\s/.test(key + secret)) throw bad();
  return { accessKeyId: key, secretAccessKey: secret };
}
