/** Small statistics helpers: nearest-rank percentiles over a copy of the samples. */

export function percentile(samples: readonly number[], p: number): number {
  if (samples.length === 0) return NaN;
  const s = [...samples].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * s.length);
  return s[Math.min(s.length - 1, Math.max(0, rank - 1))];
}

export const median = (samples: readonly number[]): number => percentile(samples, 50);

export interface Summary { n: number; min: number; p50: number; p90: number; p99: number; max: number; mean: number }

export function summarize(samples: readonly number[]): Summary {
  const mean = samples.reduce((a, b) => a + b, 0) / (samples.length || 1);
  return {
    n: samples.length, min: round(Math.min(...samples)), p50: round(percentile(samples, 50)), p90: round(percentile(samples, 90)),
    p99: round(percentile(samples, 99)), max: round(Math.max(...samples)), mean: round(mean),
  };
}

export function round(v: number, digits = 3): number {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}
