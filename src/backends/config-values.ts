import { InvalidArgumentError } from '../core/errors.js';

/**
 * Typed reads of a backend instance's config section. Values that end up inside a `-o a=b,c=d` mount
 * option string may hold no comma, "=", quote, white space or control character, so that no value
 * can smuggle in another mount option.
 */
export class ConfigReader {
  constructor(private readonly instance: string, private readonly c: Readonly<Record<string, unknown>>) {}

  private fail(key: string, what: string): never {
    throw new InvalidArgumentError(`backend ${this.instance}: ${key} ${what}`);
  }

  str(key: string, opts: { required?: boolean; def?: string; re?: RegExp; hint?: string } = {}): string | undefined {
    const v = this.c[key];
    if (v === undefined) { if (opts.required) this.fail(key, `is required${opts.hint ? ` (${opts.hint})` : ''}`); return opts.def; }
    if (typeof v !== 'string' || v.length === 0 || v.length > 1024) this.fail(key, 'must be a non-empty string');
    if (/[,=\s"'\\\u0000-\u001f\u007f]/.test(v)) this.fail(key, 'may not contain commas, "=", quotes, spaces or control characters');
    if (opts.re && !opts.re.test(v)) this.fail(key, `is not valid${opts.hint ? ` (${opts.hint})` : ''}`);
    return v;
  }

  req(key: string, opts: { re?: RegExp; hint?: string } = {}): string { return this.str(key, { ...opts, required: true })!; }

  absPath(key: string, required = true): string | undefined {
    return this.str(key, { required, re: /^\/[^]*$/, hint: 'an absolute path' });
  }

  host(key: string): string { return this.req(key, { re: /^[a-zA-Z0-9][a-zA-Z0-9.-]*$/, hint: 'a host name or IPv4 address' }); }

  int(key: string, def: number, min: number, max: number): number {
    const v = this.c[key];
    if (v === undefined) return def;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) this.fail(key, `must be a whole number from ${min} to ${max}`);
    return v;
  }

  list(key: string, opts: { re?: RegExp; hint?: string; required?: boolean } = {}): string[] {
    const v = this.c[key];
    if (v === undefined) { if (opts.required) this.fail(key, 'is required'); return []; }
    if (!Array.isArray(v) || v.length === 0) this.fail(key, 'must be a non-empty list');
    return v.map((x, i) => {
      if (typeof x !== 'string' || /[,=\s"'\\\u0000-\u001f\u007f]/.test(x) || (opts.re && !opts.re.test(x))) this.fail(`${key}[${i}]`, `is not valid${opts.hint ? ` (${opts.hint})` : ''}`);
      return x;
    });
  }

  bool(key: string, def: boolean): boolean {
    const v = this.c[key];
    if (v === undefined) return def;
    if (typeof v !== 'boolean') this.fail(key, 'must be true or false');
    return v;
  }
}

/** Validates per-volume mount options against an allowlist: bare flags, or `key=<digits or listed value>`. */
export function parseMountOptions(value: string | undefined, allow: Readonly<Record<string, RegExp | true>>): string[] {
  const out: string[] = [];
  for (const o of (value ?? '').split(',').map((s) => s.trim()).filter(Boolean)) {
    const i = o.indexOf('=');
    const k = i < 0 ? o : o.slice(0, i);
    const rule = allow[k];
    const ok = rule === true ? i < 0 : rule instanceof RegExp && i > 0 && rule.test(o.slice(i + 1));
    if (!ok) throw new InvalidArgumentError(`mount option ${JSON.stringify(o)} is not allowed; allowed: ${Object.entries(allow).map(([n, r]) => (r === true ? n : `${n}=…`)).join(', ')}`);
    if (!out.includes(o)) out.push(o);
  }
  return out;
}
