/**
 * End-to-end crash matrix: the daemon kills itself with SIGKILL (BALLAST_FAULT=<point>) at each named
 * step of create, mount, unmount and remove, for a local and a block (ext4) volume, while dockerd is
 * in the middle of the Docker command that reached the step. The daemon is started again without the
 * fault, the Docker command finishes, and if it failed it is run once more: that must succeed. Then:
 * no volume is lost or formatted a second time (same ext4 UUID), the data written before is intact,
 * no mount or loop device is leaked, Status.mounts counts exactly the running containers, the log has
 * no error about the volume, and `docker volume rm` works. Plus: the daemon SIGKILLed while a
 * container writes to its block volume. The last test lists the points covered.
 *
 * What dockerd (20.10+, pkg/plugins) does, as observed here: it retries the interrupted plugin call
 * by itself, but with the request body it already sent, now drained: the retry arrives empty, Ballast
 * refuses it (400, "the request body is empty"), so create, mount (docker run) and remove fail once
 * and unmount failures are only logged by dockerd (docker stop succeeds). Recovery has already rolled
 * the operation forward or back by then; a create or run succeeds when run again, and `docker volume
 * rm` run again says "No such volume" because the remove was finished: accepted as done.
 *
 * One private dockerd and one ballast daemon for the whole file. Needs root, dockerd, busybox-static.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { dockerSkipReason, startDockerEngine, type DockerEngine } from '../helpers/docker-engine.js';
import { startBallast, uniqueName, type BallastProc } from '../helpers/ballast.js';
import { pidAlive, run, sleep, waitFor, type RunResult } from '../helpers/proc.js';
import { ALL_FAULT_POINTS, FAULT_POINTS } from '../../src/core/faults.js';
import { loopsUnder, mountsUnder, teardownSuite, type LoopDev } from '../helpers/leftovers.js';

const SKIP = dockerSkipReason();
const IMAGE = 'busybox:local';

type BackendName = 'local' | 'block';
const BACKENDS: Record<BackendName, { opts: Record<string, string>; skips: string }> = {
  local: { opts: { backend: 'local' }, skips: 'block.image-created' },
  block: { opts: { backend: 'block', size: '512M' }, skips: 'local.dir-created' },
};

let eng: DockerEngine | undefined;
let b: BallastProc | undefined;
let root = '';
const containers = new Set<string>();
const volumes = new Set<string>();
/** `${backend} ${point}` for every point a test drove the daemon into and recovered from. */
const covered: string[] = [];
/** What happened to each interrupted Docker command, for the report of the last test. */
const outcomes: string[] = [];

function e(): DockerEngine { assert.ok(eng, 'dockerd is not running (before hook failed)'); return eng; }
function bl(): BallastProc { assert.ok(b, 'ballast is not running (before hook failed)'); return b; }

// ---- host state ----------------------------------------------------------------------------------

function mountsUnderRoot() { return mountsUnder([root]); }
type Loop = LoopDev;
function loopsUnderRoot(): Promise<Loop[]> { return loopsUnder([root]); }

/** Where a volume lives on the host: its mountpoint, and its image (block) or data directory (local). */
interface Where { mountpoint: string; storage: string }

/** The mounts and loop devices of one volume (of all of the root without `w`). */
async function hostStateOf(w?: Where): Promise<{ mounts: ReturnType<typeof mountsUnderRoot>; loops: Loop[] }> {
  const mounts = mountsUnderRoot().filter((m) => !w || m.mountpoint === w.mountpoint || m.mountpoint.startsWith(w.mountpoint + '/') || m.source === w.storage);
  const loops = (await loopsUnderRoot()).filter((l) => !w || (l['back-file'] ?? '').startsWith(w.storage));
  return { mounts, loops };
}

/** Nothing of the volume (or of the whole root) is mounted and no loop device is backed by its image. */
async function assertReleased(w: Where | undefined, what: string): Promise<void> {
  // dockerd sends Unmount from its container-exit handler, which may finish just after the CLI returns.
  await waitFor(async () => { const h = await hostStateOf(w); return h.mounts.length === 0 && h.loops.length === 0; },
    `no mount or loop device of ${w ? w.storage : root} (${what})`, 10_000)
    .catch(async (err) => assert.fail(`${(err as Error).message}: ${JSON.stringify(await hostStateOf(w))}`));
}

/** The filesystem UUID of an image as `blkid -p` reads it from the bytes, or undefined if it holds none (or is absent). */
async function uuidOf(image: string): Promise<string | undefined> {
  if (!existsSync(image)) return undefined;
  const r = await run(['blkid', '-p', '-s', 'UUID', '-o', 'value', image], { timeoutMs: 10_000 });
  if (r.code === 2) return undefined; // nothing found
  assert.equal(r.code, 0, `blkid -p -s UUID ${image} exited ${r.code}: ${r.stderr}`);
  return r.stdout.trim() || undefined;
}

async function blkid(image: string): Promise<{ type: string; uuid: string }> {
  const r = await run(['blkid', '-p', '-o', 'export', image], { timeoutMs: 10_000 });
  assert.equal(r.code, 0, `blkid -p ${image} exited ${r.code}: ${r.stderr}`);
  const kv = Object.fromEntries(r.stdout.split('\n').filter((l) => l.includes('=')).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
  assert.ok(kv.TYPE && kv.UUID, `blkid -p ${image}: ${r.stdout}`);
  return { type: kv.TYPE, uuid: kv.UUID };
}

// ---- docker --------------------------------------------------------------------------------------

function volName(prefix: string): string { const n = uniqueName(`crash-${prefix}-`); volumes.add(n); return n; }
function ctrName(prefix: string): string { const n = uniqueName(`crash-${prefix}-`); containers.add(n); return n; }

function createArgs(vol: string, backend: BackendName): string[] {
  const args = ['volume', 'create', '-d', bl().driver];
  for (const [k, v] of Object.entries(BACKENDS[backend].opts)) args.push('-o', `${k}=${v}`);
  return [...args, vol];
}

interface DockerVolume { Name: string; Driver: string; Mountpoint: string; Status: Record<string, unknown> }
/** Through the volume's own driver (dockerd knows it): unlike `docker volume ls`, this does not scan every plugin socket on the host. */
async function inspectVolume(name: string): Promise<DockerVolume> {
  const arr = JSON.parse(await e().ok(['volume', 'inspect', name])) as DockerVolume[];
  assert.equal(arr.length, 1);
  return arr[0];
}
async function statusMounts(vol: string): Promise<number> { return (await inspectVolume(vol)).Status.mounts as number; }
/** The ledger count settles once dockerd's exit handler has sent its Unmount. */
async function assertStatusMounts(vol: string, want: number): Promise<void> {
  await waitFor(async () => (await statusMounts(vol)) === want, `${vol}: Status.mounts ${want}`, 10_000)
    .catch(async () => assert.fail(`${vol}: Status.mounts is ${await statusMounts(vol)}, but ${want} running container(s) use it`));
}

function whereOf(v: DockerVolume): Where {
  return { mountpoint: v.Mountpoint, storage: (v.Status.backend === 'block' ? v.Status.image : v.Status.path) as string };
}

/** The file every volume holds: its name, then numbers; the test knows its content and checksum. */
function payloadOf(vol: string): string {
  let s = `${vol}\n`;
  for (let i = 1; i <= 3000; i++) s += `${i}\n`;
  return s;
}
const md5 = (s: string) => createHash('md5').update(s).digest('hex');

async function writePayload(vol: string): Promise<void> {
  await e().ok(['run', '--rm', '-v', `${vol}:/data`, IMAGE, 'sh', '-c', `echo ${vol} > /data/file && seq 1 3000 >> /data/file`]);
}
async function checksumInContainer(vol: string): Promise<string> {
  return (await e().ok(['run', '--rm', '-v', `${vol}:/data`, IMAGE, 'md5sum', '/data/file'])).split(/\s+/)[0];
}

// ---- daemon log ----------------------------------------------------------------------------------

interface LogLine { level?: number; msg?: string; volume?: string; err?: string; [k: string]: unknown }
function logLinesSince(offset: number): LogLine[] {
  return bl().logs().slice(offset).split('\n').filter((l) => l.startsWith('{'))
    .map((l) => { try { return JSON.parse(l) as LogLine; } catch { return { msg: l }; } });
}
/** Error-level (50+) lines that name the volume. */
function errorsAbout(vol: string, offset: number): LogLine[] {
  return logLinesSince(offset).filter((o) => (o.level ?? 0) >= 50 && (o.volume === vol || JSON.stringify(o).includes(vol)));
}
function dockerdLog(): string { return readFileSync(join(e().dir, 'dockerd.log'), 'utf8'); }

// ---- the crash -----------------------------------------------------------------------------------

/** True while the running daemon was launched with BALLAST_FAULT. */
let armed = false;

/** Each test starts with a serving daemon without a fault armed, whatever a failed test left. */
async function ensureServing(): Promise<void> {
  if (pidAlive(bl().pid()) && !armed) return;
  if (pidAlive(bl().pid())) assert.equal(await bl().stop(), 0, 'graceful stop');
  armed = false;
  await bl().restart();
}

interface Crash { first: RunResult; final: RunResult; logAfterRestart: number }

/**
 * Relaunches the daemon with BALLAST_FAULT=point, runs the Docker command in the background, waits
 * until the daemon has killed itself at that point (its exit status and its log prove it), relaunches
 * it without the fault, lets the command finish and, if it failed, runs it once more: that must
 * succeed, or (`done`) fail only because what it asked for is already done.
 */
async function crashAt(label: string, point: string, cmd: string[], done?: RegExp, afterKill?: () => Promise<void>): Promise<Crash> {
  await ensureServing();
  assert.equal(await bl().stop(), 0, 'graceful stop before arming the fault');
  const logBefore = bl().logs().length;
  const dockerdBefore = dockerdLog().length;
  armed = true;
  await bl().restart({ BALLAST_FAULT: point });
  const died = bl().exited();
  const pending = e().docker(cmd, 120_000);

  let timer: NodeJS.Timeout | undefined;
  const outcome = await Promise.race([
    died.then((x) => ({ kind: 'died' as const, ...x })),
    pending.then(async (r) => { await sleep(3000); return { kind: 'finished' as const, r }; }),
    new Promise<{ kind: 'timeout' }>((res) => { timer = setTimeout(() => res({ kind: 'timeout' }), 60_000); }),
  ]);
  clearTimeout(timer);
  if (outcome.kind !== 'died') {
    const detail = outcome.kind === 'finished' ? `docker ${cmd.join(' ')} finished (${outcome.r.code}: ${outcome.r.stderr.trim()})` : 'timed out';
    assert.fail(`the daemon did not die at ${point}: ${detail}; daemon log:\n${bl().logs().slice(logBefore).slice(-3000)}`);
  }
  assert.equal(outcome.signal, 'SIGKILL', `the daemon died of SIGKILL at ${point} (code ${outcome.code}, signal ${outcome.signal})`);
  const faultLines = bl().logs().slice(logBefore).split('\n').filter((l) => l.includes('fault injection: SIGKILL at'));
  assert.deepEqual(faultLines, [`ballast: fault injection: SIGKILL at ${point}`], 'the log proves the point was reached, once');
  // What the host holds right after the kill, before recovery touches it.
  if (afterKill) await afterKill();

  const logAfterRestart = bl().logs().length;
  armed = false;
  await bl().restart();
  const first = await pending;
  let final = first;
  if (first.code !== 0) final = await e().docker(cmd, 120_000);
  const alreadyDone = final.code !== 0 && done !== undefined && done.test(final.stderr);
  assert.ok(final.code === 0 || alreadyDone, `docker ${cmd.join(' ')} after the restart: ${final.stderr.trim()} (first attempt: ${first.stderr.trim()})`);

  // dockerd retries the interrupted plugin call by itself, but with the body it already sent: empty.
  const emptyRetries = dockerdLog().slice(dockerdBefore).split('\n').filter((l) => l.includes('the request body is empty')).length;
  const why = (r: RunResult) => {
    const l = r.stderr.trim().split('\n')[0];
    return l.includes('the request body is empty') ? `${/VolumeDriver\.\w+/.exec(l)?.[0] ?? 'plugin call'}: dockerd's retry came without a body` : l.slice(0, 100);
  };
  const verb = cmd[0] === 'volume' ? `volume ${cmd[1]}` : cmd[0];
  outcomes.push(`${label}: docker ${verb} ${first.code === 0 ? 'succeeded' : `failed (${why(first)}); run again it ${alreadyDone ? `said "${why(final)}": already done` : 'succeeded'}`}` +
    `${emptyRetries ? `; dockerd logged ${emptyRetries} bodiless retry(ies)` : ''}`);
  return { first, final, logAfterRestart };
}

/**
 * After the crash and the retried command, with no container using the volume: it exists and is
 * ready, nothing leaked, the ledger is 0, a block image holds the same ext4 (same UUID), the data is
 * intact, there is no error about it in the log, and `docker volume rm` works and deletes its storage.
 */
async function assertSurvived(vol: string, backend: BackendName, want: { sum: string; uuid?: string; logFrom: number }): Promise<void> {
  const v = await inspectVolume(vol);
  assert.equal(v.Name, vol);
  assert.equal(v.Driver, bl().driver);
  assert.equal(v.Status.state, 'ready');
  assert.equal(v.Status.backend, backend);
  await assertStatusMounts(vol, 0);
  const w = whereOf(v);
  await assertReleased(w, 'unused');
  assert.ok(existsSync(w.storage), `${w.storage} exists`);
  if (backend === 'block') {
    const fs = await blkid(w.storage);
    assert.equal(fs.type, 'ext4');
    if (want.uuid) assert.equal(fs.uuid, want.uuid, 'the image was not formatted again');
  }
  assert.equal(await checksumInContainer(vol), want.sum, 'the data written before is intact');
  await assertStatusMounts(vol, 0);
  await assertReleased(w, 'after reading it');
  if (backend === 'block' && want.uuid) assert.equal((await blkid(w.storage)).uuid, want.uuid);
  assert.deepEqual(errorsAbout(vol, want.logFrom), [], `no error-level log line about ${vol} after the restart`);

  assert.equal(await e().ok(['volume', 'rm', vol]), vol);
  volumes.delete(vol);
  assert.ok(!existsSync(w.storage), `${w.storage} is deleted by docker volume rm`);
  await assertReleased(w, 'removed');
}

// ---- suite ---------------------------------------------------------------------------------------

describe('crash matrix: SIGKILL at every named step (e2e)', () => {
  before(async () => {
    if (SKIP) return;
    root = mkdtempSync('/var/tmp/ballast-crash-');
    eng = await startDockerEngine();
    b = await startBallast({ root, extraArgs: ['--docker-host', eng.host] });
  });

  after(async () => {
    if (SKIP) return;
    // Back to a serving daemon without a fault, so the teardown can remove what is left through it.
    const problems: string[] = [];
    if (b) await ensureServing().catch((err) => problems.push(`restart ballast: ${(err as Error).message}`));
    await teardownSuite({
      suite: 'crash e2e', roots: [root], engine: eng, containers, volumes, daemons: [b], problems,
      stopAfter: eng ? [{ what: 'dockerd', stop: () => eng!.stop() }] : [],
    });
  });

  for (const backend of ['local', 'block'] as const) {
    const points = (group: readonly string[]) => group.filter((p) => p !== BACKENDS[backend].skips);
    const t = (point: string, fn: (label: string) => Promise<void>) => test(`${backend}: SIGKILL at ${point}`, { skip: SKIP ?? false, timeout: 120_000 }, async () => {
      await ensureServing();
      await fn(`${backend} ${point}`);
      covered.push(`${backend} ${point}`);
    });

    // create: nothing exists; `docker volume create` reaches the point.
    for (const point of points(FAULT_POINTS.create)) {
      t(point, async (label) => {
        const vol = volName(`${backend[0]}c`);
        // The image is read right after the kill, before recovery: a filesystem made before the crash
        // must be the one the volume keeps (roll-forward must not run mkfs a second time).
        const image = join(root, 'backends', 'block', 'images', `${vol}.img`);
        let atKill: string | undefined;
        const c = await crashAt(label, point, createArgs(vol, backend), undefined,
          backend === 'block' ? async () => { atKill = await uuidOf(image); } : undefined);
        assert.equal(c.final.stdout.trim(), vol);
        const v = await inspectVolume(vol);
        assert.equal(v.Status.state, 'ready');
        assert.equal(v.Status.mounts, 0);
        const w = whereOf(v);
        await assertReleased(w, 'after the create');
        let uuid: string | undefined;
        if (backend === 'block') {
          assert.equal(w.storage, image, 'the image is where the test read it right after the kill');
          const fs = await blkid(w.storage);
          assert.equal(fs.type, 'ext4');
          uuid = fs.uuid;
          if (point === 'create.provisioned') assert.ok(atKill, 'at create.provisioned the image already holds its filesystem');
          if (atKill) assert.equal(uuid, atKill, `the filesystem found right after the kill at ${point} is kept (not formatted again by recovery)`);
          outcomes.push(`${label}: right after the kill the image held ${atKill ? `a filesystem, UUID ${atKill}, kept by recovery` : 'no filesystem yet (mkfs ran once, after the restart)'}`);
          assert.equal(statSync(w.storage).size, 512 * 1024 ** 2);
          // Exactly one mkfs: a second restart (recovery and reconcile again) keeps the same filesystem.
          assert.equal(await bl().stop(), 0, 'graceful stop for a second restart');
          await bl().restart();
          assert.equal(await uuidOf(w.storage), uuid, 'the UUID is the same after a second restart');
        } else {
          assert.equal(statSync(w.storage).mode & 0o7777, 0o755, 'the create finished: the directory has its mode');
        }
        // A later mount sees what an earlier one wrote (and the image keeps its UUID: formatted once).
        await writePayload(vol);
        await assertSurvived(vol, backend, { sum: md5(payloadOf(vol)), uuid, logFrom: c.logAfterRestart });
      });
    }

    // mount: the volume exists and holds a file; `docker run --rm ... cat` reaches the point.
    for (const point of points(FAULT_POINTS.mount)) {
      t(point, async (label) => {
        const vol = volName(`${backend[0]}m`);
        await e().ok(createArgs(vol, backend));
        await writePayload(vol);
        const v = await inspectVolume(vol);
        const uuid = backend === 'block' ? (await blkid(whereOf(v).storage)).uuid : undefined;
        await assertReleased(whereOf(v), 'before the crash');
        const c = await crashAt(label, point, ['run', '--rm', '-v', `${vol}:/data`, IMAGE, 'cat', '/data/file']);
        assert.equal(c.final.stdout, payloadOf(vol), 'the container read the file written before');
        await assertSurvived(vol, backend, { sum: md5(payloadOf(vol)), uuid, logFrom: c.logAfterRestart });
      });
    }

    // unmount: a container runs with the volume; `docker stop` reaches the point.
    for (const point of points(FAULT_POINTS.unmount)) {
      t(point, async (label) => {
        const vol = volName(`${backend[0]}u`);
        await e().ok(createArgs(vol, backend));
        await writePayload(vol);
        const v = await inspectVolume(vol);
        const uuid = backend === 'block' ? (await blkid(whereOf(v).storage)).uuid : undefined;
        const ctr = ctrName(`${backend[0]}u`);
        await e().ok(['run', '-d', '--name', ctr, '-v', `${vol}:/data`, IMAGE, 'sleep', '600']);
        assert.equal(await statusMounts(vol), 1);
        if (backend === 'block') assert.equal((await hostStateOf(whereOf(v))).mounts.length, 1, 'mounted once for the container');
        // sleep as PID 1 ignores SIGTERM: stopped with SIGKILL after 1 s, then dockerd sends Unmount.
        const c = await crashAt(label, point, ['stop', '-t', '1', ctr]);
        assert.equal(await e().ok(['inspect', '-f', '{{.State.Running}}', ctr]), 'false');
        await e().ok(['rm', ctr]);
        containers.delete(ctr);
        await assertSurvived(vol, backend, { sum: md5(payloadOf(vol)), uuid, logFrom: c.logAfterRestart });
      });
    }

    // remove: the volume exists, unused; `docker volume rm` reaches the point.
    for (const point of points(FAULT_POINTS.remove)) {
      t(point, async (label) => {
        const vol = volName(`${backend[0]}r`);
        await e().ok(createArgs(vol, backend));
        await writePayload(vol);
        const w = whereOf(await inspectVolume(vol));
        assert.ok(existsSync(w.storage));
        await assertReleased(w, 'before the crash');
        // The daemon finishes the remove when it starts again; a retry then finds no volume to remove.
        const c = await crashAt(label, point, ['volume', 'rm', vol], /No such volume/);
        volumes.delete(vol);
        if (c.final.code === 0) assert.equal(c.final.stdout.trim(), vol);
        // Filtered by driver, dockerd asks only this plugin (unfiltered, it activates every socket in
        // /run/docker/plugins, and a dead one there from anything else on the host costs ~15 s).
        const names = (await e().ok(['volume', 'ls', '--filter', `driver=${bl().driver}`, '--format', '{{.Name}}'])).split('\n');
        assert.ok(!names.includes(vol), 'docker volume ls no longer lists it');
        const get = await bl().plugin('VolumeDriver.Get', { Name: vol });
        assert.match(String(get.body.Err ?? ''), /does not exist/, `plugin Get after the remove: ${JSON.stringify(get.body)}`);
        const ls = JSON.parse((await bl().cli(['volume', 'ls', '--json'])).stdout) as { name: string }[];
        assert.ok(!ls.some((x) => x.name === vol), 'ballast volume ls no longer lists it');
        assert.ok(!existsSync(w.storage), `${w.storage} is deleted`);
        assert.ok(!existsSync(w.mountpoint), `${w.mountpoint} is deleted`);
        await assertReleased(w, 'after the remove');
        assert.deepEqual(errorsAbout(vol, c.logAfterRestart), [], `no error-level log line about ${vol} after the restart`);
      });
    }
  }

  test('the daemon SIGKILLed while a container writes to its block volume: writes go on; after restart the exit unmounts cleanly and rm works', { skip: SKIP ?? false, timeout: 120_000 }, async () => {
    await ensureServing();
    const vol = volName('bw');
    await e().ok(createArgs(vol, 'block'));
    const v = await inspectVolume(vol);
    const w = whereOf(v);
    const uuid = (await blkid(w.storage)).uuid;
    const ctr = ctrName('bw');
    await e().ok(['run', '-d', '--name', ctr, '-v', `${vol}:/data`, IMAGE,
      'sh', '-c', 'trap "exit 0" TERM; i=0; while :; do echo "$i" >> /data/counter; i=$((i+1)); sleep 0.05; done']);
    const counter = join(v.Mountpoint, 'counter');
    await waitFor(() => existsSync(counter) && statSync(counter).size > 0, 'the container to start writing', 10_000);
    assert.equal(await statusMounts(vol), 1);

    await bl().kill9();
    // The host mount and its loop device outlive the daemon: the container keeps writing.
    const sizes: number[] = [statSync(counter).size];
    for (let i = 0; i < 5; i++) { await sleep(250); sizes.push(statSync(counter).size); }
    for (let i = 1; i < sizes.length; i++) assert.ok(sizes[i] > sizes[i - 1], `the file grows while the daemon is dead: ${sizes.join(' ')}`);
    assert.equal(await e().ok(['inspect', '-f', '{{.State.Running}}', ctr]), 'true');

    const logFrom = bl().logs().length;
    await bl().restart();
    assert.equal(await statusMounts(vol), 1, 'the restarted daemon keeps the running container\'s reference');
    assert.equal((await hostStateOf(w)).mounts.length, 1, 'still mounted once');
    const grown = statSync(counter).size;
    await waitFor(() => statSync(counter).size > grown, 'the container to keep writing after the restart', 5000);

    await e().ok(['stop', '-t', '10', ctr], 60_000);
    await assertStatusMounts(vol, 0);
    await assertReleased(w, 'the writer exited');
    // Every line the container wrote is there, in order, from 0.
    const lines = (await e().ok(['run', '--rm', '-v', `${vol}:/data`, IMAGE, 'cat', '/data/counter'])).split('\n');
    assert.ok(lines.length >= 20, `${lines.length} lines`);
    lines.forEach((l, i) => assert.equal(l, String(i), `line ${i}`));
    assert.equal((await blkid(w.storage)).uuid, uuid);
    await assertReleased(w, 'after reading the counter');
    assert.deepEqual(errorsAbout(vol, logFrom), []);
    await e().ok(['rm', ctr]);
    containers.delete(ctr);
    assert.equal(await e().ok(['volume', 'rm', vol]), vol);
    volumes.delete(vol);
    assert.ok(!existsSync(w.storage));
    await assertReleased(w, 'removed');
  });

  test('every fault point was covered, for each backend where it applies; nothing is left under the root', { skip: SKIP ?? false }, async (t) => {
    const want: string[] = [];
    for (const backend of ['local', 'block'] as const) {
      for (const p of ALL_FAULT_POINTS) if (p !== BACKENDS[backend].skips) want.push(`${backend} ${p}`);
    }
    const msg = `crash matrix (root ${root}, dockerd ${e().dir}, socket ${bl().socket}): covered ${covered.length} of ${want.length} (backend point):\n  ${covered.join('\n  ')}\n` +
      `interrupted docker commands:\n  ${outcomes.join('\n  ')}`;
    t.diagnostic(msg);
    console.log(msg);
    assert.deepEqual([...covered].sort(), [...want].sort(), `not covered: ${want.filter((w) => !covered.includes(w)).join(', ') || '(none)'}`);
    await assertReleased(undefined, 'after the matrix');
  });
});
