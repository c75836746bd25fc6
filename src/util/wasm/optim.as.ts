// The optimizers' per-weight update in WebAssembly SIMD (AssemblyScript, compiled to dist/src/util/optim.wasm
// by `npm run build`; used by src/train/optim.ts). The JS loop it replaces ran at 5-10 ns per weight (V8
// computes each float32 through float64, one at a time): 120-130 ms per step for ResNet-18's 11.2 M weights.
// Four lanes of float32 per instruction, as PyTorch's optimizers compute (in float32).

/**
 * SGD as torch.optim.SGD, over n weights in place: d = g + wd·w; with momentum mu the buffer s becomes d on
 * the first step and mu·s + d after, the step is s (or d + mu·s with Nesterov); w -= lr·step.
 * w, g, s are addresses of float32 arrays (s unused without momentum).
 */
export function sgd(w: usize, g: usize, s: usize, n: i32, lr: f32, mu: f32, wd: f32, nesterov: bool, first: bool): void {
  const vLr = f32x4.splat(lr);
  const vMu = f32x4.splat(mu);
  const vWd = f32x4.splat(wd);
  const momentum = mu != 0;
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const o = <usize>i << 2;
    const wv = v128.load(w + o);
    const d = f32x4.add(v128.load(g + o), f32x4.mul(vWd, wv));
    let step = d;
    if (momentum) {
      const b = first ? d : f32x4.add(f32x4.mul(vMu, v128.load(s + o)), d);
      v128.store(s + o, b);
      step = nesterov ? f32x4.add(d, f32x4.mul(vMu, b)) : b;
    }
    v128.store(w + o, f32x4.sub(wv, f32x4.mul(vLr, step)));
  }
  for (; i < n; i++) {
    const o = <usize>i << 2;
    const wv = load<f32>(w + o);
    const d = load<f32>(g + o) + wd * wv;
    let step = d;
    if (momentum) {
      const b = first ? d : mu * load<f32>(s + o) + d;
      store<f32>(s + o, b);
      step = nesterov ? d + mu * b : b;
    }
    store<f32>(w + o, wv - lr * step);
  }
}

/**
 * Adam over n weights in place: d = g + wd·w; m = b1·m + (1 − b1)·d; v = b2·v + (1 − b2)·d²;
 * w -= lr·(m / c1) / (√(v / c2) + eps), with c1, c2 the bias corrections 1 − b1^t, 1 − b2^t.
 */
export function adam(w: usize, g: usize, m: usize, v: usize, n: i32, lr: f32, b1: f32, b2: f32, eps: f32, wd: f32, c1: f32, c2: f32): void {
  const vLr = f32x4.splat(lr);
  const vB1 = f32x4.splat(b1);
  const vB2 = f32x4.splat(b2);
  const v1B1 = f32x4.splat(1 - b1);
  const v1B2 = f32x4.splat(1 - b2);
  const vEps = f32x4.splat(eps);
  const vWd = f32x4.splat(wd);
  const vC1 = f32x4.splat(c1);
  const vC2 = f32x4.splat(c2);
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const o = <usize>i << 2;
    const wv = v128.load(w + o);
    const d = f32x4.add(v128.load(g + o), f32x4.mul(vWd, wv));
    const mv = f32x4.add(f32x4.mul(vB1, v128.load(m + o)), f32x4.mul(v1B1, d));
    const vv = f32x4.add(f32x4.mul(vB2, v128.load(v + o)), f32x4.mul(v1B2, f32x4.mul(d, d)));
    v128.store(m + o, mv);
    v128.store(v + o, vv);
    const denom = f32x4.add(f32x4.sqrt(f32x4.div(vv, vC2)), vEps);
    v128.store(w + o, f32x4.sub(wv, f32x4.div(f32x4.mul(vLr, f32x4.div(mv, vC1)), denom)));
  }
  for (; i < n; i++) {
    const o = <usize>i << 2;
    const wv = load<f32>(w + o);
    const d = load<f32>(g + o) + wd * wv;
    const mv = b1 * load<f32>(m + o) + (1 - b1) * d;
    const vv = b2 * load<f32>(v + o) + (1 - b2) * d * d;
    store<f32>(m + o, mv);
    store<f32>(v + o, vv);
    store<f32>(w + o, wv - (lr * (mv / c1)) / (Mathf.sqrt(vv / c2) + eps));
  }
}
