// Adversarial examples on plain arrays, with any Frozen network (fused onnxruntime graphs or tfjs).
// ε is in [0,1] pixel space; every step is projected onto the ε-ball and clipped to [0,1].
import type { AttackLoss, Frozen } from '../engine/net.js';
import { project } from '../engine/step.js';
import { addGaussian, type Rng } from '../util/rng.js';

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

export function oneHot(y: Int32Array, classes: number): Float32Array {
  const t = new Float32Array(y.length * classes);
  for (let i = 0; i < y.length; i++) t[i * classes + y[i]!] = 1;
  return t;
}

/**
 * Iterated gradient ascent on `loss` from `start`, projected after each step: the network's PGD step
 * (gradient, step, projection and clipping; one onnxruntime call on the compiled engine).
 */
function ascendLoop(f: Frozen, x: Float32Array, start: Float32Array, n: number, c: PgdConfig, loss: AttackLoss, classes: number): Float32Array {
  const target = loss.kind === 'kl' ? loss.target : oneHot(loss.labels, classes);
  let xAdv = start;
  for (let s = 0; s < c.steps; s++) xAdv = f.pgdStep(xAdv, x, n, target, c.alpha, c.eps, c.norm).next;
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
  // p_nat from a forward-only model: on the compiled engine its weights are fed to one shared session
  // when that is cheaper than a session per weight set (the choice of FrozenNet's attack sessions)
  const pNat = softmaxRows(f.logits(x, n), classes);
  const start = new Float32Array(x.length);
  addGaussian(rng, x, 0.001, start);
  return ascendLoop(f, x, start, n, c, { kind: 'kl', target: pNat }, classes);
}
