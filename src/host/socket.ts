import { connect } from 'node:net';
import { chmod, mkdir, rm, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { UnavailableError } from '../core/errors.js';

/** True when something accepts connections on the unix socket. */
export function socketAlive(path: string, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ path });
    const done = (v: boolean) => { s.destroy(); resolve(v); };
    s.setTimeout(timeoutMs, () => done(false));
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

/** Makes the socket's directory, refuses a socket another process serves, and removes a stale one. */
export async function prepareSocketPath(path: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o755 });
  const st = await stat(path).catch(() => undefined);
  if (!st) return;
  if (!st.isSocket()) throw new UnavailableError(`${path} exists and is not a socket; remove it or choose another --socket`);
  if (await socketAlive(path)) throw new UnavailableError(`another process already serves ${path}; stop it first (is another ballast daemon running?)`);
  await rm(path, { force: true });
}

export async function restrictSocket(path: string, mode = 0o600): Promise<void> { await chmod(path, mode); }
