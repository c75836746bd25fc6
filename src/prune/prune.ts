// Robust pruning: HYDRA (Sehwag et al. 2020), Adv-LWM (robust magnitude pruning, Sehwag et al. 2019) and
// Adv-ADMM (Ye et al. 2019), each followed by fine-tuning of the kept weights on the same objective.
import path from 'node:path';
import { tf } from '../tfjs/tf.js';
import type { Net } from '../engine/net.js';
import type { DataSplits } from '../data/index.js';
import type { Objective } from '../train/objectives.js';
import { trainLoop, type EpochStats, type TrainConfig } from '../train/trainer.js';
import { loadCheckpoint, saveCheckpoint } from '../train/checkpoint.js';
import { UserError } from '../util/errors.js';
import { makeRng } from '../util/rng.js';
import { computeMasks, keepCount, maskedWeightSTE, topKMask, type Allocation } from './masks.js';

export const METHODS = ['hydra', 'lwm', 'admm'] as const;
export type PruneMethod = (typeof METHODS)[number];

export interface PruneConfig {
  method: PruneMethod;
  /** fraction of the prunable weights removed */
  sparsity: number;
  allocation: Allocation;
  /** HYDRA score initialisation: the paper's scaled |w| init, or kaiming-uniform (ablation) */
  scoreInit: 'scaled' | 'kaiming';
  /** ADMM: penalty ρ, its growth per epoch, irregular or filter sparsity */
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

export interface PruneResult {
  masks: Map<string, Float32Array>;
  phases: { name: string; history: EpochStats[]; seconds: number }[];
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

export async function pruneNet(net: Net, data: Pick<DataSplits, 'train' | 'test'>, objective: Objective, c: PruneConfig): Promise<PruneResult> {
  const g = net.graph;
  const prunable = g.prunableNames();
  if (!prunable.length) throw new UserError('the model has no prunable layer (Conv/ConvTranspose/Gemm/MatMul weights)');
  if (!(c.sparsity > 0 && c.sparsity < 1)) throw new UserError(`--sparsity must be in (0, 1) (the fraction of weights removed), got ${c.sparsity}`);
  const W = new Map(prunable.map((n) => [n, g.variables.get(n)!]));
  const trainable = new Map(g.trainableNames().map((n) => [n, g.variables.get(n)!]));
  const phases: PruneResult['phases'] = [];
  const resumed: string[] = [];
  const dir = (p: string): string | undefined => (c.checkpointDir ? path.join(c.checkpointDir, p) : undefined);
  const log = (s: string): void => void (!c.quiet && process.stderr.write(`${s}\n`));

  // a finished phase 1 leaves its masks and weights here; --resume then goes straight to fine-tuning
  let masks: Map<string, Float32Array> | undefined;
  if (c.resume && c.checkpointDir) {
    const done = loadCheckpoint<{ method: string; sparsity: number }>(c.checkpointDir, 'masks');
    if (done) {
      if (done.meta.method !== c.method || done.meta.sparsity !== c.sparsity) {
        throw new UserError(`checkpoint in '${c.checkpointDir}' was made by --method ${done.meta.method} --sparsity ${done.meta.sparsity}; use another --checkpoint-dir`);
      }
      masks = new Map(prunable.map((n) => [n, done.tensors.get(`mask:${n}`)!]));
      for (const [n, v] of g.variables) {
        const t = done.tensors.get(`var:${n}`);
        if (t) v.assign(tf.tensor(t, v.shape));
      }
      resumed.push('prune');
      log(`resumed: masks from ${c.checkpointDir}`);
    }
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
      const overrides = (): Map<string, tf.Tensor> => {
        if (c.allocation === 'global') {
          const m = computeMasks(new Map([...scores].map(([k, v]) => [k, v.dataSync() as Float32Array])), c.sparsity, 'global');
          for (const [k, v] of m) keeps.set(k, v.reduce((p, x) => p + x, 0));
        }
        return new Map(prunable.map((n) => [n, maskedWeightSTE(W.get(n)!, scores.get(n)!, keeps.get(n)!)]));
      };
      const r = await trainLoop(net, data, objective, { vars: scores, overrides }, { ...c.prune, checkpointDir: dir('scores'), resume: c.resume });
      phases.push({ name: 'scores', history: r.history, seconds: r.seconds });
      if (r.resumedFrom !== undefined) resumed.push('scores');
      masks = computeMasks(new Map([...scores].map(([k, v]) => [k, v.dataSync().slice() as Float32Array])), c.sparsity, c.allocation);
      for (const s of scores.values()) s.dispose();
    } else if (c.method === 'lwm') {
      masks = computeMasks(new Map([...W].map(([k, v]) => [k, v.dataSync().slice() as Float32Array])), c.sparsity, c.allocation);
    } else {
      // ADMM: min loss(W) + ρ/2 Σ‖W − Z + U‖², Z = Π_S(W + U), U += W − Z after every epoch
      const Z = new Map<string, tf.Variable>();
      const U = new Map<string, tf.Variable>();
      let rho = c.rho;
      const proj = (n: string, v: Float32Array): Float32Array => {
        const m = project(v, W.get(n)!.shape, c.sparsity, c.structure);
        return v.map((x, i) => x * m[i]!);
      };
      for (const [n, w] of W) {
        Z.set(n, tf.variable(tf.tensor(proj(n, w.dataSync() as Float32Array), w.shape), false, `admm:Z:${n}`));
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
        for (const [n, w] of W) {
          const wu = tf.tidy(() => tf.add(w, U.get(n)!).dataSync() as Float32Array);
          const z = proj(n, wu);
          Z.get(n)!.assign(tf.tensor(z, w.shape));
          tf.tidy(() => U.get(n)!.assign(tf.sub(tf.tensor(wu, w.shape), tf.tensor(z, w.shape))));
        }
        rho = rhoVar.dataSync()[0]! * c.rhoGrowth;
        rhoVar.assign(tf.scalar(rho));
      };
      const r = await trainLoop(net, data, objective, { vars: trainable, penalty, afterEpoch, extra }, { ...c.prune, checkpointDir: dir('admm'), resume: c.resume });
      phases.push({ name: 'admm', history: r.history, seconds: r.seconds });
      if (r.resumedFrom !== undefined) resumed.push('admm');
      masks = new Map(prunable.map((n) => [n, project(W.get(n)!.dataSync() as Float32Array, W.get(n)!.shape, c.sparsity, c.structure)]));
      for (const v of extra.values()) v.dispose();
    }
    applyMasks(W, masks);
    if (c.checkpointDir) {
      const tensors = new Map<string, Float32Array>();
      for (const [n, m] of masks) tensors.set(`mask:${n}`, m);
      for (const [n, v] of g.variables) tensors.set(`var:${n}`, v.dataSync() as Float32Array);
      saveCheckpoint(c.checkpointDir, 'masks', { meta: { method: c.method, sparsity: c.sparsity }, tensors });
    }
    log(`${c.method}: masks chosen (${((performance.now() - t0) / 1000).toFixed(0)} s)`);
  }

  // fine-tune the kept weights: pruned ones are reset to exact zeros after every step
  const maskT = new Map([...masks].map(([n, m]) => [n, tf.keep(tf.tensor(m, W.get(n)!.shape))]));
  // (+ 0 turns the −0 of pruned negative weights into +0: exact zeros in the file)
  const afterStep = (): void => {
    for (const [n, w] of W) tf.tidy(() => w.assign(tf.add(tf.mul(w, maskT.get(n)!), 0)));
  };
  if (c.finetune.epochs > 0) {
    const r = await trainLoop(net, data, objective, { vars: trainable, afterStep }, { ...c.finetune, checkpointDir: dir('finetune'), resume: c.resume });
    phases.push({ name: 'finetune', history: r.history, seconds: r.seconds });
    if (r.resumedFrom !== undefined) resumed.push('finetune');
  }
  afterStep();
  for (const t of maskT.values()) t.dispose();
  return { masks, phases, resumed };
}

export function applyMasks(W: Map<string, tf.Variable>, masks: Map<string, Float32Array>): void {
  for (const [n, w] of W) tf.tidy(() => w.assign(tf.add(tf.mul(w, tf.tensor(masks.get(n)!, w.shape)), 0)));
}
