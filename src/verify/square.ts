// Square attack (Andriushchenko, Croce, Flammarion, Hein, ECCV 2020), L∞ or L2, untargeted, margin loss: a
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
  /** initial fraction of pixels changed per step (the paper's p_init; 0.05 for L∞, AutoAttack 0.8) */
  pInit: number;
  /** threat model (default L∞) */
  norm?: 'linf' | 'l2';
  /**
   * the query budget the p schedule is laid over (default: `queries`, i.e. rescaled to the budget;
   * AutoAttack: 10,000, the paper's schedule as is)
   */
  scheduleQueries?: number;
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
 * Clears `alive` for every example the attack fools, and hands its fooling image (classified by onnxruntime
 * as another class) to `onFooled`; returns the queries spent.
 */
export async function squareAttack(
  clf: OrtClassifier, x: Float32Array, y: Int32Array, n: number, shape: [number, number, number], alive: Uint8Array, c: SquareConfig, rng: Rng, bar?: Progress,
  onFooled?: (i: number, input: Float32Array) => void,
): Promise<number> {
  const [C, H, W] = shape;
  const per = C * H * W;
  const k = clf.classes;
  let idx = [...Array(n).keys()].filter((i) => alive[i]);
  if (!idx.length || c.queries < 1) return 0;
  const l2 = c.norm === 'l2';
  const budget = c.scheduleQueries ?? c.queries;
  const q0 = clf.queries;
  const sign = (): number => (rng() < 0.5 ? -c.eps : c.eps);
  const clip = (v: number): number => (v < 0 ? 0 : v > 1 ? 1 : v);
  const best = new Float32Array(idx.length * per);
  if (!l2) {
    // initialisation: vertical stripes of ±ε per channel and column
    idx.forEach((e, r) => {
      for (let ch = 0; ch < C; ch++) for (let w = 0; w < W; w++) {
        const d = sign();
        for (let h = 0; h < H; h++) {
          const o = ch * H * W + h * W + w;
          best[r * per + o] = clip(x[e * per + o]! + d);
        }
      }
    });
  } else {
    // initialisation: a grid of s×s windows (s = H/5), each the paper's ±η pattern with a random sign per
    // channel, the whole perturbation scaled to L2 norm ε
    const s = Math.max(1, Math.floor(H / 5));
    const start = Math.floor((H - 5 * s) / 2);
    const delta = new Float32Array(per);
    idx.forEach((e, r) => {
      delta.fill(0);
      for (let a = 0, vh = start; a < Math.floor(H / s); a++, vh += s) {
        for (let b = 0, vw = start; b < Math.floor(W / s); b++, vw += s) {
          const eta = squareEta(s, rng);
          for (let ch = 0; ch < C; ch++) {
            const sg = rng() < 0.5 ? -1 : 1;
            for (let i = 0; i < s; i++) for (let j = 0; j < s; j++) {
              const h = vh + i;
              const w = vw + j;
              if (h >= 0 && h < H && w >= 0 && w < W) delta[ch * H * W + h * W + w]! += sg * eta[i * s + j]!;
            }
          }
        }
      }
      const scale = c.eps / (Math.sqrt(delta.reduce((acc, v) => acc + v * v, 0)) + 1e-12);
      for (let o = 0; o < per; o++) best[r * per + o] = clip(x[e * per + o]! + delta[o]! * scale);
    });
  }
  let yAlive = idx.map((e) => y[e]!);
  let bestMargin = margins(await clf.logits(best, idx.length), yAlive, idx, k);
  let cur = best;
  const keep = (): void => {
    const nextIdx: number[] = [];
    const rowsKept: number[] = [];
    idx.forEach((e, r) => {
      if (bestMargin[r]! < 0) {
        alive[e] = 0;
        onFooled?.(e, cur.subarray(r * per, (r + 1) * per));
      } else nextIdx.push(e), rowsKept.push(r);
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
  const delta = new Float32Array(per);
  for (let it = 1; it < c.queries && idx.length; it++) {
    const p = squareFraction(c.pInit, it, budget);
    const m = idx.length;
    const tmp = cand.subarray(0, m * per);
    tmp.set(cur.subarray(0, m * per));
    if (!l2) {
      const s = Math.min(Math.max(Math.round(Math.sqrt((p * per) / C)), 1), H - 1, W - 1);
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
    } else {
      // odd window side of at least 3
      let s = Math.max(Math.round(Math.sqrt((p * per) / C)), 3);
      if (s % 2 === 0) s++;
      s = Math.min(s, H, W);
      for (let r = 0; r < m; r++) squareL2Step(x.subarray(idx[r]! * per, (idx[r]! + 1) * per), cur.subarray(r * per, (r + 1) * per), tmp.subarray(r * per, (r + 1) * per), delta, [C, H, W], s, c.eps, rng);
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

/**
 * The L2 attack's window pattern (the reference code's eta_rectangles of size a×b): 1/(j+1)² summed over
 * nested rectangles around the centre, L2-normalised; row-major.
 */
function etaRectangles(a: number, b: number): Float64Array {
  const out = new Float64Array(a * b);
  const xc = Math.floor(a / 2) + 1;
  const yc = Math.floor(b / 2) + 1;
  let r0 = xc - 1;
  let c0 = yc - 1;
  for (let j = 0; j < Math.max(xc, yc); j++) {
    for (let i = Math.max(r0, 0); i < Math.min(r0 + 2 * j + 1, a); i++) {
      for (let l = Math.max(c0, 0); l < Math.min(c0 + 2 * j + 1, b); l++) out[i * b + l]! += 1 / (j + 1) ** 2;
    }
    r0--;
    c0--;
  }
  const norm = Math.sqrt(out.reduce((acc, v) => acc + v * v, 0));
  if (norm > 0) for (let i = 0; i < out.length; i++) out[i]! /= norm;
  return out;
}

/** s×s: +η on the top half, −η on the bottom half, L2-normalised, transposed with probability ½. */
export function squareEta(s: number, rng: Rng): Float64Array {
  const half = Math.floor(s / 2);
  const out = new Float64Array(s * s);
  out.set(etaRectangles(half, s), 0);
  const bottom = etaRectangles(s - half, s);
  for (let i = 0; i < bottom.length; i++) out[half * s + i] = -bottom[i]!;
  const norm = Math.sqrt(out.reduce((acc, v) => acc + v * v, 0));
  for (let i = 0; i < out.length; i++) out[i]! /= norm;
  if (rng() > 0.5) {
    const t = new Float64Array(s * s);
    for (let i = 0; i < s; i++) for (let j = 0; j < s; j++) t[j * s + i] = out[i * s + j]!;
    return t;
  }
  return out;
}

/**
 * One L2 proposal (the reference code's update): a new η pattern with random sign per channel plus the
 * current perturbation of window 1 (normalised per channel), scaled so that the mass of windows 1 and 2
 * and the unused budget ε² − ‖δ‖² move into window 1; window 2 is zeroed; the whole perturbation is then
 * rescaled to norm ε and the image clipped to [0,1]. Writes the proposal to `out`.
 */
function squareL2Step(x: Float32Array, best: Float32Array, out: Float32Array, delta: Float32Array, [C, H, W]: [number, number, number], s: number, eps: number, rng: Rng): void {
  const per = C * H * W;
  let normImage2 = 0;
  for (let o = 0; o < per; o++) {
    delta[o] = best[o]! - x[o]!;
    normImage2 += delta[o]! * delta[o]!;
  }
  const vh = Math.floor(rng() * (H - s + 1));
  const vw = Math.floor(rng() * (W - s + 1));
  const vh2 = Math.floor(rng() * (H - s + 1));
  const vw2 = Math.floor(rng() * (W - s + 1));
  const inside = (h: number, w: number, h0: number, w0: number): boolean => h >= h0 && h < h0 + s && w >= w0 && w < w0 + s;
  // ‖δ‖ over the union of both windows (all channels)
  let normWindows2 = 0;
  for (let ch = 0; ch < C; ch++) for (let h = 0; h < H; h++) for (let w = 0; w < W; w++) {
    if (inside(h, w, vh, vw) || inside(h, w, vh2, vw2)) normWindows2 += delta[ch * H * W + h * W + w]! ** 2;
  }
  const budget = Math.sqrt(Math.max(eps * eps - normImage2, 0) / C + normWindows2);
  const eta = squareEta(s, rng);
  const win = new Float64Array(C * s * s);
  for (let ch = 0; ch < C; ch++) {
    const sg = rng() < 0.5 ? -1 : 1;
    let n1 = 0;
    for (let i = 0; i < s; i++) for (let j = 0; j < s; j++) n1 += delta[ch * H * W + (vh + i) * W + vw + j]! ** 2;
    n1 = Math.sqrt(n1) + 1e-12;
    let nw = 0;
    for (let i = 0; i < s; i++) for (let j = 0; j < s; j++) {
      const v = sg * eta[i * s + j]! + delta[ch * H * W + (vh + i) * W + vw + j]! / n1;
      win[ch * s * s + i * s + j] = v;
      nw += v * v;
    }
    const scale = budget / (Math.sqrt(nw) + 1e-12);
    for (let i = 0; i < s * s; i++) win[ch * s * s + i]! *= scale;
  }
  for (let ch = 0; ch < C; ch++) {
    for (let i = 0; i < s; i++) for (let j = 0; j < s; j++) delta[ch * H * W + (vh2 + i) * W + vw2 + j] = 0;
    for (let i = 0; i < s; i++) for (let j = 0; j < s; j++) delta[ch * H * W + (vh + i) * W + vw + j] = win[ch * s * s + i * s + j]!;
  }
  let nd = 0;
  for (let o = 0; o < per; o++) nd += delta[o]! * delta[o]!;
  const scale = eps / (Math.sqrt(nd) + 1e-12);
  for (let o = 0; o < per; o++) {
    const v = x[o]! + delta[o]! * scale;
    out[o] = v < 0 ? 0 : v > 1 ? 1 : v;
  }
}
