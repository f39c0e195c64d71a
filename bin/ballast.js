#!/usr/bin/env -S node --max-semi-space-size=1 --optimize-for-size
// The V8 flags above keep the daemon's memory small (a 1 MB young generation, size over speed);
// `npm start` and the test harness pass the same flags (they read them from this line).
// Entry point for `npx ballast`. The TypeScript sources are compiled to dist/ by `npm ci` (prepare)
// or by scripts/ensure.mjs; this file only loads the compiled CLI.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
const main = fileURLToPath(new URL('../dist/src/cli/main.js', import.meta.url));
if (!existsSync(main)) {
  process.stderr.write('ballast: not built yet; run `npm ci` (or `npm run build`) in the checkout first\n');
  process.exit(1);
}
await import(main);
