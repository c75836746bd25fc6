// Pipeline recipes (YAML or JSON): a model, data, and an ordered list of stages (pretrain → prune → quantize
// → verify), each with the options of the command it runs. Everything is checked before anything runs:
// unknown keys, wrong types and impossible stage orders are errors naming the key.
import crypto from 'node:crypto';
import fs from 'node:fs';
import YAML from 'yaml';
import yargs from 'yargs';
import type { Argv } from 'yargs';
import { pruneOptions, quantizeOptions, trainOptions } from '../options/commands.js';
import { UserError } from '../util/errors.js';

export const STAGES = ['pretrain', 'prune', 'quantize', 'verify'] as const;
export type StageKind = (typeof STAGES)[number];

export interface Stage {
  kind: StageKind;
  /** CLI flags (dash-case) → value */
  options: Record<string, string | number | boolean>;
}

export interface Recipe {
  name: string;
  description?: string;
  model: string;
  data: string;
  seed: number;
  backend?: string;
  /** normalisation the recipe's model expects (put in front of it by the first stage) */
  mean?: string;
  std?: string;
  stages: Stage[];
  /** prune options → values: the stages from `prune` on run once per combination */
  sweep?: Record<string, (string | number)[]>;
  /** sha256 of the normalised recipe: a run folder belongs to one recipe */
  hash: string;
}

type Kind = 'number' | 'string' | 'boolean';
interface OptionSpec { type: Kind; choices?: string[] }

/** Options a command accepts, read from its yargs builder (so recipes and the CLI never drift apart). */
function optionsOf(schema: (y: Argv) => unknown, drop: string[]): Map<string, OptionSpec> {
  const y = yargs([]);
  schema(y);
  const o = (y as unknown as { getOptions(): { number: string[]; string: string[]; boolean: string[]; choices: Record<string, string[]> } }).getOptions();
  const m = new Map<string, OptionSpec>();
  for (const k of o.number) m.set(k, { type: 'number' });
  for (const k of o.string) m.set(k, { type: 'string', choices: o.choices[k] });
  for (const k of o.boolean) m.set(k, { type: 'boolean' });
  for (const k of [...drop, 'help', 'version', 'json', 'model', 'out', 'resume', 'checkpoint-dir', 'data', 'quiet', 'seed', 'backend', 'input-shape', 'mean', 'std']) m.delete(k);
  return m;
}

const VERIFY_OPTIONS: Record<string, OptionSpec | 'spec'> = {
  limit: { type: 'number' }, 'batch-size': { type: 'number' }, benign: { type: 'boolean' }, provider: { type: 'string', choices: ['cpu', 'cuda'] },
  radii: { type: 'string' }, latency: { type: 'boolean' }, 'latency-batch': { type: 'number' }, threads: { type: 'number' }, pgd: 'spec', square: 'spec', smoothing: 'spec', ibp: 'spec',
  autoattack: 'spec', crown: 'spec',
};
const SPEC_KEYS: Record<string, string[]> = {
  pgd: ['eps', 'alpha', 'steps', 'restarts', 'norm', 'random_start'], square: ['queries', 'eps', 'p'],
  smoothing: ['sigma', 'n0', 'n', 'alpha', 'batch', 'mode'], ibp: ['eps'],
  autoattack: ['eps', 'norm', 'version'], crown: ['eps', 'neurons'],
};

let specs: Record<Exclude<StageKind, 'verify'>, Map<string, OptionSpec>> | undefined;
function stageSpecs(): NonNullable<typeof specs> {
  specs ??= {
    pretrain: optionsOf(trainOptions, []),
    prune: optionsOf(pruneOptions, ['quantize', 'calibration', 'calibration-size', 'percentile']),
    quantize: optionsOf(quantizeOptions, []),
  };
  return specs;
}

const dash = (k: string): string => k.replace(/_/g, '-');

function checkValue(where: string, key: string, v: unknown, spec: OptionSpec): string | number | boolean {
  if (spec.type === 'number') {
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new UserError(`${where}: '${key}' must be a number, got ${JSON.stringify(v)}`);
    return v;
  }
  if (spec.type === 'boolean') {
    if (typeof v !== 'boolean') throw new UserError(`${where}: '${key}' must be true or false, got ${JSON.stringify(v)}`);
    return v;
  }
  if (Array.isArray(v) && key === 'radii') return v.join(',');
  if (typeof v !== 'string' && typeof v !== 'number') throw new UserError(`${where}: '${key}' must be a string, got ${JSON.stringify(v)}`);
  const s = String(v);
  if (spec.choices && !spec.choices.includes(s)) throw new UserError(`${where}: '${key}' must be one of ${spec.choices.join(', ')}, got '${s}'`);
  return s;
}

function stageOptions(where: string, kind: StageKind, raw: unknown): Record<string, string | number | boolean> {
  if (raw === null || raw === undefined) return {};
  if (typeof raw !== 'object' || Array.isArray(raw)) throw new UserError(`${where}: options must be a mapping of key: value`);
  const out: Record<string, string | number | boolean> = {};
  for (const [k0, v] of Object.entries(raw as Record<string, unknown>)) {
    const k = dash(k0);
    if (kind === 'verify') {
      const spec = VERIFY_OPTIONS[k];
      if (!spec) throw new UserError(`${where}: unknown key '${k0}' (allowed: ${Object.keys(VERIFY_OPTIONS).join(', ')})`);
      if (spec === 'spec') {
        if (v === true) out[k] = '';
        else if (v && typeof v === 'object' && !Array.isArray(v)) {
          for (const [sk, sv] of Object.entries(v as Record<string, unknown>)) {
            if (!SPEC_KEYS[k]!.includes(sk)) throw new UserError(`${where}: unknown key '${k0}.${sk}' (allowed: ${SPEC_KEYS[k]!.join(', ')})`);
            if (typeof sv !== 'number' && typeof sv !== 'string' && typeof sv !== 'boolean') throw new UserError(`${where}: '${k0}.${sk}' must be a number or a word`);
          }
          out[k] = Object.entries(v as Record<string, unknown>).map(([sk, sv]) => `${sk}=${sv}`).join(',');
        } else throw new UserError(`${where}: '${k0}' must be true or a mapping (${SPEC_KEYS[k]!.join(', ')})`);
      } else out[k] = checkValue(where, k0, v, spec);
      continue;
    }
    const spec = stageSpecs()[kind].get(k);
    if (!spec) throw new UserError(`${where}: unknown key '${k0}' for a ${kind} stage (see onnx-hydra ${kind === 'pretrain' ? 'train' : kind} --help)`);
    out[k] = checkValue(where, k0, v, spec);
  }
  return out;
}

const TOP = ['name', 'description', 'model', 'data', 'mean', 'std', 'seed', 'backend', 'stages', 'sweep'];

export function parseRecipe(text: string, file: string): Recipe {
  let doc: unknown;
  try {
    doc = /\.json$/i.test(file) ? JSON.parse(text) : YAML.parse(text);
  } catch (e) {
    throw new UserError(`${file}: not valid ${/\.json$/i.test(file) ? 'JSON' : 'YAML'}: ${(e as Error).message.split('\n')[0]}`);
  }
  if (!doc || typeof doc !== 'object' || Array.isArray(doc)) throw new UserError(`${file}: a recipe is a mapping with keys ${TOP.join(', ')}`);
  const d = doc as Record<string, unknown>;
  for (const k of Object.keys(d)) if (!TOP.includes(k)) throw new UserError(`${file}: unknown key '${k}' (allowed: ${TOP.join(', ')})`);
  const str = (k: string, req: boolean): string | undefined => {
    const v = d[k];
    if (v === undefined) {
      if (req) throw new UserError(`${file}: '${k}' is required`);
      return undefined;
    }
    if (typeof v !== 'string') throw new UserError(`${file}: '${k}' must be a string, got ${JSON.stringify(v)}`);
    return v;
  };
  const seed = d.seed ?? 0;
  if (typeof seed !== 'number' || !Number.isInteger(seed)) throw new UserError(`${file}: 'seed' must be an integer, got ${JSON.stringify(seed)}`);
  if (!Array.isArray(d.stages) || !d.stages.length) throw new UserError(`${file}: 'stages' must be a non-empty list`);
  const stages: Stage[] = d.stages.map((s: unknown, i: number) => {
    const where = `${file}: stages[${i}]`;
    if (!s || typeof s !== 'object' || Array.isArray(s) || Object.keys(s).length !== 1) throw new UserError(`${where}: each stage is a mapping with one key: ${STAGES.join(', ')}`);
    const [kind, raw] = Object.entries(s as Record<string, unknown>)[0]!;
    if (!STAGES.includes(kind as StageKind)) throw new UserError(`${where}: unknown stage '${kind}' (stages: ${STAGES.join(', ')})`);
    return { kind: kind as StageKind, options: stageOptions(`${where} (${kind})`, kind as StageKind, raw) };
  });
  // stage order: training stages need a float model; quantize at most once, after them; nothing trains an int8 file
  let quantized = false;
  stages.forEach((s, i) => {
    if (s.kind === 'quantize') {
      if (quantized) throw new UserError(`${file}: stages[${i}]: a second quantize stage (the model is already int8)`);
      quantized = true;
    } else if ((s.kind === 'pretrain' || s.kind === 'prune') && quantized) {
      throw new UserError(`${file}: stages[${i}]: ${s.kind} after quantize cannot work (onnx-hydra trains float models); move quantize after it`);
    }
  });
  let sweep: Recipe['sweep'];
  if (d.sweep !== undefined) {
    if (!d.sweep || typeof d.sweep !== 'object' || Array.isArray(d.sweep)) throw new UserError(`${file}: 'sweep' must map prune options (or 'seed') to lists of values`);
    const prunes = stages.filter((s) => s.kind === 'prune').length;
    if (prunes !== 1) throw new UserError(`${file}: 'sweep' varies the prune stage; the recipe has ${prunes} prune stages (need exactly 1)`);
    sweep = {};
    for (const [k0, vals] of Object.entries(d.sweep as Record<string, unknown>)) {
      const k = dash(k0);
      if (!Array.isArray(vals) || !vals.length) throw new UserError(`${file}: sweep: '${k0}' must be a non-empty list`);
      if (k === 'seed') {
        // the seed of the variant's stages from the prune stage on (data subsets, score init, attacks): repeats
        if (vals.some((v) => !Number.isInteger(v))) throw new UserError(`${file}: sweep: 'seed' must be a list of integers`);
        sweep[k] = vals as number[];
        continue;
      }
      const spec = stageSpecs().prune.get(k);
      if (!spec) throw new UserError(`${file}: sweep: unknown prune option '${k0}'`);
      sweep[k] = vals.map((v) => checkValue(`${file}: sweep`, k0, v, spec) as string | number);
    }
  }
  const chan = (k: string): string | undefined => {
    const v = d[k];
    if (v === undefined) return undefined;
    if (!Array.isArray(v) || !v.length || v.some((x) => typeof x !== 'number')) throw new UserError(`${file}: '${k}' must be a list of numbers (one per channel)`);
    return v.join(',');
  };
  const recipe = {
    mean: chan('mean'), std: chan('std'),
    name: str('name', false) ?? file.replace(/^.*\//, '').replace(/\.(ya?ml|json)$/i, ''),
    description: str('description', false), model: str('model', true)!, data: str('data', false) ?? 'fashion-mnist',
    seed, backend: str('backend', false), stages, sweep,
  };
  const hash = crypto.createHash('sha256').update(JSON.stringify(recipe)).digest('hex');
  return { ...recipe, hash };
}

export function loadRecipe(file: string): Recipe {
  if (!fs.existsSync(file)) throw new UserError(`recipe '${file}' not found`);
  return parseRecipe(fs.readFileSync(file, 'utf8'), file);
}

/** The folder (and report name) of one sweep combination, e.g. method-hydra_sparsity-0.75. */
export function variantName(c: Record<string, string | number>): string {
  return Object.entries(c).map(([k, v]) => `${k}-${v}`).join('_').replace(/[^\w.-]+/g, '-');
}

/** Every combination of the sweep values (one empty combination without a sweep). */
export function sweepCombinations(r: Recipe): Record<string, string | number>[] {
  let out: Record<string, string | number>[] = [{}];
  for (const [k, vals] of Object.entries(r.sweep ?? {})) out = out.flatMap((c) => vals.map((v) => ({ ...c, [k]: v })));
  return out;
}
