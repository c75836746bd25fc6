// Options every command that reads a model has, and their parsing.
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

