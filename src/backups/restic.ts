import { randomBytes } from 'node:crypto';
import { chmod, chown, mkdir, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, normalize } from 'node:path';
import {
  AbortedError, AlreadyExistsError, BallastError, BusyError, DeadlineExceededError, FailedPreconditionError, InternalError,
  InvalidArgumentError, NotFoundError, ResourceExhaustedError, UnavailableError,
} from '../core/errors.js';
import { spawnRunner, type ResticRunner, type RunOptions, type RunResult } from './runner.js';
import { describeTarget, readS3Credentials, repositoryOf, type BackupTarget } from './targets.js';

export { spawnRunner, type ResticRunner, type RunOptions, type RunResult } from './runner.js';

/**
 * A typed wrapper around the restic CLI (Debian's restic 0.14.0), for Ballast's volume backups.
 *
 * What restic 0.14 does, as measured here (the tests check the parts Ballast relies on):
 * - `restic backup .` run in the volume's directory stores the directory's *contents* at the
 *   snapshot's root (`restic ls` shows /a, /big, ...), and `restore --target X` puts them at X's root.
 *   The snapshot's `paths` still records the absolute cwd. The root directory itself gets no node in the
 *   snapshot: its mode and owner are not backed up, so Ballast records them as tags
 *   (ballast.root-mode/-uid/-gid) and applies them to the restore directory afterwards.
 * - The JSON summary's `snapshot_id` is the *short* id (8 hex digits); the full id comes from
 *   `snapshots --json <short id>`.
 * - With --json, status lines go to stdout whether or not it is a terminal, at 60 per second unless
 *   RESTIC_PROGRESS_FPS says otherwise (Ballast sets it: `progressFps`, 2 by default). `bytes_done` counts
 *   bytes read and chunked, not uploaded: with a slow target it reaches 100 % well before the end.
 * - restore has no progress output in 0.14 (no --json there), and it preallocates every file at its
 *   full size before writing it, so the size of the restored tree says nothing about progress. Restore
 *   progress is the restic process's `wchar` (bytes written by write(2)) from /proc/<pid>/io, read every
 *   500 ms, against the snapshot's size from `stats --mode restore-size`.
 * - A backup only writes its snapshot at the end: one killed midway (even SIGKILL) leaves no snapshot,
 *   only unreferenced data (removed by the next prune) and a stale lock. SIGINT makes restic remove its
 *   lock before exiting; SIGTERM and SIGKILL do not. Stale locks (their PID gone on this host, or older than
 *   30 minutes) block exclusive operations (forget, prune); `restic unlock` removes only stale ones, and is
 *   run when an operation finds the repository locked, before retrying it once.
 * - `restic init` is not safe against itself: two concurrent inits of one new repository both succeed,
 *   each writes its own key, and the repository can then not be opened ("config or key ... is damaged":
 *   3 of 8 trials with 4 parallel inits). Ballast serializes init per repository in this process
 *   (`initLock`, which a cluster can replace with a cluster-wide lock), and initializes a `dir` target
 *   in a temporary sibling directory renamed into place: rename(2) onto an existing non-empty directory
 *   fails, so exactly one initializer wins, also across nodes sharing the directory (NFS). For `s3`
 *   targets only `initLock` protects: init them from one node at a time.
 * - `forget <unknown id>` exits 0 ("Ignoring ..."): ids are resolved first, so an unknown one is NotFound.
 *
 * No secret reaches argv or a log: restic reads the repository password from the target's password file
 * (`--password-file`, a path) and the S3 keys from its environment (AWS_ACCESS_KEY_ID,
 * AWS_SECRET_ACCESS_KEY), which holds nothing else of the daemon's. Its cache is `cacheDir` (given by
 * Ballast), never a home directory: HOME points there too, so no ~/.aws or ~/.cache of the user is read.
 */

export interface ResticLog {
  debug(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}
const NO_LOG: ResticLog = { debug() {}, info() {}, warn() {} };

/** Runs fn while holding a lock named key; the default serializes within this process. */
export type InitLock = <T>(key: string, fn: () => Promise<T>) => Promise<T>;

const inProcessLocks = new Map<string, Promise<unknown>>();
export const inProcessLock: InitLock = <T>(key: string, fn: () => Promise<T>): Promise<T> => {
  const prev = inProcessLocks.get(key) ?? Promise.resolve();
  const next = prev.catch(() => undefined).then(fn);
  const tail = next.catch(() => undefined);
  inProcessLocks.set(key, tail);
  void tail.then(() => { if (inProcessLocks.get(key) === tail) inProcessLocks.delete(key); });
  return next;
};

export interface ResticDeps {
  /** Absolute directory for restic's cache (created, mode 0700), e.g. <root>/restic-cache. */
  readonly cacheDir: string;
  readonly run?: ResticRunner;
  readonly log?: ResticLog;
  /** The restic binary (default "restic", looked up in PATH). */
  readonly resticBin?: string;
  /** Directory for restic's temporary pack files (TMPDIR); default the daemon's TMPDIR or /tmp. */
  readonly tmpDir?: string;
  /** Bound on backup and restore (default 6 h). */
  readonly longTimeoutMs?: number;
  /** Bound on prune and stats, which walk the repository (default 30 min). */
  readonly mediumTimeoutMs?: number;
  /** Bound on cat config, init, snapshots, forget, unlock (default 60 s). */
  readonly shortTimeoutMs?: number;
  /** Between SIGINT and SIGKILL when restic is stopped (default 5 s). */
  readonly killGraceMs?: number;
  /** Status lines per second asked of restic during a backup with onProgress (default 2, at most 60). */
  readonly progressFps?: number;
  /** How often restore progress is sampled (default 500 ms). */
  readonly restoreProgressIntervalMs?: number;
  /** Serializes init of one repository (default: within this process). */
  readonly initLock?: InitLock;
}

export interface BackupProgress {
  /** 0..1, of bytes read and chunked (not uploaded). */
  readonly percentDone: number;
  readonly totalFiles: number;
  readonly filesDone: number;
  readonly totalBytes: number;
  readonly bytesDone: number;
  readonly secondsElapsed: number;
  /** restic's estimate, when it has one. */
  readonly secondsRemaining?: number;
  /** Paths (relative to the volume's root, with a leading "/") restic is reading now. */
  readonly currentFiles: readonly string[];
}

export interface BackupOptions {
  /** Recorded as tags `ballast.<key>=<value>` (e.g. volume, backend, source-node). Keys: [a-z][a-z0-9-]*; values without commas or spaces. */
  readonly tags: Readonly<Record<string, string>>;
  /** restic's --host of the snapshot (Ballast's node name). */
  readonly host: string;
  /** Snapshot (id or prefix of at least 8 hex digits) to compare against: unchanged files are not read again. */
  readonly parent?: string;
  readonly onProgress?: (p: BackupProgress) => void;
  readonly signal?: AbortSignal;
  /** restic --limit-upload, KiB/s. */
  readonly limitUploadKiB?: number;
  /** Stay on the directory's filesystem (restic --one-file-system; default true): mounts inside the volume are not backed up. */
  readonly oneFileSystem?: boolean;
  /** Overrides longTimeoutMs for this backup. */
  readonly timeoutMs?: number;
}

export interface BackupResult {
  /** Short id (8 hex digits), as restic shows it. */
  readonly id: string;
  /** Full id (64 hex digits). */
  readonly snapshotId: string;
  readonly filesNew: number;
  readonly filesChanged: number;
  readonly filesUnmodified: number;
  readonly dirsNew: number;
  readonly dirsChanged: number;
  readonly dirsUnmodified: number;
  /** Bytes added to the repository (after deduplication and compression). */
  readonly dataAdded: number;
  readonly totalBytesProcessed: number;
  readonly totalFilesProcessed: number;
  readonly durationSec: number;
  /**
   * Files restic could not read (exit code 3: the snapshot was saved without them). Empty when
   * the snapshot is complete.
   */
  readonly warnings: readonly string[];
}

export interface BackupSnapshot {
  /** Short id (8 hex digits). */
  readonly id: string;
  /** Full id. */
  readonly snapshotId: string;
  /** ISO 8601 time the backup started. */
  readonly time: string;
  readonly host: string;
  /** The `ballast.<key>=<value>` tags as key -> value (without the root-* keys). */
  readonly tags: Readonly<Record<string, string>>;
  /** Tags that are not Ballast's (added by hand with restic). */
  readonly otherTags: readonly string[];
  /** Mode and owner of the volume's root directory at backup time, when recorded. */
  readonly root?: { readonly mode: number; readonly uid: number; readonly gid: number };
  /** The directory that was backed up (restic records the absolute cwd for "."). */
  readonly paths: readonly string[];
  /** Parent snapshot's full id, if the backup had one. */
  readonly parent?: string;
}

export interface ListFilter {
  readonly volume?: string;
  /** Every one of these ballast tags must match. */
  readonly tags?: Readonly<Record<string, string>>;
  readonly host?: string;
}

export interface RestoreProgress {
  readonly percentDone: number;
  readonly bytesDone: number;
  readonly totalBytes: number;
  readonly totalFiles: number;
  readonly secondsElapsed: number;
}

export interface RestoreOptions {
  readonly onProgress?: (p: RestoreProgress) => void;
  readonly signal?: AbortSignal;
  /** restic restore --verify: read every restored file back and compare (slower). */
  readonly verify?: boolean;
  /** Overrides longTimeoutMs for this restore. */
  readonly timeoutMs?: number;
}

export interface RestoreResult {
  readonly snapshotId: string;
  /** Entries restored (files, directories and links below the root, as restic's stats counts them). */
  readonly files: number;
  /** Bytes of file content restored. */
  readonly bytes: number;
  readonly durationSec: number;
}

export interface ForgetResult {
  readonly snapshotId: string;
  /** Did the prune that frees the backup's data succeed? (It needs the repository to itself.) */
  readonly pruned: boolean;
  /** Why the prune did not happen; the data is freed by the next prune that does. */
  readonly pruneError?: string;
}

type FailureKind = 'notInitialized' | 'locked' | 'wrongPassword' | 'exists' | 'other';

/** The root directory's metadata tags (reserved: not accepted in BackupOptions.tags). */
const ROOT_TAGS = ['root-mode', 'root-uid', 'root-gid'] as const;
const TAG_KEY_RE = /^[a-z][a-z0-9-]{0,62}$/;
const TAG_VALUE_RE = /^[A-Za-z0-9_.:@/+-]{0,255}$/;
const HOST_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,252}$/;
const ID_RE = /^[0-9a-f]{4,64}$/;

const ANSI_RE = /\u001b\[[0-9;?]*[A-Za-z]/g;
const fmtDuration = (ms: number) => (ms >= 3_600_000 && ms % 3_600_000 === 0 ? `${ms / 3_600_000} h` : ms >= 60_000 ? `${Math.round(ms / 60_000)} min` : `${Math.round(ms / 1000)} s`);
const num = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) ? v : 0);

function parseJson(line: string): Record<string, unknown> | undefined {
  const s = line.trim();
  if (!s.startsWith('{')) return undefined;
  try {
    const v = JSON.parse(s) as unknown;
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch { return undefined; }
}

export class Restic {
  readonly repository: string;
  /** "backup target nas (directory /mnt/nas/x)", for messages. */
  readonly label: string;
  private readonly run: ResticRunner;
  private readonly log: ResticLog;
  private readonly bin: string;
  private readonly cacheDir: string;
  private readonly longMs: number;
  private readonly mediumMs: number;
  private readonly shortMs: number;
  private readonly killGraceMs: number;
  private readonly fps: number;
  private readonly restorePollMs: number;
  private readonly initLock: InitLock;
  private readonly tmpDir: string | undefined;
  private cacheReady: Promise<void> | undefined;

  constructor(readonly target: BackupTarget, deps: ResticDeps) {
    if (!isAbsolute(deps.cacheDir)) throw new InvalidArgumentError(`restic cache directory ${JSON.stringify(deps.cacheDir)} must be an absolute path`);
    this.repository = repositoryOf(target);
    this.label = describeTarget(target);
    this.run = deps.run ?? spawnRunner;
    this.log = deps.log ?? NO_LOG;
    this.bin = deps.resticBin ?? 'restic';
    this.cacheDir = normalize(deps.cacheDir);
    this.longMs = deps.longTimeoutMs ?? 6 * 3_600_000;
    this.mediumMs = deps.mediumTimeoutMs ?? 30 * 60_000;
    this.shortMs = deps.shortTimeoutMs ?? 60_000;
    this.killGraceMs = deps.killGraceMs ?? 5_000;
    this.fps = Math.min(60, Math.max(0.01, deps.progressFps ?? 2));
    this.restorePollMs = deps.restoreProgressIntervalMs ?? 500;
    this.initLock = deps.initLock ?? inProcessLock;
    this.tmpDir = deps.tmpDir ?? process.env.TMPDIR;
  }

  // ---------------------------------------------------------------- repository

  /**
   * Makes sure the target holds a restic repository: `cat config` to detect one, `init` when there is
   * none. Idempotent; concurrent calls (in this process, and for dir targets across nodes) end with one
   * repository. A target that cannot be reached gives UnavailableError naming it and why.
   */
  async ensureRepo(): Promise<{ created: boolean; repositoryId: string }> {
    return this.initLock(`restic-init:${this.repository}`, async () => {
      const existing = await this.repositoryId();
      if (existing) return { created: false, repositoryId: existing };
      const created = this.target.type === 'dir' ? await this.initDir(this.target.path) : await this.initInPlace();
      const id = await this.repositoryId();
      if (!id) throw new InternalError(`restic init of ${this.label} reported success, but no repository is there afterwards; check the target's storage`);
      this.log.info({ target: this.target.name, repositoryId: id, created }, created ? 'restic repository created' : 'restic repository found');
      return { created, repositoryId: id };
    });
  }

  /** The repository's id from `cat config`, or undefined when there is no repository yet. */
  private async repositoryId(): Promise<string | undefined> {
    const r = await this.exec(`opening the restic repository of ${this.label}`, ['cat', 'config'], { timeoutMs: this.shortMs, notInitializedOk: true });
    if (!r) return undefined;
    const cfg = parseJson(r.stdout.replace(/\n/g, ' '));
    return typeof cfg?.id === 'string' ? cfg.id : 'unknown';
  }

  private async initInPlace(): Promise<boolean> {
    const r = await this.exec(`creating the restic repository of ${this.label}`, ['init'], { timeoutMs: this.shortMs, existsOk: true });
    return r !== null;
  }

  /**
   * Init of a dir target in `.<name>.ballast-init-<random>` next to it, renamed into place: rename(2)
   * onto a non-empty directory fails, so the first initializer wins and the others use its repository.
   */
  private async initDir(path: string): Promise<boolean> {
    const parent = dirname(path);
    try {
      const st = await stat(parent);
      if (!st.isDirectory()) throw new UnavailableError(`${this.label} cannot be used: ${parent} is not a directory; fix the target's path in backupTargets`);
    } catch (e) {
      if (e instanceof BallastError) throw e;
      const code = (e as NodeJS.ErrnoException).code;
      throw new UnavailableError(code === 'ENOENT'
        ? `${this.label} cannot be used: its parent directory ${parent} does not exist; mount the backup disk or create ${parent}, then retry`
        : `${this.label} cannot be used: ${parent} cannot be read (${code ?? (e as Error).message}); check the mount and its permissions, then retry`, { cause: e });
    }
    const tmp = join(parent, `.${basename(path)}.ballast-init-${randomBytes(6).toString('hex')}`);
    try {
      await this.exec(`creating the restic repository of ${this.label}`, ['init'], { timeoutMs: this.shortMs, repository: tmp });
      try {
        await rename(tmp, path);
        return true;
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'ENOTEMPTY' || code === 'EEXIST') {
          // Someone else's repository is there now (or something else is: the caller's cat config tells).
          if (!(await this.repositoryId())) {
            throw new FailedPreconditionError(`${this.label} cannot be used: ${path} exists and is not empty, but holds no restic repository; give the target an empty or new directory`);
          }
          return false;
        }
        throw new UnavailableError(`${this.label}: the new repository could not be moved to ${path} (${code ?? (e as Error).message}); check ${parent}, then retry`, { cause: e });
      }
    } finally {
      await rm(tmp, { recursive: true, force: true }).catch(() => undefined);
    }
  }

  /** Removes stale locks only (of restic processes gone from this host, or older than 30 minutes). */
  async unlock(): Promise<void> {
    await this.exec(`removing stale locks of ${this.label}`, ['unlock'], { timeoutMs: this.shortMs, retryLocked: false });
  }

  // ---------------------------------------------------------------- backup

  /**
   * Backs up the contents of `dir` (restic runs in it, with path "."): the snapshot's root is the
   * directory's root. Resolves when the snapshot is saved; an aborted, timed out or killed backup
   * leaves no snapshot.
   */
  async backup(dir: string, opts: BackupOptions): Promise<BackupResult> {
    if (!isAbsolute(dir)) throw new InvalidArgumentError(`backup source ${JSON.stringify(dir)} must be an absolute path`);
    const volume = opts.tags.volume;
    const what = `backup of ${volume ? `volume ${volume} (${dir})` : dir} to ${this.label}`;
    const tagArgs = this.tagArgs(opts.tags);
    if (!HOST_RE.test(opts.host)) throw new InvalidArgumentError(`${what}: host ${JSON.stringify(opts.host)} is not valid (letters, digits, "_", "." and "-")`);
    let root;
    try {
      root = await stat(dir);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') throw new NotFoundError(`${what} failed: ${dir} does not exist; is the volume mounted?`, { cause: e });
      throw new UnavailableError(`${what} failed: ${dir} cannot be read (${code ?? (e as Error).message})`, { cause: e });
    }
    if (!root.isDirectory()) throw new InvalidArgumentError(`${what} failed: ${dir} is not a directory`);
    let parent: string | undefined;
    if (opts.parent !== undefined) parent = (await this.find(opts.parent)).snapshotId;
    if (opts.limitUploadKiB !== undefined && (!Number.isInteger(opts.limitUploadKiB) || opts.limitUploadKiB < 1)) {
      throw new InvalidArgumentError(`${what}: limitUploadKiB must be a whole number of KiB/s above 0`);
    }
    const args = [
      'backup', '--json', '--host', opts.host, ...tagArgs,
      '--tag', `ballast.root-mode=${(root.mode & 0o7777).toString(8).padStart(4, '0')}`,
      '--tag', `ballast.root-uid=${root.uid}`, '--tag', `ballast.root-gid=${root.gid}`,
      ...(parent ? ['--parent', parent] : []),
      ...(opts.oneFileSystem === false ? [] : ['--one-file-system']),
      ...(opts.limitUploadKiB ? ['--limit-upload', String(opts.limitUploadKiB)] : []),
      '.',
    ];
    let summary: Record<string, unknown> | undefined;
    const t0 = Date.now();
    const timeoutMs = opts.timeoutMs ?? this.longMs;
    const r = await this.exec(what, args, {
      timeoutMs, cwd: dir, signal: opts.signal, okCodes: [0, 3],
      env: { RESTIC_PROGRESS_FPS: String(opts.onProgress ? this.fps : 0.01) },
      onStdoutLine: (line) => {
        const m = parseJson(line);
        if (!m) return;
        if (m.message_type === 'summary') summary = m;
        else if (m.message_type === 'status' && opts.onProgress) {
          opts.onProgress({
            percentDone: Math.min(1, num(m.percent_done)), totalFiles: num(m.total_files), filesDone: num(m.files_done),
            totalBytes: num(m.total_bytes), bytesDone: num(m.bytes_done), secondsElapsed: num(m.seconds_elapsed),
            ...(typeof m.seconds_remaining === 'number' ? { secondsRemaining: m.seconds_remaining } : {}),
            currentFiles: Array.isArray(m.current_files) ? m.current_files.filter((f): f is string => typeof f === 'string') : [],
          });
        }
      },
    });
    if (!r) throw new InternalError(`${what} failed unexpectedly`);
    const short = typeof summary?.snapshot_id === 'string' ? summary.snapshot_id : '';
    if (!summary || !/^[0-9a-f]{8,64}$/.test(short)) {
      throw new InternalError(`${what}: restic exited ${r.code} without reporting a saved snapshot${this.reason(r.stderr) ? ` (restic: ${this.reason(r.stderr)})` : ''}; retry the backup`);
    }
    const warnings = r.code === 3 ? this.errorLines(r.stderr) : [];
    const snap = await this.find(short);
    const result: BackupResult = {
      id: snap.id, snapshotId: snap.snapshotId,
      filesNew: num(summary.files_new), filesChanged: num(summary.files_changed), filesUnmodified: num(summary.files_unmodified),
      dirsNew: num(summary.dirs_new), dirsChanged: num(summary.dirs_changed), dirsUnmodified: num(summary.dirs_unmodified),
      dataAdded: num(summary.data_added), totalBytesProcessed: num(summary.total_bytes_processed),
      totalFilesProcessed: num(summary.total_files_processed),
      durationSec: num(summary.total_duration) || (Date.now() - t0) / 1000,
      warnings,
    };
    this.log.info({ target: this.target.name, volume, snapshot: result.id, dataAdded: result.dataAdded, durationSec: result.durationSec, warnings: warnings.length }, 'backup saved');
    if (warnings.length) this.log.warn({ target: this.target.name, volume, snapshot: result.id, warnings: warnings.slice(0, 20) }, 'backup saved without some files restic could not read');
    return result;
  }

  private tagArgs(tags: Readonly<Record<string, string>>): string[] {
    const out: string[] = [];
    for (const [k, v] of Object.entries(tags)) {
      if (!TAG_KEY_RE.test(k) || (ROOT_TAGS as readonly string[]).includes(k)) {
        throw new InvalidArgumentError(`backup tag ${JSON.stringify(k)} is not allowed: keys are lowercase letters, digits and "-", starting with a letter${(ROOT_TAGS as readonly string[]).includes(k) ? `, and ${ROOT_TAGS.join(', ')} are Ballast's own` : ''}`);
      }
      if (typeof v !== 'string' || !TAG_VALUE_RE.test(v)) {
        throw new InvalidArgumentError(`backup tag ${k}=${JSON.stringify(v)} is not allowed: values are at most 255 letters, digits or "_.:@/+-" (no commas or spaces)`);
      }
      out.push('--tag', `ballast.${k}=${v}`);
    }
    return out;
  }

  // ---------------------------------------------------------------- snapshots

  /** Snapshots of the target, oldest first; filtered by ballast tags (all must match) and host. */
  async list(filter: ListFilter = {}): Promise<BackupSnapshot[]> {
    const tags = { ...(filter.tags ?? {}), ...(filter.volume !== undefined ? { volume: filter.volume } : {}) };
    const tagList = Object.entries(tags).map(([k, v]) => {
      if (!TAG_KEY_RE.test(k) || !TAG_VALUE_RE.test(v)) throw new InvalidArgumentError(`backup filter ${k}=${JSON.stringify(v)} is not valid`);
      return `ballast.${k}=${v}`;
    });
    if (filter.host !== undefined && !HOST_RE.test(filter.host)) throw new InvalidArgumentError(`backup filter host ${JSON.stringify(filter.host)} is not valid`);
    const args = ['snapshots', '--json', ...(tagList.length ? ['--tag', tagList.join(',')] : []), ...(filter.host ? ['--host', filter.host] : [])];
    const r = (await this.exec(`listing the backups in ${this.label}`, args, { timeoutMs: this.shortMs }))!;
    let raw: unknown;
    try { raw = JSON.parse(r.stdout.trim() || '[]'); } catch (e) {
      throw new InternalError(`listing the backups in ${this.label}: restic's answer is not JSON (${(e as Error).message})`, { cause: e });
    }
    const snaps = (Array.isArray(raw) ? raw : []).map((s) => this.snapshotOf(s)).filter((s): s is BackupSnapshot => s !== undefined);
    return snaps.sort((a, b) => (a.time < b.time ? -1 : a.time > b.time ? 1 : 0));
  }

  private snapshotOf(s: unknown): BackupSnapshot | undefined {
    if (typeof s !== 'object' || s === null) return undefined;
    const o = s as Record<string, unknown>;
    if (typeof o.id !== 'string') return undefined;
    const tags: Record<string, string> = {};
    const other: string[] = [];
    const rootVals: Record<string, number> = {};
    for (const t of Array.isArray(o.tags) ? o.tags : []) {
      if (typeof t !== 'string') continue;
      const m = /^ballast\.([a-z][a-z0-9-]*)=(.*)$/.exec(t);
      if (!m) { other.push(t); continue; }
      if ((ROOT_TAGS as readonly string[]).includes(m[1])) rootVals[m[1]] = m[1] === 'root-mode' ? parseInt(m[2], 8) : parseInt(m[2], 10);
      else tags[m[1]] = m[2];
    }
    const rootOk = ROOT_TAGS.every((k) => Number.isInteger(rootVals[k]) && rootVals[k] >= 0);
    return {
      id: typeof o.short_id === 'string' ? o.short_id : o.id.slice(0, 8),
      snapshotId: o.id,
      time: typeof o.time === 'string' ? new Date(o.time).toISOString() : '',
      host: typeof o.hostname === 'string' ? o.hostname : '',
      tags, otherTags: other,
      ...(rootOk ? { root: { mode: rootVals['root-mode'], uid: rootVals['root-uid'], gid: rootVals['root-gid'] } } : {}),
      paths: Array.isArray(o.paths) ? o.paths.filter((p): p is string => typeof p === 'string') : [],
      ...(typeof o.parent === 'string' ? { parent: o.parent } : {}),
    };
  }

  /** The snapshot whose id starts with `id` (at least 4 hex digits); NotFoundError when none does. */
  async find(id: string): Promise<BackupSnapshot> {
    const want = String(id).trim().toLowerCase();
    if (!ID_RE.test(want)) throw new InvalidArgumentError(`backup id ${JSON.stringify(id)} is not valid: give at least 4 hex digits of an id shown by ballast backup ls --from ${this.target.name}`);
    const matches = (await this.list()).filter((s) => s.snapshotId.startsWith(want));
    if (matches.length === 0) throw new NotFoundError(`backup ${want} does not exist in target ${this.target.name}; ballast backup ls --from ${this.target.name} lists them`);
    if (matches.length > 1) {
      throw new InvalidArgumentError(`backup id ${want} is ambiguous in target ${this.target.name}: it starts ${matches.length} backups (${matches.slice(0, 5).map((m) => m.id).join(', ')}${matches.length > 5 ? ', ...' : ''}); give more digits`);
    }
    return matches[0];
  }

  /** Size of a snapshot as a restore would write it (restic stats --mode restore-size). */
  async stats(id: string): Promise<{ snapshotId: string; files: number; bytes: number }> {
    const snap = await this.find(id);
    return { snapshotId: snap.snapshotId, ...(await this.statsOf(snap.snapshotId, this.mediumMs)) };
  }

  private async statsOf(full: string, timeoutMs: number): Promise<{ files: number; bytes: number }> {
    const r = (await this.exec(`reading the size of backup ${full.slice(0, 8)} in ${this.label}`, ['stats', '--json', '--mode', 'restore-size', full], { timeoutMs }))!;
    const o = parseJson(r.stdout.replace(/\n/g, ' '));
    if (!o) throw new InternalError(`reading the size of backup ${full.slice(0, 8)} in ${this.label}: restic's answer is not JSON`);
    return { files: num(o.total_file_count), bytes: num(o.total_size) };
  }

  // ---------------------------------------------------------------- restore

  /**
   * Restores a snapshot into `intoDir` (created if missing; otherwise it must be empty but for
   * lost+found): the snapshot's root becomes intoDir's root, with the root's recorded mode and owner.
   * A failed or cancelled restore leaves what it wrote in intoDir.
   */
  async restore(id: string, intoDir: string, opts: RestoreOptions = {}): Promise<RestoreResult> {
    if (!isAbsolute(intoDir)) throw new InvalidArgumentError(`restore target directory ${JSON.stringify(intoDir)} must be an absolute path`);
    const snap = await this.find(id);
    const what = `restore of backup ${snap.id}${snap.tags.volume ? ` (volume ${snap.tags.volume})` : ''} from ${this.label} into ${intoDir}`;
    try {
      const entries = (await readdir(intoDir)).filter((e) => e !== 'lost+found');
      if (entries.length) {
        throw new FailedPreconditionError(`${what} refused: ${intoDir} is not empty (${entries.slice(0, 3).join(', ')}${entries.length > 3 ? ', ...' : ''}); restore into an empty or new directory`);
      }
    } catch (e) {
      if (e instanceof BallastError) throw e;
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT') throw new FailedPreconditionError(`${what} refused: ${intoDir} cannot be read as a directory (${code ?? (e as Error).message})`, { cause: e });
      try { await mkdir(intoDir, { mode: 0o700 }); } catch (e2) {
        throw new FailedPreconditionError(`${what} failed: ${intoDir} cannot be created (${(e2 as NodeJS.ErrnoException).code ?? (e2 as Error).message}); does ${dirname(intoDir)} exist?`, { cause: e2 });
      }
    }
    const t0 = Date.now();
    const totals = await this.statsOf(snap.snapshotId, opts.timeoutMs ?? this.mediumMs);
    let poll: NodeJS.Timeout | undefined;
    let lastDone = -1;
    const report = (bytesDone: number) => {
      if (!opts.onProgress || bytesDone === lastDone) return;
      lastDone = bytesDone;
      try {
        opts.onProgress({
          percentDone: totals.bytes > 0 ? bytesDone / totals.bytes : 1, bytesDone, totalBytes: totals.bytes,
          totalFiles: totals.files, secondsElapsed: (Date.now() - t0) / 1000,
        });
      } catch { /* the caller's callback may not break the restore */ }
    };
    const onSpawn = (pid: number) => {
      if (!opts.onProgress) return;
      report(0);
      poll = setInterval(() => {
        // wchar: bytes the process wrote with write(2) and friends (restic writes file content with them).
        readFile(`/proc/${pid}/io`, 'utf8').then((io) => {
          const m = /^wchar:\s*(\d+)/m.exec(io);
          if (m && poll) report(Math.min(totals.bytes, Number(m[1])));
        }, () => undefined);
      }, this.restorePollMs);
      poll.unref();
    };
    try {
      await this.exec(what, ['restore', snap.snapshotId, '--target', intoDir, ...(opts.verify ? ['--verify'] : [])], {
        timeoutMs: opts.timeoutMs ?? this.longMs, cwd: '/', signal: opts.signal, onSpawn,
        failureHint: `the files restored so far are in ${intoDir}; remove them before retrying`,
      });
    } finally {
      if (poll) clearInterval(poll);
      poll = undefined;
    }
    if (snap.root) {
      await chmod(intoDir, snap.root.mode);
      try { await chown(intoDir, snap.root.uid, snap.root.gid); } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EPERM') throw e;
        this.log.warn({ target: this.target.name, snapshot: snap.id, intoDir }, 'restore: the root directory\'s owner was not restored (not root)');
      }
    }
    report(totals.bytes);
    const result = { snapshotId: snap.snapshotId, files: totals.files, bytes: totals.bytes, durationSec: (Date.now() - t0) / 1000 };
    this.log.info({ target: this.target.name, snapshot: snap.id, intoDir, bytes: result.bytes, durationSec: result.durationSec }, 'backup restored');
    return result;
  }

  // ---------------------------------------------------------------- forget

  /**
   * Removes a snapshot (`forget <id>`), then frees its data (`prune`). The prune needs the repository to
   * itself: if another restic holds it (a backup running elsewhere), the snapshot is still gone and
   * pruned is false; the next prune frees the data.
   */
  async forget(id: string, opts: { prune?: boolean } = {}): Promise<ForgetResult> {
    const snap = await this.find(id);
    await this.exec(`removing backup ${snap.id}${snap.tags.volume ? ` (volume ${snap.tags.volume})` : ''} from ${this.label}`, ['forget', snap.snapshotId], { timeoutMs: this.shortMs });
    this.log.info({ target: this.target.name, snapshot: snap.id }, 'backup forgotten');
    if (opts.prune === false) return { snapshotId: snap.snapshotId, pruned: false, pruneError: 'not asked' };
    try {
      await this.prune();
      return { snapshotId: snap.snapshotId, pruned: true };
    } catch (e) {
      const msg = (e as Error).message;
      this.log.warn({ target: this.target.name, snapshot: snap.id, err: msg }, 'backup forgotten; its data is freed by the next prune');
      return { snapshotId: snap.snapshotId, pruned: false, pruneError: msg };
    }
  }

  /** Frees data no snapshot uses (restic prune). */
  async prune(): Promise<void> {
    await this.exec(`pruning ${this.label}`, ['prune'], { timeoutMs: this.mediumMs });
  }

  // ---------------------------------------------------------------- running restic

  private async ensureCacheDir(): Promise<void> {
    this.cacheReady ??= mkdir(this.cacheDir, { recursive: true, mode: 0o700 }).then(() => undefined, (e: unknown) => {
      this.cacheReady = undefined;
      throw new FailedPreconditionError(`restic's cache directory ${this.cacheDir} cannot be created (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, { cause: e });
    });
    return this.cacheReady;
  }

  /** The password file's content, only to keep it out of messages (restic reads the file itself). */
  private async password(what: string): Promise<string> {
    const f = this.target.passwordFile;
    let pw: string;
    try { pw = await readFile(f, 'utf8'); } catch (e) {
      const code = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
      throw new FailedPreconditionError(`${what} failed: the password file ${f} of backup target ${this.target.name} cannot be read (${code}); create it with the repository password on one line (the same on every node), mode 0600`, { cause: e });
    }
    pw = pw.replace(/\r?\n$/, '');
    if (!pw) throw new FailedPreconditionError(`${what} failed: the password file ${f} of backup target ${this.target.name} is empty; put the repository password in it (the same on every node)`);
    return pw;
  }

  /**
   * Runs restic with the target's repository, cache and password file. Returns the result when the exit
   * code is in okCodes; null for "no repository" (notInitializedOk) or "already exists" (existsOk);
   * otherwise throws a typed error. A "repository is locked" failure runs `unlock` (stale locks only)
   * and retries once.
   */
  private async exec(what: string, args: string[], o: {
    timeoutMs: number; cwd?: string; signal?: AbortSignal; env?: Record<string, string>; okCodes?: number[];
    onStdoutLine?: (line: string) => void; onSpawn?: (pid: number) => void; repository?: string;
    notInitializedOk?: boolean; existsOk?: boolean; retryLocked?: boolean; failureHint?: string;
  }): Promise<RunResult | null> {
    await this.ensureCacheDir();
    const secrets = [await this.password(what)];
    const env: Record<string, string> = {
      PATH: process.env.PATH || '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
      HOME: this.cacheDir, LC_ALL: 'C', ...(this.tmpDir ? { TMPDIR: this.tmpDir } : {}), ...(o.env ?? {}),
    };
    const globalArgs = ['-r', o.repository ?? this.repository, '--cache-dir', this.cacheDir, '--password-file', this.target.passwordFile];
    if (this.target.type === 's3') {
      const c = await readS3Credentials(this.target);
      env.AWS_ACCESS_KEY_ID = c.accessKeyId;
      env.AWS_SECRET_ACCESS_KEY = c.secretAccessKey;
      secrets.push(c.secretAccessKey);
      if (this.target.region) globalArgs.push('-o', `s3.region=${this.target.region}`);
    }
    const argv = [this.bin, ...globalArgs, ...args];
    const runOpts: RunOptions = {
      env, cwd: o.cwd ?? '/', timeoutMs: o.timeoutMs, killGraceMs: this.killGraceMs,
      ...(o.signal ? { signal: o.signal } : {}), ...(o.onStdoutLine ? { onStdoutLine: o.onStdoutLine } : {}), ...(o.onSpawn ? { onSpawn: o.onSpawn } : {}),
    };
    for (let attempt = 0; ; attempt++) {
      const t0 = Date.now();
      const r = await this.run(argv, runOpts);
      this.log.debug({ target: this.target.name, argv: argv.map((a) => this.redact(a, secrets)), code: r.code, signal: r.signal, ms: Date.now() - t0 }, 'restic');
      if (!r.timedOut && !r.aborted && r.code !== null && (o.okCodes ?? [0]).includes(r.code)) return r;
      const f = this.failure(what, r, o.timeoutMs, secrets, o.failureHint);
      if (f.kind === 'notInitialized' && o.notInitializedOk) return null;
      if (f.kind === 'exists' && o.existsOk) return null;
      if (f.kind === 'locked' && attempt === 0 && o.retryLocked !== false) {
        this.log.info({ target: this.target.name, op: args[0] }, 'restic repository locked; removing stale locks and retrying once');
        await this.unlock();
        continue;
      }
      throw f.error;
    }
  }

  private redact(s: string, secrets: readonly string[]): string {
    let out = s;
    for (const x of secrets) if (x.length >= 3) out = out.split(x).join('[redacted]');
    return out;
  }

  /** restic's own words: its stderr without escapes, prompts and advice Ballast replaces. */
  private reason(stderr: string, secrets: readonly string[] = []): string {
    const lines = stderr.replace(ANSI_RE, '').split(/\r?\n/).map((l) => l.trim()).filter(Boolean);
    const kept: string[] = [];
    for (let i = 0; i < lines.length; i++) {
      const l = lines[i];
      if (/^Is there a repository at the following location\?$/.test(l)) { i++; continue; }
      if (/^the `unlock` command can be used/.test(l) || /^signal interrupt received/.test(l)) continue;
      const j = parseJson(l);
      if (j) { if (j.message_type === 'error') kept.push(this.errorText(j)); continue; }
      kept.push(l.replace(/^Fatal: /, ''));
    }
    const text = kept.join('; ');
    return this.redact(text.length > 800 ? `${text.slice(0, 800)}...` : text, secrets);
  }

  private errorText(j: Record<string, unknown>): string {
    const err = j.error as Record<string, unknown> | string | undefined;
    const msg = typeof err === 'string' ? err : typeof err?.message === 'string' ? err.message : 'cannot be read';
    return `${typeof j.item === 'string' ? j.item : '?'}: ${msg}`;
  }

  /** Per-file errors of a backup that exited 3 (snapshot saved without those files). */
  private errorLines(stderr: string): string[] {
    const out: string[] = [];
    for (const l of stderr.replace(ANSI_RE, '').split(/\r?\n/)) {
      const j = parseJson(l);
      if (j?.message_type === 'error') out.push(this.errorText(j));
      else if (/^error: /.test(l.trim())) out.push(l.trim().slice(7));
    }
    return out.length ? out : ['restic: at least one source file could not be read'];
  }

  private failure(what: string, r: RunResult, timeoutMs: number, secrets: readonly string[], hint?: string): { kind: FailureKind; error: BallastError } {
    const then = hint ? `; ${hint}` : '';
    if (r.aborted) return { kind: 'other', error: new AbortedError(`${what} was cancelled; restic was stopped${then}`) };
    if (r.timedOut) {
      return { kind: 'other', error: new DeadlineExceededError(`${what} did not finish within ${fmtDuration(timeoutMs)} and was stopped; check that the target is reachable and fast enough, or allow more time${then}`) };
    }
    // Patterns are matched on restic's own words; messages carry them with secrets redacted.
    const raw = this.reason(r.stderr) || (r.signal ? `restic was killed by ${r.signal}` : `restic exited with code ${r.code}`);
    const why = this.redact(raw, secrets);
    const t = this.target;
    if (/wrong password or no key found/i.test(raw)) {
      return { kind: 'wrongPassword', error: new FailedPreconditionError(`${what} failed: the password in ${t.passwordFile} does not open the target's restic repository (restic: ${why}); put the password the repository was created with into that file (every node must use the same one)`) };
    }
    if (/is damaged: ciphertext verification failed/i.test(raw)) {
      return { kind: 'other', error: new FailedPreconditionError(`${what} failed: the target's restic repository cannot be opened (restic: ${why}); this happens when two nodes created the repository at the same time: if it holds no backups yet, remove it and retry from one node`) };
    }
    if (/config file already exists/i.test(raw)) return { kind: 'exists', error: new AlreadyExistsError(`${what}: a restic repository is already there (restic: ${why})`) };
    if (/unable to open config file/i.test(raw) && /no such file or directory|key does not exist|NoSuchKey|bucket does not exist|NoSuchBucket/i.test(raw)) {
      return { kind: 'notInitialized', error: new FailedPreconditionError(`${what} failed: the target holds no restic repository yet (nothing was backed up to it, or its ${t.type === 'dir' ? 'path' : 'bucket or prefix'} is wrong)`) };
    }
    if (/repository is already locked/i.test(raw)) {
      return { kind: 'locked', error: new BusyError(`${what} failed: the target is in use by another restic (${why}); retry when it is done. If that restic no longer runs (its node crashed), the lock expires 30 minutes after it was last refreshed, or remove it with restic unlock --remove-all`) };
    }
    if (/no space left on device|quota exceeded|QuotaExceeded/i.test(raw)) {
      return { kind: 'other', error: new ResourceExhaustedError(`${what} failed: no space left (restic: ${why}); free space on ${t.type === 'dir' ? `the filesystem of ${t.path}` : 'the S3 bucket'} or in restic's temporary directory, then retry${then}`) };
    }
    if (t.type === 's3' && /InvalidAccessKeyId|SignatureDoesNotMatch|AccessDenied|Access Denied|Forbidden|access key id you provided does not exist|signature we calculated does not match/i.test(raw)) {
      return { kind: 'other', error: new FailedPreconditionError(`${what} failed: the S3 server refused the credentials in ${t.credentialsFile} (restic: ${why}); check the keys and that they may read and write bucket ${t.bucket}${then}`) };
    }
    if (/connection refused|no such host|i\/o timeout|dial tcp|network is unreachable|no route to host|connection reset|\btls\b|x509|certificate|timeout|\bEOF\b|not a directory|permission denied|input\/output error|read-only file system|stale file handle|transport endpoint|server gave HTTP response|Service Unavailable|Bad Gateway|ReadDir|Stat:|no such file or directory/i.test(raw)) {
      const check = t.type === 'dir' ? `check that ${t.path} is mounted, readable and writable` : `check that the S3 server at ${t.url} answers`;
      return { kind: 'other', error: new UnavailableError(`${what} failed: the target is unavailable (restic: ${why}); ${check}, then retry${then}`) };
    }
    if (r.signal) return { kind: 'other', error: new AbortedError(`${what} failed: restic was killed by ${r.signal} (out of memory, or stopped by someone); retry${then}`) };
    return { kind: 'other', error: new InternalError(`${what} failed: restic exited with code ${r.code} (restic: ${why})${then}`) };
  }
}
