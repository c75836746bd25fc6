// APGD (Croce & Hein, ICML 2020, "Reliable evaluation of adversarial robustness with an ensemble of diverse
// parameter-free attacks"): PGD with momentum and a step size that halves at fixed checkpoints when the
// attack stops making progress, restarting from the best point. Losses: cross-entropy (APGD-CE), the
// difference of logits ratio (DLR) and its targeted version (APGD-T). Losses and gradients come from the
// engine (`Frozen.lossGrad`, one onnxruntime call per step, DLR computed in the graph); every input the
// engine flags as misclassified, and each run's best point, is judged by
// onnxruntime on the artifact, which alone decides. Like pgdVerify, a fixed pool of slots keeps the
// engine's compiled batch size, and an example leaves as soon as onnxruntime confirms a fooling input.
import type { Frozen } from '../engine/net.js';
import type { Rng } from '../util/rng.js';
import type { OrtClassifier } from './classifier.js';
import { argmax } from './equivalence.js';
import { wasmWithScratch } from '../util/wasm.js';

export type ApgdLoss = 'ce' | 'dlr' | 'dlr-targeted';

export interface ApgdConfig {
  eps: number;
  norm: 'linf' | 'l2';
  /** iterations after the random starting point (AutoAttack: 100) */
  iterations: number;
  /** the step size halves at a checkpoint when fewer than rho·(checkpoint interval) steps increased the loss */
  rho: number;
  /** weight of the new step against the previous one (the paper's α = 0.75) */
  momentum: number;
}

export interface AttackStats {
  /** inputs onnxruntime judged, and how many of them it classified differently from the engine */
  candidates: number;
  disagreements: number;
  /** example-iterations the engine ran */
  engine_steps: number;
}

/**
 * The iterations at which APGD checks its progress: w_j = ⌈p_j·N⌉ with p_0 = 0, p_1 = 0.22,
 * p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06), up to N (repeated values collapse).
 * N = 100 gives 0, 22, 41, 57, 70, 80, 87, 93, 99.
 */
export function apgdCheckpoints(iterations: number): number[] {
  // in hundredths, so that 0.22 + 0.19 is 41 and not 41.000000000000007
  const out = [0];
  let prev = 0;
  let p = 22;
  while (Math.ceil((p * iterations) / 100) <= iterations) {
    const w = Math.ceil((p * iterations) / 100);
    if (w > out[out.length - 1]!) out.push(w);
    const next = p + Math.max(p - prev - 3, 6);
    prev = p;
    p = next;
  }
  return out;
}

/** Cross-entropy of one row, log Σ exp z − z_y. */
export function crossEntropy(z: ArrayLike<number>, off: number, k: number, y: number): number {
  let m = -Infinity;
  for (let j = 0; j < k; j++) m = Math.max(m, z[off + j]!);
  let s = 0;
  for (let j = 0; j < k; j++) s += Math.exp(z[off + j]! - m);
  return m + Math.log(s) - z[off + y]!;
}

/**
 * Slots for `count` examples: at most `batch`, the examples spread evenly over the waves (300 examples at
 * batch 256 run as two waves of 150, not 256 then 44 in 256 slots). A new batch size costs the compiled
 * engine ~0.1 s of session making, less than padding the batch would cost in wasted rows.
 */
export function poolSize(batch: number, count: number): number {
  if (count <= 0) return 1;
  return Math.ceil(count / Math.ceil(count / Math.max(1, batch)));
}

/**
 * Candidate inputs of one round, judged by onnxruntime in one call. `judge` returns, per slot, the row of
 * the first candidate onnxruntime misclassified (−1: none).
 */
export class OrtCheck {
  private data: Float32Array;
  private slots: Int32Array;
  private enginePred: Int32Array;
  private m = 0;

  constructor(private readonly per: number, capacity: number) {
    this.data = new Float32Array(capacity * per);
    this.slots = new Int32Array(capacity);
    this.enginePred = new Int32Array(capacity);
  }

  add(slot: number, input: Float32Array, enginePred: number): void {
    if (this.m === this.slots.length) {
      const grow = <T extends Float32Array | Int32Array>(a: T, len: number): T => {
        const b = new (a.constructor as new (n: number) => T)(len);
        b.set(a);
        return b;
      };
      this.data = grow(this.data, this.data.length * 2);
      this.slots = grow(this.slots, this.slots.length * 2);
      this.enginePred = grow(this.enginePred, this.enginePred.length * 2);
    }
    this.data.set(input, this.m * this.per);
    this.slots[this.m] = slot;
    this.enginePred[this.m++] = enginePred;
  }

  /** the candidate in row j (valid until the next add after judge) */
  input(j: number): Float32Array {
    return this.data.subarray(j * this.per, (j + 1) * this.per);
  }

  async judge(clf: OrtClassifier, labels: Int32Array, slots: number, stats: AttackStats): Promise<Int32Array> {
    const fooled = new Int32Array(slots).fill(-1);
    const m = this.m;
    this.m = 0;
    if (!m) return fooled;
    const pred = await clf.predict(this.data.subarray(0, m * this.per), m);
    stats.candidates += m;
    for (let j = 0; j < m; j++) {
      const s = this.slots[j]!;
      if (pred[j] !== this.enginePred[j]) stats.disagreements++;
      if (pred[j] !== labels[s] && fooled[s]! < 0) fooled[s] = j;
    }
    return fooled;
  }
}

export interface ApgdRunOptions {
  /** pool size (the engine's batch) */
  batch: number;
  /** dlr-targeted: the target class of each example, by example index */
  targets?: Int32Array;
  onProgress?: (done: number) => void;
  /** an input onnxruntime misclassifies, the first for example i (alive[i] is cleared) */
  onFooled?: (i: number, input: Float32Array) => void;
}

/**
 * One APGD run (random start, `iterations` steps) on every example with alive[i] = 1; clears alive[i] for
 * those with an input onnxruntime misclassifies. x holds n examples of `per` values, in [0,1].
 */
export async function apgdVerify(
  f: Frozen, clf: OrtClassifier, x: Float32Array, y: Int32Array, n: number, alive: Uint8Array, loss: ApgdLoss, c: ApgdConfig, rng: Rng, o: ApgdRunOptions,
): Promise<AttackStats> {
  const per = x.length / n;
  const k = clf.classes;
  if (loss === 'dlr' && k < 3) throw new Error('the DLR loss needs at least 3 classes');
  if (loss === 'dlr-targeted' && (k < 4 || !o.targets)) throw new Error('the targeted DLR loss needs at least 4 classes and a target per example');
  const stats: AttackStats = { candidates: 0, disagreements: 0, engine_steps: 0 };
  const queue: number[] = [];
  for (let i = 0; i < n; i++) if (alive[i]) queue.push(i);
  if (!queue.length) return stats;
  const B = poolSize(o.batch, queue.length);
  const W = apgdCheckpoints(c.iterations);
  const N = c.iterations;
  const eps = c.eps;

  const slots = new SlotArrays(B, per);
  const { xc, xa, xPrev, grad: gradCur } = slots; // xa: the point evaluated next, x^(k); xPrev: x^(k−1)
  const xBest = new Float32Array(B * per);
  const gradBest = new Float32Array(B * per);
  const next = new Float32Array(per);
  const slot = new Int32Array(B).fill(-1);
  const labels = new Int32Array(B);
  const target = new Int32Array(B);
  const iter = new Int32Array(B);
  const ckpt = new Int32Array(B); // index in W of the next checkpoint
  const increases = new Int32Array(B);
  const reducedLast = new Uint8Array(B);
  const eta = new Float64Array(B);
  const lossPrev = new Float64Array(B);
  const lossBest = new Float64Array(B);
  const lossBestLastCheck = new Float64Array(B);
  const predBest = new Int32Array(B);
  const check = new OrtCheck(per, 2 * B);
  let q = 0;
  let active = 0;
  let done = n - queue.length;

  const fill = (s: number): void => {
    if (slot[s]! >= 0) active--;
    slot[s] = -1;
    xa.fill(0, s * per, (s + 1) * per);
    if (q >= queue.length) return;
    const i = queue[q++]!;
    slot[s] = i;
    active++;
    labels[s] = y[i]!;
    target[s] = o.targets ? o.targets[i]! : 0;
    const xi = x.subarray(i * per, (i + 1) * per);
    xc.set(xi, s * per);
    // random start on the sphere of the norm: x + ε·t/‖t‖, t uniform in [−1,1]^d (L∞) or Gaussian (L2)
    const o0 = s * per;
    let norm = 0;
    for (let j = 0; j < per; j++) {
      const t = c.norm === 'linf' ? 2 * rng() - 1 : rng.normal();
      next[j] = t;
      norm = c.norm === 'linf' ? Math.max(norm, Math.abs(t)) : norm + t * t;
    }
    const scale = eps / ((c.norm === 'linf' ? norm : Math.sqrt(norm)) + 1e-12);
    for (let j = 0; j < per; j++) xa[o0 + j] = clip01(xi[j]! + scale * next[j]!);
    xPrev.set(xa.subarray(o0, o0 + per), o0);
    iter[s] = 0;
    ckpt[s] = 1;
    increases[s] = 0;
    reducedLast[s] = 0;
    eta[s] = 2 * eps;
  };
  for (let s = 0; s < B; s++) fill(s);

  while (active > 0) {
    // loss, gradient and logits at every slot's x^(k)
    let grad: Float32Array;
    let z: Float32Array;
    const lossOf = new Float64Array(B);
    if (loss === 'ce') {
      const r = f.lossGrad(xa, B, { kind: 'ce', labels });
      grad = r.grad;
      z = r.logits;
      for (let s = 0; s < B; s++) if (slot[s]! >= 0) lossOf[s] = crossEntropy(z, s * k, k, labels[s]!);
    } else {
      const r = f.lossGrad(xa, B, { kind: 'dlr', labels, targets: loss === 'dlr-targeted' ? target : undefined });
      grad = r.grad;
      z = r.logits;
      for (let s = 0; s < B; s++) if (slot[s]! >= 0) lossOf[s] = r.loss![s]!;
    }
    stats.engine_steps += active;

    // progress bookkeeping (best point), then the candidates for onnxruntime
    for (let s = 0; s < B; s++) {
      if (slot[s]! < 0) continue;
      const o0 = s * per;
      const l = lossOf[s]!;
      const pred = argmax(z, s * k, k);
      if (iter[s] === 0) {
        lossBest[s] = l;
        lossBestLastCheck[s] = l;
        xBest.set(xa.subarray(o0, o0 + per), o0);
        gradBest.set(grad.subarray(o0, o0 + per), o0);
        predBest[s] = pred;
      } else {
        if (l > lossPrev[s]!) increases[s]!++;
        if (l > lossBest[s]!) {
          lossBest[s] = l;
          xBest.set(xa.subarray(o0, o0 + per), o0);
          gradBest.set(grad.subarray(o0, o0 + per), o0);
          predBest[s] = pred;
        }
      }
      lossPrev[s] = l;
      gradCur.set(grad.subarray(o0, o0 + per), o0);
      if (pred !== labels[s]) check.add(s, xa.subarray(o0, o0 + per), pred);
      // the run's last iterate: its best point too (the highest loss is the likeliest to fool the artifact)
      if (iter[s] === N && pred === labels[s]) check.add(s, xBest.subarray(o0, o0 + per), predBest[s]!);
    }
    const fooled = await check.judge(clf, labels, B, stats);

    for (let s = 0; s < B; s++) {
      const i = slot[s]!;
      if (i < 0) continue;
      if (fooled[s]! >= 0) {
        alive[i] = 0;
        o.onFooled?.(i, check.input(fooled[s]!));
        done++;
        fill(s);
        continue;
      }
      const kNow = iter[s]!;
      const o0 = s * per;
      // checkpoint w_j: halve the step and restart from the best point when (1) fewer than ρ·(w_j − w_{j−1})
      // steps since w_{j−1} increased the loss, or (2) the step size was not halved at w_{j−1} and the best
      // loss has not improved since
      if (ckpt[s]! < W.length && kNow === W[ckpt[s]!]) {
        const j = ckpt[s]!;
        const oscillating = increases[s]! < c.rho * (W[j]! - W[j - 1]!);
        const stalled = !reducedLast[s] && lossBestLastCheck[s]! >= lossBest[s]!;
        const reduce = oscillating || stalled;
        reducedLast[s] = reduce ? 1 : 0;
        lossBestLastCheck[s] = lossBest[s]!;
        increases[s] = 0;
        ckpt[s] = j + 1;
        if (reduce) {
          eta[s] = eta[s]! / 2;
          xa.set(xBest.subarray(o0, o0 + per), o0);
          gradCur.set(gradBest.subarray(o0, o0 + per), o0);
        }
      }
      if (kNow === N) {
        done++;
        fill(s);
        continue;
      }
      const a = kNow === 0 ? 1 : c.momentum;
      if (c.norm === 'linf') slots.linfStep(s, eps, eta[s]!, a);
      else apgdStepL2(xa.subarray(o0, o0 + per), xPrev.subarray(o0, o0 + per), xc.subarray(o0, o0 + per), gradCur.subarray(o0, o0 + per), eta[s]!, a, eps, next);
      iter[s] = kNow + 1;
    }
    o.onProgress?.(done);
  }
  return stats;
}

function clip01(v: number): number {
  return v < 0 ? 0 : v > 1 ? 1 : v;
}

interface StepKernel {
  memory: WebAssembly.Memory;
  linfStep(xa: number, xPrev: number, g: number, x: number, n: number, eps: number, eta: number, a: number): void;
}

/**
 * A run's per-slot arrays: clean examples, iterates x^(k) and x^(k−1), and the gradients the next step
 * takes. They live in the memory of a fresh instance of the attack kernels (src/util/wasm/attack.as.ts),
 * whose linfStep (apgdStepLinf bit for bit, ~10x faster) steps them in place; in plain arrays, stepped by
 * apgdStepLinf, when that memory cannot grow to B·per·16 bytes.
 */
export class SlotArrays {
  readonly xc: Float32Array;
  readonly xa: Float32Array;
  readonly xPrev: Float32Array;
  readonly grad: Float32Array;
  private readonly kernel?: StepKernel;

  constructor(B: number, private readonly per: number) {
    const len = B * per;
    const bytes = 16 * len;
    let buffer: ArrayBufferLike;
    let base: number;
    try {
      const w = wasmWithScratch<StepKernel>('attack.wasm', bytes);
      ({ buffer, base } = w);
      this.kernel = w.kernel;
    } catch (e) {
      // more than a WebAssembly memory holds (4 GiB)
      if (!(e instanceof RangeError)) throw e;
      buffer = new ArrayBuffer(bytes);
      base = 0;
    }
    [this.xc, this.xa, this.xPrev, this.grad] = [0, 1, 2, 3].map((i) => new Float32Array(buffer, base + 4 * i * len, len)) as [Float32Array, Float32Array, Float32Array, Float32Array];
  }

  /** apgdStepLinf on slot s */
  linfStep(s: number, eps: number, eta: number, a: number): void {
    const o = s * this.per;
    if (this.kernel) this.kernel.linfStep(this.xa.byteOffset + 4 * o, this.xPrev.byteOffset + 4 * o, this.grad.byteOffset + 4 * o, this.xc.byteOffset + 4 * o, this.per, eps, eta, a);
    else {
      const at = (v: Float32Array): Float32Array => v.subarray(o, o + this.per);
      apgdStepLinf(at(this.xa), at(this.xPrev), at(this.xc), at(this.grad), eta, a, eps);
    }
  }
}

/**
 * APGD's step, x^(k+1) = P(x^(k) + a·(z − x^(k)) + (1 − a)·(x^(k) − x^(k−1))), z = P(x^(k) + η·step(∇)), P the
 * projection onto the ε-ball around the clean x intersected with [0,1]; step(∇) = sign(∇) here (L∞). Updates
 * xa (to x^(k+1)) and xPrev (to x^(k)) in place. The reference of the WebAssembly kernel: any change here
 * must be made there too (the test compares them bit for bit).
 */
export function apgdStepLinf(xa: Float32Array, xPrev: Float32Array, x: Float32Array, g: Float32Array, eta: number, a: number, eps: number): void {
  for (let j = 0; j < xa.length; j++) {
    const lo = Math.max(x[j]! - eps, 0);
    const hi = Math.min(x[j]! + eps, 1);
    const v = xa[j]!;
    const gj = g[j]!;
    let zj = v + eta * (gj > 0 ? 1 : gj < 0 ? -1 : 0);
    zj = zj < lo ? lo : zj > hi ? hi : zj;
    let u = v + a * (zj - v) + (1 - a) * (v - xPrev[j]!);
    u = u < lo ? lo : u > hi ? hi : u;
    xPrev[j] = v;
    xa[j] = u;
  }
}

/**
 * APGD's step in L2 (as apgdStepLinf, step(∇) = ∇/‖∇‖; the reference code's order of projections: ball,
 * then box). `tmp` is scratch of the same length.
 */
export function apgdStepL2(xa: Float32Array, xPrev: Float32Array, x: Float32Array, g: Float32Array, eta: number, a: number, eps: number, tmp: Float32Array): void {
  const per = xa.length;
  let gn = 0;
  for (let j = 0; j < per; j++) gn += g[j]! * g[j]!;
  const gs = eta / (Math.sqrt(gn) + 1e-12);
  // z: step, then onto the ball and into the box
  let dn = 0;
  for (let j = 0; j < per; j++) {
    const d = xa[j]! + gs * g[j]! - x[j]!;
    tmp[j] = d;
    dn += d * d;
  }
  dn = Math.sqrt(dn);
  let scale = Math.min(eps, dn) / (dn + 1e-12);
  let un = 0;
  for (let j = 0; j < per; j++) {
    const zj = clip01(x[j]! + tmp[j]! * scale);
    const v = xa[j]!;
    const d = v + a * (zj - v) + (1 - a) * (v - xPrev[j]!) - x[j]!;
    tmp[j] = d;
    un += d * d;
  }
  un = Math.sqrt(un);
  scale = Math.min(eps, un + 1e-12) / (un + 1e-12);
  for (let j = 0; j < per; j++) tmp[j] = clip01(x[j]! + tmp[j]! * scale);
  xPrev.set(xa);
  xa.set(tmp.subarray(0, per));
}
