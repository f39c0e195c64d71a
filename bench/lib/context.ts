import type { Cleanups } from './cleanup.js';
import type { Figure } from './report.js';

export interface BenchContext {
  readonly cleanups: Cleanups;
  /** Progress lines (stderr). */
  log(s: string): void;
  /** Parent for every temp dir this run makes (under /var/tmp). */
  readonly tmpBase: string;
}

export interface SectionResult {
  figures: Figure[];
  details: Record<string, unknown>;
  skipped?: string;
}
