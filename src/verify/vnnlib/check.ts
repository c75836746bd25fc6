// Deciding a VNN-LIB property on an ONNX model: `sat` when a counterexample is found (random sampling, PGD,
// or a box centre during branch and bound) AND onnxruntime confirms it on the file; `unsat` when bounds over
// the input box (or, for at most MAX_SPLIT_INPUTS inputs, over every box of a splitting) prove every
// disjunct of the unsafe region infeasible; `timeout` when the time runs out first; else `unknown`.
import { makeRng } from '../../util/rng.js';
import { bindProperty, parseVnnlib } from './parse.js';
import { float32Box, groupByBox, type BoxGroup } from './boxes.js';
import { deadlineIn, newAttackStats, pgdSearch, randomSearch, type AttackStats, type Counterexample } from './attack.js';
import { branchAndBound, type BabStats } from './bab.js';
import { readMaybeGzipped, type VnnModel } from './model.js';
import type { BoxBounds } from './box-bounds.js';

export type VnnResult = 'sat' | 'unsat' | 'unknown' | 'timeout';

/** input splitting (branch and bound on boxes) only for models with at most this many inputs */
export const MAX_SPLIT_INPUTS = 20;
/** boxes per bound call in branch and bound */
const MAX_SLOTS = 64;
/** random inputs tried per box before PGD */
const SAMPLES = 1024;
/** PGD steps per run */
const PGD_STEPS = 50;

export interface VnnlibReport {
  command: 'verify --vnnlib';
  model: { file: string; sha256: string; input_shape: number[]; output_shape: number[] };
  property: { file: string; disjuncts: number; boxes: number; constraints: number };
  result: VnnResult;
  /** what decided the result (or why it is unknown) */
  decided_by: string;
  /** for sat: the input, and onnxruntime's outputs on the file there */
  counterexample?: { x: number[]; y: number[] };
  attack: AttackStats;
  bounds?: BabStats;
  engine?: string;
  timeout_seconds: number;
  seconds: number;
  warnings: string[];
}

export interface CheckOptions {
  timeout: number;
  seed?: number;
  /** when the clock started (performance.now(); default: now), e.g. before the model was opened */
  startedAt?: number;
  log?: (s: string) => void;
}

/** The float32 bound graph's outputs against onnxruntime's on the file at a few points of the first box. */
async function boundGraphDisagreement(model: VnnModel, bb: BoxBounds, g: BoxGroup): Promise<string | undefined> {
  const per = model.inputs;
  const k = model.outputs;
  const box = float32Box(g.lower, g.upper, 'outward');
  const rng = makeRng('vnnlib-bound-graph-check');
  const x = new Float32Array(bb.slots * per);
  for (let i = 0; i < x.length; i++) {
    const e = i % per;
    x[i] = Math.fround(box.lower[e]! + (box.upper[e]! - box.lower[e]!) * rng());
  }
  const y = bb.outputsAt(x);
  for (let s = 0; s < Math.min(bb.slots, 3); s++) {
    const z = await model.judge(x.slice(s * per, (s + 1) * per));
    for (let j = 0; j < k; j++) {
      if (!(Math.abs(y[s * k + j]! - z[j]!) <= 1e-4 * (1 + Math.abs(z[j]!)))) return `the bound graph's output ${j} is ${y[s * k + j]}, onnxruntime's ${z[j]}`;
    }
  }
  return undefined;
}

export async function checkProperty(model: VnnModel, propertyFile: string, o: CheckOptions): Promise<VnnlibReport> {
  const t0 = o.startedAt ?? performance.now();
  const deadline = deadlineIn(o.timeout, t0);
  const log = o.log ?? (() => {});
  const parsed = parseVnnlib(readMaybeGzipped(propertyFile, 'property file').toString('utf8'), propertyFile);
  const prop = bindProperty(parsed, model.inputShape, model.outputShape);
  const groups = groupByBox(prop);
  const attack = newAttackStats();
  const report: VnnlibReport = {
    command: 'verify --vnnlib',
    model: { file: model.file, sha256: model.sha256, input_shape: model.inputShape, output_shape: model.outputShape },
    property: { file: propertyFile, disjuncts: prop.regions.length, boxes: groups.length, constraints: prop.regions.reduce((s, r) => s + r.constraints.length, 0) },
    result: 'unknown',
    decided_by: '',
    attack,
    engine: model.engine && `${model.engine.net.describe()}; ${model.engine.batch === 1 ? 'batch 1 (the batch dimension of the file could not be freed)' : `batch ${model.engine.batch}`}`,
    timeout_seconds: o.timeout,
    seconds: 0,
    warnings: [...model.warnings],
  };
  const finish = (result: VnnResult, decidedBy: string, cex?: Counterexample): VnnlibReport => {
    report.result = result;
    report.decided_by = decidedBy;
    if (cex) report.counterexample = { x: Array.from(cex.x), y: Array.from(cex.y) };
    report.seconds = (performance.now() - t0) / 1000;
    return report;
  };
  if (!groups.length) return finish('unsat', 'the unsafe region is empty as written (every disjunct has an empty input box or a false constraint)');
  log(`${propertyFile}: ${prop.regions.length} disjunct(s) over ${groups.length} input box(es), ${prop.inputs} inputs, ${prop.outputs} outputs`);

  const rng = makeRng(`${o.seed ?? 0}:vnnlib`);
  const sampled = await randomSearch(model, groups, SAMPLES, rng, deadline, attack);
  if (sampled === 'timeout') return finish('timeout', `time ran out during random sampling (${o.timeout} s)`);
  if (sampled) return finish('sat', `${sampled.found_by}, confirmed by onnxruntime`, sampled);

  // bounds over the boxes as given (cheap: decides the easy unsat cases before the attack), then PGD, then
  // branch and bound with input splitting
  const split = prop.inputs <= MAX_SPLIT_INPUTS;
  // without splitting, only the given boxes are bounded: one box per call (a bound graph's cost grows with its slots)
  let bb = model.boxBounds(split ? MAX_SLOTS : 1);
  let noBounds = bb ? undefined : `no bounds: ${model.boundsUnavailable}`;
  const stats: BabStats = { method: bb?.method ?? '', split: false, boxes: 0, max_depth: 0, bound_calls: 0, seconds: 0 };
  const boxes = (): string => `${stats.boxes} box${stats.boxes === 1 ? '' : 'es'}${stats.split ? `, input splitting to depth ${stats.max_depth}` : ''}`;
  if (bb) {
    const wrong = await boundGraphDisagreement(model, bb, groups[0]!);
    if (wrong) {
      report.warnings.push(`bounds disabled: ${wrong}`);
      noBounds = 'the bound graph disagrees with onnxruntime, so no bounds';
      bb = undefined;
    }
  }
  if (bb) {
    report.bounds = stats;
    const root = await branchAndBound(model, bb, groups, { split: false, deadline }, stats, attack);
    log(`bounds (${bb.method}) over the input box(es): ${root.kind} (${stats.seconds.toFixed(2)} s)`);
    if (root.kind === 'unsat') return finish('unsat', `${bb.method} bounds over ${boxes()}`);
    if (root.kind === 'sat') return finish('sat', `${root.counterexample.found_by}, confirmed by onnxruntime`, root.counterexample);
    if (root.kind === 'timeout') return finish('timeout', `time ran out during the bounds (${o.timeout} s)`);
    if (root.kind === 'unsound') {
      report.warnings.push(`bounds disabled: ${root.why}; please report it`);
      noBounds = 'the bounds failed their check, so no bounds';
      bb = undefined;
    } else if (!split) noBounds = root.why;
  }

  const restarts = Math.max(2, Math.min(16, Math.floor(64 / prop.regions.length)));
  const pgd = await pgdSearch(model, groups, { restarts, steps: PGD_STEPS }, rng, deadline, attack);
  if (pgd === 'timeout') return finish('timeout', `time ran out during PGD (${o.timeout} s)`);
  if (pgd) return finish('sat', `${pgd.found_by}, confirmed by onnxruntime`, pgd);
  log(`attack: ${attack.samples} samples, ${attack.pgd_restarts} PGD runs, no counterexample (${attack.seconds.toFixed(2)} s)`);
  if (!bb || !split) return finish('unknown', `no counterexample found; ${noBounds}`);

  stats.split = true;
  const out = await branchAndBound(model, bb, groups, { split: true, deadline }, stats, attack);
  log(`bounds (${bb.method}): ${stats.boxes} boxes, depth ${stats.max_depth}, ${stats.bound_calls} calls (${stats.seconds.toFixed(2)} s)`);
  switch (out.kind) {
    case 'unsat': return finish('unsat', `${bb.method} bounds over ${boxes()}`);
    case 'sat': return finish('sat', `${out.counterexample.found_by}, confirmed by onnxruntime`, out.counterexample);
    case 'timeout': return finish('timeout', `time ran out during branch and bound (${o.timeout} s; ${boxes()})`);
    case 'unknown': return finish('unknown', `no counterexample found; ${out.why}`);
    case 'unsound':
      report.warnings.push(`bounds disabled: ${out.why}; please report it`);
      return finish('unknown', 'no counterexample found; the bounds failed their check');
  }
}
