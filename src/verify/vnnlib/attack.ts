// Looking for counterexamples: random inputs of the box, then PGD on the engine's gradients toward the
// unsafe region (minimizing Σ relu(coef·Y − rhs + margin) over each disjunct's constraints, signed steps
// scaled to each input's range, projected onto the box). Whatever the engine finds is only a candidate:
// onnxruntime runs the file on it and the constraints are evaluated on onnxruntime's outputs.
import { tf } from '../../tfjs/tf.js';
import type { Rng } from '../../util/rng.js';
import type { OutputConstraint } from './parse.js';
import { float32Box, inBox, satisfiesAll, type BoxGroup } from './boxes.js';
import type { VnnEngine, VnnModel } from './model.js';

export interface Counterexample {
  x: Float32Array;
  /** onnxruntime's outputs on the file at x */
  y: Float32Array;
  found_by: string;
}

export interface AttackStats {
  samples: number;
  pgd_restarts: number;
  pgd_steps: number;
  /** candidates onnxruntime checked, and how many of them it rejected (the engine said unsafe, onnxruntime not) */
  candidates: number;
  rejected: number;
  seconds: number;
}

export interface Deadline {
  expired(): boolean;
  /** seconds left */
  left(): number;
}

export function deadlineIn(seconds: number, from = performance.now()): Deadline {
  const end = from + seconds * 1000;
  return { expired: () => performance.now() > end, left: () => Math.max(0, (end - performance.now()) / 1000) };
}

export function newAttackStats(): AttackStats {
  return { samples: 0, pgd_restarts: 0, pgd_steps: 0, candidates: 0, rejected: 0, seconds: 0 };
}

/** x if onnxruntime's outputs on the file at x satisfy a disjunct of a group whose box holds x. */
export async function confirmCounterexample(model: VnnModel, groups: BoxGroup[], x: Float32Array, foundBy: string, stats?: AttackStats): Promise<Counterexample | undefined> {
  if (stats) stats.candidates++;
  const y = await model.judge(x);
  for (const g of groups) {
    if (!inBox(x, g.lower, g.upper)) continue;
    if (g.disjuncts.some((d) => satisfiesAll(d, y))) return { x: x.slice(), y: y.slice(), found_by: foundBy };
  }
  if (stats) stats.rejected++;
  return undefined;
}

/** A uniformly random float32 point of the box [lo, hi] (float32 bounds inside the real box). */
function randomPoint(lo: Float32Array, hi: Float32Array, rng: Rng, out: Float32Array, offset: number): void {
  for (let i = 0; i < lo.length; i++) out[offset + i] = Math.min(hi[i]!, Math.max(lo[i]!, lo[i]! + (hi[i]! - lo[i]!) * rng()));
}

/** The box's centre as a float32 point inside it. */
export function centre(lo: Float32Array, hi: Float32Array, out: Float32Array, offset = 0): void {
  for (let i = 0; i < lo.length; i++) out[offset + i] = Math.min(hi[i]!, Math.max(lo[i]!, Math.fround(0.5 * lo[i]! + 0.5 * hi[i]!)));
}

/**
 * `samples` random inputs per box, their outputs computed by the engine (or by onnxruntime when there is
 * no engine); inputs the engine puts in the unsafe region are confirmed by onnxruntime.
 */
export async function randomSearch(model: VnnModel, groups: BoxGroup[], samples: number, rng: Rng, deadline: Deadline, stats: AttackStats): Promise<Counterexample | 'timeout' | undefined> {
  const t0 = performance.now();
  try {
    const per = model.inputs;
    const eng = model.engine;
    const frozen = eng?.net.frozen();
    const batch = eng ? eng.batch : 1;
    const x = new Float32Array(batch * per);
    for (const g of groups) {
      const box = float32Box(g.lower, g.upper, 'inward');
      if (box.empty) continue;
      const total = eng ? samples : Math.min(samples, 256);
      for (let done = 0; done < total; done += batch) {
        if (deadline.expired()) return 'timeout';
        for (let r = 0; r < batch; r++) randomPoint(box.lower, box.upper, rng, x, r * per);
        stats.samples += batch;
        if (!frozen) {
          const c = await confirmCounterexample(model, groups, x.slice(0, per), 'random sampling', stats);
          if (c) return c;
          continue;
        }
        const y = frozen.logits(x, batch);
        const k = y.length / batch;
        for (let r = 0; r < batch; r++) {
          if (!g.disjuncts.some((d) => satisfiesAll(d, y, r * k))) continue;
          const c = await confirmCounterexample(model, groups, x.slice(r * per, (r + 1) * per), 'random sampling', stats);
          if (c) return c;
        }
      }
    }
    return undefined;
  } finally {
    stats.seconds += (performance.now() - t0) / 1000;
  }
}

/** Outputs and the gradient of Σ_rows Σ_c relu(coef_c·Y − rhs_c + margin_c) with respect to the inputs. */
function hingeGradient(eng: VnnEngine, x: Float32Array, coef: Float32Array, rhs: Float32Array, constraints: number, outputs: number): { y: Float32Array; grad: Float32Array } {
  const n = eng.batch;
  return tf.tidy(() => {
    let y = new Float32Array();
    const w = tf.tensor3d(coef, [n, constraints, outputs]);
    const b = tf.tensor2d(rhs, [n, constraints]);
    const grad = tf.grad((xx: tf.Tensor) => {
      const out = tf.reshape(eng.net.logits(xx, { training: false, gradX: true, gradParams: false }).logits, [n, 1, outputs]);
      y = (out.dataSync() as Float32Array).slice();
      return tf.sum(tf.relu(tf.sub(tf.sum(tf.mul(w, out), 2), b)));
    })(tf.tensor(x, [n, ...eng.exampleShape]));
    return { y, grad: grad.dataSync() as Float32Array };
  });
}

/**
 * PGD toward each disjunct of each box: `restarts` runs per disjunct (the first from the box's centre, the
 * others from random points) of `steps` signed-gradient steps, step sizes decaying from 20% to 0.2% of each
 * input's range. Every iterate the engine puts in the disjunct, and every final iterate, is confirmed by
 * onnxruntime.
 */
export async function pgdSearch(model: VnnModel, groups: BoxGroup[], o: { restarts: number; steps: number }, rng: Rng, deadline: Deadline, stats: AttackStats): Promise<Counterexample | 'timeout' | undefined> {
  const eng = model.engine;
  if (!eng) return undefined;
  const t0 = performance.now();
  try {
    const per = model.inputs;
    const k = model.outputs;
    const n = eng.batch;
    for (const g of groups) {
      const box = float32Box(g.lower, g.upper, 'inward');
      if (box.empty) continue;
      const rows: { disjunct: OutputConstraint[]; first: boolean }[] = [];
      for (const d of g.disjuncts) {
        if (!d.length) continue; // (a disjunct without output constraints: any input is a counterexample, found by sampling)
        for (let r = 0; r < o.restarts; r++) rows.push({ disjunct: d, first: r === 0 });
      }
      for (let from = 0; from < rows.length; from += n) {
        const chunk = rows.slice(from, from + n);
        const cmax = Math.max(...chunk.map((r) => r.disjunct.length));
        const coef = new Float32Array(n * cmax * k);
        // padding constraints 0·Y ≤ 1 never bind
        const rhs = new Float32Array(n * cmax).fill(1);
        chunk.forEach((r, i) => r.disjunct.forEach((c, j) => {
          coef.set(Float32Array.from(c.coef), (i * cmax + j) * k);
          // aim slightly inside the region (strict constraints, and onnxruntime rounding differently)
          rhs[i * cmax + j] = c.rhs - 1e-5 * (1 + Math.abs(c.rhs));
        }));
        const x = new Float32Array(n * per);
        chunk.forEach((r, i) => (r.first ? centre(box.lower, box.upper, x, i * per) : randomPoint(box.lower, box.upper, rng, x, i * per)));
        stats.pgd_restarts += chunk.length;
        // the iterate onnxruntime last rejected, per run (not checked again while it does not move)
        const rejected: (Float32Array | undefined)[] = new Array(chunk.length);
        for (let s = 0; s <= o.steps; s++) {
          if (deadline.expired()) return 'timeout';
          const { y, grad } = hingeGradient(eng, x, coef, rhs, cmax, k);
          stats.pgd_steps += chunk.length;
          for (let i = 0; i < chunk.length; i++) {
            if (!(s === o.steps || satisfiesAll(chunk[i]!.disjunct, y, i * k))) continue;
            const xi = x.slice(i * per, (i + 1) * per);
            if (rejected[i]?.every((v, e) => v === xi[e])) continue;
            const c = await confirmCounterexample(model, groups, xi, 'PGD', stats);
            if (c) return c;
            rejected[i] = xi;
          }
          if (s === o.steps) break;
          const alpha = 0.002 + 0.5 * (0.2 - 0.002) * (1 + Math.cos((Math.PI * s) / o.steps));
          for (let i = 0; i < chunk.length; i++) {
            for (let e = 0; e < per; e++) {
              const q = i * per + e;
              const w = box.upper[e]! - box.lower[e]!;
              const v = x[q]! - alpha * w * Math.sign(grad[q]!);
              x[q] = Math.min(box.upper[e]!, Math.max(box.lower[e]!, v));
            }
          }
        }
      }
    }
    return undefined;
  } finally {
    stats.seconds += (performance.now() - t0) / 1000;
  }
}
