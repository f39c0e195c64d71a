// Makes a checkout runnable: installs npm dependencies when they are missing or older than the
// lock file, and compiles TypeScript when dist/ is missing or older than a source file.
// Runs before `npm start`, `npm test` and `npm run bench`, so the README's commands work on a fresh clone.
import { spawnSync } from 'node:child_process';
import { existsSync, statSync, readdirSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const run = (cmd, args) => {
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', timeout: 15 * 60_000 });
  if (r.status !== 0) { console.error(`ensure: ${cmd} ${args.join(' ')} failed`); process.exit(r.status ?? 1); }
};
const mtime = (p) => (existsSync(p) ? statSync(p).mtimeMs : 0);
const newest = (dir) => {
  let m = 0;
  if (!existsSync(dir)) return 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    m = Math.max(m, e.isDirectory() ? newest(p) : statSync(p).mtimeMs);
  }
  return m;
};

const marker = join(root, 'node_modules', '.package-lock.json');
if (!existsSync(join(root, 'node_modules', 'better-sqlite3', 'build', 'Release', 'better_sqlite3.node')) ||
    mtime(marker) < mtime(join(root, 'package-lock.json'))) {
  run('npm', ['ci', '--no-audit', '--no-fund']);
}
const built = mtime(join(root, 'dist', 'src', 'cli', 'main.js'));
const src = Math.max(newest(join(root, 'src')), newest(join(root, 'test')), newest(join(root, 'bench')), mtime(join(root, 'tsconfig.json')));
if (!built || built < src) run('npx', ['tsc', '-p', 'tsconfig.json']);
