import type { VolumeRecord } from '../core/types.js';
import { ProcMountTable, type MountTable } from '../host/mountinfo.js';
import { canAttach, canCheckHealth, mountpointOf, type Backend } from './types.js';

/**
 * The Docker path of the lifecycle: one staging per volume and node, at the volume's recorded
 * mountpoint, which is also what Docker gets (no publish: the target is the staging path). An Attacher
 * is attached to this node first (RBD: the lock `ballast-<node>`) and detached after the unstage.
 * CSI will call attach, stage and publish itself, with kubelet's paths.
 */

const procMounts: MountTable = new ProcMountTable();

/**
 * Stages the volume at its mountpoint on `node`; attaches first when the backend is an Attacher, unless
 * the mount table shows it staged already (a second reference: no controller round trip). A stage that
 * fails after the attach detaches again.
 */
export async function stageAtMountpoint(b: Backend, vol: VolumeRecord, node: string, mounts: MountTable = procMounts): Promise<void> {
  const path = mountpointOf(vol);
  if (!canAttach(b)) return b.stage(vol, path);
  if (b.probe(vol, path, { mounts: await mounts.list(), loops: [] }) === 'mounted') return b.stage(vol, path);
  const attachment = await b.attach(vol, node, 'rw');
  try {
    await b.stage(vol, path, { attachment });
  } catch (e) {
    await b.detach(vol, node).catch(() => undefined);
    throw e;
  }
}

/** Unstages the volume at its mountpoint on `node`, then detaches it from `node` when the backend is an Attacher. */
export async function unstageAtMountpoint(b: Backend, vol: VolumeRecord, node: string): Promise<void> {
  await b.unstage(vol, mountpointOf(vol));
  if (canAttach(b)) await b.detach(vol, node);
}

/**
 * Mounts a dead staging (a FUSE client that died) again in place: unstage, then stage, keeping the
 * node's attachment (an RBD lock is not let go in between, so no other node can take the volume).
 */
export async function restageAtMountpoint(b: Backend, vol: VolumeRecord, node: string, mounts: MountTable = procMounts): Promise<void> {
  await b.unstage(vol, mountpointOf(vol));
  await stageAtMountpoint(b, vol, node, mounts);
}

/** The health of the volume's staging at its mountpoint, for backends that can tell; healthy otherwise. */
export async function healthAtMountpoint(b: Backend, vol: VolumeRecord): Promise<{ healthy: boolean; reason?: string }> {
  return canCheckHealth(b) ? b.checkHealth(vol, mountpointOf(vol)) : { healthy: true };
}
