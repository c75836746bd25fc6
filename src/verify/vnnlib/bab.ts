// Branch and bound on input boxes. A disjunct of the unsafe region is infeasible over a box when the lower
// bound of one of its constraints' coef·Y (the larger of CROWN-IBP and IBP) exceeds rhs; a box is done when
// every disjunct is. Boxes left undecided are bisected along their widest input (only for models with few
// inputs) and the halves bounded again, depth first. The centre of every box bounded is also a candidate
// counterexample, and a check of the bounds: the centre's outputs must lie inside the box's intervals.
import { float32Box, satisfiesAll, type BoxGroup } from './boxes.js';
import { centre, confirmCounterexample, type AttackStats, type Counterexample, type Deadline } from './attack.js';
import type { BoxBounds } from './box-bounds.js';
import type { VnnModel } from './model.js';

export interface BabStats {
  method: string;
  /** input splitting on (small input dimension) */
  split: boolean;
  boxes: number;
  max_depth: number;
  bound_calls: number;
  seconds: number;
}

export type BabOutcome =
  | { kind: 'unsat' }
  | { kind: 'sat'; counterexample: Counterexample }
  | { kind: 'timeout' }
  | { kind: 'unknown'; why: string }
  /** the bounds failed their own check: they must not be used */
  | { kind: 'unsound'; why: string };

interface Item {
  lower: Float64Array;
  upper: Float64Array;
  group: number;
  /** indices of the group's disjuncts not yet proven infeasible over this box */
  open: number[];
  depth: number;
}

/** pending boxes beyond which the search gives up (unknown) */
const MAX_PENDING = 1_000_000;

/**
 * Lower bounds below rhs by at most this much do not count as proofs: the bounds are computed in float32
 * (magnitude: the constraint's terms at the interval ends).
 */
function tolerance(coef: Float64Array, rhs: number, lower: Float32Array, upper: Float32Array, at: number): number {
  let m = Math.abs(rhs);
  for (let j = 0; j < coef.length; j++) if (coef[j]) m += Math.abs(coef[j]!) * Math.max(Math.abs(lower[at + j]!), Math.abs(upper[at + j]!));
  return 1e-6 * m + 1e-9;
}

export async function branchAndBound(model: VnnModel, bb: BoxBounds, groups: BoxGroup[], o: { split: boolean; deadline: Deadline }, stats: BabStats, attack: AttackStats): Promise<BabOutcome> {
  const t0 = performance.now();
  try {
    return await search(model, bb, groups, o, stats, attack);
  } finally {
    stats.seconds += (performance.now() - t0) / 1000;
  }
}

async function search(model: VnnModel, bb: BoxBounds, groups: BoxGroup[], o: { split: boolean; deadline: Deadline }, stats: BabStats, attack: AttackStats): Promise<BabOutcome> {
  const per = model.inputs;
  const k = model.outputs;
  const slots = bb.slots;
  const stack: Item[] = groups.map((g, i) => ({ lower: g.lower, upper: g.upper, group: i, open: g.disjuncts.map((_, d) => d), depth: 0 }));
  let unsplittable = 0;
  const lower = new Float32Array(slots * per);
  const upper = new Float32Array(slots * per);
  const spec = new Float32Array(slots * k * k);
  const centres = new Float32Array(slots * per);
  while (stack.length) {
    if (o.deadline.expired()) return { kind: 'timeout' };
    if (stack.length > MAX_PENDING) return { kind: 'unknown', why: `more than ${MAX_PENDING} boxes pending` };
    // the next boxes, each with its constraint rows packed into slots of k rows
    const items: Item[] = [];
    const layout: { item: number; rows: { d: number; c: number }[] }[] = [];
    while (stack.length) {
      const it = stack[stack.length - 1]!;
      const g = groups[it.group]!;
      const rows = it.open.flatMap((d) => g.disjuncts[d]!.map((_, c) => ({ d, c })));
      const need = Math.max(1, Math.ceil(rows.length / k));
      if (items.length && layout.length + need > slots) break;
      stack.pop();
      const idx = items.push(it) - 1;
      for (let s = 0; s < need; s++) layout.push({ item: idx, rows: rows.slice(s * k, (s + 1) * k) });
    }
    // bounds: layout slots in calls of `slots`
    const lb = items.map((it) => it.open.map((d) => new Float64Array(groups[it.group]!.disjuncts[d]!.length).fill(-Infinity)));
    const ivl: { lower: Float32Array; upper: Float32Array; at: number }[] = new Array(items.length);
    for (let from = 0; from < layout.length; from += slots) {
      const part = layout.slice(from, from + slots);
      spec.fill(0);
      part.forEach((sl, s) => {
        const it = items[sl.item]!;
        const box = float32Box(it.lower, it.upper, 'outward');
        lower.set(box.lower, s * per);
        upper.set(box.upper, s * per);
        const g = groups[it.group]!;
        sl.rows.forEach((r, j) => spec.set(Float32Array.from(g.disjuncts[r.d]![r.c]!.coef), (s * k + j) * k));
      });
      // unused slots repeat the last box (any valid box)
      for (let s = part.length; s < slots; s++) {
        lower.copyWithin(s * per, (part.length - 1) * per, part.length * per);
        upper.copyWithin(s * per, (part.length - 1) * per, part.length * per);
      }
      const res = bb.run(lower, upper, spec);
      stats.bound_calls++;
      part.forEach((sl, s) => {
        const it = items[sl.item]!;
        const g = groups[it.group]!;
        if (!ivl[sl.item]) ivl[sl.item] = { lower: res.lower, upper: res.upper, at: s * k };
        sl.rows.forEach((r, j) => {
          const c = g.disjuncts[r.d]![r.c]!;
          let ibp = 0;
          for (let q = 0; q < k; q++) {
            const a = c.coef[q]!;
            if (a > 0) ibp += a * res.lower[s * k + q]!;
            else if (a < 0) ibp += a * res.upper[s * k + q]!;
          }
          const crown = res.crown ? res.crown[s * k + j]! : -Infinity;
          const oi = it.open.indexOf(r.d);
          lb[sl.item]![oi]![r.c] = Math.max(ibp, crown) - tolerance(c.coef, c.rhs, res.lower, res.upper, s * k);
        });
      });
    }
    // centres: outputs of the bounded graph (inside the intervals, or the bounds are wrong) and candidates
    for (let from = 0; from < items.length; from += slots) {
      const part = items.slice(from, from + slots);
      part.forEach((it, s) => {
        const inward = float32Box(it.lower, it.upper, 'inward');
        const box = inward.empty ? float32Box(it.lower, it.upper, 'outward') : inward;
        centre(box.lower, box.upper, centres, s * per);
      });
      const y = bb.outputsAt(centres);
      for (let s = 0; s < part.length; s++) {
        const idx = from + s;
        const it = part[s]!;
        const iv = ivl[idx]!;
        for (let q = 0; q < k; q++) {
          const v = y[s * k + q]!;
          const slack = 1e-5 * (1 + Math.abs(v));
          if (!(v >= iv.lower[iv.at + q]! - slack && v <= iv.upper[iv.at + q]! + slack)) {
            return { kind: 'unsound', why: `the bounds [${iv.lower[iv.at + q]}, ${iv.upper[iv.at + q]}] do not contain the output ${q} (${v}) at a box centre` };
          }
        }
        const g = groups[it.group]!;
        if (it.open.some((d) => satisfiesAll(g.disjuncts[d]!, y, s * k))) {
          const c = await confirmCounterexample(model, groups, centres.slice(s * per, (s + 1) * per), 'branch and bound (a box centre)', attack);
          if (c) return { kind: 'sat', counterexample: c };
        }
      }
    }
    stats.boxes += items.length;
    items.forEach((it, i) => {
      const g = groups[it.group]!;
      const open = it.open.filter((d, oi) => !g.disjuncts[d]!.some((c, ci) => lb[i]![oi]![ci]! > c.rhs));
      if (!open.length) return;
      if (!o.split) {
        unsplittable++;
        return;
      }
      let dim = -1;
      let width = 0;
      for (let e = 0; e < per; e++) {
        const w = it.upper[e]! - it.lower[e]!;
        if (w > width) {
          width = w;
          dim = e;
        }
      }
      const mid = dim < 0 ? NaN : 0.5 * (it.lower[dim]! + it.upper[dim]!);
      // no float32 strictly inside: the box cannot get smaller for the float32 bounds
      if (!(dim >= 0 && Math.fround(mid) > Math.fround(it.lower[dim]!) && Math.fround(mid) < Math.fround(it.upper[dim]!))) {
        unsplittable++;
        return;
      }
      const depth = it.depth + 1;
      stats.max_depth = Math.max(stats.max_depth, depth);
      const loHalf = { lower: it.lower, upper: it.upper.slice(), group: it.group, open, depth };
      loHalf.upper[dim] = mid;
      const hiHalf = { lower: it.lower.slice(), upper: it.upper, group: it.group, open, depth };
      hiHalf.lower[dim] = mid;
      stack.push(hiHalf, loHalf);
    });
  }
  if (unsplittable) {
    return { kind: 'unknown', why: o.split ? `${unsplittable} boxes cannot be split further and are not proven` : `the bounds do not prove the property over the box, and with ${per} inputs the box is not split` };
  }
  return { kind: 'unsat' };
}
