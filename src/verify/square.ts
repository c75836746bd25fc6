// Square attack (Andriushchenko, Croce, Flammarion, Hein, ECCV 2020), L∞, untargeted, margin loss: a
// gradient-free random search run on the artifact itself through onnxruntime-node. It needs no gradients,
// so it sees what the shipped file computes (int8 rounding included) and cannot be fooled by masked
// gradients. Hand-written: the reference implementations are Python (PyTorch/NumPy).
import type { OrtClassifier } from './classifier.js';
import type { Rng } from '../util/rng.js';
import type { Progress } from '../util/progress.js';

export interface SquareConfig {
  eps: number;
  /** queries per example, the initialisation included */
  queries: number;
  /** initial fraction of pixels changed per step (the paper's p_init; 0.05 for L∞) */
  pInit: number;
}

/** The paper's schedule: p halves at fixed fractions of a 10,000-query budget, rescaled to ours. */
export function squareFraction(pInit: number, it: number, budget: number): number {
  const i = Math.floor((it / budget) * 10000);
  const cuts = [10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000];
  let p = pInit;
  for (const c of cuts) if (i > c) p /= 2;
  return p;
}

/** margin z_y − max_{j≠y} z_j per row (negative: misclassified) */
function margins(z: Float32Array, y: ArrayLike<number>, rows: number[], k: number): Float32Array {
  const out = new Float32Array(rows.length);
  rows.forEach((_, r) => {
    const lab = y[r]!;
    let other = -Infinity;
    for (let j = 0; j < k; j++) if (j !== lab) other = Math.max(other, z[r * k + j]!);
    out[r] = z[r * k + lab]! - other;
  });
  return out;
}

/**
 * Attack the examples whose `alive` flag is set (x: n images [C,H,W] back to back, values in [0,1]).
 * Clears `alive` for every example the attack fools; returns the queries spent.
 */
export async function squareAttack(clf: OrtClassifier, x: Float32Array, y: Int32Array, n: number, shape: [number, number, number], alive: Uint8Array, c: SquareConfig, rng: Rng, bar?: Progress): Promise<number> {
  const [C, H, W] = shape;
  const per = C * H * W;
  const k = clf.classes;
  let idx = [...Array(n).keys()].filter((i) => alive[i]);
  if (!idx.length || c.queries < 1) return 0;
  const q0 = clf.queries;
  const sign = (): number => (rng() < 0.5 ? -c.eps : c.eps);
  const clip = (v: number): number => (v < 0 ? 0 : v > 1 ? 1 : v);
  // initialisation: vertical stripes of ±ε per channel and column
  const best = new Float32Array(idx.length * per);
  idx.forEach((e, r) => {
    for (let ch = 0; ch < C; ch++) for (let w = 0; w < W; w++) {
      const d = sign();
      for (let h = 0; h < H; h++) {
        const o = ch * H * W + h * W + w;
        best[r * per + o] = clip(x[e * per + o]! + d);
      }
    }
  });
  let yAlive = idx.map((e) => y[e]!);
  let bestMargin = margins(await clf.logits(best, idx.length), yAlive, idx, k);
  let cur = best;
  const keep = (): void => {
    const nextIdx: number[] = [];
    const rowsKept: number[] = [];
    idx.forEach((e, r) => {
      if (bestMargin[r]! < 0) alive[e] = 0;
      else nextIdx.push(e), rowsKept.push(r);
    });
    if (nextIdx.length === idx.length) return;
    const nb = new Float32Array(nextIdx.length * per);
    const nm = new Float32Array(nextIdx.length);
    rowsKept.forEach((r, i) => {
      nb.set(cur.subarray(r * per, (r + 1) * per), i * per);
      nm[i] = bestMargin[r]!;
    });
    idx = nextIdx;
    yAlive = idx.map((e) => y[e]!);
    cur = nb;
    bestMargin = nm;
  };
  keep();
  const cand = new Float32Array(cur.length);
  for (let it = 1; it < c.queries && idx.length; it++) {
    const p = squareFraction(c.pInit, it, c.queries);
    const s = Math.min(Math.max(Math.round(Math.sqrt((p * per) / C)), 1), H - 1, W - 1);
    const m = idx.length;
    const tmp = cand.subarray(0, m * per);
    tmp.set(cur.subarray(0, m * per));
    for (let r = 0; r < m; r++) {
      const e = idx[r]!;
      const h0 = Math.floor(rng() * (H - s + 1));
      const w0 = Math.floor(rng() * (W - s + 1));
      // a new ±ε per channel over the window, redrawn until it changes the current image somewhere
      for (let attempt = 0; attempt < 10; attempt++) {
        let changed = false;
        for (let ch = 0; ch < C; ch++) {
          const d = sign();
          for (let h = h0; h < h0 + s; h++) for (let w = w0; w < w0 + s; w++) {
            const o = ch * H * W + h * W + w;
            const v = clip(x[e * per + o]! + d);
            if (Math.abs(v - cur[r * per + o]!) > 1e-7) changed = true;
            tmp[r * per + o] = v;
          }
        }
        if (changed) break;
      }
    }
    const mg = margins(await clf.logits(tmp, m), yAlive, idx, k);
    for (let r = 0; r < m; r++) {
      if (mg[r]! < bestMargin[r]!) {
        bestMargin[r] = mg[r]!;
        cur.set(tmp.subarray(r * per, (r + 1) * per), r * per);
      }
    }
    keep();
    bar?.update(it, { alive: idx.length });
  }
  return clf.queries - q0;
}
