import { resolve, sep } from 'node:path';
import { InternalError } from '../core/errors.js';

/**
 * Joins base and parts and proves the result stays inside base. Names are validated before they get
 * here; this is the second wall, so the daemon never acts on a path outside its own directories.
 */
export function within(base: string, ...parts: string[]): string {
  const b = resolve(base);
  const p = resolve(b, ...parts);
  if (p !== b && !p.startsWith(b + sep)) throw new InternalError(`refusing path ${JSON.stringify(p)}: it lies outside ${b}`);
  return p;
}
