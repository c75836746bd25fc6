// Helpers shared by the commands: options, tables, JSON output.
import type { Argv } from 'yargs';
import { UserError } from '../util/errors.js';

/** `--input-shape 1,28,28` (first input) or `--input-shape name=1,3,32,32` (repeatable). */
export function parseInputShapes(v: string[] | string | undefined, firstInput?: string): Record<string, number[]> | undefined {
  if (!v) return undefined;
  const out: Record<string, number[]> = {};
  for (const s of Array.isArray(v) ? v : [v]) {
    const m = /^(?:([^=]+)=)?([\d,x\s]+)$/.exec(s);
    if (!m) throw new UserError(`--input-shape '${s}': expected numbers like 8,1,28,28 (optionally name=...)`);
    const dims = m[2]!.split(/[,x]/).map((d) => Number(d.trim()));
    if (dims.some((d) => !Number.isInteger(d) || d <= 0)) throw new UserError(`--input-shape '${s}': dimensions must be positive integers`);
    out[m[1] ?? firstInput ?? ''] = dims;
  }
  return out;
}

export function withModelOptions<T>(y: Argv<T>) {
  return y
    .positional('model', { type: 'string', demandOption: true, describe: 'ONNX model file' })
    .option('input-shape', { type: 'string', array: true, describe: 'fix free input dimensions other than the batch: 1,3,224,224 or name=1,3,224,224' })
    .option('json', { type: 'boolean', default: false, describe: 'print one JSON object instead of text' });
}

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
