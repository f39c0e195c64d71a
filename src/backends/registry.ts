import { InvalidArgumentError } from '../core/errors.js';
import type { Backend, BackendContext, BackendFactory } from './types.js';
import { checkConfigKeys } from './options.js';

/**
 * Backend types register here; instances are made from the config's `backends` section
 * (name -> { type, ...settings }). Adding a storage system means adding a factory, not touching the core.
 */
export class BackendRegistry {
  private readonly factories = new Map<string, BackendFactory>();
  private readonly instances = new Map<string, Backend>();

  registerType(f: BackendFactory): this {
    if (this.factories.has(f.type)) throw new Error(`backend type ${f.type} is registered twice`);
    this.factories.set(f.type, f);
    return this;
  }

  types(): string[] { return [...this.factories.keys()]; }

  instantiate(instances: Readonly<Record<string, Readonly<Record<string, unknown>>>>, ctx: BackendContext): this {
    for (const [name, cfg] of Object.entries(instances)) {
      const type = typeof cfg.type === 'string' ? cfg.type : name;
      const f = this.factories.get(type);
      if (!f) throw new InvalidArgumentError(`backend ${name} has unknown type ${JSON.stringify(type)}; known types: ${this.types().join(', ')}`);
      checkConfigKeys(name, cfg, f.configKeys);
      this.instances.set(name, f.create(name, cfg, ctx));
    }
    return this;
  }

  get(name: string): Backend {
    const b = this.instances.get(name);
    if (!b) throw new InvalidArgumentError(`unknown backend ${JSON.stringify(name)}; configured backends: ${this.names().join(', ')}`);
    return b;
  }

  has(name: string): boolean { return this.instances.has(name); }
  names(): string[] { return [...this.instances.keys()]; }
  all(): Backend[] { return [...this.instances.values()]; }
}
