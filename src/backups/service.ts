import type { Logger } from 'pino';
import type { VolumeService, Restorer } from '../core/service.js';
import type { BackupApi, Progress } from '../frontends/admin/server.js';
import { existsSync } from 'node:fs';
import { dirname } from 'node:path';
import { FailedPreconditionError, InvalidArgumentError, NotFoundError, UnavailableError } from '../core/errors.js';
import { validateVolumeName } from '../core/validate.js';
import { within } from '../host/paths.js';
import { Restic, type BackupSnapshot, type ResticRunner } from './restic.js';
import { describeTarget, type BackupTarget } from './targets.js';

export interface BackupServiceDeps {
  readonly service: VolumeService;
  readonly targets: Readonly<Record<string, BackupTarget>>;
  /** The target a command without one uses (config `defaultBackupTarget`; else the only one). */
  readonly defaultTarget?: string;
  /** Ballast's state directory: restic's cache and the snapshots read for a backup live under it. */
  readonly root: string;
  readonly node: string;
  readonly log: Logger;
  readonly fault?: (point: string) => void;
  /** For tests: how restic is run. */
  readonly run?: ResticRunner;
}

/** One backup as `ballast backup ls` shows it. */
export interface BackupInfo {
  readonly id: string;
  readonly snapshotId: string;
  readonly target: string;
  readonly volume?: string;
  readonly backend?: string;
  readonly type?: string;
  /** Size of the volume it was taken of (bytes), when it had one. */
  readonly size?: number;
  /** Bytes of files it holds (restic's file content processed at backup time). */
  readonly bytes?: number;
  readonly node: string;
  readonly time: string;
}

/**
 * Backups of volumes into restic repositories (src/backups/restic.ts), on the targets of the config's
 * `backupTargets` (src/backups/targets.ts). A backup is made from a snapshot of the volume (the core's
 * readSnapshotForBackup: consistent, and the volume stays usable meanwhile), at file level, so it
 * restores into any backend, on any node that reaches the target with the same repository password;
 * restic makes it incremental and deduplicated against every earlier backup in the repository, and
 * writes its snapshot last, so an interrupted backup leaves nothing that `backup ls` would show.
 * Restores are creates: `-o from-backup=ID` (the core calls restoreInto once the new volume exists).
 */
export class BackupService implements BackupApi, Restorer {
  private readonly restics = new Map<string, Restic>();
  /** Progress listeners of restores started through `ballast backup restore`, by new volume name. */
  private readonly restoreProgress = new Map<string, Progress>();

  constructor(private readonly d: BackupServiceDeps) {
    if (d.defaultTarget !== undefined && !(d.defaultTarget in d.targets)) {
      throw new InvalidArgumentError(`defaultBackupTarget ${JSON.stringify(d.defaultTarget)} is not among the backupTargets: ${Object.keys(d.targets).join(', ') || '(none)'}`);
    }
  }

  get configured(): boolean { return Object.keys(this.d.targets).length > 0; }

  private targetOf(name: unknown): BackupTarget {
    const names = Object.keys(this.d.targets);
    if (names.length === 0) throw new FailedPreconditionError('no backup target is configured; add one to backupTargets in the config file (a directory or an S3 bucket) and restart the daemon');
    if (name === undefined || name === null || name === '') {
      const def = this.d.defaultTarget ?? (names.length === 1 ? names[0] : undefined);
      if (!def) throw new InvalidArgumentError(`several backup targets are configured (${names.join(', ')}); name one with --to / --from, or set defaultBackupTarget`);
      return this.d.targets[def];
    }
    if (typeof name !== 'string' || !(name in this.d.targets)) throw new NotFoundError(`backup target ${JSON.stringify(String(name).slice(0, 80))} is not configured; configured: ${names.join(', ')}`);
    return this.d.targets[name];
  }

  private restic(t: BackupTarget): Restic {
    let r = this.restics.get(t.name);
    if (!r) {
      r = new Restic(t, { cacheDir: within(this.d.root, 'backups', 'cache'), log: this.d.log, ...(this.d.run ? { run: this.d.run } : {}) });
      this.restics.set(t.name, r);
    }
    return r;
  }

  /**
   * `ballast backup create VOLUME --to TARGET`: a temporary snapshot of the volume, read, backed up
   * with restic (with the volume's last backup in that target as parent, so unchanged files are not
   * read again), the snapshot removed. Progress goes to `progress` (bytes and files done, rate, time left).
   */
  async create(volume: unknown, target: unknown, progress: Progress): Promise<BackupInfo & { readonly dataAdded: number; readonly filesNew: number; readonly filesChanged: number; readonly filesUnmodified: number; readonly durationSec: number; readonly method: string; readonly warnings: readonly string[] }> {
    const vname = validateVolumeName(volume);
    const t = this.targetOf(target);
    const r = this.restic(t);
    await r.ensureRepo();
    await r.unlock().catch(() => undefined);
    const last = (await r.list({ volume: vname })).at(-1);
    const t0 = Date.now();
    return this.d.service.readSnapshotForBackup(vname, within(this.d.root, 'backups', 'read'), async (dir, snap, vol, method) => {
      progress({ phase: 'backup', volume: vname, target: t.name, snapshot: snap.name });
      const res = await r.backup(dir, {
        host: this.d.node,
        tags: {
          volume: vname, backend: vol.backend, ...(typeof vol.spec.size === 'number' ? { size: String(vol.spec.size) } : {}),
          node: this.d.node, ...(typeof vol.spec.fstype === 'string' ? { fstype: vol.spec.fstype } : {}),
        },
        ...(last ? { parent: last.snapshotId } : {}),
        onProgress: (p) => {
          const elapsed = (Date.now() - t0) / 1000;
          progress({ phase: 'backup', bytesDone: p.bytesDone, totalBytes: p.totalBytes, filesDone: p.filesDone, totalFiles: p.totalFiles, percent: Math.round(p.percentDone * 1000) / 10, rateBps: elapsed > 0 ? Math.round(p.bytesDone / elapsed) : 0, ...(p.secondsRemaining !== undefined ? { secondsRemaining: p.secondsRemaining } : {}) });
        },
      });
      this.d.fault?.('backup.stored');
      this.d.log.info({ op: 'backup', volume: vname, target: t.name, backup: res.id, dataAdded: res.dataAdded, bytes: res.totalBytesProcessed, durationSec: res.durationSec, outcome: 'ok' }, `volume ${vname} backed up to ${describeTarget(t)} as ${res.id}`);
      progress({ phase: 'done', done: true });
      return {
        id: res.id, snapshotId: res.snapshotId, target: t.name, volume: vname, backend: vol.backend, ...(typeof vol.spec.size === 'number' ? { size: vol.spec.size } : {}),
        bytes: res.totalBytesProcessed, node: this.d.node, time: new Date(t0).toISOString(),
        dataAdded: res.dataAdded, filesNew: res.filesNew, filesChanged: res.filesChanged, filesUnmodified: res.filesUnmodified,
        durationSec: res.durationSec, method, warnings: res.warnings,
      };
    });
  }

  /** `ballast backup ls [--from TARGET] [VOLUME]`: every target's backups, or one target's; oldest first. */
  async list(target?: string, volume?: string): Promise<{ backups: BackupInfo[]; errors: { target: string; error: string }[] }> {
    const v = volume === undefined || volume === '' ? undefined : validateVolumeName(volume);
    const targets = target ? [this.targetOf(target)] : Object.values(this.d.targets);
    if (targets.length === 0) this.targetOf(undefined); // the sentence about configuring one
    const backups: BackupInfo[] = [];
    const errors: { target: string; error: string }[] = [];
    for (const t of targets) {
      try {
        // A directory target whose disk is not mounted holds no repository: that is an error to report, not "no backups".
        if (t.type === 'dir' && !existsSync(dirname(t.path))) throw new UnavailableError(`${describeTarget(t)} cannot be used: its parent directory ${dirname(t.path)} does not exist; mount the backup disk or create ${dirname(t.path)}`);
        for (const s of await this.restic(t).list(v ? { volume: v } : {})) backups.push(infoOf(t, s));
      } catch (e) {
        // One target that is down does not hide the others' backups (named target: its error is the answer).
        if (target) throw e;
        errors.push({ target: t.name, error: (e as Error).message });
      }
    }
    return { backups, errors };
  }

  /**
   * `ballast backup restore ID --into NEW [--from TARGET] [-o ...]`: a create of NEW from the backup,
   * on any backend (its options, or the backed-up volume's size by default).
   */
  async restore(id: string, target: unknown, into: unknown, options: unknown, progress: Progress): Promise<unknown> {
    const vname = validateVolumeName(into);
    if (options !== undefined && options !== null && (typeof options !== 'object' || Array.isArray(options))) throw new InvalidArgumentError('options must be a map of names to strings');
    const opts = { ...((options as Record<string, string> | undefined) ?? {}) };
    if ('from-backup' in opts || 'backup-target' in opts || 'from-snapshot' in opts || 'from-volume' in opts) throw new InvalidArgumentError('the backup to restore is named by ID and --from; options from-backup, backup-target, from-snapshot and from-volume cannot be given to a restore');
    const t = this.targetOf(target);
    this.restoreProgress.set(vname, progress);
    try {
      const r = await this.d.service.create(vname, { ...opts, 'from-backup': id, 'backup-target': t.name });
      progress({ phase: 'done', done: true });
      return r;
    } finally {
      this.restoreProgress.delete(vname);
    }
  }

  /** `ballast backup rm ID [--from TARGET]`: forgotten and its data pruned (unless a backup elsewhere holds the repository: then the next prune frees it). */
  async remove(id: string, target?: string): Promise<unknown> {
    const t = this.targetOf(target);
    const r = this.restic(t);
    await r.unlock().catch(() => undefined);
    const res = await r.forget(id, { prune: true });
    return { id, target: t.name, snapshotId: res.snapshotId, pruned: res.pruned, ...(res.pruneError ? { note: `its data is freed by the next prune (${res.pruneError})` } : {}) };
  }

  // Restorer (the core's side of -o from-backup=ID)

  async describe(id: string, target: string | undefined): Promise<{ id: string; target: string; size?: number; volume?: string }> {
    const t = this.targetOf(target);
    const s = await this.restic(t).find(id);
    const size = Number(s.tags.size);
    return { id: s.id, target: t.name, ...(Number.isFinite(size) && size > 0 ? { size } : {}), ...(s.tags.volume ? { volume: s.tags.volume } : {}) };
  }

  async restoreInto(id: string, target: string, dir: string, volume: string): Promise<{ files: number; bytes: number }> {
    const t = this.targetOf(target);
    const progress = this.restoreProgress.get(volume);
    const t0 = Date.now();
    const r = await this.restic(t).restore(id, dir, {
      onProgress: progress ? (p) => {
        const elapsed = (Date.now() - t0) / 1000;
        const rate = elapsed > 0 ? p.bytesDone / elapsed : 0;
        progress({ phase: 'restore', bytesDone: p.bytesDone, totalBytes: p.totalBytes, totalFiles: p.totalFiles, percent: Math.round(p.percentDone * 1000) / 10, rateBps: Math.round(rate), ...(rate > 0 ? { secondsRemaining: Math.round((p.totalBytes - p.bytesDone) / rate) } : {}) });
      } : undefined,
    });
    return { files: r.files, bytes: r.bytes };
  }
}

function infoOf(t: BackupTarget, s: BackupSnapshot): BackupInfo {
  const size = Number(s.tags.size);
  return {
    id: s.id, snapshotId: s.snapshotId, target: t.name, ...(s.tags.volume ? { volume: s.tags.volume } : {}), ...(s.tags.backend ? { backend: s.tags.backend } : {}),
    ...(Number.isFinite(size) && size > 0 ? { size } : {}), node: s.tags.node ?? s.host, time: s.time,
  };
}
