#!/usr/bin/env node
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
