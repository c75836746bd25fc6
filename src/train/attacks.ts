// Adversarial examples on plain arrays, with any Frozen network (fused onnxruntime graphs or tfjs).
// ε is in [0,1] pixel space; every step is projected onto the ε-ball and clipped to [0,1].
import type { AttackLoss, Frozen } from '../engine/net.js';
import type { Rng } from '../util/rng.js';

export interface PgdConfig {
  eps: number;
  alpha: number;
  steps: number;
  norm: 'linf' | 'l2';
  randomStart: boolean;
}

export function softmaxRows(z: Float32Array, classes: number): Float32Array {
  const p = new Float32Array(z.length);
  for (let r = 0; r < z.length / classes; r++) {
    const o = r * classes;
    let m = -Infinity;
    for (let k = 0; k < classes; k++) m = Math.max(m, z[o + k]!);
    let s = 0;
    for (let k = 0; k < classes; k++) s += p[o + k] = Math.exp(z[o + k]! - m);
    for (let k = 0; k < classes; k++) p[o + k]! /= s;
  }
  return p;
}

/** Project x_adv onto the ε-ball around x (per example for L2) and into [0,1], in place. */
export function project(xAdv: Float32Array, x: Float32Array, n: number, eps: number, norm: 'linf' | 'l2'): void {
  const per = x.length / n;
  if (norm === 'linf') {
    for (let i = 0; i < x.length; i++) {
      const lo = Math.max(0, x[i]! - eps);
      const hi = Math.min(1, x[i]! + eps);
      const v = xAdv[i]!;
      xAdv[i] = v < lo ? lo : v > hi ? hi : v;
    }
    return;
  }
  for (let e = 0; e < n; e++) {
    const o = e * per;
    let s = 0;
    for (let i = o; i < o + per; i++) s += (xAdv[i]! - x[i]!) ** 2;
    const norm2 = Math.sqrt(s);
    const f = norm2 > eps ? eps / norm2 : 1;
    for (let i = o; i < o + per; i++) {
      const v = x[i]! + (xAdv[i]! - x[i]!) * f;
      xAdv[i] = v < 0 ? 0 : v > 1 ? 1 : v;
    }
  }
}

/** One ascent step along the gradient: sign for L∞, the per-example unit direction for L2. */
function ascend(xAdv: Float32Array, g: Float32Array, n: number, alpha: number, norm: 'linf' | 'l2'): void {
  if (norm === 'linf') {
    for (let i = 0; i < xAdv.length; i++) xAdv[i]! += alpha * Math.sign(g[i]!);
    return;
  }
  const per = xAdv.length / n;
  for (let e = 0; e < n; e++) {
    const o = e * per;
    let s = 0;
    for (let i = o; i < o + per; i++) s += g[i]! * g[i]!;
    const f = alpha / (Math.sqrt(s) + 1e-12);
    for (let i = o; i < o + per; i++) xAdv[i]! += f * g[i]!;
  }
}

export function randomStart(x: Float32Array, n: number, c: { eps: number; norm: 'linf' | 'l2' }, rng: Rng): Float32Array {
  const xAdv = new Float32Array(x.length);
  if (c.norm === 'linf') {
    for (let i = 0; i < x.length; i++) xAdv[i] = x[i]! + (2 * rng() - 1) * c.eps;
  } else {
    // uniform direction, radius uniform in [0, ε]
    const per = x.length / n;
    for (let e = 0; e < n; e++) {
      const o = e * per;
      let s = 0;
      for (let i = o; i < o + per; i++) s += (xAdv[i] = rng.normal()) ** 2;
      const r = (c.eps * rng()) / Math.sqrt(s);
      for (let i = o; i < o + per; i++) xAdv[i] = x[i]! + xAdv[i]! * r;
    }
  }
  project(xAdv, x, n, c.eps, c.norm);
  return xAdv;
}

/** Bounds of the L∞ ball around x intersected with [0,1], computed once per attack. */
function boxOf(x: Float32Array, eps: number): { lo: Float32Array; hi: Float32Array } {
  const lo = new Float32Array(x.length);
  const hi = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const a = x[i]! - eps;
    const b = x[i]! + eps;
    lo[i] = a < 0 ? 0 : a;
    hi[i] = b > 1 ? 1 : b;
  }
  return { lo, hi };
}

/** x_adv ← clip(x_adv + α·sign(g), lo, hi), one pass. */
function linfStep(xAdv: Float32Array, g: Float32Array, alpha: number, lo: Float32Array, hi: Float32Array): void {
  for (let i = 0; i < xAdv.length; i++) {
    const gi = g[i]!;
    const v = xAdv[i]! + (gi > 0 ? alpha : gi < 0 ? -alpha : 0);
    const l = lo[i]!;
    const h = hi[i]!;
    xAdv[i] = v < l ? l : v > h ? h : v;
  }
}

export function oneHot(y: Int32Array, classes: number): Float32Array {
  const t = new Float32Array(y.length * classes);
  for (let i = 0; i < y.length; i++) t[i * classes + y[i]!] = 1;
  return t;
}

/**
 * One PGD iteration on the cross-entropy toward `labels` (`target` is their one-hot form): the engine's fused
 * step when it has one, else its gradient and the step in JS. Returns the next iterate (a new array) and
 * the logits at xAdv.
 */
export function pgdIterate(f: Frozen, xAdv: Float32Array, x: Float32Array, n: number, labels: Int32Array, target: Float32Array, c: PgdConfig): { next: Float32Array; logits: Float32Array } {
  if (f.pgdStep) return f.pgdStep(xAdv, x, n, target, c.alpha, c.eps, c.norm);
  const { grad, logits } = f.lossGrad(xAdv, n, { kind: 'ce', labels });
  const next = xAdv.slice();
  stepInPlace(next, grad, x, n, c, c.norm === 'linf' ? boxOf(x, c.eps) : undefined);
  return { next, logits };
}

/** x_adv ← Π(x_adv + step(g)): the signed step clipped to `box` (L∞), or the L2 step and projection. */
function stepInPlace(xAdv: Float32Array, grad: Float32Array, x: Float32Array, n: number, c: PgdConfig, box?: { lo: Float32Array; hi: Float32Array }): void {
  if (box) linfStep(xAdv, grad, c.alpha, box.lo, box.hi);
  else {
    ascend(xAdv, grad, n, c.alpha, c.norm);
    project(xAdv, x, n, c.eps, c.norm);
  }
}

/** Iterated gradient ascent on `loss` from `start`, projected after each step. */
function ascendLoop(f: Frozen, x: Float32Array, start: Float32Array, n: number, c: PgdConfig, loss: AttackLoss, classes: number): Float32Array {
  if (f.pgdStep) {
    // fused in the engine: gradient, step, projection and clipping in one call
    const target = loss.kind === 'kl' ? loss.target : oneHot(loss.labels, classes);
    let xAdv = start;
    for (let s = 0; s < c.steps; s++) xAdv = f.pgdStep(xAdv, x, n, target, c.alpha, c.eps, c.norm).next;
    return xAdv;
  }
  const xAdv = start;
  const box = c.norm === 'linf' ? boxOf(x, c.eps) : undefined;
  for (let s = 0; s < c.steps; s++) {
    stepInPlace(xAdv, f.lossGrad(xAdv, n, loss).grad, x, n, c, box);
  }
  return xAdv;
}

/** Madry et al.'s PGD on the cross-entropy loss. */
export function pgdAttack(f: Frozen, x: Float32Array, y: Int32Array, n: number, classes: number, c: PgdConfig, rng: Rng): Float32Array {
  const start = c.randomStart ? randomStart(x, n, c, rng) : x.slice();
  return ascendLoop(f, x, start, n, c, { kind: 'ce', labels: y }, classes);
}

/**
 * TRADES' inner maximisation (Zhang et al. 2019): start at x + 0.001·N(0, I), ascend
 * KL(f(x) ‖ f(x_adv)) with signed steps (L∞) or normalised steps (L2).
 */
export function tradesAttack(f: Frozen, x: Float32Array, n: number, classes: number, c: PgdConfig, rng: Rng): Float32Array {
  const pNat = softmaxRows(f.logits(x, n), classes);
  const start = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) start[i] = x[i]! + 0.001 * rng.normal();
  return ascendLoop(f, x, start, n, c, { kind: 'kl', target: pNat }, classes);
}
