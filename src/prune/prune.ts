// Robust pruning: HYDRA (Sehwag et al. 2020), Adv-LWM (robust magnitude pruning, Sehwag et al. 2019) and
// Adv-ADMM (Ye et al. 2019), each followed by fine-tuning of the kept weights on the same objective.
// Unstructured (weights) here; channels in channel-prune.ts, which shares the ADMM phase, the checkpoint
// of the chosen masks and the fine-tuning below.
import path from 'node:path';
import { tf } from '../tfjs/tf.js';
import type { Net } from '../engine/net.js';
import type { DataSplits } from '../data/index.js';
import type { Objective } from '../train/objectives.js';
import { trainLoop, type EpochStats, type TrainConfig } from '../train/trainer.js';
import { loadCheckpoint, saveCheckpoint } from '../train/checkpoint.js';
import { UserError } from '../util/errors.js';
import { makeRng } from '../util/rng.js';
import { computeMasks, keepCount, maskedWeightSTE, sharedWithinTape, topKMask, type Allocation } from './masks.js';

export const METHODS = ['hydra', 'lwm', 'admm'] as const;
export type PruneMethod = (typeof METHODS)[number];

/**
 * What is removed: single weights; whole channels of every coupled channel group, physically removed from
 * the exported file (channel-prune.ts); or ADMM's whole output rows of each layer, zeroed in place.
 */
export const STRUCTURES = ['unstructured', 'channel', 'filter'] as const;
export type PruneStructure = (typeof STRUCTURES)[number];

export interface PruneConfig {
  method: PruneMethod;
  /** fraction of the prunable weights (or of each group's channels) removed */
  sparsity: number;
  allocation: Allocation;
  /** HYDRA score initialisation: the paper's scaled |w| init, or kaiming-uniform (ablation) */
  scoreInit: 'scaled' | 'kaiming';
  /** ADMM: penalty ρ, its growth per epoch, and (unstructured pruning) irregular or per-layer filter sparsity */
  rho: number;
  rhoGrowth: number;
  structure: 'irregular' | 'filter';
  /** phase 1 (HYDRA scores / ADMM) and phase 2 (fine-tuning) training settings */
  prune: TrainConfig;
  finetune: TrainConfig;
  checkpointDir?: string;
  resume: boolean;
  quiet?: boolean;
}

export type PhaseRecord = { name: string; history: EpochStats[]; seconds: number };

export interface PruneResult {
  masks: Map<string, Float32Array>;
  phases: PhaseRecord[];
  resumed: string[];
}

/** ADMM projection onto the sparsity set: top-k entries by |v| (irregular) or top-k rows by L2 norm (filters). */
function project(v: Float32Array, shape: number[], sparsity: number, structure: 'irregular' | 'filter'): Float32Array {
  if (structure === 'irregular') return topKMask(v, keepCount(v.length, sparsity));
  const rows = shape[0]!;
  const per = v.length / rows;
  const norms = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let i = r * per; i < (r + 1) * per; i++) s += v[i]! * v[i]!;
    norms[r] = Math.sqrt(s);
  }
  const keepRows = topKMask(norms, keepCount(rows, sparsity));
  const m = new Float32Array(v.length);
  for (let r = 0; r < rows; r++) if (keepRows[r]) m.fill(1, r * per, (r + 1) * per);
  return m;
}

/** The phase-1 checkpoint: which pruning it belongs to. */
export interface MaskCheckpointMeta {
  method: string;
  sparsity: number;
  /** absent in checkpoints written before structured pruning: unstructured */
  structure?: PruneStructure;
}

const log = (c: { quiet?: boolean }, s: string): void => void (!c.quiet && process.stderr.write(`${s}\n`));

/**
 * A finished phase 1 (masks chosen, weights as they were then) from `c.checkpointDir`, restored into the
 * network's variables; undefined when there is none or `c.resume` is off.
 */
export function resumeChosenMasks(net: Net, c: PruneConfig, structure: PruneStructure): Map<string, Float32Array> | undefined {
  if (!c.resume || !c.checkpointDir) return undefined;
  const done = loadCheckpoint<MaskCheckpointMeta>(c.checkpointDir, 'masks');
  if (!done) return undefined;
  const was = done.meta.structure ?? 'unstructured';
  if (done.meta.method !== c.method || done.meta.sparsity !== c.sparsity || was !== structure) {
    throw new UserError(`checkpoint in '${c.checkpointDir}' was made by --method ${done.meta.method} --sparsity ${done.meta.sparsity} --structure ${was}; use another --checkpoint-dir`);
  }
  for (const [n, v] of net.graph.variables) {
    const t = done.tensors.get(`var:${n}`);
    if (t) v.assign(tf.tensor(t, v.shape));
  }
  log(c, `resumed: masks from ${c.checkpointDir}`);
  return done.tensors;
}

/** Saves the chosen masks (`mask:<variable>` and any `extra` tensors) with every variable of the network. */
export function saveChosenMasks(net: Net, c: PruneConfig, structure: PruneStructure, masks: Map<string, Float32Array>, extra: Map<string, Float32Array> = new Map()): void {
  if (!c.checkpointDir) return;
  const tensors = new Map<string, Float32Array>(extra);
  for (const [n, m] of masks) tensors.set(`mask:${n}`, m);
  for (const [n, v] of net.graph.variables) tensors.set(`var:${n}`, v.dataSync() as Float32Array);
  saveCheckpoint<MaskCheckpointMeta>(c.checkpointDir, 'masks', { meta: { method: c.method, sparsity: c.sparsity, structure }, tensors });
}

const phaseDir = (c: PruneConfig, p: string): string | undefined => (c.checkpointDir ? path.join(c.checkpointDir, p) : undefined);

/**
 * Adv-ADMM: min loss(W) + ρ/2 Σ‖W − Z + U‖² over every trainable variable, with Z = Π(W + U) and U += W − Z
 * after every epoch; `masks` gives Π's support for the variables `W` (Π(v) = v ⊙ masks(v)).
 */
export async function admmPhase(
  net: Net, data: Pick<DataSplits, 'train' | 'test'>, objective: Objective, W: Map<string, tf.Variable>,
  masks: (values: Map<string, Float32Array>) => Map<string, Float32Array>, c: PruneConfig,
): Promise<{ phase: PhaseRecord; resumed: boolean }> {
  const g = net.graph;
  const trainable = new Map(g.trainableNames().map((n) => [n, g.variables.get(n)!]));
  const Z = new Map<string, tf.Variable>();
  const U = new Map<string, tf.Variable>();
  let rho = c.rho;
  const projectAll = (values: Map<string, Float32Array>): Map<string, Float32Array> => {
    const m = masks(values);
    return new Map([...values].map(([n, v]) => [n, v.map((x, i) => x * m.get(n)![i]!)]));
  };
  const z0 = projectAll(new Map([...W].map(([n, w]) => [n, w.dataSync() as Float32Array])));
  for (const [n, w] of W) {
    Z.set(n, tf.variable(tf.tensor(z0.get(n)!, w.shape), false, `admm:Z:${n}`));
    U.set(n, tf.variable(tf.zerosLike(w), false, `admm:U:${n}`));
  }
  const rhoVar = tf.variable(tf.scalar(rho), false, 'admm:rho');
  const extra = new Map<string, tf.Variable>([...[...Z].map(([k, v]) => [`Z:${k}`, v] as const), ...[...U].map(([k, v]) => [`U:${k}`, v] as const), ['rho', rhoVar]]);
  const penalty = (): tf.Scalar => {
    let s: tf.Tensor = tf.scalar(0);
    for (const [n, w] of W) s = tf.add(s, tf.sum(tf.square(tf.add(tf.sub(w, Z.get(n)!), U.get(n)!))));
    return tf.mul(s, tf.div(rhoVar, 2)) as tf.Scalar;
  };
  const afterEpoch = (): void => {
    const wu = new Map([...W].map(([n, w]) => [n, tf.tidy(() => tf.add(w, U.get(n)!).dataSync() as Float32Array)]));
    const z = projectAll(wu);
    for (const [n, w] of W) {
      Z.get(n)!.assign(tf.tensor(z.get(n)!, w.shape));
      tf.tidy(() => U.get(n)!.assign(tf.sub(tf.tensor(wu.get(n)!, w.shape), tf.tensor(z.get(n)!, w.shape))));
    }
    rho = rhoVar.dataSync()[0]! * c.rhoGrowth;
    rhoVar.assign(tf.scalar(rho));
  };
  const r = await trainLoop(net, data, objective, { vars: trainable, penalty, afterEpoch, extra }, { ...c.prune, checkpointDir: phaseDir(c, 'admm'), resume: c.resume });
  for (const v of extra.values()) v.dispose();
  return { phase: { name: 'admm', history: r.history, seconds: r.seconds }, resumed: r.resumedFrom !== undefined };
}

/**
 * Fine-tuning of the kept weights with the masks fixed: every masked variable is reset to exact zeros
 * outside its mask after every step (and once more at the end). Returns the phase, if it ran.
 */
export async function finetuneMasked(net: Net, data: Pick<DataSplits, 'train' | 'test'>, objective: Objective, masks: Map<string, Float32Array>, c: PruneConfig): Promise<{ phase?: PhaseRecord; resumed: boolean }> {
  const g = net.graph;
  const trainable = new Map(g.trainableNames().map((n) => [n, g.variables.get(n)!]));
  const maskT = new Map([...masks].map(([n, m]) => [n, tf.keep(tf.tensor(m, g.variables.get(n)!.shape))]));
  // (+ 0 turns the −0 of pruned negative weights into +0: exact zeros in the file)
  const afterStep = (): void => {
    for (const [n, m] of maskT) tf.tidy(() => g.variables.get(n)!.assign(tf.add(tf.mul(g.variables.get(n)!, m), 0)));
  };
  let out: { phase?: PhaseRecord; resumed: boolean } = { resumed: false };
  if (c.finetune.epochs > 0) {
    const r = await trainLoop(net, data, objective, { vars: trainable, afterStep }, { ...c.finetune, checkpointDir: phaseDir(c, 'finetune'), resume: c.resume });
    out = { phase: { name: 'finetune', history: r.history, seconds: r.seconds }, resumed: r.resumedFrom !== undefined };
  }
  afterStep();
  for (const t of maskT.values()) t.dispose();
  return out;
}

export async function pruneNet(net: Net, data: Pick<DataSplits, 'train' | 'test'>, objective: Objective, c: PruneConfig): Promise<PruneResult> {
  const g = net.graph;
  const prunable = g.prunableNames();
  if (!prunable.length) throw new UserError('the model has no prunable layer (Conv/ConvTranspose/Gemm/MatMul weights)');
  if (!(c.sparsity > 0 && c.sparsity < 1)) throw new UserError(`--sparsity must be in (0, 1) (the fraction of weights removed), got ${c.sparsity}`);
  const W = new Map(prunable.map((n) => [n, g.variables.get(n)!]));
  const phases: PhaseRecord[] = [];
  const resumed: string[] = [];

  // a finished phase 1 leaves its masks and weights; --resume then goes straight to fine-tuning
  let masks: Map<string, Float32Array> | undefined;
  const done = resumeChosenMasks(net, c, 'unstructured');
  if (done) {
    masks = new Map(prunable.map((n) => [n, done.get(`mask:${n}`)!]));
    resumed.push('prune');
  }

  if (!masks) {
    const t0 = performance.now();
    if (c.method === 'hydra') {
      // importance scores; weights frozen, only the scores train
      const scores = new Map<string, tf.Variable>();
      const rng = makeRng(`${c.prune.seed}:scores`);
      for (const n of prunable) {
        const w = W.get(n)!;
        const info = g.params.get(n)!;
        const fanIn = info.fanIn ?? w.shape.slice(1).reduce((a, b) => a * b, 1);
        let s: tf.Tensor;
        if (c.scoreInit === 'scaled') {
          const maxAbs = tf.max(tf.abs(w)).dataSync()[0]! || 1;
          s = tf.mul(w, Math.sqrt(6 / fanIn) / maxAbs);
        } else {
          const bound = 1 / Math.sqrt(fanIn);
          s = tf.tensor(Float32Array.from({ length: w.size }, () => (2 * rng() - 1) * bound), w.shape);
        }
        scores.set(n, tf.variable(s, true, `score:${n}`));
        s.dispose();
      }
      const keeps = new Map<string, number>();
      if (c.allocation === 'layer') for (const n of prunable) keeps.set(n, keepCount(W.get(n)!.size, c.sparsity));
      const overrides = sharedWithinTape([...scores.values()], () => {
        if (c.allocation === 'global') {
          const m = computeMasks(new Map([...scores].map(([k, v]) => [k, v.dataSync() as Float32Array])), c.sparsity, 'global');
          for (const [k, v] of m) keeps.set(k, v.reduce((p, x) => p + x, 0));
        }
        return new Map(prunable.map((n) => [n, maskedWeightSTE(W.get(n)!, scores.get(n)!, keeps.get(n)!)]));
      });
      const r = await trainLoop(net, data, objective, { vars: scores, overrides }, { ...c.prune, checkpointDir: phaseDir(c, 'scores'), resume: c.resume });
      phases.push({ name: 'scores', history: r.history, seconds: r.seconds });
      if (r.resumedFrom !== undefined) resumed.push('scores');
      masks = computeMasks(new Map([...scores].map(([k, v]) => [k, v.dataSync().slice() as Float32Array])), c.sparsity, c.allocation);
      for (const s of scores.values()) s.dispose();
    } else if (c.method === 'lwm') {
      masks = computeMasks(new Map([...W].map(([k, v]) => [k, v.dataSync().slice() as Float32Array])), c.sparsity, c.allocation);
    } else {
      const supports = (values: Map<string, Float32Array>): Map<string, Float32Array> =>
        new Map([...values].map(([n, v]) => [n, project(v, W.get(n)!.shape, c.sparsity, c.structure)]));
      const r = await admmPhase(net, data, objective, W, supports, c);
      phases.push(r.phase);
      if (r.resumed) resumed.push('admm');
      masks = supports(new Map([...W].map(([n, w]) => [n, w.dataSync() as Float32Array])));
    }
    applyMasks(W, masks);
    saveChosenMasks(net, c, 'unstructured', masks);
    log(c, `${c.method}: masks chosen (${((performance.now() - t0) / 1000).toFixed(0)} s)`);
  }

  const ft = await finetuneMasked(net, data, objective, masks, c);
  if (ft.phase) phases.push(ft.phase);
  if (ft.resumed) resumed.push('finetune');
  return { masks, phases, resumed };
}

export function applyMasks(W: Map<string, tf.Variable>, masks: Map<string, Float32Array>): void {
  for (const [n, w] of W) tf.tidy(() => w.assign(tf.add(tf.mul(w, tf.tensor(masks.get(n)!, w.shape)), 0)));
}
