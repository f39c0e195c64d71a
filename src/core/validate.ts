import { InvalidArgumentError } from './errors.js';

/** Docker's volume name rule (moby volume/local: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`), at most 255 characters. */
const NAME_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;
export const MAX_NAME_LENGTH = 255;

export function validateVolumeName(name: unknown): string {
  if (typeof name !== 'string' || name.length === 0) {
    throw new InvalidArgumentError('volume name is missing; give a name such as "db" (letters, digits, "_", "." and "-")');
  }
  if (name.length > MAX_NAME_LENGTH) {
    throw new InvalidArgumentError(`volume name is ${name.length} characters long; the limit is ${MAX_NAME_LENGTH}`);
  }
  if (!NAME_RE.test(name)) {
    throw new InvalidArgumentError(
      `volume name ${JSON.stringify(name)} is not allowed; it must start with a letter or digit and contain only letters, digits, "_", "." and "-"`);
  }
  return name;
}

/**
 * A snapshot name a user gives: the volume name rule. Names Ballast gives its own temporary snapshots
 * start with "_" (a clone of a volume, a backup), which this rule refuses, so the two never meet.
 */
export function validateSnapshotName(name: unknown): string {
  if (typeof name !== 'string' || name.length === 0) throw new InvalidArgumentError('snapshot name is missing; give a name such as "db-before-upgrade" (letters, digits, "_", "." and "-")');
  if (name.length > MAX_NAME_LENGTH) throw new InvalidArgumentError(`snapshot name is ${name.length} characters long; the limit is ${MAX_NAME_LENGTH}`);
  if (!NAME_RE.test(name)) throw new InvalidArgumentError(`snapshot name ${JSON.stringify(name.slice(0, 80))} is not allowed; it must start with a letter or digit and contain only letters, digits, "_", "." and "-"`);
  return name;
}

/** A snapshot name from a store or an API that also lists Ballast's own temporary ones ("_..."). */
export function validateAnySnapshotName(name: unknown): string {
  if (typeof name === 'string' && /^_[a-zA-Z0-9][a-zA-Z0-9_.-]*$/.test(name) && name.length <= MAX_NAME_LENGTH) return name;
  return validateSnapshotName(name);
}

/** Mount IDs from dockerd are 64 hex characters; accept any short token of safe characters. */
const MOUNT_ID_RE = /^[a-zA-Z0-9_.:-]{1,128}$/;
export function validateMountId(id: unknown): string {
  if (typeof id !== 'string' || !MOUNT_ID_RE.test(id)) {
    throw new InvalidArgumentError('mount ID is missing or malformed; expected up to 128 letters, digits, "_", ".", ":" or "-"');
  }
  return id;
}

const UNITS: Record<string, number> = {
  '': 1, b: 1,
  k: 1024, kb: 1024, kib: 1024,
  m: 1024 ** 2, mb: 1024 ** 2, mib: 1024 ** 2,
  g: 1024 ** 3, gb: 1024 ** 3, gib: 1024 ** 3,
  t: 1024 ** 4, tb: 1024 ** 4, tib: 1024 ** 4,
};

/**
 * Parses a size such as "1G", "512M", "10GiB", "1.5g" or "4096" (bytes) into bytes. Units are binary,
 * as Docker and most storage tools use them. Zero, negative, fractional-byte and unparsable sizes are refused.
 */
export function parseSize(input: unknown, what = 'size'): number {
  if (typeof input !== 'string' && typeof input !== 'number') {
    throw new InvalidArgumentError(`${what} must be a string such as "10G" or "512M"`);
  }
  const s = String(input).trim();
  const m = /^(\d+(?:\.\d+)?)\s*([a-zA-Z]*)$/.exec(s);
  if (!m) throw new InvalidArgumentError(`${what} ${JSON.stringify(s)} is not a size; use a positive number with an optional unit, such as 10G, 512M or 10GiB`);
  const unit = UNITS[m[2].toLowerCase()];
  if (unit === undefined) {
    throw new InvalidArgumentError(`${what} ${JSON.stringify(s)} has an unknown unit "${m[2]}"; use K, M, G or T (binary; KiB, MiB, GiB, TiB also accepted)`);
  }
  const bytes = Math.floor(Number(m[1]) * unit);
  if (!Number.isSafeInteger(bytes) || bytes <= 0) {
    throw new InvalidArgumentError(`${what} ${JSON.stringify(s)} must be greater than zero and below 8 PiB`);
  }
  return bytes;
}

export function formatSize(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = bytes; let i = 0;
  while (v >= 1024 && i < units.length - 1 && v % 1024 === 0) { v /= 1024; i++; }
  return `${v}${units[i]}`;
}

/** Rejects strings with NUL or control characters, which no option value ever needs. */
export function assertPlainString(value: unknown, what: string, maxLength = 4096): string {
  if (typeof value !== 'string') throw new InvalidArgumentError(`${what} must be a string`);
  if (value.length > maxLength) throw new InvalidArgumentError(`${what} is longer than ${maxLength} characters`);
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(value)) throw new InvalidArgumentError(`${what} contains control characters`);
  return value;
}
