/** Figures with targets, and the human-readable table. */

export interface Target { op: '<' | '<=' | '>='; value: number }

export interface Figure {
  section: string;
  name: string;
  value: number | null;
  unit: string;
  target?: Target;
  /** true/false when there is a target and a value; null when there is no target or the figure is missing. */
  pass: boolean | null;
  note?: string;
}

export function figure(section: string, name: string, value: number, unit: string, target?: Target, note?: string): Figure {
  const pass = target ? (target.op === '<' ? value < target.value : target.op === '<=' ? value <= target.value : value >= target.value) : null;
  return { section, name, value, unit, ...(target ? { target } : {}), pass, ...(note ? { note } : {}) };
}

function fmt(v: number | null, unit: string): string {
  if (v === null || Number.isNaN(v)) return '-';
  const digits = Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 10 ? 1 : Math.abs(v) >= 1 ? 2 : 3;
  return `${v.toFixed(digits)}${unit ? ` ${unit}` : ''}`;
}

export function table(figures: readonly Figure[], skipped: readonly { section: string; reason: string }[]): string {
  const rows: string[][] = [['SECTION', 'FIGURE', 'VALUE', 'TARGET', 'RESULT']];
  for (const f of figures) {
    rows.push([
      f.section, f.name, fmt(f.value, f.unit),
      f.target ? `${f.target.op} ${fmt(f.target.value, f.unit)}` : '',
      f.pass === null ? (f.target ? 'n/a' : '') : f.pass ? 'pass' : 'MISSED',
    ]);
  }
  for (const s of skipped) rows.push([s.section, 'SKIPPED', '', '', s.reason]);
  const w = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  const line = w.map((n) => '-'.repeat(n)).join('  ');
  const out = rows.map((r) => r.map((c, i) => (i === 2 ? c.padStart(w[i]) : c.padEnd(w[i]))).join('  ').trimEnd());
  out.splice(1, 0, line);
  const notes = figures.filter((f) => f.note).map((f) => `  [${f.section}] ${f.name}: ${f.note}`);
  return [...out, ...(notes.length ? ['', 'notes:', ...notes] : [])].join('\n');
}
