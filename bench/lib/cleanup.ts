import { readFileSync, rmSync } from 'node:fs';
import { run } from '../../test/helpers/proc.js';

/**
 * Last-in-first-out cleanups: every daemon, engine, mount, loop device and temp dir a section starts
 * registers its undo here at once, so a failure or Ctrl-C still tears everything down.
 */
export class Cleanups {
  private readonly stack: { what: string; fn: () => Promise<void> | void }[] = [];

  add(what: string, fn: () => Promise<void> | void): () => Promise<void> {
    const entry = { what, fn };
    this.stack.push(entry);
    // Returns a "run it now" handle that also drops it from the stack.
    return async () => {
      const i = this.stack.indexOf(entry);
      if (i >= 0) { this.stack.splice(i, 1); await entry.fn(); }
    };
  }

  async runAll(log: (s: string) => void): Promise<void> {
    while (this.stack.length) {
      const { what, fn } = this.stack.pop()!;
      try { await fn(); } catch (e) { log(`cleanup of ${what} failed: ${(e as Error).message}`); }
    }
  }
}

/** Mountpoints at or below dir, deepest first. */
export function mountsUnder(dir: string): string[] {
  const prefix = dir.endsWith('/') ? dir : `${dir}/`;
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n')
    .map((l) => l.split(' ')[4])
    .filter((m): m is string => !!m && (m === dir || m.startsWith(prefix)))
    .map((m) => m.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))))
    .reverse();
}

/** Unmounts anything left below dir (never follows into a mount with rm), then removes dir. */
export async function removeTree(dir: string): Promise<void> {
  for (const m of mountsUnder(dir)) await run(['umount', '-l', '--', m], { timeoutMs: 30_000 });
  if (mountsUnder(dir).length) throw new Error(`mounts remain under ${dir}; not removing it`);
  rmSync(dir, { recursive: true, force: true });
}

/** Loop devices whose backing file is below dir (losetup -J -l). */
export async function loopsUnder(dir: string): Promise<string[]> {
  const r = await run(['losetup', '-J', '-l', '-O', 'NAME,BACK-FILE'], { timeoutMs: 15_000 });
  if (r.code !== 0 || !r.stdout.trim()) return [];
  const j = JSON.parse(r.stdout) as { loopdevices?: { name: string; 'back-file': string | null }[] };
  return (j.loopdevices ?? []).filter((d) => (d['back-file'] ?? '').startsWith(`${dir}/`)).map((d) => d.name);
}
