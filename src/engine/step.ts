// The projected gradient step of every L∞/L2 attack: a signed (L∞) or unit-direction (L2) ascent step,
// then projection onto the ε-ball around x intersected with [0,1]: the tfjs engine's PGD step (the
// compiled engine fuses the same into its onnxruntime graph); `project` also starts the attacks.

export interface StepConfig {
  alpha: number;
  eps: number;
  norm: 'linf' | 'l2';
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

/** Bounds of the L∞ ball around x intersected with [0,1], computed once per attack. */
export function boxOf(x: Float32Array, eps: number): { lo: Float32Array; hi: Float32Array } {
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

/** x_adv ← Π(x_adv + step(g)): the signed step clipped to `box` (L∞), or the L2 step and projection. */
export function stepInPlace(xAdv: Float32Array, grad: Float32Array, x: Float32Array, n: number, c: StepConfig, box?: { lo: Float32Array; hi: Float32Array }): void {
  if (box) linfStep(xAdv, grad, c.alpha, box.lo, box.hi);
  else {
    ascend(xAdv, grad, n, c.alpha, c.norm);
    project(xAdv, x, n, c.eps, c.norm);
  }
}

