import { readFileSync } from 'node:fs';
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
    const mons = monHostOf(this.conf);
    this.label = `${type} backend ${instance} (ceph cluster ${mons ? `with monitors ${mons} ` : ''}of ${this.conf}, client.${this.user})`;
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
      const msg = (e as Error).message;
      const head: string[] = [];
      for (const a of args) { if (a.startsWith('-') || head.length === 4) break; head.push(a); }
      const what = [tool, ...head].join(' ');
      if (/timed out/.test(msg)) throw new UnavailableError(`${this.label}: the cluster did not answer within ${this.timeoutSec} s (${what}); is it up and reachable?`, { cause: e });
      throw new UnavailableError(`${this.label}: ${what} failed: ${msg}`, { cause: e });
    }
  }

  async json<T>(tool: 'ceph' | 'rbd', args: readonly string[]): Promise<T> {
    const r = await this.run(tool, [...args, '--format', 'json']);
    return JSON.parse(r.stdout) as T;
  }
}

/** The `mon host` line of a ceph.conf, for messages (it holds no secret); undefined when unreadable. */
export function monHostOf(conf: string): string | undefined {
  let text: string;
  try { text = readFileSync(conf, 'utf8'); } catch { return undefined; }
  const m = /^[ \t]*mon[ _]host[ \t]*=[ \t]*(.+?)[ \t]*$/m.exec(text);
  return m ? m[1].slice(0, 200) : undefined;
}

export const CEPH_CONFIG_KEYS = ['conf', 'user', 'keyring', 'timeoutSec'] as const;
