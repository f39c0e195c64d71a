import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmod, chown, lstat, mkdir, mkdtemp, open, readdir, readFile, readlink, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  AbortedError, BusyError, DeadlineExceededError, FailedPreconditionError, InvalidArgumentError, NotFoundError, UnavailableError,
} from '../core/errors.js';
import { Restic, spawnRunner, type BackupProgress, type BackupResult, type ResticRunner, type RunOptions, type RunResult } from './restic.js';
import { parseBackupTargets, readS3Credentials, repositoryOf, type BackupTarget, type S3BackupTarget } from './targets.js';

const MiB = 1024 * 1024;
const isRoot = process.getuid?.() === 0;

function resticSkipReason(): string | false {
  const r = spawnSync('restic', ['version'], { timeout: 10_000, encoding: 'utf8' });
  if (r.error || r.status !== 0) {
    return 'restic is not installed: apt-get install -y restic (scripts/install-test-deps.sh installs it)';
  }
  return false;
}

interface Call { argv: readonly string[]; env: Readonly<Record<string, string>>; cwd?: string }

/** Wraps the real runner: records every argv and environment, and the PID of each restic started. */
function spyRunner(inner: ResticRunner = spawnRunner) {
  const calls: Call[] = [];
  let onPid: ((pid: number) => void) | undefined;
  const run: ResticRunner = (argv, opts: RunOptions) => {
    calls.push({ argv: [...argv], env: { ...opts.env }, cwd: opts.cwd });
    return inner(argv, { ...opts, onSpawn: (pid) => { onPid?.(pid); opts.onSpawn?.(pid); } });
  };
  return { run, calls, setOnPid: (f: ((pid: number) => void) | undefined) => { onPid = f; } };
}

async function sha256(path: string): Promise<string> {
  return createHash('sha256').update(await readFile(path)).digest('hex');
}

/** Every entry below root (and root itself as "."): type, mode, owner, and content hash or link target. */
async function treeOf(root: string): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  const walk = async (rel: string): Promise<void> => {
    const abs = rel ? join(root, rel) : root;
    const st = await lstat(abs);
    const key = rel || '.';
    if (st.isSymbolicLink()) out[key] = { type: 'symlink', target: await readlink(abs), uid: st.uid, gid: st.gid };
    else if (st.isDirectory()) {
      out[key] = { type: 'dir', mode: (st.mode & 0o7777).toString(8), uid: st.uid, gid: st.gid };
      for (const e of (await readdir(abs)).sort()) await walk(rel ? `${rel}/${e}` : e);
    } else if (st.isFile()) {
      out[key] = { type: 'file', mode: (st.mode & 0o7777).toString(8), uid: st.uid, gid: st.gid, size: st.size, sha256: await sha256(abs), mtime: Math.floor(st.mtimeMs) };
    } else out[key] = { type: 'other' };
  };
  await walk('');
  return out;
}

async function writeRandom(path: string, bytes: number): Promise<void> {
  const fh = await open(path, 'w');
  try {
    for (let done = 0; done < bytes; done += 4 * MiB) await fh.write(randomBytes(Math.min(4 * MiB, bytes - done)));
  } finally { await fh.close(); }
}

// ------------------------------------------------------------------ config: no restic needed

describe('parseBackupTargets', () => {
  it('accepts dir and s3 targets and builds their repository strings', () => {
    const t = parseBackupTargets({
      nas: { type: 'dir', path: '/mnt/nas/backups', passwordFile: '/etc/ballast/pw' },
      off: { type: 's3', url: 'https://s3.example.com:9000/', bucket: 'bkt', prefix: '/ballast/prod/', credentialsFile: '/etc/ballast/s3', region: 'eu-west-1', passwordFile: '/etc/ballast/pw' },
      plain: { type: 's3', url: 'http://10.0.0.1', bucket: 'bkt2', credentialsFile: '/etc/c', passwordFile: '/etc/pw' },
    });
    assert.deepEqual(t.nas, { name: 'nas', type: 'dir', path: '/mnt/nas/backups', passwordFile: '/etc/ballast/pw' });
    assert.equal(repositoryOf(t.nas), '/mnt/nas/backups');
    assert.equal(repositoryOf(t.off), 's3:https://s3.example.com:9000/bkt/ballast/prod');
    assert.equal((t.off as S3BackupTarget).region, 'eu-west-1');
    assert.equal(repositoryOf(t.plain), 's3:http://10.0.0.1/bkt2');
    assert.deepEqual(parseBackupTargets(undefined), {});
  });

  it('refuses unknown keys naming the accepted ones, bad names, relative paths and a missing passwordFile', () => {
    const bad = (raw: unknown, re: RegExp) => assert.throws(() => parseBackupTargets(raw), (e: Error) => e instanceof InvalidArgumentError && re.test(e.message));
    bad({ nas: { type: 'dir', path: '/a', passwordFile: '/p', pasword: 'x' } }, /unknown key "pasword" in backupTargets\.nas; accepted keys: type, path, passwordFile/);
    bad({ off: { type: 's3', url: 'http://h', bucket: 'bkt', credentialsFile: '/c', passwordFile: '/p', secret: 'x' } }, /accepted keys: type, url, bucket, prefix, credentialsFile, region, passwordFile/);
    bad({ Nas: { type: 'dir', path: '/a', passwordFile: '/p' } }, /backup target name "Nas" is not allowed/);
    bad({ '9x': { type: 'dir', path: '/a', passwordFile: '/p' } }, /not allowed/);
    bad({ nas: { type: 'dir', path: 'rel/dir', passwordFile: '/p' } }, /backupTargets\.nas: path "rel\/dir" is not an absolute path/);
    bad({ nas: { type: 'dir', path: '/a/../b', passwordFile: '/p' } }, /not a normalized absolute path/);
    bad({ nas: { type: 'dir', path: '/a' } }, /passwordFile is required .*every node of a cluster must use the same password/);
    bad({ nas: { type: 'nfs', path: '/a', passwordFile: '/p' } }, /type "nfs" is not known; accepted types: dir, s3/);
    bad({ nas: { path: '/a', passwordFile: '/p' } }, /type is required/);
    bad({ off: { type: 's3', url: 'ftp://h', bucket: 'bkt', credentialsFile: '/c', passwordFile: '/p' } }, /url "ftp:\/\/h" is not valid \(http\(s\):\/\/host\[:port\]\)/);
    bad({ off: { type: 's3', url: 'http://h', bucket: 'BK', credentialsFile: '/c', passwordFile: '/p' } }, /bucket "BK" is not valid/);
    bad({ off: { type: 's3', url: 'http://h', bucket: 'bkt', prefix: 'a/../b', credentialsFile: '/c', passwordFile: '/p' } }, /prefix "a\/..\/b" is not valid/);
    bad({ off: { type: 's3', url: 'http://h', bucket: 'bkt', passwordFile: '/p' } }, /credentialsFile is required/);
    bad([], /backupTargets must be an object/);
    bad({ nas: 'x' }, /backupTargets\.nas must be an object/);
  });

  it('reads S3 credentials files (KEY:SECRET, or bucket:KEY:SECRET) without putting their content in errors', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ballast-s3cred-'));
    try {
      const t = parseBackupTargets({ off: { type: 's3', url: 'http://h', bucket: 'bkt', credentialsFile: join(dir, 'c'), passwordFile: '/p' } }).off as S3BackupTarget;
      await writeFile(join(dir, 'c'), 'AKIA123:s3cr3t/abc+def\n', { mode: 0o600 });
      assert.deepEqual(await readS3Credentials(t), { accessKeyId: 'AKIA123', secretAccessKey: 's3cr3t/abc+def' });
      await writeFile(join(dir, 'c'), 'bkt:AKIA123:s3cr3t\n');
      assert.deepEqual(await readS3Credentials(t), { accessKeyId: 'AKIA123', secretAccessKey: 's3cr3t' });
      await writeFile(join(dir, 'c'), 'only-one-field-s3cr3t\n');
      await assert.rejects(readS3Credentials(t), (e: Error) => e instanceof FailedPreconditionError && /not in the form ACCESS_KEY:SECRET_KEY/.test(e.message) && !e.message.includes('s3cr3t'));
      await rm(join(dir, 'c'));
      await assert.rejects(readS3Credentials(t), (e: Error) => e instanceof FailedPreconditionError && /cannot be read \(ENOENT\)/.test(e.message));
    } finally { await rm(dir, { recursive: true, force: true }); }
  });
});

// ------------------------------------------------------------------ fake runner: error mapping, secrets

describe('Restic with a fake restic', () => {
  let dir: string;
  let target: BackupTarget;
  let s3: BackupTarget;
  const PASSWORD = `pw-${randomBytes(8).toString('hex')}`;
  const SECRET = `sk-${randomBytes(8).toString('hex')}`;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ballast-restic-fake-'));
    await writeFile(join(dir, 'pw'), `${PASSWORD}\n`, { mode: 0o600 });
    await writeFile(join(dir, 'cred'), `AKIAFAKE:${SECRET}\n`, { mode: 0o600 });
    const t = parseBackupTargets({
      nas: { type: 'dir', path: join(dir, 'repo'), passwordFile: join(dir, 'pw') },
      off: { type: 's3', url: 'http://127.0.0.1:9000', bucket: 'bkt', prefix: 'p/q', region: 'us-east-1', credentialsFile: join(dir, 'cred'), passwordFile: join(dir, 'pw') },
    });
    target = t.nas;
    s3 = t.off;
  });
  after(async () => { await rm(dir, { recursive: true, force: true }); });

  const result = (over: Partial<RunResult>): RunResult => ({ code: 0, signal: null, stdout: '', stderr: '', timedOut: false, aborted: false, ...over });

  it('passes S3 keys in the environment only, and redacts secrets that restic would print', async () => {
    const calls: Call[] = [];
    const run: ResticRunner = async (argv, opts) => {
      calls.push({ argv, env: opts.env });
      return result({ code: 1, stderr: `Fatal: something odd happened with ${PASSWORD} and ${SECRET}\n` });
    };
    const r = new Restic(s3, { cacheDir: join(dir, 'cache'), run });
    const err = await r.list().then(() => undefined, (e: Error) => e);
    assert.ok(err instanceof Error);
    assert.ok(!err.message.includes(PASSWORD) && !err.message.includes(SECRET), err.message);
    assert.match(err.message, /\[redacted\]/);
    const c = calls[0];
    assert.deepEqual(c.argv.slice(0, 9), ['restic', '-r', 's3:http://127.0.0.1:9000/bkt/p/q', '--cache-dir', join(dir, 'cache'), '--password-file', join(dir, 'pw'), '-o', 's3.region=us-east-1']);
    assert.equal(c.env.AWS_ACCESS_KEY_ID, 'AKIAFAKE');
    assert.equal(c.env.AWS_SECRET_ACCESS_KEY, SECRET);
    assert.equal(c.env.HOME, join(dir, 'cache'));
    assert.ok(!c.argv.some((a) => a.includes(PASSWORD) || a.includes(SECRET)));
    assert.ok(!Object.values(c.env).some((v) => v.includes(PASSWORD)));
    assert.ok(!Object.keys(c.env).some((k) => /^RESTIC_(PASSWORD|REPOSITORY)/.test(k)), 'no restic settings leak in from the daemon\'s environment');
  });

  it('maps S3 refusing the keys to FailedPreconditionError naming the credentials file (as radosgw words it)', async () => {
    const r = new Restic(s3, { cacheDir: join(dir, 'cache'), run: async () => result({ code: 1, stderr: 'Fatal: unable to open config file: Stat: The access key ID you provided does not exist in our records.\nIs there a repository at the following location?\ns3:http://127.0.0.1:9000/bkt/p/q\n' }) });
    await assert.rejects(r.list(), (e: Error) => e instanceof FailedPreconditionError && e.message.includes(`the S3 server refused the credentials in ${join(dir, 'cred')}`) && !e.message.includes('Is there a repository'));
  });

  it('maps a locked repository to unlock + one retry, then BusyError', async () => {
    const ops: string[] = [];
    const locked = 'unable to create lock in backend: repository is already locked by PID 4242 on other-node by root (UID 0, GID 0)\nlock was created at 2024-01-01 10:00:00 (3m ago)\nstorage ID 1234abcd\nthe `unlock` command can be used to remove stale locks\n';
    let forgetCalls = 0;
    const run: ResticRunner = async (argv) => {
      const op = argv[7];
      ops.push(op);
      if (op === 'snapshots') return result({ stdout: JSON.stringify([{ id: 'ab'.repeat(32), short_id: 'abababab', time: '2024-01-01T00:00:00Z', hostname: 'n1', tags: ['ballast.volume=db'], paths: ['/x'] }]) });
      if (op === 'forget') { forgetCalls++; return result({ code: 1, stderr: locked }); }
      return result({});
    };
    const r = new Restic(target, { cacheDir: join(dir, 'cache'), run });
    await assert.rejects(r.forget('abab'), (e: Error) => e instanceof BusyError && /failed: the target is in use by another restic .*PID 4242 on other-node/.test(e.message) && /restic unlock --remove-all/.test(e.message));
    assert.deepEqual(ops, ['snapshots', 'forget', 'unlock', 'forget']);
    assert.equal(forgetCalls, 2);
  });

  it('maps timeouts, cancellation and unknown ids to their error kinds', async () => {
    const snaps = JSON.stringify([{ id: 'cd'.repeat(32), short_id: 'cdcdcdcd', time: '2024-01-01T00:00:00Z', hostname: 'n1', tags: [], paths: ['/x'] }]);
    const mk = (r: Partial<RunResult>) => new Restic(target, {
      cacheDir: join(dir, 'cache'),
      run: async (argv) => (argv[7] === 'snapshots' ? result({ stdout: snaps }) : result(r)),
    });
    await assert.rejects(mk({ timedOut: true, code: null, signal: 'SIGINT' }).forget('cdcd'), (e: Error) => e instanceof DeadlineExceededError && /did not finish within 1 min and was stopped/.test(e.message));
    await assert.rejects(mk({}).find('ef01'), (e: Error) => e instanceof NotFoundError && e.message === 'backup ef01 does not exist in target nas; ballast backup ls --from nas lists them');
    await assert.rejects(mk({}).find('xyz'), InvalidArgumentError);
    await assert.rejects(mk({}).find('cd'), InvalidArgumentError);
    assert.equal((await mk({}).find('CDCDCDCD')).snapshotId, 'cd'.repeat(32));
    const ac = new AbortController();
    ac.abort();
    const restic = new Restic(target, { cacheDir: join(dir, 'cache'), run: spawnRunner, resticBin: '/nonexistent/restic' });
    await assert.rejects(restic.backup(dir, { tags: { volume: 'v' }, host: 'h', signal: ac.signal }), (e: Error) => e instanceof AbortedError || e instanceof UnavailableError);
    await assert.rejects(restic.list(), (e: Error) => e instanceof UnavailableError && /install restic/.test(e.message));
  });

  it('serializes concurrent ensureRepo in this process: one init', async () => {
    let config = false;
    const ops: string[] = [];
    const run: ResticRunner = async (argv) => {
      const op = argv[9];
      ops.push(op);
      await new Promise((r) => setTimeout(r, 20));
      if (op === 'cat') return config ? result({ stdout: '{"version":2,"id":"1234"}' }) : result({ code: 1, stderr: 'Fatal: unable to open config file: Stat: The specified key does not exist.\nIs there a repository at the following location?\ns3:http://127.0.0.1:9000/bkt/p/q\n' });
      if (op === 'init') { if (config) return result({ code: 1, stderr: 'Fatal: create repository at x failed: config file already exists\n' }); config = true; return result({}); }
      return result({ code: 1 });
    };
    const rs = Array.from({ length: 4 }, () => new Restic(s3, { cacheDir: join(dir, 'cache'), run }));
    const out = await Promise.all(rs.map((r) => r.ensureRepo()));
    assert.deepEqual(out.map((o) => o.created), [true, false, false, false]);
    assert.equal(ops.filter((o) => o === 'init').length, 1);
    // Another node's init between our cat config and our init: "already exists" is fine.
    config = false;
    const other = new Restic(s3, { cacheDir: join(dir, 'cache'), run: async (argv, o) => { const r = await run(argv, o); if (argv[9] === 'cat' && !config) config = true; return r; } });
    assert.deepEqual(await other.ensureRepo(), { created: false, repositoryId: '1234' });
  });

  it('refuses tags that would not survive restic\'s tag lists', async () => {
    const r = new Restic(target, { cacheDir: join(dir, 'cache'), run: async () => result({}) });
    await assert.rejects(r.backup(dir, { tags: { volume: 'a,b' }, host: 'h' }), /values are at most 255 letters/);
    await assert.rejects(r.backup(dir, { tags: { 'root-mode': '0777' }, host: 'h' }), /Ballast's own/);
    await assert.rejects(r.backup(dir, { tags: { Volume: 'x' }, host: 'h' }), /keys are lowercase/);
    await assert.rejects(r.backup(dir, { tags: {}, host: 'bad host' }), /host "bad host" is not valid/);
  });
});

// ------------------------------------------------------------------ real restic

const skip = resticSkipReason();
if (skip) console.log(`# restic tests skipped: ${skip}`);

describe('Restic against a real restic and directory repositories', { skip, concurrency: 2 }, () => {
  // Two suites run side by side (each restic call spends ~0.6 s of one CPU deriving the key from the
  // password with scrypt, so one after the other they take twice as long); each has its own repository.
  let dir: string;
  let password: string;
  const spies: ReturnType<typeof spyRunner>[] = [];
  const errors: string[] = [];
  const catchErr = async (p: Promise<unknown>): Promise<Error> => {
    try { await p; } catch (e) { errors.push((e as Error).message); return e as Error; }
    assert.fail('expected a failure');
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ballast-restic-'));
    password = randomBytes(18).toString('base64');
    await writeFile(join(dir, 'password'), `${password}\n`, { mode: 0o600 });
  });

  after(async () => {
    for (const c of spies.flatMap((s) => s.calls)) {
      assert.ok(!c.argv.some((a) => a.includes(password)), `password in argv: ${c.argv.join(' ')}`);
      assert.ok(!Object.values(c.env).some((v) => v.includes(password)), 'password in the environment');
      assert.ok(c.argv.includes('--password-file'));
    }
    for (const m of errors) assert.ok(!m.includes(password), `password in an error: ${m}`);
    await rm(dir, { recursive: true, force: true });
  });

  describe('a volume: backup, list, restore, dedup, forget', { concurrency: 1 }, () => {
    let target: BackupTarget;
    let restic: Restic;
    let src: string;
    const spy = spyRunner();
    spies.push(spy);
    const tags = { volume: 'db', backend: 'local', 'source-node': 'node-a' };
    let first: BackupResult;
    let second: BackupResult;

    before(async () => {
      target = parseBackupTargets({ local: { type: 'dir', path: join(dir, 'repo'), passwordFile: join(dir, 'password') } }).local;
      restic = new Restic(target, { cacheDir: join(dir, 'cache'), run: spy.run, progressFps: 10 });
      // The volume: nested directories, modes, owners, symlinks (relative, absolute, dangling), an empty
      // directory, and a 20 MiB random file.
      src = join(dir, 'vol');
      await mkdir(join(src, 'a/b/c'), { recursive: true });
      await mkdir(join(src, 'empty'));
      await writeFile(join(src, 'a/b/c/deep.txt'), 'deep\n');
      await writeFile(join(src, 'a/secret.key'), 'k\n', { mode: 0o600 });
      await writeFile(join(src, 'a/run.sh'), '#!/bin/sh\necho hi\n', { mode: 0o755 });
      await writeFile(join(src, 'a/b/setgid'), 'x', { mode: 0o640 });
      await chmod(join(src, 'a/b/setgid'), 0o2640);
      await chmod(join(src, 'a/b'), 0o710);
      await symlink('b/c/deep.txt', join(src, 'a/rel-link'));
      await symlink('/etc/hostname', join(src, 'abs-link'));
      await symlink('does/not/exist', join(src, 'dangling'));
      await writeRandom(join(src, 'big.bin'), 20 * MiB);
      if (isRoot) await chown(join(src, 'a/secret.key'), 1234, 2345);
      await chmod(src, 0o750);
      if (isRoot) await chown(src, 999, 998);
    });

    it('ensureRepo creates the repository once; later calls find it', async () => {
      const a = await restic.ensureRepo();
      assert.equal(a.created, true);
      assert.match(a.repositoryId, /^[0-9a-f]{64}$/);
      const b = await restic.ensureRepo();
      assert.deepEqual(b, { created: false, repositoryId: a.repositoryId });
      assert.deepEqual(await restic.list(), []);
      const st = await lstat(target.type === 'dir' ? target.path : '');
      assert.equal(st.mode & 0o777, 0o700);
      assert.deepEqual((await readdir(dir)).filter((e) => e.includes('.repo.ballast-init')), [], 'no temporary init directory is left');
      assert.ok((await readdir(join(dir, 'cache'))).includes(a.repositoryId), 'the cache is under the given cacheDir');
    });
    it('backs up a volume\'s contents at the snapshot root, with tags, host and the root\'s mode and owner', async () => {
      const progress: BackupProgress[] = [];
      first = await restic.backup(src, { tags, host: 'node-a', onProgress: (p) => progress.push(p) });
      assert.match(first.id, /^[0-9a-f]{8}$/);
      assert.match(first.snapshotId, /^[0-9a-f]{64}$/);
      assert.ok(first.snapshotId.startsWith(first.id));
      assert.equal(first.filesNew, 5, 'regular files; restic does not count symlinks as files');
      assert.equal(first.filesChanged, 0);
      assert.ok(first.totalBytesProcessed >= 20 * MiB && first.totalBytesProcessed < 20 * MiB + 4096, String(first.totalBytesProcessed));
      assert.ok(first.dataAdded >= 20 * MiB, `random data does not compress: ${first.dataAdded}`);
      assert.ok(first.durationSec > 0);
      assert.deepEqual(first.warnings, []);
      const call = spy.calls.find((c) => c.argv.includes('backup'))!;
      assert.equal(call.cwd, src);
      assert.equal(call.argv.at(-1), '.');
      assert.ok(call.argv.includes('--tag') && call.argv.includes('ballast.volume=db') && call.argv.includes('ballast.source-node=node-a'));
      assert.ok(progress.length >= 1);

      const snaps = await restic.list();
      assert.equal(snaps.length, 1);
      const s = snaps[0];
      assert.equal(s.snapshotId, first.snapshotId);
      assert.equal(s.id, first.id);
      assert.equal(s.host, 'node-a');
      assert.deepEqual(s.tags, tags);
      assert.deepEqual(s.otherTags, []);
      assert.deepEqual(s.root, { mode: 0o750, uid: isRoot ? 999 : process.getuid!(), gid: isRoot ? 998 : process.getgid!() });
      assert.deepEqual(s.paths, [src], 'restic 0.14 records the absolute cwd as the path of "."');
      assert.ok(Math.abs(Date.parse(s.time) - Date.now()) < 120_000);
      // (each restic call costs ~0.6 s here: restic derives the key from the password with scrypt every time)
      assert.deepEqual((await restic.list({ volume: 'db', host: 'node-a' })).map((x) => x.id), [first.id]);
      assert.deepEqual(await restic.list({ tags: { backend: 'local', 'source-node': 'node-b' } }), [], 'all tags must match');
      assert.equal((await restic.find(first.id.slice(0, 5))).snapshotId, first.snapshotId);
    });
    it('restores into an empty directory: the same tree, contents, modes, owners and symlinks at its root', async () => {
      // A fresh ext4 volume holds lost+found: that alone is not "not empty".
      const into = join(dir, 'restored');
      await mkdir(join(into, 'lost+found'), { recursive: true });
      const progress: number[] = [];
      const r = await restic.restore(first.id, into, { onProgress: (p) => progress.push(p.bytesDone) });
      assert.equal(r.snapshotId, first.snapshotId);
      assert.equal(r.bytes, first.totalBytesProcessed);
      assert.equal(r.files, 12, 'entries below the root: 4 directories, 5 files, 3 symlinks');
      assert.ok(r.durationSec > 0);
      const restored = await treeOf(into);
      delete restored['lost+found'];
      assert.deepEqual(restored, await treeOf(src));
      assert.ok((await readdir(into)).includes('big.bin'), 'files are at the root of the target, not under its absolute source path');
      assert.equal(progress.at(-1), r.bytes, 'the last progress report is the whole size');
      // Into a directory that is not empty: refused.
      const err = await catchErr(restic.restore(first.id, into));
      assert.ok(err instanceof FailedPreconditionError);
      assert.match(err.message, /is not empty .*restore into an empty or new directory/);
    });
    it('a second backup after changing 1 % of the big file adds about that, not the whole file (dedup)', async () => {
      const fh = await open(join(src, 'big.bin'), 'r+');
      const changed = Math.round(20 * MiB / 100);
      await fh.write(randomBytes(changed), 0, changed, 7 * MiB + 12345);
      await fh.close();
      second = await restic.backup(src, { tags, host: 'node-a', parent: first.id });
      assert.ok(spy.calls.at(-2)!.argv.includes(first.snapshotId), '--parent is the full id');
      assert.equal(second.filesChanged, 1);
      assert.equal(second.filesNew, 0);
      assert.equal(second.filesUnmodified, 4);
      // restic's chunker cuts content-defined chunks of 512 KiB to 8 MiB (about 1.5 MiB on average, with
      // a per-repository random polynomial), so a 200 KiB change rewrites the one or two chunks it
      // touches: measured over 40 fresh repositories, 0.5 to 6.6 MiB (median 1.9 MiB, over 3 MiB in a
      // third of them). Two adjacent chunks can not exceed 10 MiB but with odds of about 1e-4.
      assert.ok(second.dataAdded >= changed, `the change itself is stored: ${second.dataAdded}`);
      assert.ok(second.dataAdded < 10 * MiB, `dedup: ${second.dataAdded} bytes added for a ${changed}-byte change`);
      console.log(`# dedup: first backup added ${(first.dataAdded / MiB).toFixed(2)} MiB, the second (1 % of 20 MiB changed) ${(second.dataAdded / MiB).toFixed(2)} MiB = ${(100 * second.dataAdded / first.dataAdded).toFixed(1)} %`);
      const into = join(dir, 'restored-2');
      await restic.restore(second.id, into);
      assert.deepEqual(await treeOf(into), await treeOf(src));
    });
    it('forget removes a backup; an unknown id is NotFound with the command that lists them', async () => {
      const f = await restic.forget(first.id);
      assert.equal(f.snapshotId, first.snapshotId);
      assert.equal(f.pruned, true);
      assert.ok(!(await restic.list({ volume: 'db' })).some((x) => x.snapshotId === first.snapshotId), 'the forgotten backup is not listed');
      const e1 = await catchErr(restic.forget(first.id));
      assert.ok(e1 instanceof NotFoundError);
      assert.equal(e1.message, `backup ${first.id} does not exist in target local; ballast backup ls --from local lists them`);
      const e2 = await catchErr(restic.restore('deadbeef', join(dir, 'nope')));
      assert.ok(e2 instanceof NotFoundError);
    });
    it('a wrong password is a clear error naming the password file, not the password', async () => {
      const wrong = randomBytes(12).toString('hex');
      await writeFile(join(dir, 'wrong'), wrong);
      const t = parseBackupTargets({ local: { type: 'dir', path: join(dir, 'repo'), passwordFile: join(dir, 'wrong') } }).local;
      const r = new Restic(t, { cacheDir: join(dir, 'cache'), run: spy.run });
      for (const op of [() => r.ensureRepo(), () => r.list(), () => r.backup(src, { tags, host: 'node-a' })]) {
        const e = await catchErr(op());
        assert.ok(e instanceof FailedPreconditionError, `${e.name}: ${e.message}`);
        assert.match(e.message, new RegExp(`the password in ${join(dir, 'wrong')} does not open the target's restic repository .*wrong password or no key found.*every node must use the same one`));
        assert.ok(!e.message.includes(wrong));
      }
      const missing = new Restic({ ...t, passwordFile: join(dir, 'no-such-file') }, { cacheDir: join(dir, 'cache'), run: spy.run });
      const e = await catchErr(missing.list());
      assert.ok(e instanceof FailedPreconditionError);
      assert.match(e.message, /password file .*no-such-file of backup target local cannot be read \(ENOENT\)/);
    });
  });

  describe('interrupted backups, init races, progress and failing targets', { concurrency: 1 }, () => {
    let target: BackupTarget;
    let restic: Restic;
    let big: string;
    const spy = spyRunner();
    spies.push(spy);
    let progressSnap: BackupResult;

    before(async () => {
      target = parseBackupTargets({ local: { type: 'dir', path: join(dir, 'repo-b'), passwordFile: join(dir, 'password') } }).local;
      restic = new Restic(target, { cacheDir: join(dir, 'cache'), run: spy.run, progressFps: 10 });
      await restic.ensureRepo();
      big = join(dir, 'bigvol');
      await mkdir(big);
    });

    it('concurrent ensureRepo of a new dir target, as from several nodes (no in-process lock), ends with one usable repository', async () => {
      // Plain concurrent `restic init`s of one directory break it ("config or key ... is damaged"): the
      // init in a temporary directory renamed into place lets exactly one win.
      const t = parseBackupTargets({ race: { type: 'dir', path: join(dir, 'race'), passwordFile: join(dir, 'password') } }).race;
      const rs = Array.from({ length: 3 }, () => new Restic(t, { cacheDir: join(dir, 'cache'), run: spy.run, initLock: (_k, fn) => fn() }));
      const out = await Promise.all(rs.map((r) => r.ensureRepo()));
      assert.equal(out.filter((o) => o.created).length, 1, JSON.stringify(out));
      assert.equal(new Set(out.map((o) => o.repositoryId)).size, 1);
      assert.deepEqual(await rs[2].list(), []);
      assert.deepEqual((await readdir(dir)).filter((e) => e.includes('.race.ballast-init')), []);
    });
    it('reports progress while a big backup runs', async () => {
      await writeRandom(join(big, 'data.bin'), 48 * MiB);
      const progress: BackupProgress[] = [];
      // restic prints a status line only when something changed, at most progressFps a second; bytes_done
      // counts bytes read, which here takes ~0.3 s for 48 MiB: 60 a second gives ~10 reports.
      const fast = new Restic(target, { cacheDir: join(dir, 'cache'), run: spy.run, progressFps: 60 });
      progressSnap = await fast.backup(big, { tags: { volume: 'big' }, host: 'node-a', onProgress: (p) => progress.push(p) });
      assert.ok(progress.length >= 3, `${progress.length} progress reports`);
      const last = progress.at(-1)!;
      assert.equal(last.totalBytes, 48 * MiB);
      assert.equal(last.totalFiles, 1);
      assert.ok(progress.some((p) => p.bytesDone > 0 && p.bytesDone < 48 * MiB) || progress.some((p) => p.percentDone > 0 && p.percentDone < 1), 'intermediate progress');
      for (let i = 1; i < progress.length; i++) assert.ok(progress[i].bytesDone >= progress[i - 1].bytesDone);
      assert.ok(progress.some((p) => p.currentFiles.includes('/data.bin')), 'current files are relative to the volume root');
      console.log(`# progress: ${progress.length} reports in ${progressSnap.durationSec.toFixed(2)} s at progressFps 60`);
    });
    it('cancelling a backup stops restic (SIGINT: it removes its lock) and leaves no snapshot', async () => {
      await writeRandom(join(big, 'data.bin'), 32 * MiB);
      const before = (await restic.list()).map((s) => s.id);
      const ac = new AbortController();
      const t0 = Date.now();
      const err = await catchErr(restic.backup(big, { tags: { volume: 'big' }, host: 'node-a', limitUploadKiB: 4096, signal: ac.signal, onProgress: (p) => { if (p.bytesDone > 0) ac.abort(); } }));
      assert.ok(err instanceof AbortedError, `${err.name}: ${err.message}`);
      assert.match(err.message, /backup of volume big .* was cancelled/);
      assert.ok(Date.now() - t0 < 6_000, 'restic stopped on SIGINT within the grace period');
      assert.deepEqual((await restic.list()).map((s) => s.id), before);
      assert.deepEqual(await readdir(join(dir, 'repo-b', 'locks')), [], 'restic removed its lock on SIGINT');
    });
    it('a backup killed with SIGKILL leaves no snapshot; the stale lock is removed when it is in the way, and the next backup works', async () => {
      await writeRandom(join(big, 'data.bin'), 32 * MiB);
      const before = (await restic.list()).map((s) => s.id);
      let pid = 0;
      spy.setOnPid((p) => { pid = p; });
      const err = await catchErr(restic.backup(big, {
        tags: { volume: 'big' }, host: 'node-a', limitUploadKiB: 4096,
        onProgress: (p) => { if (p.bytesDone > 0 && pid) { process.kill(pid, 'SIGKILL'); pid = 0; } },
      }));
      spy.setOnPid(undefined);
      assert.ok(err instanceof AbortedError, `${err.name}: ${err.message}`);
      assert.match(err.message, /killed by SIGKILL/);
      assert.deepEqual((await restic.list()).map((s) => s.id), before, 'no snapshot from the killed backup');
      assert.equal((await readdir(join(dir, 'repo-b', 'locks'))).length, 1, 'SIGKILL leaves restic\'s lock');
      // forget needs the repository to itself: the stale lock is in the way, unlock removes it, the retry works.
      const ops: string[] = [];
      const n = spy.calls.length;
      const f = await restic.forget(progressSnap.id, { prune: false });
      for (const c of spy.calls.slice(n)) ops.push(c.argv[7]);
      assert.deepEqual(ops, ['snapshots', 'forget', 'unlock', 'forget']);
      assert.equal(f.pruned, false);
      assert.deepEqual(await readdir(join(dir, 'repo-b', 'locks')), []);
      const again = await restic.backup(big, { tags: { volume: 'big' }, host: 'node-a' });
      assert.deepEqual((await restic.list()).map((s) => s.id), [...before.filter((id) => id !== progressSnap.id), again.id]);
    });
    it('a backup that runs out of time is stopped and leaves no snapshot', async () => {
      await writeRandom(join(big, 'data.bin'), 8 * MiB);
      const before = (await restic.list()).map((s) => s.id);
      const err = await catchErr(restic.backup(big, { tags: { volume: 'big' }, host: 'node-a', limitUploadKiB: 1024, timeoutMs: 1500 }));
      assert.ok(err instanceof DeadlineExceededError, `${err.name}: ${err.message}`);
      assert.match(err.message, /did not finish within 2 s and was stopped/);
      assert.deepEqual((await restic.list()).map((s) => s.id), before);
    });
    it('a target that cannot be reached is UnavailableError naming it and why', async () => {
      await writeFile(join(dir, 'a-file'), 'x');
      const under = new Restic({ ...target, path: join(dir, 'a-file', 'repo') } as BackupTarget, { cacheDir: join(dir, 'cache'), run: spy.run });
      const e1 = await catchErr(under.ensureRepo());
      assert.ok(e1 instanceof UnavailableError, `${e1.name}: ${e1.message}`);
      assert.match(e1.message, /of backup target local \(directory .*a-file\/repo\) failed: the target is unavailable \(restic: .*not a directory\); check that .* is mounted/);
      const e2 = await catchErr(under.list());
      assert.ok(e2 instanceof UnavailableError);
      const unmounted = new Restic({ ...target, path: join(dir, 'not-mounted', 'repo') } as BackupTarget, { cacheDir: join(dir, 'cache'), run: spy.run });
      const e3 = await catchErr(unmounted.ensureRepo());
      assert.ok(e3 instanceof UnavailableError);
      assert.match(e3.message, /its parent directory .*not-mounted does not exist; mount the backup disk/);
      await assert.rejects(lstat(join(dir, 'not-mounted')), 'nothing was created in place of the missing disk');
      const nothing = new Restic({ ...target, path: join(dir, 'empty-target') } as BackupTarget, { cacheDir: join(dir, 'cache'), run: spy.run });
      const e4 = await catchErr(nothing.list());
      assert.ok(e4 instanceof FailedPreconditionError);
      assert.match(e4.message, /failed: the target holds no restic repository yet/);
    });
    it('an S3 target that does not answer is UnavailableError; its keys go only to restic\'s environment', async () => {
      const secret = `sk${randomBytes(10).toString('hex')}`;
      await writeFile(join(dir, 's3cred'), `AKIAFAKE:${secret}\n`, { mode: 0o600 });
      const t = parseBackupTargets({ off: { type: 's3', url: 'http://127.0.0.1:1', bucket: 'bkt', prefix: 'ballast', credentialsFile: join(dir, 's3cred'), passwordFile: join(dir, 'password') } }).off;
      const n = spy.calls.length;
      const r = new Restic(t, { cacheDir: join(dir, 'cache'), run: spy.run, shortTimeoutMs: 30_000 });
      const e = await catchErr(r.ensureRepo());
      assert.ok(e instanceof UnavailableError, `${e.name}: ${e.message}`);
      assert.match(e.message, /backup target off \(bucket bkt\/ballast at http:\/\/127\.0\.0\.1:1\) failed: the target is unavailable .*connection refused.*check that the S3 server at http:\/\/127\.0\.0\.1:1 answers/);
      assert.ok(!e.message.includes(secret));
      const call = spy.calls[n];
      assert.equal(call.argv[2], 's3:http://127.0.0.1:1/bkt/ballast');
      assert.equal(call.env.AWS_SECRET_ACCESS_KEY, secret);
      assert.ok(!call.argv.some((a) => a.includes(secret)));
    });
  });
});
