import assert from 'node:assert/strict';
import type { DockerEngine } from './docker-engine.js';
import type { BallastProc } from './ballast.js';
import { uniqueName } from './ballast.js';

export const IMAGE = 'busybox:local';
/** A container that idles until `docker stop`, and stops at once (sh as PID 1 ignores TERM without a trap). */
export const IDLE = ['sh', '-c', 'trap "exit 0" TERM; while :; do sleep 0.1; done'];

export interface DockerVolume { Name: string; Driver: string; Mountpoint: string; CreatedAt: string; Options: Record<string, string> | null; Status: Record<string, unknown> }

/**
 * Docker-CLI steps the end-to-end suites share, with the names they made tracked for cleanup.
 * `eng` and `ballast` are getters, so a suite can restart either between tests.
 */
export class Scenario {
  readonly containers = new Set<string>();
  readonly volumes = new Set<string>();

  constructor(private readonly prefix: string, private readonly eng: () => DockerEngine, private readonly ballast: () => BallastProc) {}

  volName(p: string): string { const n = uniqueName(`${this.prefix}-${p}-`); this.volumes.add(n); return n; }
  ctrName(p: string): string { const n = uniqueName(`${this.prefix}-${p}-`); this.containers.add(n); return n; }

  async createVolume(name: string, opts: Record<string, string> = {}): Promise<void> {
    const args = ['volume', 'create', '-d', this.ballast().driver];
    for (const [k, v] of Object.entries(opts)) args.push('-o', `${k}=${v}`);
    assert.equal(await this.eng().ok([...args, name]), name);
  }

  /** `docker run --rm -v vol:/data busybox sh -c script`; must succeed; returns stdout. */
  inContainer(vol: string, script: string): Promise<string> {
    return this.eng().ok(['run', '--rm', '-v', `${vol}:/data`, IMAGE, 'sh', '-c', script]);
  }

  /** Starts a detached container with the volume at /data; returns its ID. */
  async runDetached(name: string, vol: string, cmd: string[] = IDLE): Promise<string> {
    const id = await this.eng().ok(['run', '-d', '--name', name, '-v', `${vol}:/data`, IMAGE, ...cmd]);
    assert.match(id, /^[0-9a-f]{64}$/);
    return id;
  }

  async removeContainer(name: string): Promise<void> {
    await this.eng().ok(['rm', '-f', name]);
    this.containers.delete(name);
  }

  async removeVolume(name: string): Promise<void> {
    assert.equal(await this.eng().ok(['volume', 'rm', name]), name);
    this.volumes.delete(name);
  }

  async inspectVolume(name: string): Promise<DockerVolume> {
    const arr = JSON.parse(await this.eng().ok(['volume', 'inspect', name])) as DockerVolume[];
    assert.equal(arr.length, 1);
    return arr[0];
  }
}
