// Input boxes and output constraints of a bound VNN-LIB property, in the float32 arithmetic the model runs in.
import type { OutputConstraint, VnnProperty } from './parse.js';

/** Disjuncts of the unsafe region that share one input box (VNN-LIB files usually have one box). */
export interface BoxGroup {
  lower: Float64Array;
  upper: Float64Array;
  /** each disjunct: a conjunction of output constraints */
  disjuncts: OutputConstraint[][];
}

export function groupByBox(p: VnnProperty): BoxGroup[] {
  const groups = new Map<string, BoxGroup>();
  for (const r of p.regions) {
    const key = `${Array.from(r.lower).join(',')}|${Array.from(r.upper).join(',')}`;
    let g = groups.get(key);
    if (!g) groups.set(key, (g = { lower: r.lower, upper: r.upper, disjuncts: [] }));
    g.disjuncts.push(r.constraints);
  }
  return [...groups.values()];
}

const f32 = new Float32Array(1);
const i32 = new Int32Array(f32.buffer);

/** The float32 next to x (a float32) toward +∞ (up) or −∞. */
function nextFloat32(x: number, up: boolean): number {
  if (x === 0) return up ? 1.401298464324817e-45 : -1.401298464324817e-45;
  f32[0] = x;
  i32[0]! += (x > 0) === up ? 1 : -1;
  return f32[0]!;
}

/** The smallest float32 ≥ x (down = false) or the largest float32 ≤ x (down = true). */
export function roundFloat32(x: number, down: boolean): number {
  const r = Math.fround(x);
  if (!Number.isFinite(r) && Number.isFinite(x)) return down ? -3.4028234663852886e38 : 3.4028234663852886e38;
  if (down ? r > x : r < x) return nextFloat32(r, !down);
  return r;
}

/**
 * The box as float32 arrays: 'outward' contains the real box (for bounds: sound over every real input of the
 * box), 'inward' lies inside it (for counterexamples: every float32 point of it is in the box; empty when a
 * dimension holds no float32).
 */
export function float32Box(lower: Float64Array, upper: Float64Array, mode: 'outward' | 'inward'): { lower: Float32Array; upper: Float32Array; empty: boolean } {
  const n = lower.length;
  const lo = new Float32Array(n);
  const hi = new Float32Array(n);
  let empty = false;
  for (let i = 0; i < n; i++) {
    lo[i] = roundFloat32(lower[i]!, mode === 'outward');
    hi[i] = roundFloat32(upper[i]!, mode !== 'outward');
    if (lo[i]! > hi[i]!) empty = true;
  }
  return { lower: lo, upper: hi, empty };
}

/** coef·y − rhs: ≤ 0 (< 0 when strict) where the constraint holds */
export function constraintValue(c: OutputConstraint, y: ArrayLike<number>, offset = 0): number {
  let v = -c.rhs;
  const coef = c.coef;
  for (let j = 0; j < coef.length; j++) if (coef[j] !== 0) v += coef[j]! * y[offset + j]!;
  return v;
}

/** Whether the outputs satisfy every constraint of the conjunction (evaluated in float64). */
export function satisfiesAll(conj: OutputConstraint[], y: ArrayLike<number>, offset = 0): boolean {
  for (const c of conj) {
    const v = constraintValue(c, y, offset);
    if (c.strict ? !(v < 0) : !(v <= 0)) return false;
  }
  return true;
}

/** Whether x (float32 values) lies in the real box [lower, upper]. */
export function inBox(x: ArrayLike<number>, lower: Float64Array, upper: Float64Array, offset = 0): boolean {
  for (let i = 0; i < lower.length; i++) {
    const v = x[offset + i]!;
    if (!(v >= lower[i]! && v <= upper[i]!)) return false;
  }
  return true;
}
