// AutoAttack (Croce & Hein, ICML 2020) run on the artifact: APGD-CE, APGD-T (targeted DLR over the 9 most
// likely other classes), FAB-T (Croce & Hein, ICML 2020, "Minimally distorted adversarial examples with a
// fast adaptive boundary attack", targeted) and the Square attack (5,000 queries), each on the examples
// still robust, in that order ('standard'); 'fast' runs APGD-CE and APGD-T. Hyper-parameters are those of
// the reference code's standard version. Gradients come from the engine; every fooling input is confirmed by
// onnxruntime running the artifact, and robust accuracy counts the examples no attack broke.
import type { Frozen } from '../engine/net.js';
import { makeRng } from '../util/rng.js';
import { progressBar } from '../util/progress.js';
import type { OrtClassifier } from './classifier.js';
import { argmax } from './equivalence.js';
import { apgdVerify, OrtCheck, poolSize, type ApgdConfig, type AttackStats } from './apgd.js';
import { squareAttack } from './square.js';
import { wasmWithScratch } from '../util/wasm.js';

export type AutoAttackVersion = 'standard' | 'fast';

export interface AutoAttackConfig {
  eps: number;
  norm: 'linf' | 'l2';
  version: AutoAttackVersion;
}

/** The reference code's standard settings (autoattack.py, set_version('standard')). */
export const AUTOATTACK_SETTINGS = {
  apgd: { iterations: 100, rho: 0.75, momentum: 0.75, initial_step: '2ε', restarts: 1 },
  targets: 9,
  fab: { iterations: 100, alpha_max: 0.1, eta: 1.05, beta: 0.9, restarts: 1 },
  square: { queries: 5000, p_init: 0.8, p_schedule: 'the paper\'s halvings at fixed query counts of a 10,000-query budget, not rescaled' },
};

export const AUTOATTACK_ATTACKS: Record<AutoAttackVersion, string[]> = {
  standard: ['APGD-CE', 'APGD-T', 'FAB-T', 'Square'],
  fast: ['APGD-CE', 'APGD-T'],
};

export interface AutoAttackRow {
  attack: string;
  /** examples this attack broke (among those the attacks before it left robust) */
  broken: number;
  /** robust accuracy after this attack */
  acc_after: number;
  seconds: number;
  /** gradient attacks: example-iterations the engine ran */
  engine_steps?: number;
  /** Square: onnxruntime queries */
  queries?: number;
  /** set when the attack could not run on this model (it then broke nothing) */
  skipped?: string;
}

export interface AutoAttackResult {
  acc: number;
  clean_acc: number;
  version: AutoAttackVersion;
  eps: number;
  norm: 'linf' | 'l2';
  attacks: string[];
  per_attack: AutoAttackRow[];
  /** inputs onnxruntime judged, and how often it disagreed with the engine's class */
  candidates: number;
  ort_engine_disagreements: number;
  settings: typeof AUTOATTACK_SETTINGS;
  judged_by: string;
}

/**
 * Runs the suite on the examples with correct[i] = 1. Returns the report, the per-example verdict (1 =
 * robust) and, for every example, the input that decided it: the first fooling input onnxruntime confirmed,
 * else the clean image.
 */
export async function autoAttack(
  f: Frozen, clf: OrtClassifier, x: Float32Array, y: Int32Array, n: number, shape: [number, number, number], correct: Uint8Array, c: AutoAttackConfig,
  o: { batch: number; seed: number; quiet: boolean },
): Promise<{ result: AutoAttackResult; robust: Uint8Array; adversarial: Float32Array }> {
  const per = x.length / n;
  const k = clf.classes;
  const robust = correct.slice();
  const adversarial = x.slice();
  const onFooled = (i: number, input: Float32Array): void => void adversarial.set(input, i * per);
  const count = (): number => robust.reduce((a, v) => a + v, 0);
  const judged = { candidates: 0, disagreements: 0 };
  const add = (s: AttackStats): void => {
    judged.candidates += s.candidates;
    judged.disagreements += s.disagreements;
  };
  const rows: AutoAttackRow[] = [];
  const apgd: ApgdConfig = { eps: c.eps, norm: c.norm, iterations: AUTOATTACK_SETTINGS.apgd.iterations, rho: AUTOATTACK_SETTINGS.apgd.rho, momentum: AUTOATTACK_SETTINGS.apgd.momentum };
  const nTargets = Math.min(AUTOATTACK_SETTINGS.targets, k - 1);
  let ranked: Int32Array | undefined;
  const rankedClasses = (): Int32Array => (ranked ??= rankClasses(f, x, n, k, robust, o.batch));

  for (const attack of AUTOATTACK_ATTACKS[c.version]) {
    const t0 = performance.now();
    const before = count();
    let engineSteps = 0;
    let queries = 0;
    let skipped: string | undefined;
    if (before > 0) {
      if (attack === 'APGD-CE') {
        const bar = progressBar('APGD-CE', before, { quiet: o.quiet });
        const s = await apgdVerify(f, clf, x, y, n, robust, 'ce', apgd, makeRng(`${o.seed}:autoattack-apgd-ce`), { batch: o.batch, onFooled, onProgress: (d) => bar.update(d - (n - before)) });
        bar.stop();
        add(s);
        engineSteps = s.engine_steps;
      } else if (attack === 'APGD-T') {
        if (k < 4) skipped = `the targeted DLR loss needs at least 4 classes, the model has ${k}`;
        else {
          const rank = rankedClasses();
          const bar = progressBar(`APGD-T (${nTargets} targets)`, nTargets, { quiet: o.quiet });
          for (let r = 1; r <= nTargets && count() > 0; r++) {
            const targets = Int32Array.from({ length: n }, (_, i) => rank[i * k + r]!);
            const s = await apgdVerify(f, clf, x, y, n, robust, 'dlr-targeted', apgd, makeRng(`${o.seed}:autoattack-apgd-t:${r}`), { batch: o.batch, targets, onFooled });
            add(s);
            engineSteps += s.engine_steps;
            bar.update(r, { robust: count() / n });
          }
          bar.stop();
        }
      } else if (attack === 'FAB-T') {
        const rank = rankedClasses();
        const bar = progressBar(`FAB-T (${nTargets} targets)`, nTargets, { quiet: o.quiet });
        for (let r = 1; r <= nTargets && count() > 0; r++) {
          const targets = Int32Array.from({ length: n }, (_, i) => rank[i * k + r]!);
          const s = await fabTargeted(f, clf, x, y, n, robust, targets, { eps: c.eps, norm: c.norm, ...FAB }, { batch: o.batch, onFooled });
          add(s);
          engineSteps += s.engine_steps;
          bar.update(r, { robust: count() / n });
        }
        bar.stop();
      } else {
        const sq = AUTOATTACK_SETTINGS.square;
        const bar = progressBar(`Square-${sq.queries}`, sq.queries, { quiet: o.quiet });
        queries = await squareAttack(clf, x, y, n, shape, robust, { eps: c.eps, queries: sq.queries, pInit: sq.p_init, norm: c.norm, scheduleQueries: 10000 },
          makeRng(`${o.seed}:autoattack-square`), bar, onFooled);
        bar.stop();
      }
    }
    const after = count();
    rows.push({
      attack, broken: before - after, acc_after: after / n, seconds: (performance.now() - t0) / 1000,
      ...(attack === 'Square' ? { queries } : { engine_steps: engineSteps }), ...(skipped ? { skipped } : {}),
    });
  }
  const result: AutoAttackResult = {
    acc: count() / n,
    clean_acc: correct.reduce((a, v) => a + v, 0) / n,
    version: c.version, eps: c.eps, norm: c.norm,
    attacks: AUTOATTACK_ATTACKS[c.version],
    per_attack: rows,
    candidates: judged.candidates,
    ort_engine_disagreements: judged.disagreements,
    settings: AUTOATTACK_SETTINGS,
    judged_by: 'onnxruntime-node on the artifact: an example is broken only by an input within ε that onnxruntime misclassifies',
  };
  return { result, robust, adversarial };
}

const FAB = { iterations: AUTOATTACK_SETTINGS.fab.iterations, alphaMax: AUTOATTACK_SETTINGS.fab.alpha_max, eta: AUTOATTACK_SETTINGS.fab.eta, beta: AUTOATTACK_SETTINGS.fab.beta };

/**
 * For every example with alive[i] = 1: its classes ordered by the engine's logits at the clean image, largest
 * first (row i of [n, k]; rank 0 is the predicted class, ranks 1.. the targets of APGD-T and FAB-T).
 */
function rankClasses(f: Frozen, x: Float32Array, n: number, k: number, alive: Uint8Array, batch: number): Int32Array {
  const per = x.length / n;
  const idx = [...Array(n).keys()].filter((i) => alive[i]);
  const out = new Int32Array(n * k);
  const B = poolSize(batch, idx.length);
  const buf = new Float32Array(B * per);
  for (let from = 0; from < idx.length; from += B) {
    const part = idx.slice(from, from + B);
    buf.fill(0);
    part.forEach((i, r) => buf.set(x.subarray(i * per, (i + 1) * per), r * per));
    const z = f.logits(buf, B);
    part.forEach((i, r) => {
      const order = [...Array(k).keys()].sort((a, b) => z[r * k + b]! - z[r * k + a]! || a - b);
      out.set(order, i * k);
    });
  }
  return out;
}

export interface FabConfig {
  eps: number;
  norm: 'linf' | 'l2';
  iterations: number;
  /** largest weight of the step from the clean image (α_max) */
  alphaMax: number;
  /** overshoot of the projection (η) */
  eta: number;
  /** backward step toward the clean image after an adversarial iterate (β) */
  beta: number;
}

/** scratch of the projection: saturation points and speeds of the moving coordinates */
let scratch: { r: Float64Array; s: Float64Array } | undefined;

/**
 * Projection of t onto the hyperplane {v : w·v = b} intersected with [0,1]^d in the L∞ or L2 norm: writes
 * to d the smallest perturbation (in that norm) with w·(t + d) = b and t + d in the box; when the box does
 * not reach the hyperplane, the box corner that gets closest. (The problem of the reference code's
 * projection_linf / projection_l2.) Moving each coordinate against the sign of w, coordinate i saturates
 * at its box face; the decrease of w·x is Σ speed_i·min(λ, r_i) in the perturbation size λ, piecewise
 * linear and increasing, and its level `need` is found by selection around pivots (expected O(d), no sort).
 * The reference of HyperplaneProjector's WebAssembly kernel: any change here must be made there too (the
 * test compares them bit for bit).
 */
export function projectHyperplaneBox(t: ArrayLike<number>, w: ArrayLike<number>, b: number, norm: 'linf' | 'l2', d: Float64Array): void {
  const dim = d.length;
  if (!scratch || scratch.r.length < dim) scratch = { r: new Float64Array(dim), s: new Float64Array(dim) };
  const { r, s: speed } = scratch;
  let c = -b;
  for (let i = 0; i < dim; i++) c += w[i]! * t[i]!;
  d.fill(0);
  if (c === 0) return;
  // orient so that w·(t + d) must decrease by |c|: u = sign(c)·w; coordinate i moves by −sign(u_i)·…
  // L∞: |d_i| = min(λ, room_i), speed |u_i|, r_i = room_i; L2: |d_i| = |u_i|·min(λ, room_i/|u_i|), speed u_i²
  const sg = c > 0 ? 1 : -1;
  const need = Math.abs(c);
  const linf = norm === 'linf';
  let m = 0;
  let full = 0;
  for (let i = 0; i < dim; i++) {
    const u = sg * w[i]!;
    if (u === 0) continue;
    const au = u > 0 ? u : -u;
    const room = u > 0 ? t[i]! : 1 - t[i]!;
    const ri = linf ? room : room / au;
    const si = linf ? au : au * au;
    r[m] = ri;
    speed[m++] = si;
    full += si * ri;
  }
  if (!m) return;
  let lambda = Infinity;
  if (full > need) {
    // candidates [lo, hi): r between the saturated ones (sum `sat` of speed·r) and the free ones (sum
    // `free` of speed); a pivot's level tells on which side of it λ lies
    let lo = 0;
    let hi = m;
    let sat = 0;
    let free = 0;
    let seed = 0x2545f491;
    while (hi > lo) {
      seed = (Math.imul(seed, 1103515245) + 12345) | 0;
      const p = r[lo + ((seed >>> 8) % (hi - lo))]!;
      let satLe = 0;
      let freeGt = 0;
      for (let j = lo; j < hi; j++) {
        const v = r[j]!;
        if (v <= p) satLe += speed[j]! * v;
        else freeGt += speed[j]!;
      }
      let k = lo;
      if (sat + satLe + p * (free + freeGt) >= need) {
        // λ ≤ p: everything with r ≥ p stays free; keep r < p
        for (let j = lo; j < hi; j++) {
          const v = r[j]!;
          if (v < p) {
            r[k] = v;
            speed[k++] = speed[j]!;
          } else free += speed[j]!;
        }
      } else {
        // λ > p: everything with r ≤ p is saturated; keep r > p
        sat += satLe;
        for (let j = lo; j < hi; j++) {
          const v = r[j]!;
          if (v > p) {
            r[k] = v;
            speed[k++] = speed[j]!;
          }
        }
      }
      hi = k;
    }
    lambda = free > 0 ? Math.max(0, (need - sat) / free) : Infinity;
  }
  for (let i = 0; i < dim; i++) {
    const u = sg * w[i]!;
    if (u === 0) continue;
    const room = u > 0 ? t[i]! : 1 - t[i]!;
    const mag = linf ? Math.min(lambda, room) : Math.min(lambda * (u > 0 ? u : -u), room);
    d[i] = u > 0 ? -mag : mag;
  }
}

interface ProjectionKernel {
  memory: WebAssembly.Memory;
  projectHyperplaneBox(t: number, w: number, dim: number, b: number, l2: number, d: number, r: number, s: number): void;
}

/**
 * projectHyperplaneBox on float32 inputs of `dim` values, bit for bit, by the attack kernels
 * (src/util/wasm/attack.as.ts, ~3x faster): t and w are copied into the kernel's memory, and the result is
 * written to d1 or d2, views of that memory.
 */
export class HyperplaneProjector {
  readonly d1: Float64Array;
  readonly d2: Float64Array;
  private readonly r: Float64Array;
  private readonly s: Float64Array;
  private readonly t: Float32Array;
  private readonly w: Float32Array;
  private readonly kernel: ProjectionKernel;

  constructor(private readonly dim: number) {
    const { kernel, buffer, base } = wasmWithScratch<ProjectionKernel>('attack.wasm', 40 * dim);
    this.kernel = kernel;
    [this.d1, this.d2, this.r, this.s] = [0, 1, 2, 3].map((i) => new Float64Array(buffer, base + 8 * i * dim, dim)) as [Float64Array, Float64Array, Float64Array, Float64Array];
    this.t = new Float32Array(buffer, base + 32 * dim, dim);
    this.w = new Float32Array(buffer, base + 36 * dim, dim);
  }

  /** projectHyperplaneBox(t, w, b, norm, d) for d = d1 or d2 */
  project(t: Float32Array, w: Float32Array, b: number, norm: 'linf' | 'l2', d: Float64Array): void {
    if (d !== this.d1 && d !== this.d2) throw new Error('HyperplaneProjector writes to its d1 or d2 only');
    this.t.set(t);
    this.w.set(w);
    this.kernel.projectHyperplaneBox(this.t.byteOffset, this.w.byteOffset, this.dim, b, norm === 'l2' ? 1 : 0, d.byteOffset, this.r.byteOffset, this.s.byteOffset);
  }
}

function normOf(d: ArrayLike<number>, norm: 'linf' | 'l2'): number {
  let s = 0;
  if (norm === 'linf') for (let i = 0; i < d.length; i++) s = Math.max(s, Math.abs(d[i]!));
  else {
    for (let i = 0; i < d.length; i++) s += d[i]! * d[i]!;
    s = Math.sqrt(s);
  }
  return s;
}

function distance(a: Float32Array, b: Float32Array, norm: 'linf' | 'l2'): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) {
    const v = a[i]! - b[i]!;
    s = norm === 'linf' ? Math.max(s, Math.abs(v)) : s + v * v;
  }
  return norm === 'linf' ? s : Math.sqrt(s);
}

/**
 * FAB-T: one run toward targets[i] for every example with alive[i] = 1, from the clean image (the standard
 * version's single restart has no random start). Each iteration linearises z_t − z_y, projects both the
 * iterate and the clean image onto that hyperplane within [0,1]^d, and steps to a convex combination of
 * the two overshot projections (weight α = min(‖δ‖/(‖δ‖ + ‖δ_orig‖), α_max) on the clean image's); an
 * iterate the engine finds adversarial is pulled back toward the clean image by β. Adversarial iterates
 * within ε, and the last iterate, are judged by onnxruntime (the reference keeps the smallest adversarial
 * found; here every one within ε is judged, and the first onnxruntime confirms ends the example's run).
 */
export async function fabTargeted(
  f: Frozen, clf: OrtClassifier, x: Float32Array, y: Int32Array, n: number, alive: Uint8Array, targets: Int32Array, c: FabConfig,
  o: { batch: number; onFooled?: (i: number, input: Float32Array) => void; onProgress?: (done: number) => void },
): Promise<AttackStats> {
  const per = x.length / n;
  const k = clf.classes;
  const stats: AttackStats = { candidates: 0, disagreements: 0, engine_steps: 0 };
  const queue: number[] = [];
  for (let i = 0; i < n; i++) if (alive[i]) queue.push(i);
  if (!queue.length) return stats;
  const B = poolSize(o.batch, queue.length);
  const x0 = new Float32Array(B * per);
  const x1 = new Float32Array(B * per);
  const slot = new Int32Array(B).fill(-1);
  const labels = new Int32Array(B);
  const target = new Int32Array(B);
  const iter = new Int32Array(B);
  const dz = new Float32Array(B * k);
  const projector = new HyperplaneProjector(per);
  const { d1, d2 } = projector;
  const check = new OrtCheck(per, B);
  let q = 0;
  let active = 0;
  let done = n - queue.length;
  /** refills slot s with the next example (empty when none is left) */
  const fill = (s: number): void => {
    if (slot[s]! >= 0) active--;
    slot[s] = -1;
    x1.fill(0, s * per, (s + 1) * per);
    dz.fill(0, s * k, (s + 1) * k);
    if (q >= queue.length) return;
    const i = queue[q++]!;
    slot[s] = i;
    active++;
    labels[s] = y[i]!;
    target[s] = targets[i]!;
    x0.set(x.subarray(i * per, (i + 1) * per), s * per);
    x1.set(x.subarray(i * per, (i + 1) * per), s * per);
    dz[s * k + target[s]!] = 1; // ∇(z_t − z_y)
    dz[s * k + labels[s]!] = -1;
    iter[s] = 0;
  };
  for (let s = 0; s < B; s++) fill(s);

  while (active > 0) {
    // the engine's class of every new iterate; adversarial ones within ε go to onnxruntime
    const z = f.logits(x1, B);
    const adv = new Uint8Array(B);
    for (let s = 0; s < B; s++) {
      if (slot[s]! < 0 || iter[s] === 0) continue;
      const o0 = s * per;
      const pred = argmax(z, s * k, k);
      const xs = x1.subarray(o0, o0 + per);
      if (pred !== labels[s]) adv[s] = 1;
      if ((adv[s] || iter[s] === c.iterations) && distance(xs, x0.subarray(o0, o0 + per), c.norm) <= c.eps) check.add(s, xs, pred);
    }
    const fooled = await check.judge(clf, labels, B, stats);
    for (let s = 0; s < B; s++) {
      const i = slot[s]!;
      if (i < 0) continue;
      if (fooled[s]! >= 0 || iter[s] === c.iterations) {
        if (fooled[s]! >= 0) {
          alive[i] = 0;
          o.onFooled?.(i, check.input(fooled[s]!));
        }
        done++;
        fill(s);
      } else if (adv[s]) {
        const o0 = s * per;
        for (let j = o0; j < o0 + per; j++) x1[j] = x0[j]! + (x1[j]! - x0[j]!) * c.beta;
      }
    }
    if (active === 0) break;
    // the hyperplane z_t − z_y = 0 linearised at x1: w·v = b with w = ∇(z_t − z_y), b = w·x1 − (z_t − z_y);
    // the logits come with the gradient, as x1 moved since z on the rows pulled back or refilled above
    const r = f.lossGrad(x1, B, { kind: 'logit-grad', dz });
    stats.engine_steps += active;
    for (let s = 0; s < B; s++) {
      if (slot[s]! < 0) continue;
      const o0 = s * per;
      const xs = x1.subarray(o0, o0 + per);
      const xo = x0.subarray(o0, o0 + per);
      const g = r.grad.subarray(o0, o0 + per);
      let b = -(r.logits[s * k + target[s]!]! - r.logits[s * k + labels[s]!]!);
      for (let j = 0; j < per; j++) b += g[j]! * xs[j]!;
      projector.project(xs, g, b, c.norm, d1);
      projector.project(xo, g, b, c.norm, d2);
      const a1 = Math.max(normOf(d1, c.norm), 1e-8);
      const a2 = Math.max(normOf(d2, c.norm), 1e-8);
      const alpha = Math.min(Math.max(a1 / (a1 + a2), 0), c.alphaMax);
      for (let j = 0; j < per; j++) {
        const v = (xs[j]! + c.eta * d1[j]!) * (1 - alpha) + (xo[j]! + c.eta * d2[j]!) * alpha;
        xs[j] = v < 0 ? 0 : v > 1 ? 1 : v;
      }
      iter[s]!++;
    }
    o.onProgress?.(done);
  }
  return stats;
}
