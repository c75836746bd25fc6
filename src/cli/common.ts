// Helpers shared by the commands: tables and JSON output (the option schemas are in src/options).
export { parseInputShapes, withModelOptions } from '../options/common.js';

export function printJson(obj: unknown): void {
  process.stdout.write(`${JSON.stringify(obj, null, 2)}\n`);
}

/** A plain text table with right-aligned numeric columns. */
export function table(header: string[], rows: (string | number)[][]): string {
  const cells = [header, ...rows.map((r) => r.map(String))];
  const widths = header.map((_, c) => Math.max(...cells.map((r) => (r[c] ?? '').length)));
  const numeric = header.map((_, c) => rows.length > 0 && rows.every((r) => typeof r[c] === 'number' || /^[\d.,%\-+e]+$/.test(String(r[c]))));
  return cells
    .map((r) => r.map((v, c) => (numeric[c] ? v.padStart(widths[c]!) : v.padEnd(widths[c]!))).join('  ').trimEnd())
    .join('\n');
}

export function fmtInt(n: number): string {
  return n.toLocaleString('en-US');
}
export function pct(x: number, digits = 1): string {
  return `${(100 * x).toFixed(digits)}%`;
}
