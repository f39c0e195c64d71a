import type { Exec, ExecResult } from '../../host/exec.js';
import { ConfigReader } from '../config-values.js';
import { UnavailableError } from '../../core/errors.js';

/**
 * How Ballast reaches one Ceph cluster: a ceph.conf, a client id and a keyring file (the key never
 * appears in argv, logs or Status). Every call has a timeout, so a cluster that is down makes an
 * operation fail within a bound with a sentence naming the backend and the monitors.
 */
export class CephClient {
  readonly conf: string;
  readonly user: string;
  readonly keyring?: string;
  readonly timeoutSec: number;
  readonly label: string;

  constructor(readonly instance: string, type: string, config: Readonly<Record<string, unknown>>, private readonly exec: Exec) {
    const c = new ConfigReader(instance, config);
    this.conf = c.absPath('conf', false) ?? '/etc/ceph/ceph.conf';
    this.user = c.str('user', { def: 'admin', re: /^[a-zA-Z0-9_.-]+$/, hint: 'a client id such as admin (without "client.")' })!;
    this.keyring = c.absPath('keyring', false);
    this.timeoutSec = c.int('timeoutSec', 30, 5, 110);
    this.label = `${type} backend ${instance} (ceph cluster of ${this.conf}, client.${this.user})`;
  }

  /** Common arguments of every Ceph tool: config, identity, keyring file. */
  identity(): string[] {
    return ['-c', this.conf, '--id', this.user, ...(this.keyring ? ['--keyring', this.keyring] : [])];
  }

  async run(tool: 'ceph' | 'rbd', args: readonly string[], okCodes: readonly number[] = [0]): Promise<ExecResult> {
    const extra = tool === 'ceph' ? ['--connect-timeout', String(Math.min(this.timeoutSec, 30))] : [];
    try {
      return await this.exec([tool, ...this.identity(), ...extra, ...args], { timeoutMs: this.timeoutSec * 1000, okCodes });
    } catch (e) {
      throw new UnavailableError(`${this.label}: ${tool} ${args.slice(0, 3).join(' ')} failed: ${(e as Error).message}`, { cause: e });
    }
  }

  async json<T>(tool: 'ceph' | 'rbd', args: readonly string[]): Promise<T> {
    const r = await this.run(tool, [...args, '--format', 'json']);
    return JSON.parse(r.stdout) as T;
  }
}

export const CEPH_CONFIG_KEYS = ['conf', 'user', 'keyring', 'timeoutSec'] as const;
