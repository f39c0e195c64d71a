import { existsSync } from 'node:fs';
import type { Exec } from '../../host/exec.js';
import { UnavailableError } from '../../core/errors.js';

/**
 * The iSCSI connector of the Cinder backend: `iscsiadm` login to the target Cinder's connection_info
 * names, then the device under /dev/disk/by-path that udev makes for it. This kernel has no iSCSI
 * initiator, so it is exercised by unit tests only (argv and waiting), never against a target here.
 */

export interface IscsiTarget { readonly portal: string; readonly iqn: string; readonly lun: number }

const PORTAL = /^(\d{1,3}(\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]):\d{1,5}$/;
const IQN = /^(iqn\.\d{4}-\d{2}\.[a-zA-Z0-9.-]+(:[a-zA-Z0-9._:-]+)?|eui\.[0-9a-fA-F]{16})$/;

/** The target of an iscsi connection_info (`target_portal`, `target_iqn`, `target_lun`), checked before any argv is built. */
export function iscsiTargetOf(data: Readonly<Record<string, unknown>>, what: string): IscsiTarget {
  const portal = String(data.target_portal ?? '');
  const iqn = String(data.target_iqn ?? '');
  const lun = Number(data.target_lun ?? 0);
  if (!PORTAL.test(portal) || !IQN.test(iqn) || !Number.isInteger(lun) || lun < 0 || lun > 16383) {
    throw new UnavailableError(`Cinder's iscsi connection_info for ${what} is not usable (portal ${JSON.stringify(portal.slice(0, 60))}, iqn ${JSON.stringify(iqn.slice(0, 80))}, lun ${String(data.target_lun)})`);
  }
  return { portal, iqn, lun };
}

/** The udev path of the target's LUN. */
export function byPath(t: IscsiTarget): string { return `/dev/disk/by-path/ip-${t.portal}-iscsi-${t.iqn}-lun-${t.lun}`; }

const node = (t: IscsiTarget) => ['iscsiadm', '-m', 'node', '-T', t.iqn, '-p', t.portal];

/**
 * Logs in (a session that exists already is success: iscsiadm exit 15) and waits up to `waitMs` for the
 * LUN's device. Returns the device path.
 */
export async function connectIscsi(exec: Exec, t: IscsiTarget, what: string, opts: { waitMs?: number; exists?: (p: string) => boolean } = {}): Promise<string> {
  const exists = opts.exists ?? existsSync;
  await exec([...node(t), '--op', 'new'], { timeoutMs: 15_000, okCodes: [0, 6, 15] });
  await exec([...node(t), '--login'], { timeoutMs: 30_000, okCodes: [0, 15] });
  const dev = byPath(t);
  const deadline = Date.now() + (opts.waitMs ?? 20_000);
  while (!exists(dev)) {
    if (Date.now() > deadline) throw new UnavailableError(`iSCSI login to ${t.iqn} at ${t.portal} for ${what} succeeded, but ${dev} did not appear within ${Math.round((opts.waitMs ?? 20_000) / 1000)} s; is udev running?`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return dev;
}

/** Logs out and forgets the node record; no session (exit 21) is success. */
export async function disconnectIscsi(exec: Exec, t: IscsiTarget): Promise<void> {
  await exec([...node(t), '--logout'], { timeoutMs: 30_000, okCodes: [0, 21] });
  await exec([...node(t), '--op', 'delete'], { timeoutMs: 15_000, okCodes: [0, 21] });
}
