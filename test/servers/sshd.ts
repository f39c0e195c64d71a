/**
 * A private sshd on 127.0.0.1 for the sshfs backend's tests: a free port, key authentication only,
 * its own host key and client key, and an export directory. Adapted from shared/recipes/sshfs-up.sh.
 * sshd runs in the foreground (-D) as our child, so it is stopped by its PID; the per-connection
 * processes it forks are found as its descendants and stopped with it (a server restart drops
 * every connection, as a real one would).
 */
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmdirSync, rmSync, writeFileSync, openSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { run, sleep, waitFor } from '../helpers/proc.js';
import { descendants, freePort, gone, killPids, listening } from './common.js';

const SSHD = '/usr/sbin/sshd';

export interface SshServer {
  readonly dir: string;
  readonly host: string;
  readonly port: number;
  readonly user: string;
  /** The directory the sshfs backend's `path` names: volumes are its subdirectories. */
  readonly exportDir: string;
  /** Private key the client authenticates with (mode 600). */
  readonly clientKey: string;
  /** known_hosts naming this server's host key for [127.0.0.1]:port. */
  readonly knownHostsFile: string;
  readonly logFile: string;
  pid(): number;
  /**
   * Stops sshd and every connection it serves (by PID), as a server crash or reboot would, waits
   * `downMs`, then starts it again on the same port.
   */
  restart(opts?: { downMs?: number }): Promise<void>;
  stop(): Promise<void>;
}

/** Why an sshd cannot be started here, or undefined. */
export function sshdSkipReason(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (sshd, FUSE mounts)';
  if (!existsSync(SSHD)) return 'openssh-server is not installed (apt-get install openssh-server)';
  if (!existsSync('/usr/bin/ssh-keygen')) return 'openssh-client is not installed (apt-get install openssh-client)';
  if (!existsSync('/usr/bin/sshfs')) return 'sshfs is not installed (apt-get install sshfs)';
  return undefined;
}

async function must(argv: string[], timeoutMs = 30_000): Promise<string> {
  const r = await run(argv, { timeoutMs });
  if (r.code !== 0) throw new Error(`${argv.join(' ')} failed (${r.code}): ${r.stderr.trim()}`);
  return r.stdout;
}

export async function startSshd(opts: { dir?: string } = {}): Promise<SshServer> {
  const dir = opts.dir ?? mkdtempSync('/var/tmp/ballast-sshd-');
  const exportDir = join(dir, 'export');
  mkdirSync(exportDir, { recursive: true });
  chmodSync(dir, 0o755);
  // The privilege separation directory sshd insists on; made only if missing, removed only if ours.
  const madePrivsep = !existsSync('/run/sshd');
  if (madePrivsep) mkdirSync('/run/sshd', { mode: 0o755 });
  const hostKey = join(dir, 'hostkey');
  const clientKey = join(dir, 'clientkey');
  await must(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', 'ballast-test-host', '-f', hostKey]);
  await must(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', 'ballast-test-client', '-f', clientKey]);
  const authorized = join(dir, 'authorized_keys');
  writeFileSync(authorized, readFileSync(`${clientKey}.pub`), { mode: 0o600 });
  const port = await freePort();
  const knownHostsFile = join(dir, 'known_hosts');
  const [kt, kb] = readFileSync(`${hostKey}.pub`, 'utf8').trim().split(/\s+/);
  writeFileSync(knownHostsFile, `[127.0.0.1]:${port} ${kt} ${kb}\n`, { mode: 0o644 });
  const cfg = join(dir, 'sshd_config');
  writeFileSync(cfg, [
    'ListenAddress 127.0.0.1', `Port ${port}`, `HostKey ${hostKey}`, `PidFile ${join(dir, 'sshd.pid')}`,
    `AuthorizedKeysFile ${authorized}`, 'PermitRootLogin prohibit-password', 'PasswordAuthentication no',
    'KbdInteractiveAuthentication no', 'UsePAM no', 'StrictModes no', 'Subsystem sftp internal-sftp',
    // Many short sshfs mounts (the share root for each create/remove) arrive close together.
    'MaxStartups 100:30:200', 'LogLevel INFO', '',
  ].join('\n'));
  const logFile = join(dir, 'sshd.log');
  let pid = 0;

  const launch = async () => {
    const fd = openSync(logFile, 'a');
    const c = spawn(SSHD, ['-D', '-f', cfg, '-E', logFile], { stdio: ['ignore', fd, fd], detached: true });
    closeSync(fd);
    c.unref();
    pid = c.pid!;
    await waitFor(async () => {
      if (gone(pid)) throw new Error(`sshd exited: ${readFileSync(logFile, 'utf8').slice(-1500)}`);
      if (!listening(port)) return false;
      const r = await run(['ssh', '-p', String(port), '-i', clientKey, '-o', 'BatchMode=yes', '-o', 'IdentitiesOnly=yes',
        '-o', `UserKnownHostsFile=${knownHostsFile}`, '-o', 'StrictHostKeyChecking=yes', '-o', 'LogLevel=ERROR', '-o', 'ConnectTimeout=5',
        'root@127.0.0.1', 'true'], { timeoutMs: 10_000 });
      return r.code === 0;
    }, `sshd on 127.0.0.1:${port} to accept the client key`, 20_000, 100);
  };
  const halt = async () => {
    if (!pid) return;
    // The listener first (so nothing new connects), then the connections it forked.
    const kids = descendants(pid);
    await killPids([pid, ...kids], 'SIGTERM', 5_000);
    const late = descendants(pid);
    if (late.length) await killPids(late, 'SIGKILL', 5_000);
    await waitFor(() => !listening(port), `port ${port} to be free`, 10_000, 50);
  };
  await launch();

  return {
    dir, host: '127.0.0.1', port, user: 'root', exportDir, clientKey, knownHostsFile, logFile,
    pid: () => pid,
    async restart(o = {}) { await halt(); if (o.downMs) await sleep(o.downMs); await launch(); },
    async stop() {
      await halt();
      rmSync(dir, { recursive: true, force: true });
      if (madePrivsep) { try { rmdirSync('/run/sshd'); } catch { /* not empty or gone */ } }
    },
  };
}
