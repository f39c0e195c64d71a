/**
 * Named steps of every multi-step operation, for fault injection (BALLAST_FAULT=point[,point]): the
 * daemon kills itself with SIGKILL when it reaches a named step, so crash tests can prove that each
 * step is rolled forward or back on the next start. Never set in production.
 */
export const FAULT_POINTS = {
  create: ['create.recorded', 'local.dir-created', 'block.image-created', 'create.provisioned'],
  mount: ['mount.intent', 'mount.published', 'mount.ledger'],
  unmount: ['unmount.intent', 'unmount.ledger', 'unmount.unpublished'],
  remove: ['remove.marked', 'remove.deprovisioned'],
} as const;

/** Steps inside one backend's node work (not in the crash matrix of local and block; their own suites use them). */
export const BACKEND_FAULT_POINTS = {
  cinder: ['cinder.attachment-created', 'cinder.staged'],
  expand: ['block.image-grown', 'expand.grown'],
  snapshot: ['snapshot.recorded', 'snapshot.frozen', 'snapshot.taken', 'snapshot-rm.marked', 'block.clone-copied'],
  backup: ['backup.snapshot-mounted', 'backup.stored', 'restore.restored'],
} as const;

export const ALL_FAULT_POINTS: readonly string[] = Object.values(FAULT_POINTS).flat();

export function faultInjector(points: readonly string[]): ((point: string) => void) | undefined {
  if (points.length === 0) return undefined;
  const set = new Set(points);
  return (point) => {
    if (!set.has(point)) return;
    process.stderr.write(`ballast: fault injection: SIGKILL at ${point}\n`);
    process.kill(process.pid, 'SIGKILL');
  };
}
