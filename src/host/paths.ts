import { resolve, sep } from 'node:path';
import { InternalError, InvalidArgumentError } from '../core/errors.js';

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

/**
 * A path read back from a volume's stored record (its mountpoint, its image). The record is the
 * authority on where a volume lives, so it is not re-derived from the config; it must still be an
 * absolute, normalized path, or the record is not acted on.
 */
export function recordedPath(value: unknown, what: string): string {
  if (typeof value !== 'string' || !value.startsWith('/') || value.includes('\0') || resolve(value) !== value || value === '/') {
    throw new InternalError(`the stored ${what} ${JSON.stringify(String(value).slice(0, 200))} is not an absolute, normalized path; Ballast will not act on it. See ballast doctor`);
  }
  return value;
}

/**
 * A path a caller names for node work (a staging or target path from the service, kubelet's paths from
 * CSI): absolute and normalized (no `..`, `.`, `//` or trailing `/`), not `/`, no NUL. Checked before
 * anything is mounted there.
 */
export function callerPath(value: unknown, what: string): string {
  if (typeof value !== 'string' || !value.startsWith('/') || value.includes('\0') || resolve(value) !== value || value === '/') {
    throw new InvalidArgumentError(`the ${what} ${JSON.stringify(String(value).slice(0, 200))} must be an absolute, normalized path (no "..", "." or trailing "/"), and not /`);
  }
  return value;
}
