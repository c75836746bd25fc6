// The training loop: seeded shuffling and augmentation, schedules, checkpoints every epoch, resume,
// progress, and a clean stop (last good checkpoint kept) when the loss stops being finite.
import { tf } from '../tfjs/tf.js';
import type { Net } from '../engine/net.js';
import type { Dataset } from '../data/index.js';
import { UserError } from '../util/errors.js';
import { makeRng, permutation, type Rng } from '../util/rng.js';
import { pgdAttack, type PgdConfig } from './attacks.js';
import { progressBar } from '../util/progress.js';
import { loadCheckpoint, saveCheckpoint } from './checkpoint.js';
import { Optimizer, learningRate, type OptimizerConfig, type ScheduleConfig } from './optim.js';
import type { Batch, Objective } from './objectives.js';

export interface TrainConfig {
  epochs: number;
  batchSize: number;
  optimizer: OptimizerConfig;
  schedule: ScheduleConfig;
  seed: number;
  augment: { cropPad: number; flip: boolean };
  /** train on this many images of the training set (a seeded random subset); all when undefined */
  trainLimit?: number;
  /** test images evaluated (benign accuracy) after each epoch; 0 = none */
  evalLimit: number;
  /** after each epoch, PGD accuracy on the first `limit` test images (a training curve of robustness) */
  epochPgd?: { limit: number; pgd: PgdConfig };
  /** where per-epoch checkpoints go; none when undefined */
  checkpointDir?: string;
  /** continue from the checkpoint in checkpointDir */
  resume: boolean;
  /** end this invocation after this epoch (1-based), checkpoint written; a later --resume continues */
  stopAfterEpoch?: number;
  /** progress bar title */
  label: string;
  quiet?: boolean;
}

/** What the optimizer updates, and how parameters are formed from it (e.g. HYDRA's masked weights). */
export interface TrainTarget {
  vars: Map<string, tf.Variable>;
  /** parameter values for the forward pass, computed from vars inside the gradient tape */
  overrides?: () => Map<string, tf.Tensor>;
  /** after each optimizer step (e.g. keep pruned weights at zero) */
  afterStep?: () => void;
  /** extra variables saved in checkpoints (e.g. masks) */
  extra?: Map<string, tf.Variable>;
  /** a term added to the loss inside the tape (e.g. ADMM's augmented-Lagrangian penalty) */
  penalty?: () => tf.Scalar;
  /** after each epoch, before its checkpoint (e.g. ADMM's Z and U updates) */
  afterEpoch?: (epoch: number) => void;
}

export interface EpochStats {
  epoch: number;
  lr: number;
  loss: number;
  train_acc: number;
  test_acc?: number;
  /** PGD accuracy on the first epochPgd.limit test images */
  robust_acc?: number;
  seconds: number;
  images_per_second: number;
}

export interface TrainResult {
  history: EpochStats[];
  seconds: number;
  resumedFrom?: number;
}

interface CkptMeta {
  kind: 'onnx-hydra-train';
  label: string;
  epoch: number;
  epochs: number;
  seed: number;
  history: EpochStats[];
  optimizer: { t: number; slotNames: string[][] };
}

/** Gather a batch (optionally augmented: random crop after zero padding, horizontal flip). */
export function gatherBatch(d: Dataset, idx: ArrayLike<number>, aug: { cropPad: number; flip: boolean } | undefined, rng: () => number): { x: Float32Array; y: Int32Array } {
  const [c, h, w] = d.shape;
  const per = c * h * w;
  const n = idx.length;
  const x = new Float32Array(n * per);
  const y = new Int32Array(n);
  for (let k = 0; k < n; k++) {
    const i = idx[k]!;
    y[k] = d.y[i]!;
    const src = d.x.subarray(i * per, (i + 1) * per);
    if (!aug || (!aug.cropPad && !aug.flip)) {
      x.set(src, k * per);
      continue;
    }
    const p = aug.cropPad;
    const dy = p ? Math.floor(rng() * (2 * p + 1)) - p : 0;
    const dx = p ? Math.floor(rng() * (2 * p + 1)) - p : 0;
    const flip = aug.flip && rng() < 0.5;
    for (let ch = 0; ch < c; ch++) {
      for (let r = 0; r < h; r++) {
        const sr = r + dy;
        for (let col = 0; col < w; col++) {
          const scol0 = col + dx;
          const scol = flip ? w - 1 - scol0 : scol0;
          x[k * per + (ch * h + r) * w + col] = sr >= 0 && sr < h && scol0 >= 0 && scol0 < w ? src[(ch * h + sr) * w + scol]! : 0;
        }
      }
    }
  }
  return { x, y };
}

/** Benign accuracy with the current weights (fast path), on the first `limit` images. */
export function accuracy(net: Net, d: Dataset, limit = d.length, batch = 256, overrides?: Map<string, tf.Tensor>): number {
  const n = Math.min(limit, d.length);
  const per = d.shape[0] * d.shape[1] * d.shape[2];
  const f = net.frozen(overrides);
  let correct = 0;
  for (let s = 0; s < n; s += batch) {
    const m = Math.min(batch, n - s);
    const z = f.logits(d.x.subarray(s * per, (s + m) * per), m);
    const k = z.length / m;
    for (let r = 0; r < m; r++) if (topClass(z, r, k) === d.y[s + r]) correct++;
  }
  return n ? correct / n : 0;
}

/** The predicted class of row r of [n, k] logits. */
function topClass(z: Float32Array, r: number, k: number): number {
  let best = 0;
  for (let j = 1; j < k; j++) if (z[r * k + j]! > z[r * k + best]!) best = j;
  return best;
}

/** Accuracy under PGD (one restart) on the first `limit` examples. */
export function robustAccuracy(net: Net, d: Dataset, limit: number, pgd: PgdConfig, rng: Rng, overrides?: Map<string, tf.Tensor>, batch = 256): number {
  const n = Math.min(limit, d.length);
  const per = d.shape[0] * d.shape[1] * d.shape[2];
  const f = net.frozen(overrides);
  const k = net.classes;
  let robust = 0;
  for (let s = 0; s < n; s += batch) {
    const m = Math.min(batch, n - s);
    const x = d.x.subarray(s * per, (s + m) * per);
    const y = d.y.subarray(s, s + m);
    // robust: classified correctly both as it is and at the attack's final iterate
    const clean = f.logits(x, m);
    const adv = f.logits(pgdAttack(f, x, y, m, k, pgd, rng), m);
    for (let r = 0; r < m; r++) if (topClass(clean, r, k) === y[r] && topClass(adv, r, k) === y[r]) robust++;
  }
  return n ? robust / n : 0;
}

function trainIndices(d: Dataset, limit: number | undefined, seed: number): Int32Array {
  if (!limit || limit >= d.length) return Int32Array.from({ length: d.length }, (_, i) => i);
  return permutation(d.length, makeRng(`${seed}:subset`)).slice(0, limit).sort();
}

export async function trainLoop(net: Net, data: { train: Dataset; test: Dataset }, objective: Objective, target: TrainTarget, cfg: TrainConfig): Promise<TrainResult> {
  if (!Number.isInteger(cfg.epochs) || cfg.epochs < 0) throw new UserError(`--epochs must be a non-negative integer, got ${cfg.epochs}`);
  if (!Number.isInteger(cfg.batchSize) || cfg.batchSize < 1) throw new UserError(`--batch-size must be a positive integer, got ${cfg.batchSize}`);
  if (!(cfg.optimizer.lr > 0)) throw new UserError(`--lr must be > 0, got ${cfg.optimizer.lr}`);
  const t0 = performance.now();
  const opt = new Optimizer(cfg.optimizer);
  const history: EpochStats[] = [];
  let startEpoch = 0;
  let resumedFrom: number | undefined;
  const graphVars = net.graph.variables;
  const saved = (): Map<string, tf.Variable> => new Map([...graphVars, ...[...target.vars].map(([k, v]) => [`target:${k}`, v] as const), ...[...(target.extra ?? [])].map(([k, v]) => [`extra:${k}`, v] as const)]);

  const save = (epoch: number): void => {
    if (!cfg.checkpointDir) return;
    const tensors = new Map<string, Float32Array>();
    for (const [k, v] of saved()) tensors.set(`var:${k}`, v.dataSync() as Float32Array);
    const st = opt.state();
    const slotNames: string[][] = [];
    for (const [k, arr] of Object.entries(st.slots)) {
      slotNames.push([k, String(arr.length)]);
      arr.forEach((a, i) => tensors.set(`opt:${k}:${i}`, a));
    }
    const meta: CkptMeta = { kind: 'onnx-hydra-train', label: cfg.label, epoch, epochs: cfg.epochs, seed: cfg.seed, history, optimizer: { t: st.t, slotNames } };
    saveCheckpoint(cfg.checkpointDir, 'last', { meta, tensors });
  };
  const restore = (): number | undefined => {
    if (!cfg.checkpointDir) return undefined;
    const c = loadCheckpoint<CkptMeta>(cfg.checkpointDir, 'last');
    if (!c) return undefined;
    if (c.meta.kind !== 'onnx-hydra-train' || c.meta.label !== cfg.label) {
      throw new UserError(`checkpoint in '${cfg.checkpointDir}' belongs to another run ('${c.meta.label}'); use another --checkpoint-dir`);
    }
    for (const [k, v] of saved()) {
      const t = c.tensors.get(`var:${k}`);
      if (!t || t.length !== v.size) throw new UserError(`checkpoint in '${cfg.checkpointDir}' does not fit this model (variable '${k}')`);
      v.assign(tf.tensor(t, v.shape));
    }
    const slots: Record<string, Float32Array[]> = {};
    for (const [k, cnt] of c.meta.optimizer.slotNames) slots[k] = Array.from({ length: Number(cnt) }, (_, i) => c.tensors.get(`opt:${k}:${i}`)!);
    opt.load({ t: c.meta.optimizer.t, slots }, new Map([...target.vars].map(([k, v]) => [k, v.shape])));
    history.push(...c.meta.history);
    return c.meta.epoch;
  };

  if (cfg.resume) {
    const e = restore();
    if (e !== undefined) {
      startEpoch = e + 1;
      resumedFrom = e;
      if (!cfg.quiet) process.stderr.write(`${cfg.label}: resumed after epoch ${e + 1} from ${cfg.checkpointDir}\n`);
    }
  }

  const idxAll = trainIndices(data.train, cfg.trainLimit, cfg.seed);
  const n = idxAll.length;
  const steps = Math.ceil(n / cfg.batchSize);
  const tfVarName = new Map([...target.vars].map(([k, v]) => [v.name, k]));
  const [c, h, w] = data.train.shape;
  for (let epoch = startEpoch; epoch < cfg.epochs; epoch++) {
    const te = performance.now();
    const order = permutation(n, makeRng(`${cfg.seed}:order:${epoch}`));
    const rng = makeRng(`${cfg.seed}:step:${epoch}`);
    const bar = progressBar(`${cfg.label} ${epoch + 1}/${cfg.epochs}`, n, { quiet: cfg.quiet });
    let lossSum = 0;
    let correct = 0;
    let seen = 0;
    let lr = 0;
    for (let s = 0; s < steps; s++) {
      const from = s * cfg.batchSize;
      const bIdx = Array.from(order.subarray(from, Math.min(n, from + cfg.batchSize)), (k) => idxAll[k]!);
      const { x: xd, y: yd } = gatherBatch(data.train, bIdx, cfg.augment, rng);
      const m = yd.length;
      lr = learningRate(cfg.optimizer.lr, cfg.schedule, epoch + s / steps, cfg.epochs);
      const { loss, hits } = tf.tidy(() => {
        const batch: Batch = { x: tf.tensor(xd, [m, c, h, w]), y: tf.tensor1d(yd, 'int32'), xd, yd, n: m };
        const frozenOverrides = target.overrides?.();
        const lossFn = objective.prepare({ net, rng, progress: (epoch + s / steps) / cfg.epochs, overrides: target.overrides, frozenOverrides, seed: cfg.seed * 1e6 + epoch * 1e4 + s }, batch);
        // variableGrads disposes what the loss function made, except the loss: read predictions and keep
        // the running-statistics updates from inside
        let updates = new Map<string, tf.Tensor>();
        let hitCount = 0;
        const { value, grads } = tf.variableGrads(() => {
          const res = lossFn();
          const pred = tf.argMax(res.logits, -1).dataSync();
          for (let i = 0; i < m; i++) if (pred[i] === yd[i]) hitCount++;
          updates = new Map([...res.updates].map(([k, v]) => [k, tf.keep(v)]));
          return target.penalty ? (tf.add(res.loss, target.penalty()) as tf.Scalar) : res.loss;
        }, [...target.vars.values()]);
        const lossV = value.dataSync()[0]!;
        if (Number.isFinite(lossV)) {
          const named: Record<string, tf.Tensor> = {};
          for (const [k, g] of Object.entries(grads)) named[tfVarName.get(k) ?? k] = g;
          opt.apply(target.vars, named, lr);
          net.graph.applyUpdates(updates);
          target.afterStep?.();
        }
        for (const u of updates.values()) u.dispose();
        return { loss: lossV, hits: hitCount };
      });
      if (!Number.isFinite(loss)) {
        bar.stop();
        // the variables were not updated with the bad step; roll back to the last checkpoint if there is one
        const e = restore();
        throw new UserError(`training stopped: the loss became ${loss} at epoch ${epoch + 1}, step ${s + 1} (lr ${lr.toPrecision(3)}); ` +
          (e !== undefined ? `the checkpoint of epoch ${e + 1} in ${cfg.checkpointDir} is kept` : 'no checkpoint was written yet') + '; try a lower --lr');
      }
      lossSum += loss * m;
      correct += hits;
      seen += m;
      bar.update(seen, { loss: lossSum / seen, acc: correct / seen, lr });
    }
    bar.stop();
    const secs = (performance.now() - te) / 1000;
    const stats: EpochStats = { epoch: epoch + 1, lr, loss: lossSum / seen, train_acc: correct / seen, seconds: secs, images_per_second: seen / secs };
    if (cfg.evalLimit > 0 || (cfg.epochPgd && cfg.epochPgd.limit > 0)) {
      tf.engine().startScope();
      try {
        if (cfg.evalLimit > 0) stats.test_acc = accuracy(net, data.test, cfg.evalLimit, 256, target.overrides?.());
        if (cfg.epochPgd && cfg.epochPgd.limit > 0) stats.robust_acc = robustAccuracy(net, data.test, cfg.epochPgd.limit, cfg.epochPgd.pgd, makeRng(`${cfg.seed}:epoch-pgd:${epoch}`), target.overrides?.());
      } finally {
        tf.engine().endScope();
      }
    }
    target.afterEpoch?.(epoch);
    history.push(stats);
    save(epoch);
    if (!cfg.quiet) {
      process.stderr.write(`${cfg.label} epoch ${epoch + 1}/${cfg.epochs}: loss ${stats.loss.toFixed(4)}, train acc ${(100 * stats.train_acc).toFixed(2)}%` +
        (stats.test_acc !== undefined ? `, test acc ${(100 * stats.test_acc).toFixed(2)}%` : '') +
        (stats.robust_acc !== undefined ? `, PGD-${cfg.epochPgd!.pgd.steps} acc ${(100 * stats.robust_acc).toFixed(2)}%` : '') + `, ${stats.images_per_second.toFixed(0)} img/s\n`);
    }
    if (cfg.stopAfterEpoch !== undefined && epoch + 1 >= cfg.stopAfterEpoch && epoch + 1 < cfg.epochs) break;
  }
  opt.dispose();
  return { history, seconds: (performance.now() - t0) / 1000, resumedFrom };
}
