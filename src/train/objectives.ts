// Training objectives behind one interface. `prepare` runs outside the gradient tape (attacks, noise) and
// returns the loss to differentiate.
import { tf } from '../tfjs/tf.js';
import type { LogitsOptions, Net } from '../engine/net.js';
import { UserError } from '../util/errors.js';
import { permutation, type Rng } from '../util/rng.js';
import { pgdAttack, tradesAttack, type PgdConfig } from './attacks.js';

export const OBJECTIVES = ['natural', 'pgd', 'trades', 'smooth', 'ibp', 'crown-ibp', 'mixtrain'] as const;
export type ObjectiveKind = (typeof OBJECTIVES)[number];

export interface ObjectiveConfig {
  kind: ObjectiveKind;
  eps: number;
  alpha: number;
  steps: number;
  norm: 'linf' | 'l2';
  randomStart: boolean;
  /** TRADES trade-off */
  beta: number;
  /** Gaussian noise σ (smooth) */
  sigma: number;
  /** IBP/CROWN-IBP: fraction of training over which ε ramps up from 0, after `epsWarmup` */
  epsRamp: number;
  epsWarmup: number;
  /** CROWN-IBP κ: weight of the natural loss, from kappaStart to kappaEnd over the ε ramp */
  kappaStart: number;
  kappaEnd: number;
  /** CROWN-IBP: weight of the CROWN bound (vs the IBP bound), from crownBetaStart to crownBetaEnd over the ε ramp */
  crownBetaStart: number;
  crownBetaEnd: number;
  /** MixTrain: fraction of the batch whose bound loss is computed, and the bound loss weight */
  mixSample: number;
  mixWeight: number;
}

export const DEFAULT_OBJECTIVE: ObjectiveConfig = {
  kind: 'natural', eps: 0.1, alpha: 0.01, steps: 10, norm: 'linf', randomStart: true, beta: 6, sigma: 0.25,
  epsRamp: 0.5, epsWarmup: 0.1, kappaStart: 1, kappaEnd: 0.5, crownBetaStart: 1, crownBetaEnd: 0, mixSample: 0.5, mixWeight: 0.5,
};

export interface Batch {
  x: tf.Tensor;
  y: tf.Tensor;
  xd: Float32Array;
  yd: Int32Array;
  n: number;
}

export interface StepContext {
  net: Net;
  rng: Rng;
  /** position in training, 0 → 1 */
  progress: number;
  /** parameter values used in the forward pass (masked weights when pruning); computed inside the tape */
  overrides?: () => Map<string, tf.Tensor> | undefined;
  /** the same values, for the attack (outside the tape) */
  frozenOverrides?: Map<string, tf.Tensor>;
  seed: number;
}

export interface LossResult {
  loss: tf.Scalar;
  /** logits on which training accuracy is reported */
  logits: tf.Tensor;
  updates: Map<string, tf.Tensor>;
}

export interface Objective {
  readonly config: ObjectiveConfig;
  describe(): string;
  prepare(ctx: StepContext, b: Batch): () => LossResult;
}

export function crossEntropy(logits: tf.Tensor, labels: tf.Tensor, classes: number): tf.Scalar {
  return tf.neg(tf.mean(tf.sum(tf.mul(tf.oneHot(labels as tf.Tensor1D, classes), tf.logSoftmax(logits)), -1))) as tf.Scalar;
}

/** KL(p ‖ q) summed over classes, averaged over the batch (TRADES' (1/B)·KLDivLoss(sum)). */
export function klBatchMean(logitsP: tf.Tensor, logitsQ: tf.Tensor): tf.Scalar {
  const lp = tf.logSoftmax(logitsP);
  const lq = tf.logSoftmax(logitsQ);
  return tf.mean(tf.sum(tf.mul(tf.exp(lp), tf.sub(lp, lq)), -1)) as tf.Scalar;
}

function pgdOf(c: ObjectiveConfig): PgdConfig {
  return { eps: c.eps, alpha: c.alpha, steps: c.steps, norm: c.norm, randomStart: c.randomStart };
}

/**
 * Logits for a training step; `hint` when the loss's gradient with respect to them is exactly that of a mean
 * cross-entropy against `ceTarget` (or TRADES' loss on [clean; adversarial]), so the engine runs one call.
 */
function logitsOf(ctx: StepContext, x: tf.Tensor, training: boolean, seed?: number, hint?: Pick<LogitsOptions, 'ceTarget' | 'trades' | 'bnGroups'>) {
  return ctx.net.logits(x, { training, gradX: false, gradParams: true, overrides: ctx.overrides?.(), seed, ...hint });
}

function oneHotRows(labels: Int32Array, classes: number): Float32Array {
  const t = new Float32Array(labels.length * classes);
  labels.forEach((y, i) => (t[i * classes + y] = 1));
  return t;
}

class Natural implements Objective {
  constructor(readonly config: ObjectiveConfig) {}
  describe(): string {
    return 'natural cross-entropy';
  }
  prepare(ctx: StepContext, b: Batch): () => LossResult {
    return () => {
      const r = logitsOf(ctx, b.x, true, ctx.seed, { ceTarget: oneHotRows(b.yd, ctx.net.classes) });
      return { loss: crossEntropy(r.logits, b.y, ctx.net.classes), logits: r.logits, updates: r.updates };
    };
  }
}

class Pgd implements Objective {
  constructor(readonly config: ObjectiveConfig) {}
  describe(): string {
    const c = this.config;
    return `PGD adversarial training (Madry): ${c.norm} ε ${c.eps}, step ${c.alpha}, ${c.steps} steps${c.randomStart ? ', random start' : ''}`;
  }
  prepare(ctx: StepContext, b: Batch): () => LossResult {
    const adv = pgdAttack(ctx.net.frozen(ctx.frozenOverrides), b.xd, b.yd, b.n, ctx.net.classes, pgdOf(this.config), ctx.rng);
    return () => {
      const xAdv = tf.tensor(adv, b.x.shape);
      const r = logitsOf(ctx, xAdv, true, ctx.seed, { ceTarget: oneHotRows(b.yd, ctx.net.classes) });
      return { loss: crossEntropy(r.logits, b.y, ctx.net.classes), logits: r.logits, updates: r.updates };
    };
  }
}

class Trades implements Objective {
  constructor(readonly config: ObjectiveConfig) {}
  describe(): string {
    const c = this.config;
    return `TRADES: β ${c.beta}, ${c.norm} ε ${c.eps}, step ${c.alpha}, ${c.steps} steps`;
  }
  prepare(ctx: StepContext, b: Batch): () => LossResult {
    const adv = tradesAttack(ctx.net.frozen(ctx.frozenOverrides), b.xd, b.n, ctx.net.classes, pgdOf(this.config), ctx.rng);
    return () => {
      const xAdv = tf.tensor(adv, b.x.shape);
      // both passes as one batch [clean; adversarial], each half normalised by its own batch statistics as
      // two passes would be; the compiled engine computes forward, this loss's gradient and backward in one
      // call, the parameter gradients of both halves summed inside it. Running statistics: the adversarial
      // half's, the last pass as PyTorch leaves them
      const r = logitsOf(ctx, tf.concat([b.x, xAdv], 0), true, ctx.seed, { trades: { labels: oneHotRows(b.yd, ctx.net.classes), beta: this.config.beta }, bnGroups: 2 });
      const [zNat, zAdv] = tf.split(r.logits, 2, 0) as [tf.Tensor, tf.Tensor];
      const updates = r.updates;
      const loss = tf.add(crossEntropy(zNat, b.y, ctx.net.classes), tf.mul(klBatchMean(zNat, zAdv), this.config.beta)) as tf.Scalar;
      return { loss, logits: zNat, updates };
    };
  }
}

class Smooth implements Objective {
  constructor(readonly config: ObjectiveConfig) {}
  describe(): string {
    return `Gaussian noise augmentation for randomized smoothing: σ ${this.config.sigma}`;
  }
  prepare(ctx: StepContext, b: Batch): () => LossResult {
    const noisy = new Float32Array(b.xd.length);
    const s = this.config.sigma;
    for (let i = 0; i < noisy.length; i++) noisy[i] = b.xd[i]! + s * ctx.rng.normal();
    return () => {
      const r = logitsOf(ctx, tf.tensor(noisy, b.x.shape), true, ctx.seed, { ceTarget: oneHotRows(b.yd, ctx.net.classes) });
      return { loss: crossEntropy(r.logits, b.y, ctx.net.classes), logits: r.logits, updates: r.updates };
    };
  }
}

/** ε and κ at a point of training: 0 during the warm-up, then a linear ramp over `epsRamp` of training. */
export function rampAt(c: ObjectiveConfig, progress: number): { eps: number; kappa: number; crownBeta: number; frac: number } {
  const frac = c.epsRamp > 0 ? Math.min(1, Math.max(0, (progress - c.epsWarmup) / c.epsRamp)) : progress >= c.epsWarmup ? 1 : 0;
  return {
    eps: c.eps * frac,
    kappa: c.kappaStart + (c.kappaEnd - c.kappaStart) * frac,
    crownBeta: c.crownBetaStart + (c.crownBetaEnd - c.crownBetaStart) * frac,
    frac,
  };
}

/** Cross-entropy of the worst-case logits allowed by the bounds: lower bound for the true class, upper for the others. */
export function worstCaseCrossEntropy(lower: tf.Tensor, upper: tf.Tensor, labels: tf.Tensor, classes: number): tf.Scalar {
  const m = tf.oneHot(labels as tf.Tensor1D, classes).toFloat();
  const worst = tf.add(tf.mul(m, lower), tf.mul(tf.sub(1, m), upper));
  return crossEntropy(worst, labels, classes);
}

/**
 * IBP training (Gowal et al. 2018): κ·CE(natural) + (1−κ)·CE(worst case under interval bounds), with ε
 * and κ ramped. The bounds are those of the inference-mode network (BatchNormalization with its running
 * statistics, which the natural pass keeps updating), i.e. of the model that is exported and verified.
 */
class Ibp implements Objective {
  constructor(readonly config: ObjectiveConfig) {}
  describe(): string {
    const c = this.config;
    return `IBP: L∞ ε ${c.eps} (ramp ${c.epsWarmup}→${+(c.epsWarmup + c.epsRamp).toFixed(3)} of training), κ ${c.kappaStart}→${c.kappaEnd}`;
  }
  prepare(ctx: StepContext, b: Batch): () => LossResult {
    const r = rampAt(this.config, ctx.progress);
    return () => {
      const nat = logitsOf(ctx, b.x, true, ctx.seed);
      const ce = crossEntropy(nat.logits, b.y, ctx.net.classes);
      if (r.eps <= 0 || r.kappa >= 1) return { loss: ce, logits: nat.logits, updates: nat.updates };
      const bd = ctx.net.bounds(b.x, r.eps, { overrides: ctx.overrides?.() });
      const rob = worstCaseCrossEntropy(bd.lower, bd.upper, b.y, ctx.net.classes);
      return { loss: tf.add(tf.mul(ce, r.kappa), tf.mul(rob, 1 - r.kappa)) as tf.Scalar, logits: nat.logits, updates: nat.updates };
    };
  }
}

/**
 * CROWN-IBP (Zhang et al. 2020): lower bounds of the margins z_y − z_j as β·CROWN + (1−β)·IBP (CROWN run
 * backwards through the network with the interval bounds as ReLU pre-activation bounds), loss
 * κ·CE(natural) + (1−κ)·CE(−margins); ε, κ and β ramped. β = 0 is plain IBP with margin bounds.
 */
class CrownIbp implements Objective {
  constructor(readonly config: ObjectiveConfig) {}
  describe(): string {
    const c = this.config;
    return `CROWN-IBP: L∞ ε ${c.eps} (ramp ${c.epsWarmup}→${+(c.epsWarmup + c.epsRamp).toFixed(3)} of training), κ ${c.kappaStart}→${c.kappaEnd}, β ${c.crownBetaStart}→${c.crownBetaEnd}`;
  }
  prepare(ctx: StepContext, b: Batch): () => LossResult {
    const r = rampAt(this.config, ctx.progress);
    const k = ctx.net.classes;
    return () => {
      const nat = logitsOf(ctx, b.x, true, ctx.seed);
      const ce = crossEntropy(nat.logits, b.y, k);
      if (r.eps <= 0 || r.kappa >= 1) return { loss: ce, logits: nat.logits, updates: nat.updates };
      const bd = ctx.net.bounds(b.x, r.eps, { overrides: ctx.overrides?.(), labels: r.crownBeta > 0 ? b.yd : undefined });
      const m = tf.oneHot(b.y as tf.Tensor1D, k).toFloat();
      // IBP margin bounds: l_y − u_j (0 at j = y)
      const ly = tf.sum(tf.mul(m, bd.lower), -1, true);
      let margins: tf.Tensor = tf.mul(tf.sub(ly, bd.upper), tf.sub(1, m));
      if (bd.crownMargins) margins = tf.add(tf.mul(bd.crownMargins, r.crownBeta), tf.mul(margins, 1 - r.crownBeta));
      const rob = crossEntropy(tf.neg(margins), b.y, k);
      return { loss: tf.add(tf.mul(ce, r.kappa), tf.mul(rob, 1 - r.kappa)) as tf.Scalar, logits: nat.logits, updates: nat.updates };
    };
  }
}

/**
 * MixTrain (Wang et al. 2018): the adversarial (PGD) loss of the batch plus, on a random sample of it, the
 * verifiable (interval-bound) loss: (1−λ)·CE(PGD) + λ·CE(worst case), λ = --mix-weight, ε ramped for the
 * bound term.
 */
class MixTrain implements Objective {
  constructor(readonly config: ObjectiveConfig) {}
  describe(): string {
    const c = this.config;
    return `MixTrain: PGD ${c.steps} steps of ${c.alpha} + interval-bound loss on ${(100 * c.mixSample).toFixed(0)}% of each batch, λ ${c.mixWeight}, L∞ ε ${c.eps}`;
  }
  prepare(ctx: StepContext, b: Batch): () => LossResult {
    const c = this.config;
    const adv = pgdAttack(ctx.net.frozen(ctx.frozenOverrides), b.xd, b.yd, b.n, ctx.net.classes, pgdOf(c), ctx.rng);
    const r = rampAt(c, ctx.progress);
    const k = Math.max(1, Math.round(c.mixSample * b.n));
    const pick = Int32Array.from(permutation(b.n, ctx.rng).subarray(0, k)).sort();
    return () => {
      const out = logitsOf(ctx, tf.tensor(adv, b.x.shape), true, ctx.seed);
      const ce = crossEntropy(out.logits, b.y, ctx.net.classes);
      if (r.eps <= 0 || c.mixWeight <= 0) return { loss: ce, logits: out.logits, updates: out.updates };
      const idx = tf.tensor1d(pick, 'int32');
      const bd = ctx.net.bounds(tf.gather(b.x, idx), r.eps, { overrides: ctx.overrides?.() });
      const rob = worstCaseCrossEntropy(bd.lower, bd.upper, tf.gather(b.y, idx), ctx.net.classes);
      return { loss: tf.add(tf.mul(ce, 1 - c.mixWeight), tf.mul(rob, c.mixWeight)) as tf.Scalar, logits: out.logits, updates: out.updates };
    };
  }
}

const MAKERS: Partial<Record<ObjectiveKind, (c: ObjectiveConfig) => Objective>> = {
  natural: (c) => new Natural(c),
  pgd: (c) => new Pgd(c),
  trades: (c) => new Trades(c),
  smooth: (c) => new Smooth(c),
  ibp: (c) => new Ibp(c),
  'crown-ibp': (c) => new CrownIbp(c),
  mixtrain: (c) => new MixTrain(c),
};

export function registerObjective(kind: ObjectiveKind, make: (c: ObjectiveConfig) => Objective): void {
  MAKERS[kind] = make;
}

export function makeObjective(c: ObjectiveConfig): Objective {
  if (!(OBJECTIVES as readonly string[]).includes(c.kind)) throw new UserError(`unknown --objective '${c.kind}' (use ${OBJECTIVES.join('|')})`);
  if (c.eps < 0) throw new UserError(`--eps must be ≥ 0, got ${c.eps}`);
  if (c.alpha <= 0 && ['pgd', 'trades', 'mixtrain'].includes(c.kind)) throw new UserError(`--alpha must be > 0, got ${c.alpha}`);
  if (!Number.isInteger(c.steps) || c.steps < 0) throw new UserError(`--steps must be a non-negative integer, got ${c.steps}`);
  if (['ibp', 'crown-ibp', 'mixtrain'].includes(c.kind) && c.norm !== 'linf') throw new UserError(`--objective ${c.kind} bounds the L∞ ball; --norm l2 is not available for it`);
  if (c.kind === 'mixtrain' && !(c.mixSample > 0 && c.mixSample <= 1)) throw new UserError(`--mix-sample must be in (0, 1], got ${c.mixSample}`);
  if (c.kind === 'smooth' && !(c.sigma > 0)) throw new UserError(`--sigma must be > 0, got ${c.sigma}`);
  const make = MAKERS[c.kind];
  if (!make) throw new UserError(`objective '${c.kind}' is not available`);
  return make(c);
}
