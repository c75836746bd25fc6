// The per-pixel inner loops of AutoAttack's gradient attacks in WebAssembly (AssemblyScript, compiled to
// dist/src/util/attack.wasm by `npm run build`): APGD's L∞ step (src/verify/apgd.ts, apgdStepLinf) and
// FAB's projection onto a hyperplane within the box (src/verify/autoattack.ts, projectHyperplaneBox). In JS
// both spent most of their time in mispredicted branches on the gradient's signs and the comparisons; here
// the data-dependent choices are branch-free (SIMD lanes, or bit-pattern blends), which makes the step ~10x
// and the projection ~3x faster. Both are the JS functions bit for bit (tested): the same float64
// operations in the same order (WebAssembly does not fuse multiply-adds), and choices that select the very
// value the JS branch would have computed.

/**
 * APGD's L∞ step over n pixels of one example, in place: xa (float32) becomes the next iterate and xPrev
 * (float32) the current one; g (float32) is the gradient and x (float32) the clean example, whose box of the
 * ε-ball ∩ [0,1] is max(x − ε, 0) .. min(x + ε, 1) (WebAssembly's min and max are Math.min and Math.max,
 * NaN and signed zeros included; pmin/pmax are the comparisons `h < z ? h : z` and `z < l ? l : z`; the
 * result is rounded to float32 as a Float32Array store rounds it). All four are addresses.
 */
export function linfStep(xa: usize, xPrev: usize, g: usize, x: usize, n: i32, eps: f64, eta: f64, a: f64): void {
  const b: f64 = 1 - a;
  const vEta = f64x2.splat(eta);
  const vNegEta = f64x2.splat(-eta);
  const vA = f64x2.splat(a);
  const vB = f64x2.splat(b);
  const vEps = f64x2.splat(eps);
  const zero = f64x2.splat(0);
  const one = f64x2.splat(1);
  let j = 0;
  for (; j + 2 <= n; j += 2) {
    const o4 = <usize>j << 2;
    const cur = v128.load64_zero(xa + o4);
    const v = f64x2.promote_low_f32x4(cur);
    const p = f64x2.promote_low_f32x4(v128.load64_zero(xPrev + o4));
    const gv = f64x2.promote_low_f32x4(v128.load64_zero(g + o4));
    const xc = f64x2.promote_low_f32x4(v128.load64_zero(x + o4));
    const l = f64x2.max(f64x2.sub(xc, vEps), zero);
    const h = f64x2.min(f64x2.add(xc, vEps), one);
    // η·sign(g): η, −η, or 0 (also for NaN)
    const step = v128.bitselect(vEta, v128.bitselect(vNegEta, zero, f64x2.lt(gv, zero)), f64x2.gt(gv, zero));
    const z = f64x2.pmin(f64x2.pmax(f64x2.add(v, step), l), h);
    const u = f64x2.add(f64x2.add(v, f64x2.mul(vA, f64x2.sub(z, v))), f64x2.mul(vB, f64x2.sub(v, p)));
    v128.store64_lane(xPrev + o4, cur, 0);
    v128.store64_lane(xa + o4, f32x4.demote_f64x2_zero(f64x2.pmin(f64x2.pmax(u, l), h)), 0);
  }
  for (; j < n; j++) {
    const o4 = <usize>j << 2;
    const v = <f64>load<f32>(xa + o4);
    const gj = <f64>load<f32>(g + o4);
    const xc = <f64>load<f32>(x + o4);
    const l = Math.max(xc - eps, 0);
    const h = Math.min(xc + eps, 1);
    let z = v + (gj > 0 ? eta : gj < 0 ? -eta : 0);
    z = z < l ? l : z > h ? h : z;
    let u = v + a * (z - v) + b * (v - <f64>load<f32>(xPrev + o4));
    u = u < l ? l : u > h ? h : u;
    store<f32>(xPrev + o4, <f32>v);
    store<f32>(xa + o4, <f32>u);
  }
}

/** `a` where `mask` is all ones, else `b`: a choice by bit patterns, exact and without a branch. */
@inline function blend(a: f64, b: f64, mask: i64): f64 {
  return reinterpret<f64>((reinterpret<i64>(a) & mask) | (reinterpret<i64>(b) & ~mask));
}

/** all ones when `c`, else zero */
@inline function maskOf(c: bool): i64 {
  return -<i64>c;
}

/**
 * projectHyperplaneBox (src/verify/autoattack.ts, where the method is explained) over dim pixels: t and w
 * float32, d (the result) and the scratch r and s float64, all addresses; `l2` selects the norm. Where JS
 * skips a pixel or a candidate, this adds +0 (sums that start at +0 and add no −0 are unchanged by it) and
 * compacts by always writing and advancing by the comparison, so that the sums, the candidates' order and
 * hence the pivots are the JS ones.
 */
export function projectHyperplaneBox(t: usize, w: usize, dim: i32, b: f64, l2: bool, d: usize, r: usize, s: usize): void {
  let c: f64 = -b;
  for (let i = 0; i < dim; i++) c += <f64>load<f32>(w + (<usize>i << 2)) * <f64>load<f32>(t + (<usize>i << 2));
  memory.fill(d, 0, <usize>dim << 3);
  if (c == 0) return;
  const sg: f64 = c > 0 ? 1 : -1;
  const need = Math.abs(c);
  let m = 0;
  let full: f64 = 0;
  for (let i = 0; i < dim; i++) {
    const u = sg * <f64>load<f32>(w + (<usize>i << 2));
    const ti = <f64>load<f32>(t + (<usize>i << 2));
    const pos = maskOf(u > 0);
    const au = blend(u, -u, pos);
    const room = blend(ti, 1 - ti, pos);
    const ri = l2 ? room / au : room;
    const si = l2 ? au * au : au;
    store<f64>(r + (<usize>m << 3), ri);
    store<f64>(s + (<usize>m << 3), si);
    const moves = u != 0;
    m += <i32>moves;
    full += blend(si * ri, 0, maskOf(moves));
  }
  if (!m) return;
  let lambda: f64 = Infinity;
  if (full > need) {
    let lo = 0;
    let hi = m;
    let sat: f64 = 0;
    let free: f64 = 0;
    let seed: i32 = 0x2545f491;
    while (hi > lo) {
      seed = seed * 1103515245 + 12345;
      const p = load<f64>(r + (<usize>(lo + <i32>((<u32>seed >>> 8) % <u32>(hi - lo))) << 3));
      let satLe: f64 = 0;
      let freeGt: f64 = 0;
      for (let j = lo; j < hi; j++) {
        const v = load<f64>(r + (<usize>j << 3));
        const sj = load<f64>(s + (<usize>j << 3));
        const le = maskOf(v <= p);
        satLe += blend(sj * v, 0, le);
        freeGt += blend(0, sj, le);
      }
      let k = lo;
      if (sat + satLe + p * (free + freeGt) >= need) {
        for (let j = lo; j < hi; j++) {
          const v = load<f64>(r + (<usize>j << 3));
          const sj = load<f64>(s + (<usize>j << 3));
          const keep = v < p;
          store<f64>(r + (<usize>k << 3), v);
          store<f64>(s + (<usize>k << 3), sj);
          k += <i32>keep;
          free += blend(0, sj, maskOf(keep));
        }
      } else {
        sat += satLe;
        for (let j = lo; j < hi; j++) {
          const v = load<f64>(r + (<usize>j << 3));
          store<f64>(r + (<usize>k << 3), v);
          store<f64>(s + (<usize>k << 3), load<f64>(s + (<usize>j << 3)));
          k += <i32>(v > p);
        }
      }
      hi = k;
    }
    lambda = free > 0 ? Math.max(0, (need - sat) / free) : Infinity;
  }
  for (let i = 0; i < dim; i++) {
    const u = sg * <f64>load<f32>(w + (<usize>i << 2));
    const ti = <f64>load<f32>(t + (<usize>i << 2));
    const pos = maskOf(u > 0);
    const room = blend(ti, 1 - ti, pos);
    const a = l2 ? lambda * blend(u, -u, pos) : lambda;
    // Math.min(a, room): a when smaller or NaN (λ is never −0, so signed zeros need no care)
    const mag = blend(a, room, maskOf(a < room) | maskOf(a != a));
    store<f64>(d + (<usize>i << 3), blend(blend(-mag, mag, pos), 0, maskOf(u != 0)));
  }
}
