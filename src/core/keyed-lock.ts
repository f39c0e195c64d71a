/**
 * One operation per key at a time; different keys run in parallel (moby VolumeStore locks,
 * kubelet operationExecutor). Each instance owns its own map, so there is no global lock set.
 * Waiters are served in FIFO order; an idle key leaves no entry behind.
 */
export class KeyedLock {
  private readonly tails = new Map<string, Promise<void>>();

  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => { release = r; });
    const tail = prev.then(() => mine);
    this.tails.set(key, tail);
    await prev;
    try {
      return await fn();
    } finally {
      release();
      if (this.tails.get(key) === tail) this.tails.delete(key);
    }
  }

  /** True when an operation holds or waits for the key (CSI answers ABORTED then). */
  isBusy(key: string): boolean { return this.tails.has(key); }

  /** Number of keys with an operation in flight. */
  get size(): number { return this.tails.size; }

  /** Resolves when every operation queued so far has finished. */
  async idle(): Promise<void> {
    while (this.tails.size > 0) await Promise.allSettled([...this.tails.values()]);
  }
}
