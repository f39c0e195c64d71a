import { readFileSync } from 'node:fs';

export interface MountEntry {
  readonly id: number;
  readonly parent: number;
  readonly majorMinor: string;
  readonly root: string;
  readonly mountpoint: string;
  readonly options: string;
  readonly fstype: string;
  readonly source: string;
  readonly superOptions: string;
}

/** Undoes the kernel's octal escapes (\040 space, \011 tab, \012 newline, \134 backslash). */
function unescape(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** Parses /proc/<pid>/mountinfo text (proc(5)). Lines that do not parse are skipped. */
export function parseMountinfo(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const a = line.slice(0, sep).split(' ');
    const b = line.slice(sep + 3).split(' ');
    if (a.length < 6 || b.length < 2) continue;
    out.push({
      id: Number(a[0]), parent: Number(a[1]), majorMinor: a[2], root: unescape(a[3]), mountpoint: unescape(a[4]),
      options: a[5], fstype: b[0], source: unescape(b[1]), superOptions: b[2] ?? '',
    });
  }
  return out;
}

/** The real mount table, read fresh on each call ("is it mounted" is never remembered). */
export interface MountTable {
  list(): Promise<MountEntry[]>;
  /** The topmost mount at exactly this path, if any. */
  at(path: string): Promise<MountEntry | undefined>;
}

/**
 * /proc/self/mountinfo, read synchronously: the kernel writes the text from its mount list without
 * touching any filesystem (a hung NFS or FUSE mount cannot block the read), and it is parsed on this
 * thread anyway. fs.promises.readFile would make it four trips to the thread pool (open, fstat, read
 * until EOF, close) on every first Mount and every Unmount of a block volume.
 */
export class ProcMountTable implements MountTable {
  constructor(private readonly file = '/proc/self/mountinfo') {}
  async list(): Promise<MountEntry[]> { return parseMountinfo(readFileSync(this.file, 'utf8')); }
  async at(path: string): Promise<MountEntry | undefined> {
    const all = await this.list();
    for (let i = all.length - 1; i >= 0; i--) if (all[i].mountpoint === path) return all[i];
    return undefined;
  }
}
