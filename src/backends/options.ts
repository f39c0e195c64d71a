import { InvalidArgumentError } from '../core/errors.js';
import { assertPlainString } from '../core/validate.js';
import type { OptionDoc } from './types.js';

/** Rejects option keys a backend does not know, naming the ones it accepts. */
export function checkOptionKeys(backend: string, opts: Readonly<Record<string, string>>, docs: readonly OptionDoc[]): void {
  const known = new Set(docs.map((d) => d.name));
  for (const [k, v] of Object.entries(opts)) {
    if (!known.has(k)) {
      const accepted = ['backend', ...known].join(', ');
      throw new InvalidArgumentError(`unknown option ${JSON.stringify(k)} for backend ${backend}; accepted options: ${accepted}`);
    }
    assertPlainString(v, `option ${k}`, 1024);
  }
}

/** Same for an instance's config section. */
export function checkConfigKeys(instance: string, config: Readonly<Record<string, unknown>>, keys: readonly string[]): void {
  for (const k of Object.keys(config)) {
    if (k !== 'type' && !keys.includes(k)) {
      throw new InvalidArgumentError(`unknown config key ${JSON.stringify(k)} in backend ${instance}; accepted keys: ${['type', ...keys].join(', ')}`);
    }
  }
}

export function parseIntOption(name: string, value: string, min: number, max: number, radix = 10): number {
  const re = radix === 8 ? /^0?[0-7]{1,4}$/ : /^\d{1,10}$/;
  if (!re.test(value)) throw new InvalidArgumentError(`option ${name}=${JSON.stringify(value)} is not a ${radix === 8 ? 'octal mode such as 0755' : 'whole number'}`);
  const n = parseInt(value, radix);
  if (n < min || n > max) throw new InvalidArgumentError(`option ${name}=${value} is out of range (${radix === 8 ? `0${min.toString(8)}-0${max.toString(8)}` : `${min}-${max}`})`);
  return n;
}
